"""The probe collector against real servers on loopback."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.collect import assert_declared, collect, value, write_config
from tests.helpers.common import free_port, unavailable
from tests.helpers.httpserve import serve_http

HEAD = "agent: {site: hq, state_dir: state}\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/auth":
            want = "Basic " + base64.b64encode(b"probe:pw-for-probe-42").decode()
            code = 200 if self.headers.get("Authorization") == want else 401
        elif self.path.startswith("/status/"):
            code = int(self.path.rsplit("/", 1)[1])
        else:
            code = 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def http_server() -> Iterator[int]:
    with serve_http(_Handler) as port:
        yield port


def _self_signed(tmp_path: Path) -> tuple[Path, Path, dt.datetime]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    not_after = dt.datetime(2031, 6, 1, 12, 0, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cp, kp = tmp_path / "cert.pem", tmp_path / "key.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cp, kp, not_after


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[int, Path, dt.datetime]]:
    cp, kp, not_after = _self_signed(tmp_path)
    with serve_http(_Handler, tls=(cp, kp)) as port:
        yield port, cp, not_after


def test_tcp_open_and_closed(tmp_path: Path, http_server: int) -> None:
    closed = free_port()
    cfg = write_config(
        tmp_path,
        HEAD
        + f"""targets:
  - {{name: open, kind: probe, module: tcp, host: 127.0.0.1, port: {http_server}}}
  - {{name: closed, kind: probe, module: tcp, host: 127.0.0.1, port: {closed}}}
""",
    )
    r = collect(cfg, "open")
    assert r.ok and value(r, "continuity_probe_success") == 1.0
    assert 0 < (value(r, "continuity_probe_duration_seconds") or 0) < 5
    assert_declared(r)
    r = collect(cfg, "closed")
    assert r.ok and value(r, "continuity_probe_success") == 0.0
    assert r.partial_errors[0][0] == "unreachable"


def test_http_status_expected_and_not(tmp_path: Path, http_server: int) -> None:
    cfg = write_config(
        tmp_path,
        HEAD
        + f"""targets:
  - {{name: ok, kind: probe, module: http, url: "http://127.0.0.1:{http_server}/"}}
  - {{name: err, kind: probe, module: http, url: "http://127.0.0.1:{http_server}/status/503"}}
  - {{name: moved, kind: probe, module: http, url: "http://127.0.0.1:{http_server}/status/301",
      expected_status: [301, 302]}}
""",
    )
    r = collect(cfg, "ok")
    assert value(r, "continuity_probe_success") == 1.0 and value(r, "continuity_probe_http_status_code") == 200
    assert_declared(r)
    r = collect(cfg, "err")
    assert value(r, "continuity_probe_success") == 0.0 and value(r, "continuity_probe_http_status_code") == 503
    assert r.partial_errors[0][0] == "http_status"
    r = collect(cfg, "moved")
    assert value(r, "continuity_probe_success") == 1.0


def test_http_basic_auth_from_secret_file(tmp_path: Path, http_server: int) -> None:
    (tmp_path / "pw").write_text("pw-for-probe-42\n")
    (tmp_path / "pw").chmod(0o600)
    (tmp_path / "bad").write_text("wrong\n")
    (tmp_path / "bad").chmod(0o600)
    cfg = write_config(
        tmp_path,
        HEAD
        + f"""auths:
  good: {{type: http_basic, username: probe, password_file: pw}}
  bad: {{type: http_basic, username: probe, password_file: bad}}
targets:
  - {{name: a, kind: probe, module: http, url: "http://127.0.0.1:{http_server}/auth", auth: good}}
  - {{name: b, kind: probe, module: http, url: "http://127.0.0.1:{http_server}/auth", auth: bad}}
""",
    )
    assert value(collect(cfg, "a"), "continuity_probe_http_status_code") == 200
    r = collect(cfg, "b")
    assert value(r, "continuity_probe_http_status_code") == 401
    assert "pw-for-probe-42" not in str(r.partial_errors)


def test_https_cert_expiry_and_verification(tmp_path: Path, https_server: tuple[int, Path, dt.datetime]) -> None:
    port, cert, not_after = https_server
    cfg = write_config(
        tmp_path,
        HEAD
        + f"""targets:
  - {{name: noverify, kind: probe, module: http, url: "https://localhost:{port}/", tls_verify: false}}
  - {{name: verify, kind: probe, module: http, url: "https://localhost:{port}/"}}
  - {{name: ca, kind: probe, module: http, url: "https://localhost:{port}/", ca_file: {cert}}}
