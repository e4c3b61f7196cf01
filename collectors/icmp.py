"""ICMP echo over unprivileged datagram sockets (Linux ``ping_group_range``), or raw sockets
with CAP_NET_RAW. Shared by the ``probe`` and ``link`` collectors.

Round-trip times are timed as fping and SmokePing time them: the receive time is the kernel's
(``SO_TIMESTAMPNS``, read from ``recvmsg`` ancillary data), the send time is read immediately
before ``sendto``. So a busy event loop that notices a reply late does not lengthen its RTT.

A probe that cannot be sent because the path is down — no route, network or host unreachable,
the local interface or address gone, a prohibit route or a local firewall refusing it — is a lost
probe, counted in :class:`Burst` ``send_errors``; it is a measurement of the link, not a failure
of the agent. Only errors of the agent itself (no permission to open the socket, a name that
does not resolve) raise :class:`CollectorError`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from collectors.base import UNREACHABLE, CollectorError

ICMP_NOT_PERMITTED = "icmp_not_permitted"
_ECHO_REQUEST, _ECHO_REPLY = 8, 0
_ECHO6_REQUEST, _ECHO6_REPLY = 128, 129

# sendto()/connect() errors that say the path to the far end is down, not that the agent is broken.
PATH_DOWN_ERRNOS = frozenset(
    {
        errno.ENETUNREACH,  # no route (withdrawn, interface down)
        errno.EHOSTUNREACH,  # unreachable route, neighbour (ARP/ND) failed
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.ECONNREFUSED,
        errno.EADDRNOTAVAIL,  # the local address (a tunnel's) is gone
        errno.EACCES,  # a prohibit route
        errno.EPERM,  # a local firewall rule (sendto only: opening the socket is checked first)
    }
)

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_SCM_TIMESTAMPNS = _SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")
ANCILLARY_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def path_down(e: OSError) -> str | None:
    """The error's text when it means the path is down (a lost probe), else None."""
    if e.errno in PATH_DOWN_ERRNOS:
        return os.strerror(e.errno) if e.errno else str(e)
    return None


def enable_rx_timestamps(sock: socket.socket) -> None:
    """Ask the kernel to stamp every received datagram (``SO_TIMESTAMPNS``, wall clock, ns)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:  # not Linux: recv_timestamped falls back to the time of the read
        pass


def recv_timestamped(sock: socket.socket) -> tuple[bytes, int]:
    """One datagram and its receive time in ns since the epoch: the kernel's stamp when there is
    one, else the time of the read. Raises BlockingIOError when nothing is queued."""
    data, anc, _flags, _addr = sock.recvmsg(65535, ANCILLARY_SPACE)
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS and len(cdata) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(cdata)
            return data, sec * 1_000_000_000 + nsec
    return data, time.time_ns()


@dataclass
class Burst:
    """One burst: RTT in seconds per probe (None when lost), and why probes could not be sent."""

    rtts: list[float | None]
    send_errors: Counter[str] = field(default_factory=Counter)

    @property
    def unsent(self) -> int:
        return sum(self.send_errors.values())

    def describe_send_errors(self) -> str:
        """``5 probes could not be sent (Network is unreachable)``, or '' when all were sent."""
        if not self.send_errors:
            return ""
        n = self.unsent
        many = len(self.send_errors) > 1
        why = ", ".join(f"{text} x{c}" if many else text for text, c in self.send_errors.items())
        return f"{n} probe{'s' if n != 1 else ''} could not be sent ({why})"


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
    for fam in (socket.AF_INET, socket.AF_INET6):
        # An address literal needs no resolver: the same answer without a trip through the
        # executor's thread (or loading the IDNA codec that getaddrinfo encodes names with).
        if family in (socket.AF_UNSPEC, fam):
            try:
                return int(fam), socket.inet_ntop(fam, socket.inet_pton(fam, host))
            except (OSError, ValueError):
                pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise CollectorError(UNREACHABLE, f"cannot resolve {host}: {e.strerror}") from None
    fam, _, _, _, addr = infos[0]
    return int(fam), str(addr[0])


async def ping(host: str, count: int, interval: float, timeout: float, size: int = 56) -> Burst:
    """Send ``count`` echo requests ``interval`` apart; RTT in seconds per packet, None when lost.
    Each reply is awaited at most ``timeout`` after its request was sent."""
    family, addr = await resolve(host)
    sock, raw = open_socket(family)
    sock.setblocking(False)
    enable_rx_timestamps(sock)
    loop = asyncio.get_running_loop()
    ident = int.from_bytes(os.urandom(2), "big")
    sent: dict[int, int] = {}  # seq -> send time, ns since the epoch
    rtts: dict[int, float] = {}
    burst = Burst([])
    req_type = _ECHO_REQUEST if family == socket.AF_INET else _ECHO6_REQUEST
    rep_type = _ECHO_REPLY if family == socket.AF_INET else _ECHO6_REPLY
    payload = os.urandom(max(0, size - 8))
    done = asyncio.Event()

    def on_readable() -> None:
        while True:
            try:
                data, rx_ns = recv_timestamped(sock)
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
            rtts[seq] = (rx_ns - sent[seq]) / 1e9
            if len(rtts) == count - burst.unsent:
                done.set()

    loop.add_reader(sock.fileno(), on_readable)
    try:
        base_seq = int.from_bytes(os.urandom(2), "big") & 0x7FFF
        next_at = time.perf_counter()
        for i in range(count):
            seq = (base_seq + i) & 0xFFFF
            header = struct.pack("!BBHHH", req_type, 0, 0, ident, seq)
            ck = _checksum(header + payload) if family == socket.AF_INET else 0
            pkt = struct.pack("!BBHHH", req_type, 0, ck, ident, seq) + payload
            dest = (addr, 0)
            t_ns = time.time_ns()
            try:
                sock.sendto(pkt, dest)
            except OSError as e:
                why = path_down(e)
                if why is None:
                    raise CollectorError(
                        UNREACHABLE, f"cannot send ICMP echo to {host}: {os.strerror(e.errno) if e.errno else e}"
                    ) from None
                burst.send_errors[why] += 1
            else:
                sent[seq] = t_ns
            if i < count - 1:
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if sent and len(rtts) < len(sent):
            wait = max(0.0, max(sent.values()) / 1e9 + timeout - time.time())
            try:
                await asyncio.wait_for(done.wait(), wait)
            except TimeoutError:
                pass
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    for i in range(count):
        r = rtts.get((base_seq + i) & 0xFFFF)
        burst.rtts.append(r if r is not None and 0.0 <= r <= timeout else None)
    return burst
