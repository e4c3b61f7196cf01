"""One route lookup per request on the agent's real HTTP server (loopback): whether a body is
streamed to its handler (``Route.stream``) is decided by the very lookup that picks the handler
(:meth:`WebApp.lookup`), so the two never disagree -- with overlapping prefixes the first route
that matches answers, with its own body limit; a streamed route never takes over the agent's own
pages; a GET route that streams answers HEAD as the router sends it there."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from agent.http import MAX_BODY, HttpServer, WebApp
from agent.plugin import HttpRequest, HttpResponse, Route
from tests.integration.test_http_stream import _response

pytestmark = pytest.mark.integration


def _small(req: HttpRequest) -> HttpResponse:
    """A route that takes its body whole (at most MAX_BODY)."""
    return HttpResponse(200, f"small {len(req.body)} {req.stream is not None}".encode())


def _digest(req: HttpRequest) -> HttpResponse:
    assert req.stream is not None
    h, n = hashlib.sha256(), 0
    while chunk := req.stream.read(65536):
        h.update(chunk)
        n += len(chunk)
    return HttpResponse(200, f"stream {n} {h.hexdigest()[:12]}".encode())


@pytest.fixture
def server() -> Iterator[HttpServer]:
    app = WebApp(CollectorRegistry(), lambda: {"targets": [], "site": "hq"}, lambda: True)
    app.set_routes(
        [
            Route("POST", "/a/", _small),  # listed first: it answers /a/b too
            Route("POST", "/a/b", _digest, stream=True),
            Route("POST", "/up", _digest, stream=True),
            Route("GET", "/", _digest, stream=True),  # a catch-all that streams: not the own pages
        ]
    )
    srv = HttpServer(app, "127.0.0.1", 0, request_timeout=2.0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _ask(server: HttpServer, method: str, path: str, body: bytes, length: int | None = None) -> tuple[int, bytes]:
    n = len(body) if length is None else length
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n".encode() + body)
        return _response(s.makefile("rb"))


def test_the_route_that_answers_is_the_one_whose_body_rule_applies(server: HttpServer) -> None:
    # /a/b matches "/a/" first: that route answers, with its body whole (not streamed past it).
    assert _ask(server, "POST", "/a/b", b"hello") == (200, b"small 5 False")
    assert _ask(server, "POST", "/a/b", b"x" * MAX_BODY) == (200, f"small {MAX_BODY} False".encode())
    # ... and its limit: a larger body is refused from its head, not streamed to a handler that takes it whole.
    assert _ask(server, "POST", "/a/b", b"", length=MAX_BODY + 1)[0] == 413
    # A route that streams, alone on its prefix, reads past the limit.
    body = b"y" * (3 * MAX_BODY)
    assert _ask(server, "POST", "/up", body) == (
        200,
        f"stream {len(body)} {hashlib.sha256(body).hexdigest()[:12]}".encode(),
    )


def test_the_own_pages_are_never_streamed_and_head_follows_get(server: HttpServer) -> None:
    status, body = _ask(server, "GET", "/-/healthy", b"")
    assert (status, body) == (200, b"Healthy\n")
    # A body on an own page is held to the limit of every body the server reads whole.
    assert _ask(server, "GET", "/-/healthy", b"", length=MAX_BODY + 1)[0] == 413
    # The catch-all GET route answers HEAD as the router sends it there: its body streams to it.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        body = b"z" * (2 * MAX_BODY)
        s.sendall(f"HEAD /other HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        f = s.makefile("rb")
        assert f.readline().split()[1] == b"200"


def test_no_descriptor_for_a_streamed_body_is_a_503_and_the_server_serves_on(
    server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of file descriptors (EMFILE, which a real client cannot make happen on demand) when a
    streamed body needs its wake-up descriptor: that request gets a 503 to retry, nothing else
    breaks."""
    import agent.http as http_mod

    def no_fd(*_a: object) -> int:
        raise OSError(24, "Too many open files")

    big = b"x" * (MAX_BODY + 1)
    with monkeypatch.context() as m:
        m.setattr(http_mod.os, "eventfd", no_fd)
        status, body = _ask(server, "POST", "/up", big)
    assert (status, body) == (503, b"server busy, try again later\n")
    status, body = _ask(server, "POST", "/up", big)
    assert status == 200 and body.startswith(f"stream {len(big)} ".encode())


def test_head_on_an_own_credentials_get_route_still_needs_basic_auth() -> None:
    """A route with its own credentials skips the web config's basic auth for its own method
    only: HEAD, which the router sends to a GET route, is not let through without them."""

    class Refuse:
        def authenticate(self, req: HttpRequest, limiter: object) -> HttpResponse | None:
            return HttpResponse(401, b"Unauthorized\n")

    app = WebApp(CollectorRegistry(), lambda: {"targets": [], "site": "hq"}, lambda: True)
    app.auth = Refuse()  # type: ignore[assignment]
    own = Route("GET", "/push/", _small, own_auth=True)
    app.set_routes([own])
    for method, expect in (("GET", None), ("HEAD", 401)):
        req = HttpRequest(method=method, path="/push/x", query={}, headers={}, body=b"", client="127.0.0.1")
        route = app.lookup(method, "/push/x")
        assert route is own
        resp = app.admit(req, route)
        assert (resp.status if resp is not None else None) == expect, method