""",
    )
    r = collect(cfg, "noverify")
    assert value(r, "continuity_probe_success") == 1.0
    assert value(r, "continuity_probe_tls_cert_expiry_timestamp_seconds") == not_after.timestamp()
    assert_declared(r)
    r = collect(cfg, "verify")
    assert value(r, "continuity_probe_success") == 0.0
    assert r.partial_errors[0][0] == "tls"
    r = collect(cfg, "ca")
    assert value(r, "continuity_probe_success") == 1.0


def test_http_server_that_never_answers_times_out_as_a_measurement(tmp_path: Path) -> None:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)  # accepts TCP (kernel backlog) but never answers HTTP
    port = lsock.getsockname()[1]
    try:
        cfg = write_config(
            tmp_path,
            HEAD
            + f"""targets:
  - {{name: hang, kind: probe, module: http, url: "http://127.0.0.1:{port}/", timeout: 1s}}
""",
        )
        r = collect(cfg, "hang")
        assert r.ok
        assert value(r, "continuity_probe_success") == 0.0
        assert r.partial_errors[0][0] == "timeout"
        assert r.duration < 1.0
    finally:
        lsock.close()


def test_icmp_loopback(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        HEAD
        + """targets:
  - {name: lo, kind: probe, module: icmp, host: 127.0.0.1, count: 3}
""",
    )
    r = collect(cfg, "lo")
    if not r.ok:
        assert r.reason == "icmp_not_permitted" and "ping_group_range" in (r.message or "")
        unavailable("ICMP not permitted for this user (root or ping_group_range needed)")
    assert value(r, "continuity_probe_success") == 1.0


def test_echoed_basic_auth_is_scrubbed_everywhere(tmp_path: Path) -> None:
    """Issue 19 (low): a server that echoes the probe's ``Authorization: Basic ...`` line put the
    base64 credentials into /api/v1/status, the status page and state.db (only the raw password
    was scrubbed)."""
    import contextlib
    import time

    from tests.helpers.common import agent_process, http_get, wait_until

    password = "echo-Pw-7731-secret"
    token = base64.b64encode(f"probe:{password}".encode()).decode()
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(0.2)
    stop = threading.Event()

    def echo() -> None:  # answers with the request's Authorization line where a status line goes
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                line = next((h for h in data.split(b"\r\n") if h.lower().startswith(b"authorization:")), b"")
                conn.sendall(line + b"\r\n\r\n")

    th = threading.Thread(target=echo, daemon=True)
    th.start()
    (tmp_path / "pw").write_text(password + "\n")
    (tmp_path / "pw").chmod(0o600)
    cfg = write_config(
        tmp_path,
        HEAD
        + f"""defaults: {{interval: 1s, timeout: 1s}}
auths:
  echo: {{type: http_basic, username: probe, password_file: pw}}
targets:
  - {{name: echo, kind: probe, module: http, url: "http://127.0.0.1:{lsock.getsockname()[1]}/", auth: echo}}
""",
    )
    try:
        with agent_process(cfg) as agent:
            wait_until(lambda: b"not an HTTP reply" in http_get(agent.url + "/api/v1/status")[1], 20, what="probe run")
            time.sleep(1.5)  # a few more runs, so the result reaches the database
            pages = {p: http_get(agent.url + p)[1] for p in ("/api/v1/status", "/", "/metrics")}
            log = agent.log().encode()
    finally:
        stop.set()
        th.join()
        lsock.close()
    assert b"Authorization: Basic <secret>" in pages["/api/v1/status"]  # the echo did arrive
    db = b"".join(p.read_bytes() for p in (tmp_path / "state").iterdir() if p.name.startswith("state.db"))
    assert b"not an HTTP reply" in db
    for where, text in {**pages, "state.db": db, "log": log}.items():
        for needle in (token, token[8:], password, base64.b64encode(password.encode()).decode()[:-2]):
            assert needle.encode() not in text, (where, needle)
