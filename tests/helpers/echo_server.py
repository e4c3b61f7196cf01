"""A TCP listener and an RFC 862 UDP echo service, for link bursts in a test namespace; with
``--delay`` every UDP echo — and, with ``--icmp``, every ICMP echo reply — leaves that long after
its request arrived (by the kernel's receive stamp): a long link without netem.

python tests/helpers/echo_server.py BIND_IP TCP_PORT UDP_PORT [--delay SECONDS] [--icmp]

``--icmp`` answers ICMP echo requests from a raw socket; turn the kernel's own replies off first
(``sysctl net.ipv4.icmp_echo_ignore_all=1`` in the namespace) or each request is answered twice.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import time
from collections.abc import Callable

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _recv(sock: socket.socket) -> tuple[bytes, tuple[str, int], float]:
    """A datagram, its sender and its arrival time (kernel stamp, Unix seconds)."""
    data, anc, _flags, addr = sock.recvmsg(65535, socket.CMSG_SPACE(16))
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(cdata) >= 16:
            sec, nsec = struct.unpack("@qq", cdata[:16])
            return data, addr, sec + nsec / 1e9
    return data, addr, time.time()


def _serve(sock: socket.socket, delay: float, reply: Callable[[bytes], bytes | None]) -> None:
    """Answer every datagram on ``sock`` ``delay`` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)

    def readable() -> None:
        while True:
            try:
                data, addr, arrived = _recv(sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            out = reply(data)
            if out is None:
                continue
            due = loop.time() + max(0.0, arrived + delay - time.time())
            loop.call_at(due, _send, sock, out, addr)

    loop.add_reader(sock.fileno(), readable)


def _send(sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
    try:
        sock.sendto(data, addr)
    except OSError:
        pass


def _icmp_reply(packet: bytes) -> bytes | None:
    data = packet[(packet[0] & 0x0F) * 4 :] if packet else b""  # raw IPv4: skip the IP header
    if len(data) < 8 or data[0] != 8:  # echo request only
        return None
    head = struct.pack("!BBH", 0, 0, 0) + data[4:8]
    body = head + data[8:]
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def main(host: str, tcp_port: int, udp_port: int, delay: float, icmp: bool) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, udp_port))
    _serve(udp, delay, lambda data: data)
    if icmp:
        _serve(socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), delay, _icmp_reply)
    server = await asyncio.start_server(on_tcp, host, tcp_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("tcp_port", type=int)
    ap.add_argument("udp_port", type=int)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds each echo is held back")
    ap.add_argument("--icmp", action="store_true", help="answer ICMP echo requests too")
    a = ap.parse_args()
    asyncio.run(main(a.host, a.tcp_port, a.udp_port, a.delay, a.icmp))
