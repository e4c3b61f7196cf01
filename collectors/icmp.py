"""ICMP echo over unprivileged datagram sockets (Linux ``ping_group_range``), or raw sockets
with CAP_NET_RAW. Shared by the ``probe`` and ``link`` collectors."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

from collectors.base import CollectorError

ICMP_NOT_PERMITTED = "icmp_not_permitted"
_ECHO_REQUEST, _ECHO_REPLY = 8, 0
_ECHO6_REQUEST, _ECHO6_REPLY = 128, 129


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return int(~s & 0xFFFF)


def open_socket(family: int) -> tuple[socket.socket, bool]:
    """(socket, raw?) — datagram ICMP first, raw as a fallback; a clear error when neither works."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    try:
        return socket.socket(family, socket.SOCK_DGRAM, proto), False
    except PermissionError:
        pass
    try:
        return socket.socket(family, socket.SOCK_RAW, proto), True
    except PermissionError:
        raise CollectorError(
            ICMP_NOT_PERMITTED,
            "ICMP not permitted: allow this user's group in net.ipv4.ping_group_range "
            "(sysctl) or give the agent CAP_NET_RAW",
        ) from None


async def resolve(host: str, family: int = socket.AF_UNSPEC) -> tuple[int, str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise CollectorError("unreachable", f"cannot resolve {host}: {e.strerror}") from None
    fam, _, _, _, addr = infos[0]
    return int(fam), str(addr[0])


async def ping(host: str, count: int, interval: float, timeout: float, size: int = 56) -> list[float | None]:
    """Send ``count`` echo requests ``interval`` apart; RTT in seconds per packet, None when lost.
    Each reply is awaited at most ``timeout`` after its request was sent."""
    family, addr = await resolve(host)
    sock, raw = open_socket(family)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    ident = int.from_bytes(os.urandom(2), "big")
    sent: dict[int, float] = {}
    rtts: dict[int, float] = {}
    req_type = _ECHO_REQUEST if family == socket.AF_INET else _ECHO6_REQUEST
    rep_type = _ECHO_REPLY if family == socket.AF_INET else _ECHO6_REPLY
    payload = os.urandom(max(0, size - 8))
    done = asyncio.Event()

    def on_readable() -> None:
        while True:
            try:
                data, _src = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if raw and family == socket.AF_INET and len(data) >= 20:
                data = data[(data[0] & 0x0F) * 4 :]
            if len(data) < 8:
                continue
            typ, _code, _ck, rid, seq = struct.unpack("!BBHHH", data[:8])
            if typ != rep_type:
                continue
            # Datagram sockets: the kernel rewrites the id, so match on sequence and payload.
            if raw and rid != ident:
                continue
            if data[8:] != payload or seq not in sent or seq in rtts:
                continue
            rtts[seq] = time.perf_counter() - sent[seq]
            if len(rtts) == count:
                done.set()

    loop.add_reader(sock.fileno(), on_readable)
    try:
        base_seq = int.from_bytes(os.urandom(2), "big") & 0x7FFF
        for i in range(count):
            seq = (base_seq + i) & 0xFFFF
            header = struct.pack("!BBHHH", req_type, 0, 0, ident, seq)
            ck = _checksum(header + payload) if family == socket.AF_INET else 0
            pkt = struct.pack("!BBHHH", req_type, 0, ck, ident, seq) + payload
            sent[seq] = time.perf_counter()
            try:
                sock.sendto(pkt, (addr, 0))
            except OSError as e:
                raise CollectorError("unreachable", f"cannot send ICMP echo to {host}: {e.strerror}") from None
            if i < count - 1:
                await asyncio.sleep(interval)
        last = max(sent.values())
        wait = max(0.0, last + timeout - time.perf_counter())
        if len(rtts) < count:
            try:
                await asyncio.wait_for(done.wait(), wait)
            except TimeoutError:
                pass
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    out: list[float | None] = []
    for i in range(count):
        seq = (base_seq + i) & 0xFFFF
        r = rtts.get(seq)
        out.append(r if r is not None and r <= timeout else None)
    return out
