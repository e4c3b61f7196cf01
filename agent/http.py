"""The agent's HTTP endpoints on a threaded server, apart from the event loop, so a busy loop or
a slow collector never slows a scrape. Handlers only read state snapshots."""

from __future__ import annotations

import contextlib
import gzip
import http
import io
import json
import logging
import os
import queue
import re
import select
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from prometheus_client.core import Metric
from prometheus_client.registry import Collector as PromCollector
from prometheus_client.registry import CollectorRegistry

from agent import __version__
from agent.configtypes import scrub
from agent.exposition import metrics_body
from agent.plugin import HttpRequest, HttpResponse, Route

if TYPE_CHECKING:
    from agent.access import FailureLimiter, RequestLimiter
    from agent.webconfig import BasicAuth, WebConfig, WebConfigSource

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # request bodies (backup pushes are tiny)
MAX_REQUEST_LINE = 8 * 1024  # longer: 414
MAX_HEAD = 16 * 1024  # request line + headers; longer: 431
REQUEST_TIMEOUT = 10.0  # from connect (or the first byte of a keep-alive request) to a whole request
IDLE_TIMEOUT = 60.0  # keep-alive connection with no request in progress
WRITE_TIMEOUT = 10.0  # a response's write: this long, plus its size at MIN_WRITE_RATE
MIN_WRITE_RATE = 64 * 1024  # bytes/s a client must at least read at
MAX_PENDING_OUTPUT = 64 * 2**20  # bytes of responses waiting for slow readers, all connections
WORKERS = 16  # threads running handlers
MAX_CONNECTIONS = 512  # open connections; at the limit the oldest one still sending its request is dropped
# Routes with Route.stream (the exercise board's upload) read their bodies in a worker, at most this
# many at once (a worker each, for as long as the upload takes; the rest answer scrapes).
MAX_STREAMS = 2
STREAM_CHUNK = 256 * 1024
# The floor an upload slot is defended at (bytes/s): when an upload finds every slot taken, a holder
# whose body has come slower than this since its first REQUEST_TIMEOUT of waiting for the client is
# cut, and the newcomer takes its slot. Alone, a slower upload keeps its slot (a remote site's ADSL
# upstream moves 0.5-1 Mbit/s), bounded only by the read timeout and MAX_UPLOAD_SECONDS.
# 1 Mbit/s: half of a 2 Mbit/s remote-site line (docs/security.md, "Slow uploads").
MIN_UPLOAD_RATE = 125_000
# No streamed body is read for longer than this after its request arrived, contended or not: the
# board's largest upload (64 MiB) at 256 kbit/s takes 35 min (2097 s).
MAX_UPLOAD_SECONDS = 40 * 60.0
# A streamed body the handler did not read (a refused upload) is read and thrown away, up to this
# much, so the client sees the answer rather than a reset connection; more, and the connection closes.
DRAIN_MAX = 256 * 2**20
DRAIN_SECONDS = 30.0  # ... and for at most this long

