"""Throw-away PKI for TLS tests: a CA, a server certificate for 127.0.0.1/localhost and client
certificates, written as PEM files (keys mode 0600)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(path, 0o600)


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path  # signed by a different CA
    other_client_key: Path


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", ca_key, "test-ca", ca_key, ca=True)
    (d / "ca.crt").write_bytes(ca.public_bytes(pem))
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert(
        "localhost",
        srv_key,
        "test-ca",
        ca_key,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    (d / "server.crt").write_bytes(srv.public_bytes(pem))
    _write_key(d / "server.key", srv_key)
    cl_key = ec.generate_private_key(ec.SECP256R1())
    cl = _cert("prometheus", cl_key, "test-ca", ca_key, sans=[x509.DNSName("prometheus.example")])
    (d / "client.crt").write_bytes(cl.public_bytes(pem))
    _write_key(d / "client.key", cl_key)
    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("intruder", other_key, "other-ca", other_ca_key)
    (d / "other.crt").write_bytes(other.public_bytes(pem))
    _write_key(d / "other.key", other_key)
    return Pki(
        d, d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key",
        d / "other.crt", d / "other.key",
    )  # fmt: skip


def bcrypt_hash(password: str, rounds: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


@contextmanager
def web_server(config: Path | None) -> Iterator[int | str]:
    """The agent's web-config loading and HTTP server on 127.0.0.1, wired as the running agent
    wires them (``agent.http.use_web_config``), serving the agent's own endpoints. Yields the port,
    or "refused" when the web config is refused (after checking the error is one line naming it)."""
    from prometheus_client import CollectorRegistry

    from agent.access import FailureLimiter
    from agent.http import HttpServer, WebApp, use_web_config
    from agent.webconfig import WebConfigError, WebConfigSource, load_web_config

    wc = None
    if config is not None:
        try:
            wc = load_web_config(config)
        except WebConfigError as e:
            assert "\n" not in str(e) and str(config) in str(e)
            yield "refused"
            return
    app = WebApp(CollectorRegistry(), dict, lambda: True)
    app.limiter = FailureLimiter()
    server = HttpServer(app, "127.0.0.1", 0, wc.ssl_context if wc else None, workers=2)
    if wc is not None:
        use_web_config(app, server, WebConfigSource(wc))
    server.start()
    try:
        yield server.port
    finally:
        server.stop()
