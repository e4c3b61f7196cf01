"""Loopback HTTP(S) servers for probes to reach, in tests and benchmarks: one handler that says
``ok`` and one way to serve a handler on a free port in a thread."""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path


class OkHandler(http.server.BaseHTTPRequestHandler):
    """200 ``ok`` to every GET; logs nothing."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@contextlib.contextmanager
def serve_http(
    handler: type[http.server.BaseHTTPRequestHandler] = OkHandler,
    *,
    tls: tuple[Path, Path] | None = None,
    backlog: int = 128,
) -> Iterator[int]:
    """``handler`` on 127.0.0.1 (HTTPS with ``tls`` = (certificate, key) files), in a thread; yields
    the port and shuts the server down on exit. ``backlog``: connections the kernel may queue."""
    server_class = type("Server", (_Server,), {"request_queue_size": backlog})
    srv = server_class(("127.0.0.1", 0), handler)
    if tls is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*tls)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()
