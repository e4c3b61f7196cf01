"""A TCP listener and an RFC 862 UDP echo service, for link bursts in a test namespace.

python tests/helpers/echo_server.py BIND_IP TCP_PORT UDP_PORT
"""

from __future__ import annotations

import asyncio
import sys


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def main(host: str, tcp_port: int, udp_port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Echo, local_addr=(host, udp_port))
    server = await asyncio.start_server(on_tcp, host, tcp_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
