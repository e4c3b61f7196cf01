"""``--web.config.file``: TLS, mutual TLS, basic auth and response headers, in the format of the
Prometheus exporter-toolkit, so one file serves node_exporter and this agent::

    tls_server_config:
      cert_file: agent.crt          # relative paths are relative to this file
      key_file: agent.key
      client_auth_type: RequireAndVerifyClientCert   # optional mutual TLS
      client_ca_file: clients-ca.crt
      min_version: TLS12            # TLS10 .. TLS13, default TLS12
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2y$10$...        # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

Failed logins are rate limited per client address (429 with ``Retry-After``); bcrypt runs only
for clients that are not blocked, and successful checks are cached so a scrape does not pay the
bcrypt cost every time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import logging
import ssl
import stat
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collectors.base import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go crypto/tls names (as in the exporter-toolkit) -> OpenSSL names. TLS 1.3 suites cannot be
# restricted in Go either; they are accepted and always enabled.
CIPHER_SUITES: dict[str, str] = {
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
CURVES = {"CurveP256", "CurveP384", "CurveP521", "X25519"}

# Response headers the exporter-toolkit lets a web config set.
ALLOWED_HEADERS = (
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
)

ClientAuthType = Literal[
    "NoClientCert",
    "RequestClientCert",
    "RequireAnyClientCert",
    "RequireClientCert",
    "VerifyClientCertIfGiven",
    "RequireAndVerifyClientCert",
]

# bcrypt of a random string, checked for unknown users so that a wrong user name costs as much
# time as a wrong password (no user enumeration by timing). Same idea as the exporter-toolkit.
_DUMMY_HASH = b"$2b$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"


class WebConfigError(Exception):
    """A web config the agent cannot use; the message is one line naming the file and key."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TLSServerConfig(_Model):
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: ClientAuthType | Literal[""] = ""
    client_ca_file: str = ""
    client_allowed_sans: list[str] | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13", ""] = ""
    cipher_suites: list[str] | None = None
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] | None = None

    @field_validator("cipher_suites")
    @classmethod
    def _ciphers(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if name not in CIPHER_SUITES and name not in TLS13_SUITES:
                raise ValueError(f"unknown cipher suite {name!r}")
        return v

    @field_validator("curve_preferences")
    @classmethod
    def _curves(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if name not in CURVES:
                raise ValueError(f"unknown curve {name!r} (one of {', '.join(sorted(CURVES))})")
        return v


class HTTPServerConfig(_Model):
    http2: bool = True  # accepted for compatibility; the agent speaks HTTP/1.1
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        allowed = {h.lower(): h for h in ALLOWED_HEADERS}
        out = {}
        for name, value in v.items():
            canon = allowed.get(name.lower())
            if canon is None:
                raise ValueError(f"header {name!r} cannot be set (allowed: {', '.join(ALLOWED_HEADERS)})")
            if any(c in value for c in "\r\n\x00"):
                raise ValueError(f"header {name!r}: value contains a line break")
            out[canon] = value
        return out


class WebConfigModel(_Model):
    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig | None = None
    basic_auth_users: dict[str, str] | None = None

    @field_validator("basic_auth_users")
    @classmethod
    def _users(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for user, h in (v or {}).items():
            if not user or ":" in user:
                raise ValueError(f"user name {user!r} is empty or contains ':'")
            if not _looks_like_bcrypt(h):
                raise ValueError(f"user {user!r}: password must be a bcrypt hash ($2a$, $2b$ or $2y$), not plain text")
        return v


def _looks_like_bcrypt(h: Any) -> bool:
    if not isinstance(h, str) or len(h) != 60 or h[:4] not in ("$2a$", "$2b$", "$2y$") or h[6] != "$":
        return False
    return h[4:6].isdigit() and 4 <= int(h[4:6]) <= 31


@dataclass
class WebConfig:
    """A loaded web config: what the HTTP server needs."""

    path: Path
    model: WebConfigModel
    ssl_context: ssl.SSLContext | None
    auth: BasicAuth | None
    headers: dict[str, str] = field(default_factory=dict)
    allowed_sans: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def parse_web_config(text: str | bytes, path: Path) -> WebConfigModel:
    """Parse and validate the file's text (no file access). Raises :class:`WebConfigError`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise WebConfigError(f"{path}: invalid YAML: {where}{problem}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise WebConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{path}: web config must be a YAML mapping")
    try:
        model = WebConfigModel.model_validate(data)
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        msg = err["msg"].removeprefix("Value error, ")
        extra = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise WebConfigError(f"{path}: {_format_loc(tuple(err['loc']))}: {msg}{extra}") from None
    tls = model.tls_server_config
    if tls is not None and (tls.cert_file or tls.key_file):
        if not tls.cert_file:
            raise WebConfigError(f"{path}: tls_server_config.cert_file: missing (key_file is set)")
        if not tls.key_file:
            raise WebConfigError(f"{path}: tls_server_config.key_file: missing (cert_file is set)")
        if tls.max_version and TLS_VERSIONS[tls.max_version] < TLS_VERSIONS[tls.min_version]:
            raise WebConfigError(f"{path}: tls_server_config.max_version: lower than min_version")
        auth_type = tls.client_auth_type or "NoClientCert"
        if tls.client_ca_file and auth_type == "NoClientCert":
            raise WebConfigError(
                f"{path}: tls_server_config.client_auth_type: client_ca_file is set without a client auth policy"
            )
        if auth_type in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
            raise WebConfigError(
                f"{path}: tls_server_config.client_auth_type: {auth_type} (client certificates accepted without "
                "verification) is not supported by this agent; use VerifyClientCertIfGiven or "
                "RequireAndVerifyClientCert with client_ca_file"
            )
        if auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not tls.client_ca_file:
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file: required by {auth_type}")
        if tls.client_allowed_sans and auth_type == "NoClientCert":
            raise WebConfigError(f"{path}: tls_server_config.client_allowed_sans: needs a client_auth_type")
    elif tls is not None and (tls.client_ca_file or tls.client_auth_type not in ("", "NoClientCert")):
        raise WebConfigError(f"{path}: tls_server_config.cert_file: client certificates need TLS (cert_file, key_file)")
    return model


def _resolve(base: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else base / path


def build_ssl_context(model: TLSServerConfig, base: Path, path: Path) -> tuple[ssl.SSLContext, list[str]]:
    warnings: list[str] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[model.min_version]
    if model.max_version:
        ctx.maximum_version = TLS_VERSIONS[model.max_version]
    cert, key = _resolve(base, model.cert_file), _resolve(base, model.key_file)
    for key_name, p in (("cert_file", cert), ("key_file", key)):
        if not p.is_file():
            raise WebConfigError(f"{path}: tls_server_config.{key_name}: cannot read {p}: no such file")
    try:
        if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
            warnings.append(f"{path}: tls_server_config.key_file: {key} is readable by others; chmod 600 it")
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise WebConfigError(
            f"{path}: tls_server_config: cannot load certificate/key ({cert}, {key}): {reason}"
        ) from None
    if model.cipher_suites:
        names = [CIPHER_SUITES[c] for c in model.cipher_suites if c in CIPHER_SUITES]
        if names:
            try:
                ctx.set_ciphers(":".join(names))
            except ssl.SSLError:
                raise WebConfigError(
                    f"{path}: tls_server_config.cipher_suites: none of these suites is available in OpenSSL"
                ) from None
    if model.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if model.curve_preferences:
        warnings.append(f"{path}: tls_server_config.curve_preferences: ignored (OpenSSL's defaults are used)")
    auth_type = model.client_auth_type or "NoClientCert"
    if auth_type != "NoClientCert":
        ca = _resolve(base, model.client_ca_file)
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file: cannot load {ca}: {reason}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if auth_type == "RequireAndVerifyClientCert" else ssl.CERT_OPTIONAL
    return ctx, warnings


def load_web_config(path: str | Path) -> WebConfig:
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise WebConfigError(f"{p}: cannot read web config: {e.strerror or e}") from None
    model = parse_web_config(text, p)
    base = p.parent.resolve()
    ctx = None
    warnings: list[str] = []
    sans: tuple[str, ...] = ()
    tls = model.tls_server_config
    if tls is not None and tls.cert_file:
        ctx, warnings = build_ssl_context(tls, base, p)
        sans = tuple(tls.client_allowed_sans or ())
    auth = BasicAuth(model.basic_auth_users) if model.basic_auth_users else None
    headers = dict(model.http_server_config.headers) if model.http_server_config else {}
    return WebConfig(p, model, ctx, auth, headers, sans, tuple(warnings))


def peer_san_allowed(cert: dict[str, Any] | None, allowed: tuple[str, ...]) -> bool:
    """Whether a verified client certificate carries one of the allowed subject alternative names."""
    if not allowed:
        return True
    if not cert:
        return False
    names = {str(v) for _k, v in cert.get("subjectAltName", ())}
    return any(a in names for a in allowed)


# -- basic auth ------------------------------------------------------------------------------------


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes. Verified (user, password) pairs are
    cached (as a SHA-256 of hash and password, never the password itself) so that each scrape
    does not pay for bcrypt."""

    CACHE_SIZE = 256

    def __init__(self, users: dict[str, str]) -> None:
        self.users = {u: h.encode() for u, h in users.items()}
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, header: str | None) -> str | None:
        """The user name if ``header`` carries valid credentials, else None."""
        if not header:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        user, sep, password = raw.partition(":")
        if not sep or len(password) > 1024:
            return None
        hashed = self.users.get(user)
        pw = password.encode()
        if hashed is None:
            bcrypt.checkpw(pw[:72], _DUMMY_HASH)  # same cost as a wrong password
            return None
        key = hashlib.sha256(hashed + b"\0" + pw).digest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return user
        try:
            ok = bcrypt.checkpw(pw[:72], hashed) and len(pw) <= 72
        except ValueError:
            ok = False
        if not ok:
            return None
        with self._lock:
            self._cache[key] = None
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return user

    def __call__(self, req: HttpRequest) -> HttpResponse | None:
        if self.check(req.headers.get("authorization")) is not None:
            return None
        return HttpResponse(401, b"Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="continuity-agent"'})


class FailureLimiter:
    """Token bucket per client address for failed authentication: ``burst`` failures at once,
    then one every ``1/rate`` seconds. A blocked client gets 429 before any password check."""

    def __init__(self, burst: float = 10.0, rate: float = 0.2, max_clients: int = 4096, clock: Any = time.monotonic):
        self.burst = burst
        self.rate = rate
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # ip -> (tokens, at)
        self._lock = threading.Lock()

    @staticmethod
    def _key(client: str) -> str:
        # IPv6 clients are limited per /64: one host usually has the whole prefix.
        try:
            ip = ipaddress.ip_address(client)
        except ValueError:
            return client
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it is not blocked."""
        key = self._key(client)
        with self._lock:
            if key not in self._buckets:
                return 0.0
            tokens = self._tokens(key, self.clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def failed(self, client: str) -> None:
        key = self._key(client)
        with self._lock:
            now = self.clock()
            tokens = max(0.0, self._tokens(key, now) - 1.0)
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warnings(host: str, web: WebConfig | None) -> list[str]:
    """What to warn about at start-up for a listen address and web config."""
    if is_loopback(host):
        return []
    where = host or "all addresses"
    if web is None or (not web.tls and web.auth is None):
        return [
            f"listening on {where} without TLS or authentication: anyone who can reach this port can read "
            "the metrics, status and reports; set --web.config.file"
        ]
    out = []
    if web.auth is not None and not web.tls:
        out.append(f"listening on {where} with basic auth over plain HTTP: passwords cross the network in clear")
    return out
