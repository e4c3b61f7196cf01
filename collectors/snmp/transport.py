"""One UDP socket per address family for every v2c target, replies matched by request-id.

The socket is an asyncio DatagramProtocol on the agent's event loop. A reply is accepted only
when its request-id is outstanding *and* it comes from the address the request went to; other
datagrams are dropped and counted. A datagram from a target address that cannot even be read
far enough to find a request-id fails that address's outstanding requests with
:class:`MalformedReply`, so a device that answers garbage is reported as such, not as a timeout.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable
from typing import Any

from collectors.snmp.ber import MalformedReply, Response, decode_header, decode_response

Addr = tuple[str, int]


class RequestTimeout(Exception):
    """No valid reply after all retries."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: V2cTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # ICMP errors on an unconnected socket: no address
        self.owner.socket_errors += 1


class V2cTransport:
    def __init__(self) -> None:
        self._endpoints: dict[int, asyncio.DatagramTransport] = {}
        self._opening: dict[int, asyncio.Future[asyncio.DatagramTransport]] = {}
        self._pending: dict[int, tuple[asyncio.Future[Response], Addr]] = {}
        self._by_addr: dict[Addr, set[int]] = {}
        self._next_id = random.randint(1, 0x3FFFFFFF)
        self.stray = 0
        self.socket_errors = 0
        self.sent = 0
        self.received = 0

    async def _endpoint(self, family: int) -> asyncio.DatagramTransport:
        ep = self._endpoints.get(family)
        if ep is not None:
            return ep
        fut = self._opening.get(family)
        if fut is None:
            loop = asyncio.get_running_loop()
            fut = self._opening[family] = loop.create_future()
            try:
                local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), local_addr=local, family=family
                )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                    except OSError:
                        pass
                self._endpoints[family] = transport
                fut.set_result(transport)
            except BaseException as e:
                fut.set_exception(e)
                del self._opening[family]
                fut.exception()  # mark retrieved
                raise
        return await asyncio.shield(fut)

    def _new_id(self) -> int:
        rid = self._next_id
        while rid in self._pending:
            rid = rid % 0x7FFFFFFE + 1
        self._next_id = rid % 0x7FFFFFFE + 1
        return rid

    def _received(self, data: bytes, addr: Addr) -> None:
        self.received += 1
        try:
            _v, _ptag, rid, _pos = decode_header(data)
        except MalformedReply as e:
            ids = self._by_addr.get(addr)
            if not ids:
                self.stray += 1
                return
            for i in list(ids):
                fut = self._pending[i][0]
                if not fut.done():
                    fut.set_exception(MalformedReply(str(e)))
            return
        entry = self._pending.get(rid)
        if entry is None or entry[1] != addr:
            self.stray += 1
            return
        fut = entry[0]
        if fut.done():
            return
        try:
            fut.set_result(decode_response(data))
        except MalformedReply as e:
            fut.set_exception(e)

    async def request(
        self, addr: Addr, family: int, build: Callable[[int], bytes], *, timeout: float, retries: int
    ) -> Response:
        """Send ``build(request_id)`` to ``addr``; resend the same datagram on timeout."""
        ep = await self._endpoint(family)
        loop = asyncio.get_running_loop()
        rid = self._new_id()
        payload = build(rid)
        fut: asyncio.Future[Response] = loop.create_future()
        self._pending[rid] = (fut, addr)
        self._by_addr.setdefault(addr, set()).add(rid)
        attempts = 1
        handle: asyncio.TimerHandle | None = None

        def on_timer() -> None:
            nonlocal attempts, handle
            if fut.done():
                return
            if attempts > retries:
                fut.set_exception(RequestTimeout(f"no reply after {attempts} attempt(s) of {timeout:g}s"))
                return
            attempts += 1
            ep.sendto(payload, addr)
            self.sent += 1
            handle = loop.call_later(timeout, on_timer)

        ep.sendto(payload, addr)
        self.sent += 1
        handle = loop.call_later(timeout, on_timer)
        try:
            return await fut
        finally:
            if handle is not None:
                handle.cancel()
            del self._pending[rid]
            ids = self._by_addr.get(addr)
            if ids is not None:
                ids.discard(rid)
                if not ids:
                    del self._by_addr[addr]

    def close(self) -> None:
        for ep in self._endpoints.values():
            ep.close()
        self._endpoints.clear()
        self._opening.clear()
