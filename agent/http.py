"""The agent's HTTP endpoints on a threaded server, apart from the event loop, so a busy loop or
a slow collector never slows a scrape. Handlers only read state snapshots."""

from __future__ import annotations

import gzip
import html
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from agent import __version__
from agent.configtypes import scrub
from collectors.base import HttpRequest, HttpResponse, Route

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_HEADER_LINE = 8 * 1024
REQUEST_TIMEOUT = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], app: WebApp) -> None:
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.app = app
        super().__init__(addr, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = f"continuity-agent/{__version__}"
    sys_version = ""
    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s %s", self.address_string(), scrub(format % args))

    def _serve(self, method: str) -> None:
        app = self.server.app
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        length_h = headers.get("content-length", "0") or "0"
        try:
            length = int(length_h)
        except ValueError:
            self._send(HttpResponse(400, b"bad Content-Length\n"))
            return
        if length < 0 or length > MAX_BODY:
            self._send(HttpResponse(413, b"request body too large\n"))
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        req = HttpRequest(
            method=method,
            path=unquote(parts.path),
            query=dict(parse_qsl(parts.query)),
            headers=headers,
            body=body,
            client=self.client_address[0],
        )
        try:
            resp = app.dispatch(req)
        except Exception:
            log.exception("error serving %s %s", method, parts.path)
            resp = HttpResponse(500, b"internal error\n")
        self._send(resp, head=(method == "HEAD"))

    def _send(self, resp: HttpResponse, head: bool = False) -> None:
        body = resp.body
        extra = dict(resp.headers)
        if len(body) > 1024 and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body = gzip.compress(body, compresslevel=1)
            extra["Content-Encoding"] = "gzip"
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in extra.items():
                self.send_header(k, v)
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
        self.auth: Callable[[HttpRequest], HttpResponse | None] | None = None

    def set_routes(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)

    def dispatch(self, req: HttpRequest) -> HttpResponse:
        if self.auth is not None:
            denied = self.auth(req)
            if denied is not None:
                return denied
        get = req.method in ("GET", "HEAD")
        if req.path == "/metrics" and get:
            encoder, content_type = choose_encoder(req.headers.get("accept", ""))
            return HttpResponse(200, encoder(self.registry), content_type)
        if req.path == "/-/healthy" and get:
            return HttpResponse(200, b"Healthy\n")
        if req.path == "/-/ready" and get:
            return HttpResponse(200, b"Ready\n") if self.ready() else HttpResponse(503, b"Not ready\n")
        if req.path == "/api/v1/status" and get:
            body = json.dumps(self.status_json(), indent=1, sort_keys=True).encode()
            return HttpResponse(200, body, "application/json")
        if req.path == "/" and get:
            return HttpResponse(200, render_status_page(self.status_json()).encode(), "text/html; charset=utf-8")
        for r in self.routes:
            if req.path.startswith(r.prefix):
                if req.method != r.method and not (r.method == "GET" and req.method == "HEAD"):
                    continue
                return r.handler(req)
        if any(req.path.startswith(r.prefix) for r in self.routes) or req.path in (
            "/metrics",
            "/-/healthy",
            "/-/ready",
            "/api/v1/status",
            "/",
        ):
            return HttpResponse(405, b"method not allowed\n")
        return HttpResponse(404, b"not found\n")


def render_status_page(st: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for t in st.get("targets", []):
        state = t.get("state", "unknown")
        rows.append(
            "<tr>"
            f"<td>{e(t['name'])}</td><td>{e(t['kind'])}</td><td>{e(t['site'])}</td>"
            f"<td class='{e(state)}'>{e(state.upper())}</td>"
            f"<td>{e(_ts(t.get('last_success')))}</td>"
            f"<td>{e(_ts(t.get('last_run')))}</td>"
            f"<td>{e(str(t.get('last_error') or ''))}</td>"
            "</tr>"
        )
    body = "\n".join(rows) or "<tr><td colspan='7'>No targets configured.</td></tr>"
    reload_ok = st.get("config", {}).get("last_reload_successful", True)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>continuity-agent — {e(st.get("site", ""))}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a1a1a}}
table{{border-collapse:collapse;width:100%}}th,td{{border:1px solid #999;padding:.3rem .5rem;text-align:left}}
th{{background:#eee}}.up{{color:#0a5d00;font-weight:bold}}.down{{color:#a00000;font-weight:bold}}
.pending{{color:#5a4a00}}
</style></head><body>
<h1>continuity-agent</h1>
<p>Version {e(__version__)} · site <strong>{e(st.get("site", ""))}</strong> ·
config {e(st.get("config", {}).get("path", ""))}
{"" if reload_ok else ' · <strong class="down">LAST RELOAD FAILED — old config still running</strong>'}</p>
<p><a href="/metrics">Metrics</a> · <a href="/api/v1/status">Status (JSON)</a> ·
<a href="/reports/">Reports</a></p>
<h2>Targets</h2>
<table><thead><tr><th scope="col">Target</th><th scope="col">Collector</th><th scope="col">Site</th>
<th scope="col">State</th><th scope="col">Last success</th><th scope="col">Last run</th>
<th scope="col">Last error</th></tr></thead>
<tbody>
{body}
</tbody></table>
<p>Generated {e(_ts(time.time()))}.</p>
</body></html>
"""


class HttpServer:
    def __init__(self, app: WebApp, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.app = app
        self._server = _Server((host, port), _Handler, app)
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