_HEAD_END = re.compile(rb"\r?\n\r?\n")
# What Go's net/http answers, and when: the first five bytes on a TLS port look like plain HTTP.
PLAIN_HTTP_ON_TLS = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
_HTTP_STARTS = (b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header field name (RFC 9110 5.1)


def request_path(target: str) -> tuple[str, str]:
    """The path (percent-decoded) and the query string that the router sees for a request
    target, as http.server hands it over: a leading "//" is one "/" (gh-87389, whatever the
    Python), so "//evil/x" is the path "/evil/x", never a host. ValueError for a target urlsplit
    cannot read (e.g. "http://[x/")."""
    if target.startswith("//"):
        target = "/" + target.lstrip("/")
    parts = urlsplit(target)
    return unquote(parts.path, errors="replace"), parts.query


def security_headers(configured: dict[str, str]) -> dict[str, str]:
    """The headers every response carries: ``nosniff`` and those of the web config."""
    out = {"X-Content-Type-Options": "nosniff"}
    for k, v in configured.items():
        out[next((o for o in out if o.lower() == k.lower()), k)] = v
    return out


class _Handler(BaseHTTPRequestHandler):
    """Parses and answers one request that the I/O loop has already read whole. Not created by
    socketserver: :meth:`HttpServer._work` sets the attributes and calls ``handle_one_request``."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # errors for malformed request lines get a status line
    server_version = f"continuity-agent/{__version__}"
    sys_version = ""
    app: WebApp
    http: HttpServer | None = None
    conn: _Conn | None = None  # a request on a Route.stream route: the body is read from here
    stream_route: Route | None = None  # ... and the route the I/O loop found for it (WebApp.lookup)
    expect_continue = False

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), scrub(format % args))

    def address_string(self) -> str:
        return str(self.client_address[0])

    def _serve(self, method: str) -> None:
        app = self.app
        try:
            path, query = request_path(self.path)
        except ValueError:
            self.close_connection = True
            self._send(HttpResponse(400, b"bad request target\n"))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        length_h = headers.get("content-length", "0") or "0"
        try:
            length = int(length_h)
        except ValueError:
            self._send(HttpResponse(400, b"bad Content-Length\n"))
            return
        streamed = self.conn is not None and self.http is not None
        # One lookup: a streamed body goes to the route the I/O loop found for it, never another.
        route = self.stream_route if streamed else app.lookup(method, path)
        if length < 0 or (length > MAX_BODY and not streamed):
            self.close_connection = True
            self._send(HttpResponse(413, b"request body too large\n"))
            return
        stream: _BodyReader | None = None
        # One of MAX_STREAMS: a worker reads this body from the socket as it arrives. Taken only
        # once the request is authenticated: a client without credentials never takes or sees one.
        needs_slot = slot = False
        if self.conn is not None and self.http is not None:
            needs_slot = len(self.conn.buf) < length
            try:
                stream = _BodyReader(self.conn, length, self.http, self.expect_continue)
            except OSError as e:  # no file descriptor left for its wake-up (EMFILE): busy, not broken
                log.warning("cannot take a request body from %s now: %s", self.client_address[0], e)
                self.close_connection = True
                self._send(HttpResponse(503, b"server busy, try again later\n", headers={"Retry-After": "10"}))
                return
        try:
            req = HttpRequest(
                method=method,
                path=path,
                query=dict(parse_qsl(query)),
                headers=headers,
                body=b"" if stream is not None else (self.rfile.read(length) if length else b""),
                client=str(self.client_address[0]),
                stream=stream,
            )
            try:
                resp = app.admit(req, route)
                if resp is None and needs_slot and self.http is not None and stream is not None:
                    slot = self.http.slots.take(stream)
                    if not slot:
                        busy = b"another upload is being received: try again in a minute\n"
                        resp = HttpResponse(503, busy, headers={"Retry-After": "10"})
                if resp is None:
                    resp = app.route(req, route)
            except Exception:
                log.exception("error serving %s %s", method, scrub(path))
                resp = HttpResponse(500, b"internal error\n")
            # Drained for a client that may send it (not one refused its credentials, nor one
            # refused before it had a slot: closed).
            drain = resp.status not in (401, 429) and (slot or not needs_slot)
            if stream is not None and not stream.finish(drain=drain):
                self.close_connection = True
        finally:
            if slot and self.http is not None and stream is not None:
                self.http.slots.release(stream)
            if stream is not None:
                stream.close()
        self._send(resp, head=(method == "HEAD"))

    def handle_expect_100(self) -> bool:
        # A streamed body is asked for when the handler first reads it (not at all when it is
        # refused from its head); any other body has been read whole already.
        if self.conn is not None:
            self.expect_continue = True
            return True
        return super().handle_expect_100()

    def send_response(self, code: int, message: str | None = None) -> None:
        self._sent_headers: set[str] = set()
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if hasattr(self, "_sent_headers"):
            self._sent_headers.add(keyword.lower())
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        # Every response, http.server's own errors (400, 501, 505 ...) included, carries them.
        for k, v in security_headers(self.app.headers).items():
            if k.lower() not in getattr(self, "_sent_headers", ()):
                self.send_header(k, v)
        super().end_headers()

    def _send(self, resp: HttpResponse, head: bool = False) -> None:
        body = resp.body
        extra = dict(resp.headers)
        encoded = any(k.lower() == "content-encoding" for k in extra)  # /metrics compresses its own
        if not encoded and len(body) > 1024 and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, compresslevel=1)
            extra["Content-Encoding"] = "gzip"
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in extra.items():
                self.send_header(k, v)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


class AuthFailureMetrics(PromCollector):
    """``continuity_http_auth_failures_total`` from the app's two limiters (no I/O)."""

    def __init__(self, app: WebApp) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        from agent.catalogue import running_catalogue

        name = "continuity_http_auth_failures_total"
        m = Metric(name.removesuffix("_total"), running_catalogue()[name].help, "counter")
        for credential, lim in (("basic", self.app.limiter), ("token", self.app.own_auth_limiter)):
            if lim is not None:
                m.add_sample(name, {"credential": credential, "outcome": "failed"}, float(lim.failures))
                m.add_sample(name, {"credential": credential, "outcome": "rate_limited"}, float(lim.refusals))
        return [m] if m.samples else []


def _ts(t: float | None) -> str:
    if not t:
        return "never"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class WebApp:
    """Routes requests; holds no state of its own beyond callables into the agent."""

    def __init__(
        self,
        registry: CollectorRegistry,
        status_json: Callable[[], dict[str, Any]],
        ready: Callable[[], bool],
    ) -> None:
        self.registry = registry
        self.status_json = status_json
        self.ready = ready
        self.routes: list[Route] = []
        # Set from --web.config.file (agent.webconfig): basic auth and response headers.
        self.auth: BasicAuth | None = None
        # Failed basic-auth logins (per address and user, per user, in total) and, apart from
        # them, failed credentials on routes that check their own (the backup push token).
        self.limiter: FailureLimiter | None = None
        self.own_auth_limiter: FailureLimiter | None = None
        self.headers: dict[str, str] = {}
        # rate_limit from the web config: one bucket for all requests, checked before anything else.
        self.request_limiter: RequestLimiter | None = None
        # Re-reads the web config if its files changed; False while they do not make a valid one.
        self.refresh: Callable[[], bool] | None = None

    def set_routes(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)

    # Pages that collectors or features serve, linked from the status page only when configured.
    PAGES = (("/reports/", "Reports"), ("/exercise/", "DR exercises"))

    def page_links(self) -> list[tuple[str, str]]:
        prefixes = {r.prefix for r in self.routes if r.method == "GET"}
        return [(href, label) for href, label in self.PAGES if href in prefixes]

    def dispatch(self, req: HttpRequest) -> HttpResponse:
        """Refresh the web config, apply its request rate limit, authenticate, rate limit
        failures, route (docs/security.md, "Failed logins").

        Basic auth (when configured) applies to every route but those with their own credentials;
        :meth:`BasicAuth.authenticate` answers 401 or 429 and never refuses credentials it has
        verified before from the same address. A route with its own credentials always runs (a right token is never
        refused); its failures (401/403 with an ``Authorization`` header, and 404s) are counted
        by ``own_auth_limiter`` and, once that client is over the limit, answered with 429 -- on
        that route only: they never affect basic auth or any other route."""
        route = self.lookup(req.method, req.path)
        denied = self.admit(req, route)
        return denied if denied is not None else self.route(req, route)

    # The agent's own pages (GET and HEAD); a route's prefix does not take them over.
    OWN_PATHS = ("/metrics", "/-/healthy", "/-/ready", "/api/v1/status", "/")

    def lookup(self, method: str, path: str) -> Route | None:
        """The route that answers ``method`` on ``path``, or None for the agent's own pages (and
        the 404 or 405 when nothing does): a route with its own credentials for its method first,
        then the own pages, then the first route whose prefix matches (a GET route answers HEAD).
        The one lookup of a request: the server's choice to stream a body (``Route.stream``),
        :meth:`admit` and :meth:`route` all take its answer."""
        for r in self.routes:
            if r.own_auth and path.startswith(r.prefix) and method == r.method:
                return r
        if method in ("GET", "HEAD") and path in self.OWN_PATHS:
            return None
        for r in self.routes:
            if path.startswith(r.prefix) and (method == r.method or (r.method == "GET" and method == "HEAD")):
                return r
        return None

    def admit(self, req: HttpRequest, route: Route | None) -> HttpResponse | None:
        """The first half of :meth:`dispatch`, which needs nothing of the body: refresh the web
        config, apply its request rate limit, basic auth (not on a route with its own
        credentials). None when the request may go on to :meth:`route`, else the 500, 401 or 429
        to answer. The server calls it before a streamed body takes an upload slot. ``route``:
        :meth:`lookup`'s answer for the request."""
        if self.refresh is not None and not self.refresh():
            return HttpResponse(500, b"Internal Server Error\n")
        rl = self.request_limiter
        if rl is not None and not rl.allow():
            return HttpResponse(429, b"Too Many Requests\n")
        # A route with its own credentials skips basic auth for its own method only (HEAD on an
        # own-credentials GET route still needs the web config's credentials).
        if self.auth is not None and not (route is not None and route.own_auth and req.method == route.method):
            return self.auth.authenticate(req, self.limiter)
        return None

    def route(self, req: HttpRequest, route: Route | None) -> HttpResponse:
        """The second half of :meth:`dispatch`, for a request :meth:`admit` let through, to
        ``route`` (:meth:`lookup`'s answer; None: the agent's own pages)."""
        if route is None:
            return self._dispatch(req)
        resp = route.handler(req)
        if not route.own_auth:
            return resp
        limiter = self.own_auth_limiter
        failed = resp.status == 404 or (resp.status in (401, 403) and bool(req.headers.get("authorization")))
        if limiter is None or not failed:
            return resp
        wait = limiter.retry_after(req.client)
        if wait > 0:
            from agent.access import too_many

            return too_many(wait)
        limiter.failed(req.client)
        return resp

    def _dispatch(self, req: HttpRequest) -> HttpResponse:
        get = req.method in ("GET", "HEAD")
        if req.path == "/metrics" and get:
            body, content_type, headers = metrics_body(
                self.registry, req.headers.get("accept", ""), req.headers.get("accept-encoding", "")
            )
            return HttpResponse(200, body, content_type, headers=headers)
        if req.path == "/-/healthy" and get:
            return HttpResponse(200, b"Healthy\n")
        if req.path == "/-/ready" and get:
            return HttpResponse(200, b"Ready\n") if self.ready() else HttpResponse(503, b"Not ready\n")
        if req.path == "/api/v1/status" and get:
            body = json.dumps(self.status_json(), indent=1, sort_keys=True).encode()
            return HttpResponse(200, body, "application/json")
        if req.path == "/" and get:
            page = render_status_page(self.status_json(), self.page_links())
            return HttpResponse(200, page.encode(), "text/html; charset=utf-8")
        if any(req.path.startswith(r.prefix) for r in self.routes) or req.path in self.OWN_PATHS:
            return HttpResponse(405, b"method not allowed\n")
        return HttpResponse(404, b"not found\n")


def render_status_page(st: dict[str, Any], links: Iterable[tuple[str, str]] = ()) -> str:
    """The status page (agent/templates/status.html.j2): summary, targets grouped by site with
    collection state and outcome, legend. ``links``: (href, label) of configured extra pages."""
    from agent.outcomes import LEGEND
    from agent.reports.render import environment

    groups: dict[str, list[dict[str, Any]]] = {}
    for t in st.get("targets", []):
        groups.setdefault(str(t.get("site", "")), []).append(t)
    env = environment()
    env.filters.setdefault("stamp", _ts)
    return env.get_template("status.html.j2").render(
        st=st,
        groups=sorted(groups.items()),
        legend=LEGEND,
        links=[{"href": h, "label": label} for h, label in links],
        now=time.time(),
    )


class _Conn:
    """One client connection, owned by the I/O loop while reading and by a worker while answered."""

    __slots__ = (
        "addr", "buf", "deadline", "error", "fd", "keep", "opened", "out", "out_pos", "request", "route", "sans",
        "sock", "state", "streamed", "wake_at",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, addr: Any, state: str, now: float, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.state = state  # "sniff" | "handshake" | "head" | "idle" | "busy" | "write"
        self.sans: tuple[str, ...] | None = None  # client_allowed_sans of the config it started under
        self.wake_at = 0.0  # "sniff" with a partial first line: look again then
        self.buf = b""
        self.request = b""
        self.streamed = False  # the request's body is read by its handler, from buf and then the socket
        self.route: Route | None = None  # ... the Route.stream route that handler is (HttpServer._streamed)
        self.error: tuple[int, str] | None = None
        self.keep = False  # set by the worker: keep the connection open for another request
        self.out = memoryview(b"")  # the rest of a response the client has not read yet
        self.out_pos = 0
        self.opened = now
        self.deadline = deadline


def frame_request(buf: bytes, streamed: Callable[[bytes], bool] | None = None) -> tuple[str, int, str]:
    """Find one whole request at the start of ``buf``: ("need", 0, ""), ("ok", length, "") or
    ("error", status, message). Only framing; the request itself is parsed by http.server. With
    ``streamed`` (called with the request line), a request it says yes to is ("stream", length
    of the head, ""): its handler reads the body itself. A body of at most MAX_BODY (a form) is
    all in ``buf`` first, as any other, unless the client waits for "100 Continue": it needs no
    worker while it arrives, nor one of the MAX_STREAMS upload slots."""
    if buf[:1] < b" " and buf[:1] not in (b"\r", b"\n"):
        return "error", 400, "not an HTTP request (TLS to the plain-HTTP port?)"
    m = _HEAD_END.search(buf, 0, MAX_HEAD + 4)
    first_nl = buf.find(b"\n", 0, MAX_REQUEST_LINE + 2)
    if first_nl < 0 and len(buf) > MAX_REQUEST_LINE:
        return "error", 414, "request line too long"
    if m is None:
        if len(buf) > MAX_HEAD:
            return "error", 431, "request header fields too large"
        return "need", 0, ""
    if m.end() > MAX_HEAD:
        return "error", 431, "request header fields too large"
    length: int | None = None
    expect = False
    for line in buf[: m.start()].split(b"\n")[1:]:
        line = line.removesuffix(b"\r")
        if line[:1] in (b" ", b"\t"):  # obs-fold: parsers disagree on it (RFC 9112 5.2)
            return "error", 400, "folded header lines are not accepted"
        name, sep, value = line.partition(b":")
        if not sep or not name or not _TOKEN.fullmatch(name):  # e.g. "Content-Length : 5" (RFC 9112 5.1)
            return "error", 400, "malformed header line"
        name = name.lower()
        if name == b"transfer-encoding":
            return "error", 501, "Transfer-Encoding is not supported; send Content-Length"
        if name == b"content-length":
            v = value.strip()
            if not v.isdigit() or len(v) > 12 or (length is not None and int(v) != length):
                return "error", 400, "bad Content-Length"
            length = int(v)
        if name == b"expect":
            expect = value.strip().lower() == b"100-continue"
    if streamed is not None and streamed(buf[: buf.find(b"\n")].rstrip(b"\r")):
        small = length is None or (length <= MAX_BODY and not expect)
        return ("need", 0, "") if small and len(buf) < m.end() + (length or 0) else ("stream", m.end(), "")
    if length is not None and length > MAX_BODY:
        return "error", 413, "request body too large"
    total = m.end() + (length or 0)
    if len(buf) < total:
        return "need", 0, ""
    return "ok", total, ""


class _BodyReader:
    """:attr:`HttpRequest.stream`: the body of a request on a streamed route, Content-Length
    bytes, first those the I/O loop read past the head, then from the socket, in the worker. A
    client has ``request_timeout`` for each read and ``max_upload_seconds`` for the whole body: a
    silent sender gets TimeoutError after ``request_timeout``, any body at the latter. However
    slowly it comes, an upload keeps its slot as long as nobody else needs one; an upload that
    finds every slot taken may cut this one (:meth:`cut`, :class:`_Slots`) if it has fallen
    behind ``min_upload_rate`` (:meth:`behind`), and the next read raises TimeoutError."""

    def __init__(self, conn: _Conn, length: int, server: HttpServer, expect_continue: bool) -> None:
        self.length = length
        self._left = length
        self._conn = conn
        self._timeout = server.request_timeout
        self._rate = server.min_upload_rate
        self._limit = server.max_upload_seconds
        # Seconds spent waiting for the client's bytes so far, and since when it is waiting now
        # (None: not waiting); one tuple, so another thread reads a consistent pair (behind()).
        self._clock: tuple[float, float | None] = (0.0, None)
        self._deadline = time.monotonic() + self._limit
        within = f"{self._limit / 60:g} min" if self._limit % 60 == 0 else f"{self._limit:g} s"
        self._late = f"the request body did not arrive within {within}"
        self._cut = False  # set by another upload's worker (cut): the next read refuses
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # ... and wakes a read waiting
        self._poll = select.poll()  # a read waits for the socket (registered as it needs) or the cut
        self._poll.register(self._wake, select.POLLIN)
        self._continue = expect_continue  # the client waits for "100 Continue" before sending

    def behind(self, now: float) -> float:
        """How many seconds the body is behind ``min_upload_rate``, counting only the time spent
        waiting for the client beyond its first ``request_timeout``: positive once the server has
        waited ``t`` seconds and had fewer than ``(t - request_timeout) * min_upload_rate`` bytes.
        Read by another thread (:class:`_Slots`)."""
        waited, since = self._clock
        if since is not None:
            waited += now - since
        return waited - self._timeout - (self.length - self._left) / self._rate

    @property
    def arriving(self) -> bool:
        """Some of the body is still to be read (cutting it now would cut something)."""
        return self._left > 0 and not self._cut

    def cut(self, behind: float) -> None:
        """Refuse the rest of the body (``behind`` seconds behind the rate): another upload takes
        the slot. Called from another thread, while this reader holds its slot (so before
        :meth:`close`); wakes this one's read at once, which raises. The connection stays usable
        for the answer, under TLS too."""
        self._cut = True
        log.info("http %s: upload cut for another one after %d of %d bytes, %.1f s behind %g Mbit/s",
                 self._conn.addr[0], self.length - self._left, self.length, behind, self._rate * 8 / 1e6)  # fmt: skip
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        """The request is answered: nothing more is read (nor cut)."""
        with contextlib.suppress(OSError):
            os.close(self._wake)

    def read(self, n: int, /) -> bytes:
        if self._left <= 0 or n <= 0:
            return b""
        if self._cut:
            raise TimeoutError(self._too_slow())
        n = min(n, self._left, STREAM_CHUNK)
        conn = self._conn
        if conn.buf:
            out, conn.buf = conn.buf[:n], conn.buf[n:]
        else:
            sock = conn.sock
            if self._continue:
                self._continue = False
                sock.settimeout(self._timeout)
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            out = self._recv(sock, n)
            if not out:
                raise ConnectionError("the client closed the connection before sending the whole body")
        self._left -= len(out)
        return out

    def _recv(self, sock: socket.socket, n: int) -> bytes:
        """Up to ``n`` bytes from the client, as soon as there are any (non-blocking reads, then
        waiting for the socket or a :meth:`cut`); the time it takes is time waited for the client."""
        start = time.monotonic()
        if start >= self._deadline:
            raise TimeoutError(self._late)
        until = min(start + self._timeout, self._deadline)
        self._clock = (self._clock[0], start)
        try:
            sock.settimeout(0.0)
            while not self._cut:
                try:
                    return sock.recv(n)  # TLS: what is already decrypted first
                except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                    mask = select.POLLIN
                except ssl.SSLWantWriteError:
                    mask = select.POLLOUT
                now = time.monotonic()
                if now >= until:
                    if until == self._deadline:
                        raise TimeoutError(self._late)
                    raise TimeoutError(f"nothing of the request body came for {self._timeout:g} s")
                self._poll.register(sock.fileno(), mask)
                self._poll.poll(int((until - now) * 1000) + 1)
            raise TimeoutError(self._too_slow())
        finally:
            self._clock = (self._clock[0] + time.monotonic() - start, None)

    def _too_slow(self) -> str:
        return (
            f"the request body arrived slower than {self._rate * 8 / 1e6:g} Mbit/s while another upload "
            "was waiting for its slot"
        )

    def finish(self, drain: bool = True) -> bool:
        """After the handler: read what it left of the body and throw it away (so the client
        reads the answer instead of a reset), up to DRAIN_MAX. False if the connection cannot be
        used for another request."""
        if self._left <= 0:
            return True
        if not drain or self._continue or self._cut or self._left > DRAIN_MAX:  # not asked for, or too much: close
            return False
        if time.monotonic() + DRAIN_SECONDS < self._deadline:
            self._deadline = time.monotonic() + DRAIN_SECONDS
            self._late = "the request body was not sent in time"
        try:
            while self._left > 0:
                self.read(STREAM_CHUNK)
        except OSError:
            return False
        return True


class _Slots:
    """The MAX_STREAMS upload slots (a worker each while its body arrives). A slot is held as
    long as its upload takes, however slowly it comes, while nobody else needs one. An upload
    that finds them all taken cuts the holder furthest behind ``min_upload_rate``
    (:meth:`_BodyReader.behind`) and takes its slot once that one's worker lets it go; if no
    holder is behind, it is refused (503). Holders are readers, compared by identity."""

    def __init__(self, n: int, handover: float) -> None:
        self._n = n
        self._handover_wait = handover  # how long a newcomer waits for the slot it freed
        self._cond = threading.Condition()
        self._held: set[_BodyReader] = set()
        self._heirs: dict[_BodyReader, _BodyReader] = {}  # a cut holder -> who gets its slot

    def take(self, reader: _BodyReader) -> bool:
        """A slot for ``reader``: at once if one is free, after cutting a holder that is behind,
        or False."""
        with self._cond:
            if len(self._held) < self._n:
                self._held.add(reader)
                return True
            now = time.monotonic()
            lag = {h: h.behind(now) for h in self._held if h not in self._heirs and h.arriving}
            victim = max((h for h in lag if lag[h] > 0), key=lag.__getitem__, default=None)
            if victim is None:
                return False
            self._heirs[victim] = reader
            victim.cut(lag[victim])
            if self._cond.wait_for(lambda: reader in self._held, self._handover_wait):
                return True
            if self._heirs.get(victim) is reader:  # the cut one has not let go in time: give up the claim
                del self._heirs[victim]
            return False

    def release(self, reader: _BodyReader) -> None:
        with self._cond:
            self._held.discard(reader)
            heir = self._heirs.pop(reader, None)
            if heir is not None:
                self._held.add(heir)
                self._cond.notify_all()


class _Writer:
    """``wfile`` for the handler: collects the response; the worker sends what the socket takes
    at once and leaves the rest to the I/O loop, so a client that does not read never holds a
    worker."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass


class HttpServer:
    """HTTP(S) server with bounded resources: one I/O thread accepts connections, does TLS
    handshakes without blocking and reads each request whole (with size limits and a deadline),
    then hands it to a pool of up to ``workers`` threads, each started when a request finds no
    worker waiting (an idle agent keeps one or two); a request to a ``Route.stream`` route goes
    once its head is in: its handler reads the body, at most ``MAX_STREAMS`` at once. A thousand
    slow or silent clients cost a socket and a small buffer each, never a thread, and cannot delay
    a scrape."""

    def __init__(
        self,
        app: WebApp,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        *,
        workers: int = WORKERS,
        max_connections: int = MAX_CONNECTIONS,
        allowed_sans: tuple[str, ...] | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        min_write_rate: float = MIN_WRITE_RATE,
        max_pending_output: int = MAX_PENDING_OUTPUT,
        min_upload_rate: float = MIN_UPLOAD_RATE,
        max_upload_seconds: float = MAX_UPLOAD_SECONDS,
    ) -> None:
        self.app = app
        self.request_timeout = request_timeout
        self.min_upload_rate = min_upload_rate
        self.max_upload_seconds = max_upload_seconds
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.min_write_rate = min_write_rate
        self.max_pending_output = max_pending_output
        self._pending_output = 0  # bytes in _Conn.out of connections in state "write" (I/O thread)
        self.ssl_context = ssl_context
        self.allowed_sans = allowed_sans
        # Called for each new connection: re-reads the web config (new certificate) if its files
        # changed; False while they do not make a valid config, and the connection is refused.
        self.refresh: Callable[[], bool] | None = None
        self.max_connections = max_connections
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._lsock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._lsock.bind((host, port))
            self._lsock.listen(128)
        except OSError:
            self._lsock.close()
            raise
        self._lsock.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._lsock, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._conns: dict[int, _Conn] = {}
        self._returned: queue.SimpleQueue[_Conn] = queue.SimpleQueue()
        self._sniffing: dict[int, _Conn] = {}  # first bytes so far could be plain HTTP: look again soon
        self._work: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self.slots = _Slots(MAX_STREAMS, handover=request_timeout)  # streamed bodies being read now
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="http", daemon=True)
        self._max_workers = max(1, workers)
        self._workers: list[threading.Thread] = []  # started by the I/O thread, as requests need them
        self._idle = threading.Semaphore(0)  # released by a worker each time it waits for work again

    @property
    def port(self) -> int:
        return int(self._lsock.getsockname()[1])

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for _ in self._workers:
            self._work.put(None)
        for w in self._workers:
            if w.is_alive():
                w.join(timeout=5)
        for c in list(self._conns.values()):
            self._close(c)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(self._lsock)
        self._lsock.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- I/O loop ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopping:
            try:
                events = self._sel.select(timeout=0.02 if self._sniffing else 0.25)
            except OSError:  # pragma: no cover - selector closed under us
                return
            for key, _mask in events:
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                else:
                    conn = key.data
                    if isinstance(conn, _Conn) and conn.fd in self._conns:
                        self._guarded(self._on_event, conn)
            while True:
                try:
                    conn = self._returned.get_nowait()
                except queue.Empty:
                    break
                self._guarded(self._resume, conn)
            if self._sniffing:
                now = time.monotonic()
                for c in [c for c in self._sniffing.values() if now >= c.wake_at]:
                    del self._sniffing[c.fd]
                    if c.fd in self._conns:
                        self._guarded(self._sniff, c)
            self._sweep()

    def _guarded(self, step: Callable[[_Conn], None], conn: _Conn) -> None:
        """One connection's turn in the I/O loop: whatever goes wrong in it closes that connection
        (logged once), never the loop that serves all the others."""
        try:
            step(conn)
        except Exception as e:
            log.error("http %r: closing the connection after an internal error: %s %r",
                      str(conn.addr[0]), type(e).__name__, scrub(str(e)))  # fmt: skip
            log.debug("http: internal error", exc_info=True)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(conn.sock)
            self._close(conn)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                sock, addr = self._lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and friends: drop the backlog rather than spin
                log.warning("http: cannot accept connection: %s", e)
                return
            now = time.monotonic()
            if len(self._conns) >= self.max_connections and not self._evict_one():
                sock.close()
                continue
            sock.setblocking(False)
            if self.ssl_context is not None:
                # Plain HTTP first gets Go's 400; TLS is set up once the first bytes say it is not that.
                conn = _Conn(sock, addr, "sniff", now, now + self.request_timeout)
            else:
                conn = _Conn(sock, addr, "head", now, now + self.request_timeout)
            self._conns[conn.fd] = conn
            self._sel.register(sock, selectors.EVENT_READ, conn)

    def _evict_one(self) -> bool:
        """At the connection limit: close the oldest connection not being answered."""
        waiting = [c for c in self._conns.values() if c.state != "busy"]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: (c.state != "idle", c.opened))  # idle keep-alives first
        self._close(victim)
        return True

    def _sweep(self) -> None:
        now = time.monotonic()
        for c in [c for c in self._conns.values() if c.state != "busy" and now > c.deadline]:
            log.debug("http %s: closing connection (no whole request in time)", c.addr[0])
            self._close(c)

    def _close(self, conn: _Conn) -> None:
        if self._conns.pop(conn.fd, None) is not None and conn.state == "write":
            self._pending_output -= len(conn.out)
            conn.out = memoryview(b"")
        self._sniffing.pop(conn.fd, None)
        if conn.state != "busy":
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._sel.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _sniff(self, conn: _Conn) -> None:
        """A new connection to the TLS port: answer plain HTTP as Go does, else start TLS with the
        web config in force now (re-read if its files changed)."""
        raw = conn.sock
        try:
            first = raw.recv(5, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not first:
            self._close(conn)
            return
        if len(first) < 5 and any(h.startswith(first) for h in _HTTP_STARTS):
            conn.wake_at = time.monotonic() + 0.02  # not yet decidable; do not spin on it
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(raw)
            self._sniffing[conn.fd] = conn
            return
        if first in _HTTP_STARTS:
            self._refuse_plain_http(conn)
            return
        if self.refresh is not None and not self.refresh():
            self._close(conn)  # the web config on disk is broken: serve nothing (as Go's toolkit)
            return
        ctx = self.ssl_context
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(raw)
        self._conns.pop(conn.fd, None)
        try:
            if ctx is None:
                raise ssl.SSLError("TLS is off")
            conn.sock = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        conn.sans = self.allowed_sans
        conn.state = "handshake"
        self._conns[conn.fd] = conn
        self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        self._on_event(conn)

    def _refuse_plain_http(self, conn: _Conn) -> None:
        sock = conn.sock
        with contextlib.suppress(OSError):
            for _ in range(16):  # read what was sent, so that closing sends FIN, not a reset
                if not sock.recv(65536):
                    break
        with contextlib.suppress(OSError):
            sock.send(PLAIN_HTTP_ON_TLS)
            sock.shutdown(socket.SHUT_WR)
        log.debug("http %s: plain HTTP to the TLS port; answered 400", conn.addr[0])
        self._close(conn)

    def _on_event(self, conn: _Conn) -> None:
        if conn.state == "write":
            self._write(conn)
            return
        if conn.state == "sniff":
            self._sniff(conn)
            return
        if conn.state == "handshake":
            sock = conn.sock
            assert isinstance(sock, ssl.SSLSocket)
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                self._sel.modify(sock, selectors.EVENT_READ, conn)
                return
            except ssl.SSLWantWriteError:
                self._sel.modify(sock, selectors.EVENT_WRITE, conn)
                return
            except (ssl.SSLError, OSError) as e:
                log.debug("http %s: TLS handshake failed: %s", conn.addr[0], e)
                self._close(conn)
                return
            from agent.webconfig import peer_san_allowed

            if conn.sans is not None and not peer_san_allowed(sock.getpeercert(), conn.sans):
                log.warning("http %s: client certificate has none of the allowed SANs", conn.addr[0])
                self._close(conn)
                return
            conn.state = "head"
            self._sel.modify(sock, selectors.EVENT_READ, conn)
        self._read(conn)

    def _read(self, conn: _Conn) -> None:
        sock = conn.sock
        limit = MAX_HEAD + MAX_BODY + 4096
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                break
            except (ssl.SSLError, OSError):
                self._close(conn)
                return
            if not data:
                self._close(conn)
                return
            if conn.state == "idle":
                conn.state = "head"
                conn.deadline = time.monotonic() + self.request_timeout
            conn.buf += data
            if len(conn.buf) > limit or not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                break
        self._try_dispatch(conn)

    def _try_dispatch(self, conn: _Conn) -> None:
        if not conn.buf:
            return
        found: list[Route] = []

        def streamed(request_line: bytes) -> bool:
            route = self._streamed(request_line)
            found[:] = [route] if route is not None else []
            return route is not None

        verdict, n, msg = frame_request(conn.buf, streamed)
        if verdict == "need":
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(conn.sock)
        if verdict == "error":
            conn.error = (n, msg)
            conn.buf = b""
        else:
            conn.request, conn.buf = conn.buf[:n], conn.buf[n:]
            conn.streamed = verdict == "stream"
            conn.route = found[0] if conn.streamed else None
        conn.state = "busy"
        self._work.put(conn)
        if not self._idle.acquire(blocking=False) and len(self._workers) < self._max_workers:
            w = threading.Thread(target=self._worker, name=f"http-{len(self._workers)}", daemon=True)
            try:
                w.start()
            except RuntimeError as e:  # no thread to be had now: the running workers take the request
                log.error("http: cannot start a worker thread: %s", e)
                return
            self._workers.append(w)

    def _streamed(self, request_line: bytes) -> Route | None:
        """The route that reads the request's body itself (Route.stream), if the request goes to
        one (:meth:`WebApp.lookup`); the worker answers with that very route."""
        words = request_line.decode("latin-1").split()  # as http.server splits it
        if len(words) != 3:
            return None
        method, target = words[:2]
        try:
            path = request_path(target)[0]
        except ValueError:  # answered 400 by the worker
            return None
        route = self.app.lookup(method, path)
        return route if route is not None and route.stream else None

    def _resume(self, conn: _Conn) -> None:
        """A worker answered a request: send the rest of the response if the client has not read
        it all yet, then wait for the next request on a keep-alive connection."""
        if conn.fd not in self._conns or self._stopping:
            self._close(conn)
            return
        rest = len(conn.out) - conn.out_pos
        if rest > 0:
            if self._pending_output + len(conn.out) > self.max_pending_output:
                log.warning("http %s: dropping a slow reader (%d bytes of responses already waiting)",
                            conn.addr[0], self._pending_output)  # fmt: skip
                self._close(conn)
                return
            try:
                self._sel.register(conn.sock, selectors.EVENT_WRITE, conn)
            except (OSError, ValueError, KeyError):
                self._close(conn)
                return
            conn.state = "write"
            conn.deadline = time.monotonic() + self.write_timeout + rest / self.min_write_rate
            self._pending_output += len(conn.out)
            return
        self._next_request(conn)

    def _write(self, conn: _Conn) -> None:
        """The client can take more of the response (I/O loop, non-blocking)."""
        try:
            while conn.out_pos < len(conn.out):
                conn.out_pos += conn.sock.send(conn.out[conn.out_pos : conn.out_pos + 65536])
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except (ssl.SSLError, OSError):
            self._close(conn)
            return
        self._pending_output -= len(conn.out)
        conn.out, conn.out_pos = memoryview(b""), 0
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._sel.unregister(conn.sock)
        conn.state = "busy"  # between states: not registered, not swept
        self._next_request(conn)

    def _next_request(self, conn: _Conn) -> None:
        if not conn.keep:
            self._close(conn)
            return
        try:
            self._sel.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError, KeyError):
            self._close(conn)
            return
        now = time.monotonic()
        if conn.buf:
            conn.state = "head"
            conn.deadline = now + self.request_timeout
            self._try_dispatch(conn)
        else:
            conn.state = "idle"
            conn.deadline = now + self.idle_timeout
            if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                self._read(conn)

    # -- workers ---------------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            conn = self._work.get()
            if conn is None:
                return
            keep = False
            try:
                keep = self._answer(conn)
            except Exception:
                log.exception("http %s: error answering request", conn.addr[0])
            conn.keep = keep
            self._returned.put(conn)  # only the I/O thread touches the connection table
            self._wake()

    def _answer(self, conn: _Conn) -> bool:
        """Answer one request; True if the connection stays open for another. The response goes
        out as far as the socket takes it now; the I/O loop sends the rest (:meth:`_write`)."""
        try:
            data, keep = self._respond(conn)
        finally:
            # This worker takes the next request once it has sent what the socket takes now (no
            # waiting): a client that sends its next request on this response finds it.
            self._idle.release()
        sock = conn.sock
        view = memoryview(data)
        pos = 0
        try:
            sock.setblocking(False)
            while pos < len(view):
                pos += sock.send(view[pos : pos + 65536])
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except (ssl.SSLError, OSError):
            return False
        conn.out, conn.out_pos = view, pos
        return keep

    def _respond(self, conn: _Conn) -> tuple[bytes, bool]:
        """The whole response to one request, and whether the connection stays open."""
        if conn.error is not None:
            status, msg = conn.error
            body = (msg + "\n").encode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in security_headers(self.app.headers).items())
            head = (
                f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                f"Server: {_Handler.server_version}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
            ).encode()
            log.debug("http %s: %d %s", conn.addr[0], status, msg)
            return head + body, False
        h = _Handler.__new__(_Handler)
        h.app = self.app
        if conn.streamed:
            h.http, h.conn, h.stream_route = self, conn, conn.route
            conn.streamed, conn.route = False, None
        h.request = conn.sock
        h.connection = conn.sock
        h.client_address = conn.addr
        h.rfile = io.BytesIO(conn.request)
        writer = _Writer()
        h.wfile = writer  # type: ignore[assignment]
        h.close_connection = True
        h.handle_one_request()
        conn.request = b""
        return bytes(writer.data), not h.close_connection


def use_web_config(
    app: WebApp, server: HttpServer, source: WebConfigSource, also: Callable[[WebConfig], None] | None = None
) -> None:
    """Serve under the web config that ``source`` keeps current: its certificate and client
    checks for each new connection, its users, headers and request rate limit for each request.
    While its files do not make a valid config, the last valid one stays in force."""

    def apply(wc: WebConfig) -> None:
        if wc.ssl_context is not None:
            server.ssl_context = wc.ssl_context
            server.allowed_sans = wc.allowed_sans
        if wc.auth is not None and app.auth is not None and wc.auth is not app.auth:
            wc.auth.keep_verified(app.auth)  # a scraper stays verified (and so never limited)
        app.auth = wc.auth
        app.headers = dict(wc.headers)
        app.request_limiter = source.limiter
        if also is not None:
            also(wc)

    def ok() -> bool:
        return source.get() is not None

    source.on_change = apply
    if source.current is not None:
        apply(source.current)
    app.refresh = server.refresh = ok
