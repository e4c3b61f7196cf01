"""The web config while serving, on loopback: a renewed certificate is served on the next
connection with no signal, plain HTTP to the TLS port gets Go's 400 (not a reset),
``prefer_server_cipher_suites`` decides whose order wins, ``RequireAnyClientCert`` takes an
unverified certificate and still checks ``client_allowed_sans``, ``rate_limit`` answers 429."""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import time
from pathlib import Path

import pytest
import yaml

from agent.http import PLAIN_HTTP_ON_TLS
from agent.webconfig import CIPHER_SUITES
from tests.helpers.tls import Pki, bcrypt_hash, make_pki, web_server


def _write(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _tls(pki: Pki, **extra: object) -> dict[str, object]:
    return {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), **extra}


def _connect(port: int, *, cert: tuple[Path, Path] | None = None, ciphers: str = "") -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test compares the server certificate itself
    if cert:
        ctx.load_cert_chain(*cert)
    if ciphers:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost")


def _get(sock: ssl.SSLSocket, auth: str = "") -> int:
    sock.sendall(f"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n".encode())
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return int(data.split(b" ", 2)[1])


def _der(p: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(p.read_text())


def test_renewed_certificate_is_served_on_the_next_connection(tmp_path: Path) -> None:
    old, new = make_pki(tmp_path / "old"), make_pki(tmp_path / "new")
    crt, key = tmp_path / "server.crt", tmp_path / "server.key"
    crt.write_bytes(old.server_cert.read_bytes())
    key.write_bytes(old.server_key.read_bytes())
    key.chmod(0o600)
    web = _write(tmp_path / "web.yml", {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}})
    with web_server(web) as port:
        assert isinstance(port, int)
        kept = _connect(port)  # a connection open across the renewal keeps its certificate
        assert kept.getpeercert(binary_form=True) == _der(old.server_cert)
        # Renewal as certbot does it: new files renamed into place. No signal.
        for src, dst in ((new.server_cert, crt), (new.server_key, key)):
            tmp = dst.with_suffix(".new")
            tmp.write_bytes(src.read_bytes())
            os.replace(tmp, dst)
        with _connect(port) as s:
            assert s.getpeercert(binary_form=True) == _der(new.server_cert)
            assert _get(s) == 200
        assert _get(kept) == 200
        kept.close()
        # Rewritten in place (same inode), too.
        crt.write_bytes(old.server_cert.read_bytes())
        key.write_bytes(old.server_key.read_bytes())
        with _connect(port) as s:
            assert s.getpeercert(binary_form=True) == _der(old.server_cert)
        # A certificate that does not match its key (mid-renewal): the last valid pair is served
        # until the key follows (exporter-toolkit would fail the handshakes meanwhile).
        crt.write_bytes(new.server_cert.read_bytes())
        with _connect(port) as s:
            assert s.getpeercert(binary_form=True) == _der(old.server_cert)
            assert _get(s) == 200
        key.write_bytes(new.server_key.read_bytes())
        with _connect(port) as s:
            assert s.getpeercert(binary_form=True) == _der(new.server_cert)


def test_plain_http_to_the_tls_port_gets_gos_400(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    web = _write(tmp_path / "web.yml", {"tls_server_config": _tls(pki)})
    with web_server(web) as port:
        for chunks in ([b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"], [b"GE", b"T / HTTP/1.0\r\n\r\n"]):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                for c in chunks:
                    s.sendall(c)
                    time.sleep(0.1)
                answer = b""
                while chunk := s.recv(4096):  # ends with FIN: a reset would raise here
                    answer += chunk
            assert answer == PLAIN_HTTP_ON_TLS
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        assert r.status == 400 and r.read() == b"Client sent an HTTP request to an HTTPS server.\n"
        with _connect(port) as s:  # and TLS still works
            assert _get(s) == 200


@pytest.mark.parametrize(("prefer", "chosen"), [(True, "AES128"), (False, "AES256")])
def test_prefer_server_cipher_suites_decides_whose_order_wins(tmp_path: Path, prefer: bool, chosen: str) -> None:
    pki = make_pki(tmp_path / "pki")
    suites = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]
    tls = _tls(pki, cipher_suites=suites, prefer_server_cipher_suites=prefer, max_version="TLS12")
    web = _write(tmp_path / "web.yml", {"tls_server_config": tls})
    client_order = ":".join(CIPHER_SUITES[s] for s in reversed(suites))  # the client prefers AES-256
    with web_server(web) as port, _connect(port, ciphers=client_order) as s:
        cipher = s.cipher()
        assert cipher is not None and f"-{chosen}-" in cipher[0]


def test_require_any_client_cert_checks_sans_of_unverified_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = _tls(pki, client_auth_type="RequireAnyClientCert", client_allowed_sans=["prometheus.example"])
    web = _write(tmp_path / "web.yml", {"tls_server_config": tls})
    with web_server(web) as port:
        with _connect(port, cert=(pki.client_cert, pki.client_key)) as s:
            assert _get(s) == 200
        for cert in (None, (pki.other_client_cert, pki.other_client_key)):  # none; no allowed SAN
            with pytest.raises((ssl.SSLError, ConnectionError, IndexError)):
                _get(_connect(port, cert=cert))


def test_rate_limit_is_one_bucket_for_all_requests(tmp_path: Path) -> None:
    web = _write(
        tmp_path / "web.yml",
        {"rate_limit": {"interval": "1m", "burst": 3}, "basic_auth_users": {"u": bcrypt_hash("pw")}},
    )
    good = "Basic " + base64.b64encode(b"u:pw").decode()
    with web_server(web) as port:
        statuses = []
        for i in range(5):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/-/healthy", headers={"Authorization": good} if i % 2 else {})
            statuses.append(conn.getresponse().status)
            conn.close()
        assert statuses == [401, 200, 401, 429, 429]


def test_empty_allowed_sans_allow_no_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = _tls(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(pki.ca), client_allowed_sans=[])
    with web_server(_write(tmp_path / "web.yml", {"tls_server_config": tls})) as port:
        with pytest.raises((ssl.SSLError, ConnectionError, IndexError)):  # as Go: nothing matches
            _get(_connect(port, cert=(pki.client_cert, pki.client_key)))
