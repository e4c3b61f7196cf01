"""``--web.config.file``: TLS, mutual TLS, basic auth, response headers and a request rate limit,
in the format of the Prometheus exporter-toolkit, so one file serves node_exporter and this agent::

    tls_server_config:
      cert_file: agent.crt          # relative paths are relative to this file (or inline: cert, key)
      key_file: agent.key
      client_auth_type: RequireAndVerifyClientCert   # optional mutual TLS
      client_ca_file: clients-ca.crt                 # default: the system's roots, as in Go
      min_version: TLS12            # TLS10 .. TLS13, default TLS12
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    rate_limit: {interval: 100ms, burst: 20}          # all requests, as the toolkit's limiter
    basic_auth_users:
      prometheus: $2y$10$...        # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

The file is checked as the exporter-toolkit checks it (the same files are accepted and refused),
and it and the files it names are re-read when they change: :class:`WebConfigSource` is asked
for every connection and request, so a renewed certificate is served on the next connection.

Failed logins are rate limited per (address, user), per user and in total (429 with
``Retry-After``, see :class:`agent.access.FailureLimiter`); bcrypt runs only for clients that are not blocked,
and successful checks are cached so a scrape does not pay the bcrypt cost every time and a
scraper with the right password is never refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator

from agent.access import FailureLimiter, RequestLimiter, client_key, too_many
from agent.durations import DurationError, parse_go_duration
from agent.openssl import GROUPS, OpenSSLUnavailable, accept_any_client_cert, set_groups
from agent.plugin import HttpRequest, HttpResponse
from agent.yamlfile import FileInputError, parse_yaml, read_file, validate

log = logging.getLogger(__name__)

TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# The suites Go's crypto/tls lists in tls.CipherSuites() (its secure ones), by the names the
# exporter-toolkit matches, -> OpenSSL names. Go's insecure suites (3DES, CBC_SHA256, RC4) and
# alias names are unknown to the toolkit, and so here.
CIPHER_SUITES: dict[str, str] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# TLS 1.3 suites: accepted; Go (and so the agent) does not let a config restrict them.
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
# Go's net/http refuses to serve HTTP/2 over TLS 1.2 unless one of these is allowed.
HTTP2_REQUIRED_SUITES = ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
CURVES = tuple(GROUPS)

# Response headers a web config may set, and the values allowed where the toolkit enumerates them
# (names and values compared exactly, as the toolkit does).
ALLOWED_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

# client_auth_type -> (ask for a certificate, require one, verify it). RequireClientCert is the
# toolkit's old name for RequireAnyClientCert.
CLIENT_AUTH: dict[str, tuple[bool, bool, bool]] = {
    "": (False, False, False),
    "NoClientCert": (False, False, False),
    "RequestClientCert": (True, False, False),
    "RequireAnyClientCert": (True, True, False),
    "RequireClientCert": (True, True, False),
    "VerifyClientCertIfGiven": (True, False, True),
    "RequireAndVerifyClientCert": (True, True, True),
}

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.S)


class WebConfigError(Exception):
    """A web config the agent cannot use; the message is one line naming the file and key."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


def _none_is_empty(v: Any) -> Any:
    return "" if v is None else v  # Go's YAML decoder leaves a string empty for null


class TLSServerConfig(_Model):
    cert: str = Field(
        "",
        description="The server certificate (with any intermediates) as inline PEM, instead of `cert_file`. "
        "As soon as any TLS key is set, one of `cert`/`cert_file` and one of `key`/`key_file` are needed; "
        "without any TLS key the agent serves plain HTTP.",
    )
    key: SecretStr = Field(
        SecretStr(""),
        description="The server's private key as inline PEM, instead of `key_file`; held as a secret and handed "
        "to OpenSSL through an in-memory file on Linux, never written to disk. An encrypted key is refused "
        "(the format has no key password).",
    )
    client_ca: str = Field(
        "",
        description="CA certificates (inline PEM) that verify client certificates, instead of `client_ca_file`.",
    )
    cert_file: str = Field("", description="PEM file of the server certificate (with any intermediates).")
    key_file: str = Field(
        "",
        description="PEM file of the server's private key. Readable by group or others: a warning, or refused "
        "under `agent.secret_file_mode: refuse`.",
    )
    client_auth_type: str = Field(
        "",
        description="Client certificates (mutual TLS): `NoClientCert` (empty, the default); `RequestClientCert` "
        "(asked for, not checked); `RequireAnyClientCert` (or its old name `RequireClientCert`: one is needed, "
        "not verified, so pair it with `client_allowed_sans`); `VerifyClientCertIfGiven`; "
        "`RequireAndVerifyClientCert`.",
    )
    client_ca_file: str = Field(
        "",
        description="PEM file of the CAs that verify client certificates. Without it (and without `client_ca`) "
        "the verifying `client_auth_type`s use the system's CAs, as Go does. Refused with `NoClientCert`, "
        "and when it holds no certificate.",
    )
    client_allowed_sans: list[str] | None = Field(
        None,
        description="The client certificate must carry one of these subject alternative names (DNS name, "
        "e-mail address, IP address, URI; compared exactly), else the connection is closed. Needs "
        "`client_auth_type` `RequireAnyClientCert` or `RequireAndVerifyClientCert`; an empty list allows "
        "no certificate.",
    )
    min_version: str = Field(
        "TLS12",
        description="Lowest TLS version served: `TLS10`, `TLS11`, `TLS12` or `TLS13` (OpenSSL's default security "
        "level refuses TLS 1.0 and 1.1 even when allowed here).",
    )
    max_version: str = Field(
        "TLS13", description="Highest TLS version served: `TLS10` … `TLS13`; lower than `min_version` is refused."
    )
    cipher_suites: list[str] | None = Field(
        None,
        description="TLS 1.2-and-lower suites allowed, by the names of Go's `tls.CipherSuites()` (Go's insecure "
        "suites are unknown); TLS 1.3 suites are accepted and always on. Unless `http_server_config.http2` "
        "is false or `min_version` is `TLS13`, the list must hold `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` or "
        "`TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256` (Go's HTTP/2 rule). Not set: Python's `ssl` defaults.",
    )
    prefer_server_cipher_suites: bool = Field(
        True, description="The server's order of cipher suites wins; false: the client's."
    )
    curve_preferences: list[str] | None = Field(
        None,
        description="Exactly these key-exchange groups are offered: `CurveP256`, `CurveP384`, `CurveP521`, "
        "`X25519`. Not set: OpenSSL's defaults.",
    )

    _empty = field_validator(
        "cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file", mode="before"
    )(_none_is_empty)

    @field_validator("min_version", "max_version", mode="before")
    @classmethod
    def _version(cls, v: Any) -> Any:
        if not isinstance(v, str) or v not in TLS_VERSIONS:
            raise ValueError(f"unknown TLS version: {v}")
        return v

    @field_validator("cipher_suites")
    @classmethod
    def _ciphers(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if name not in CIPHER_SUITES and name not in TLS13_SUITES:
                raise ValueError(f"unknown cipher: {name}")
        return v

    @field_validator("curve_preferences")
    @classmethod
    def _curves(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if name not in CURVES:
                raise ValueError(f"unknown curve: {name} (one of {', '.join(CURVES)})")
        return v

    @property
    def enabled(self) -> bool:
        """Whether the section asks for TLS at all (the toolkit's ``IsEnabled``)."""
        return any(
            (self.cert_file, self.cert, self.key_file, self.key.get_secret_value(), self.client_ca_file,
             self.client_ca, self.client_auth_type)
        )  # fmt: skip


class HTTPServerConfig(_Model):
    http2: bool = Field(
        True,
        description="Accepted for node_exporter's sake: the agent speaks HTTP/1.1 either way, but while true "
        "the HTTP/2 rule of `tls_server_config.cipher_suites` applies.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra response headers. Only `Strict-Transport-Security`, `X-Content-Type-Options` "
        "(`nosniff`), `X-Frame-Options` (`deny`, `sameorigin`), `X-XSS-Protection` and "
        "`Content-Security-Policy`, names and listed values exactly as written here; a YAML number is the "
        "text written.",
    )

    @field_validator("headers", mode="before")
    @classmethod
    def _no_headers(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            allowed = ALLOWED_HEADERS.get(name)
            if allowed is None:
                raise ValueError(f"HTTP header {name!r} can not be configured (allowed: {', '.join(ALLOWED_HEADERS)})")
            if allowed and value not in allowed:
                raise ValueError(f"invalid value for {name}: expected one of {', '.join(allowed)}, got {value!r}")
            if any(c in value for c in "\r\n\x00"):
                raise ValueError(f"HTTP header {name!r}: value contains a line break")
        return v


def _go_duration(v: Any) -> float:
    if v is None:
        return 0.0
    try:
        return parse_go_duration(v)
    except DurationError as e:
        raise ValueError(str(e)) from None


class RateLimitConfig(_Model):
    burst: int = Field(
        0,
        description="Requests let through at once (the bucket's size, full at start); with an `interval`, "
        "a burst of 0 lets nothing through, as in Go.",
    )
    interval: Annotated[float, BeforeValidator(_go_duration)] = Field(
        0.0,
        description="One more request is let through per interval (`100ms`, `1s`; a YAML integer is "
        "nanoseconds, as in Go); 0 or less: no limit.",
    )

    @field_validator("burst", mode="before")
    @classmethod
    def _burst(cls, v: Any) -> Any:
        return 0 if v is None else v


class WebConfigModel(_Model):
    tls_server_config: TLSServerConfig | None = Field(
        None, description="TLS and mutual TLS; without it (or with no TLS key set) plain HTTP."
    )
    http_server_config: HTTPServerConfig | None = Field(None, description="HTTP response settings.")
    rate_limit: RateLimitConfig | None = Field(
        None,
        description="One token bucket for all requests, checked before anything else, as the toolkit's: "
        "beyond it `429 Too Many Requests`.",
    )
    basic_auth_users: dict[str, str] | None = Field(
        None,
        description="User name → bcrypt hash (`$2a$`, `$2b$`, `$2y$`, as `htpasswd -B` makes); "
        "a plain-text password is refused. Failed logins are rate limited (docs/security.md).",
    )

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
    allowed_sans: tuple[str, ...] | None = None  # None: no SAN check; () allows no certificate, as in Go
    warnings: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()  # the web config and every file it names: re-read when one changes
    refuse_loose_key: bool = False  # loaded under secret_file_mode: refuse (re-reads are too)

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None


def _headers_as_written(data: dict[str, Any], text: str | bytes) -> None:
    """Header values as the text written in the file: Go's YAML decoder reads ``X-XSS-Protection: 1``
    into a string as "1" (and ``0x1`` as "0x1"), so the same file means the same header here."""
    section = data.get("http_server_config")
    if not isinstance(section, dict) or not isinstance(section.get("headers"), dict):
        return
    raw = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 - BaseLoader builds only str/list/dict
    raw_headers = (raw.get("http_server_config") or {}).get("headers") if isinstance(raw, dict) else None
    typed = section["headers"]
    if not isinstance(raw_headers, dict) or len(raw_headers) != len(typed):
        return
    out: dict[Any, Any] = {}
    for (k, v), (rk, rv) in zip(typed.items(), raw_headers.items(), strict=True):
        if isinstance(v, dict | list):
            out[k] = v  # a structure: let validation refuse it
        else:
            out[rk if isinstance(rk, str) else k] = "" if v is None else rv
    section["headers"] = out


def parse_web_config(text: str | bytes, path: Path) -> WebConfigModel:
    """Parse and validate the file's text (no file access). Raises :class:`WebConfigError`."""
    try:  # the agent's one bounded YAML loader; repeated keys refused as by Go's strict decoding
        data = parse_yaml(text, str(path), aliases=True)
        if isinstance(data, dict):
            _headers_as_written(data, text)
    except FileInputError as e:
        raise WebConfigError(str(e.issues[0])) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{path}: web config must be a YAML mapping")
    try:
        model = validate(WebConfigModel, data, str(path))
    except FileInputError as e:
        extra = f" (and {len(e.issues) - 1} more)" if len(e.issues) > 1 else ""
        raise WebConfigError(f"{e.issues[0]}{extra}") from None
    tls = model.tls_server_config
    if tls is not None and tls.enabled:
        # The toolkit's checks that need no file, in its order.
        if not tls.cert_file and not tls.cert:
            raise WebConfigError(f"{path}: tls_server_config: missing one of cert or cert_file")
        if not tls.key_file and not tls.key.get_secret_value():
            raise WebConfigError(f"{path}: tls_server_config: missing one of key or key_file")
        if TLS_VERSIONS[tls.max_version] < TLS_VERSIONS[tls.min_version]:
            raise WebConfigError(f"{path}: tls_server_config.max_version: lower than min_version")
        if tls.client_auth_type not in CLIENT_AUTH:
            raise WebConfigError(
                f"{path}: tls_server_config.client_auth_type: invalid ClientAuth {tls.client_auth_type!r} "
                f"(one of {', '.join(a for a in CLIENT_AUTH if a)})"
            )
    return model


def _resolve(base: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else base / path


@contextlib.contextmanager
def _pem_file(data: str) -> Iterator[str]:
    """A path OpenSSL can read ``data`` from; an anonymous in-memory file where Linux has them, so
    an inline key never touches a disk."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("web-config-pem", getattr(os, "MFD_CLOEXEC", 0))
        try:
            os.write(fd, data.encode())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as d:  # pragma: no cover - not Linux
        p = Path(d) / "pem"
        p.touch(mode=0o600)
        p.write_text(data)
        yield str(p)


def _no_password() -> bytes:
    raise WebConfigError("the key is encrypted; the exporter-toolkit format has no key password")


def _reason(e: BaseException) -> str:
    return str(getattr(e, "reason", None) or getattr(e, "strerror", None) or e)


def _load_cert_chain(
    ctx: ssl.SSLContext, tls: TLSServerConfig, base: Path, path: Path, warnings: list[str], refuse_loose_key: bool
) -> None:
    cert = _resolve(base, tls.cert_file) if tls.cert_file else None
    key = _resolve(base, tls.key_file) if tls.key_file else None
    for key_name, p in (("cert_file", cert), ("key_file", key)):
        if p is not None and not p.is_file():
            raise WebConfigError(f"{path}: tls_server_config.{key_name}: cannot read {p}: no such file")
    if key is not None:
        mode = 0
        with contextlib.suppress(OSError):
            mode = key.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
            msg = f"{path}: tls_server_config.key_file: {key} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            if refuse_loose_key:  # the agent config's secret_file_mode: refuse
                raise WebConfigError(msg + "chmod 600 it (agent.secret_file_mode is refuse)")
            warnings.append(msg + "chmod 600 it")
    where = f"{cert or 'cert'}, {key or 'key'}"
    try:
        with contextlib.ExitStack() as stack:
            certfile = str(cert) if cert else stack.enter_context(_pem_file(tls.cert))
            keyfile = str(key) if key else stack.enter_context(_pem_file(tls.key.get_secret_value()))
            ctx.load_cert_chain(certfile, keyfile, password=_no_password)
    except WebConfigError as e:
        raise WebConfigError(f"{path}: tls_server_config: cannot load certificate/key ({where}): {e}") from None
    except (ssl.SSLError, OSError) as e:
        reason = _reason(e)
        raise WebConfigError(f"{path}: tls_server_config: cannot load certificate/key ({where}): {reason}") from None


def _load_client_cas(ctx: ssl.SSLContext, tls: TLSServerConfig, base: Path, path: Path) -> None:
    """``client_ca_file`` or inline ``client_ca``; neither: the system roots, as Go does."""
    if tls.client_ca_file:
        ca = _resolve(base, tls.client_ca_file)
        key_name = "client_ca_file"
        try:
            pem = ca.read_bytes()
        except OSError as e:
            raise WebConfigError(f"{path}: tls_server_config.client_ca_file: cannot read {ca}: {_reason(e)}") from None
    elif tls.client_ca:
        key_name, pem = "client_ca", tls.client_ca.encode()
    else:
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        return
    certs = _PEM_CERT.findall(pem)
    if not certs:
        raise WebConfigError(f"{path}: tls_server_config.{key_name}: no PEM certificate in it")
    try:
        ctx.load_verify_locations(cadata=b"\n".join(certs).decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as e:
        raise WebConfigError(f"{path}: tls_server_config.{key_name}: cannot load: {_reason(e)}") from None


def build_ssl_context(
    model: TLSServerConfig, base: Path, path: Path, http2: bool = True, refuse_loose_key: bool = False
) -> tuple[ssl.SSLContext, list[str]]:
    """The server context for a TLS section, checked in the order the exporter-toolkit checks."""
    warnings: list[str] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[model.min_version]
    ctx.maximum_version = TLS_VERSIONS[model.max_version]
    _load_cert_chain(ctx, model, base, path, warnings, refuse_loose_key)
    if model.cipher_suites:
        names = [CIPHER_SUITES[c] for c in model.cipher_suites if c in CIPHER_SUITES]
        if names:
            try:
                ctx.set_ciphers(":".join(names))
            except ssl.SSLError:
                raise WebConfigError(
                    f"{path}: tls_server_config.cipher_suites: none of these suites is available in OpenSSL"
                ) from None
        elif ctx.maximum_version >= ssl.TLSVersion.TLSv1_3:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # only TLS 1.3 suites listed: as in Go, no TLS 1.2
        else:
            raise WebConfigError(f"{path}: tls_server_config.cipher_suites: no suite for TLS 1.2 or lower")
    if model.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        if model.curve_preferences:
            set_groups(ctx, model.curve_preferences)
        ask, require, verify = CLIENT_AUTH[model.client_auth_type]
        has_ca = bool(model.client_ca_file or model.client_ca)
        if verify:
            _load_client_cas(ctx, model, base, path)
            ctx.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL
        elif has_ca and model.client_ca_file:
            _resolve(base, model.client_ca_file).read_bytes()  # Go reads it first: a missing file is that error
        if has_ca and not ask:
            raise WebConfigError(
                f"{path}: tls_server_config.client_auth_type: client CA's have been configured without a "
                "Client Auth Policy"
            )
        if ask and not verify:
            accept_any_client_cert(ctx, required=require)
    except OSError as e:
        raise WebConfigError(f"{path}: tls_server_config.client_ca_file: cannot read: {_reason(e)}") from None
    except OpenSSLUnavailable as e:
        raise WebConfigError(f"{path}: tls_server_config: not supported by this Python/OpenSSL: {e}") from None
    if model.client_allowed_sans is not None and not require:
        raise WebConfigError(
            f"{path}: tls_server_config.client_allowed_sans: requires client_auth_type RequireAnyClientCert or "
            "RequireAndVerifyClientCert"
        )
    if (
        http2
        and model.cipher_suites
        and TLS_VERSIONS[model.min_version] < ssl.TLSVersion.TLSv1_3
        and not any(c in model.cipher_suites for c in HTTP2_REQUIRED_SUITES)
    ):
        raise WebConfigError(
            f"{path}: tls_server_config.cipher_suites: TLSConfig.CipherSuites is missing an HTTP/2-required "
            f"AES_128_GCM_SHA256 cipher (need at least one of {' or '.join(HTTP2_REQUIRED_SUITES)}), or set "
            "http_server_config.http2: false"
        )
    return ctx, warnings


def load_web_config(path: str | Path, refuse_loose_key: bool = False) -> WebConfig:
    """Load ``--web.config.file``. ``refuse_loose_key``: the agent config's ``secret_file_mode:
    refuse``, applied to the TLS key file like to the agent's own secret files."""
    p = Path(path)
    try:
        text = read_file(p)
    except FileInputError as e:
        raise WebConfigError(str(e.issues[0]).replace(": cannot read:", ": cannot read web config:", 1)) from None
    model = parse_web_config(text, p)
    base = p.parent.resolve()
    ctx = None
    warnings: list[str] = []
    sans: tuple[str, ...] | None = None
    files = [p]
    tls = model.tls_server_config
    if tls is not None and tls.enabled:
        http2 = model.http_server_config.http2 if model.http_server_config else True
        ctx, warnings = build_ssl_context(tls, base, p, http2, refuse_loose_key)
        sans = tuple(tls.client_allowed_sans) if tls.client_allowed_sans is not None else None
        files += [_resolve(base, f) for f in (tls.cert_file, tls.key_file, tls.client_ca_file) if f]
    auth = BasicAuth(model.basic_auth_users) if model.basic_auth_users else None
    headers = dict(model.http_server_config.headers) if model.http_server_config else {}
    return WebConfig(p, model, ctx, auth, headers, sans, tuple(warnings), tuple(files), refuse_loose_key)


def _go_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value


def peer_san_allowed(cert: dict[str, Any] | None, allowed: tuple[str, ...]) -> bool:
    """Whether a client certificate carries one of the allowed subject alternative names (DNS
    names, e-mail addresses, IP addresses in Go's notation, URIs; compared exactly, as Go does)."""
    if not cert:
        return False
    names = {_go_ip(str(v)) if k == "IP Address" else str(v) for k, v in cert.get("subjectAltName", ())}
    return any(a in names for a in allowed)


# -- basic auth ------------------------------------------------------------------------------------


MAX_DUMMY_COST = 12  # bcrypt cost of the check for unknown user names, at most (~0.3 s)


def _cost(h: bytes) -> int:
    return int(h[4:6]) if h[4:6].isdigit() else 10


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` value, or None."""
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
    return user, password


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes. Verified (user, password) pairs are
    cached (as a SHA-256 of hash and password, never the password itself), with the client
    addresses they were verified from, so that each scrape does not pay for bcrypt and a scraper
    with the right password is never refused by the failed-login limiter (:meth:`authenticate`)."""

    CACHE_SIZE = 256
    ADDRESSES_PER_ENTRY = 16

    def __init__(self, users: dict[str, str]) -> None:
        self.users = {u: h.encode() for u, h in users.items()}
        # Checked for unknown users, so a wrong user name costs as much as a wrong password of the
        # most expensive user (no enumeration by timing): that user's own hash (result ignored).
        # Above MAX_DUMMY_COST a hash of that cost instead: a cost-18 dummy would make every
        # request with a made-up name cost ~16 s of a core (docs/security.md).
        import bcrypt  # loaded only where basic auth is configured

        cost = min(max(_cost(h) for h in self.users.values()), MAX_DUMMY_COST)
        same = [h for h in self.users.values() if _cost(h) == cost]
        self.dummy_hash = same[0] if same else bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost))
        self._cache: OrderedDict[bytes, OrderedDict[str, None]] = OrderedDict()  # key -> address keys
        self._lock = threading.Lock()

    def _cache_key(self, user: str, password: str) -> bytes | None:
        hashed = self.users.get(user)
        if hashed is None:
            return None
        return hashlib.sha256(hashed + b"\0" + password.encode()).digest()

    def keep_verified(self, old: BasicAuth) -> None:
        """After a reload: credentials ``old`` verified stay verified where the user's hash is
        unchanged (the cache key includes the hash), so a scraper is not sent back to bcrypt --
        or to the limiter -- by a SIGHUP."""
        with old._lock:
            entries = [(k, OrderedDict(v)) for k, v in old._cache.items()]
        with self._lock:
            for k, addrs in entries[-self.CACHE_SIZE :]:
                self._cache[k] = addrs

    def _remember(self, key: bytes, address: str) -> None:
        with self._lock:
            addrs = self._cache.setdefault(key, OrderedDict())
            addrs[address] = None
            addrs.move_to_end(address)
            self._cache.move_to_end(key)
            while len(addrs) > self.ADDRESSES_PER_ENTRY:
                addrs.popitem(last=False)
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)

    def cached(self, user: str, password: str, client: str | None = None) -> bool:
        """Whether these credentials were verified before (no bcrypt) -- from ``client``'s
        address (IPv6: /64) if given, else from anywhere."""
        key = self._cache_key(user, password)
        if key is None:
            return False
        with self._lock:
            addrs = self._cache.get(key)
            if addrs is None or (client is not None and client_key(client) not in addrs):
                return False
            self._cache.move_to_end(key)
            return True

    def verify(self, user: str, password: str, client: str = "") -> bool:
        """bcrypt check (for unknown users, one against the most expensive user's hash)."""
        import bcrypt

        hashed = self.users.get(user)
        pw = password.encode()
        if hashed is None:
            bcrypt.checkpw(pw[:72], self.dummy_hash)  # same cost as a wrong password
            return False
        try:
            ok = bcrypt.checkpw(pw[:72], hashed) and len(pw) <= 72
        except ValueError:
            ok = False
        if ok:
            key = self._cache_key(user, password)
            assert key is not None
            self._remember(key, client_key(client))
        return ok

    def check(self, header: str | None) -> str | None:
        """The user name if ``header`` carries valid credentials, else None (no limiter)."""
        creds = parse_basic(header)
        if creds is None:
            return None
        user, password = creds
        return user if self.cached(user, password) or self.verify(user, password) else None

    def authenticate(self, req: HttpRequest, limiter: FailureLimiter | None = None) -> HttpResponse | None:
        """None when the request may go on, else the 401 or 429 to answer.

        1. Credentials verified before from this client's address pass at once, whatever the
           limiter says: a scraper is never refused, even while another client on its address
           fails logins.
        2. The limiter may answer 429 (no bcrypt, no cache look-up: a blocked client learns
           nothing about its guess -- unless it shares an address with a verified scraper).
        3. Credentials verified before from another address pass without bcrypt; the others get
           bcrypt, and a failure is counted against (address, user), the user and the total."""
        header = req.headers.get("authorization")
        creds = parse_basic(header)
        user = creds[0] if creds is not None else ""
        if creds is not None and self.cached(*creds, client=req.client):
            return None
        if header and limiter is not None:
            wait = limiter.retry_after(req.client, user)
            if wait > 0:
                return too_many(wait)
        if creds is not None:
            key = self._cache_key(*creds)
            if key is not None and self.cached(*creds):
                self._remember(key, client_key(req.client))
                return None
            if self.verify(*creds, client=req.client):
                return None
        if header and limiter is not None:
            limiter.failed(req.client, user)
        return HttpResponse(401, b"Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="continuity-agent"'})

    def __call__(self, req: HttpRequest) -> HttpResponse | None:
        return self.authenticate(req)


def request_limiter(model: WebConfigModel) -> RequestLimiter | None:
    rl = model.rate_limit
    return RequestLimiter(rl.interval, rl.burst) if rl is not None and rl.interval > 0 else None


def _stamp(files: tuple[Path, ...]) -> tuple[tuple[str, int, int, int, int, int] | tuple[str], ...]:
    out: list[tuple[str, int, int, int, int, int] | tuple[str]] = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            out.append((str(f),))
            continue
        out.append((str(f), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(out)


class WebConfigSource:
    """The web config in force, re-read when the file or a file it names (certificate, key, client
    CAs) changes, as the exporter-toolkit re-reads them for every new connection and request. Each
    call to :meth:`get` costs a few ``stat`` calls; a change is loaded once.

    While the files on disk do not make a valid config (or would switch TLS on or off, which needs a
    restart), the last valid config stays in force, :attr:`valid` is False, ``on_error`` is told
    (the agent sets ``continuity_config_last_reload_successful`` to 0) and the reason is logged.
    exporter-toolkit refuses every request then; a typo in a web config must not blind monitoring
    (docs/security.md, "A broken web config")."""

    def __init__(
        self,
        initial: WebConfig,
        on_change: Callable[[WebConfig], None] | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.path = initial.path
        self._refuse_loose_key = initial.refuse_loose_key
        self.on_change = on_change
        self._current: WebConfig | None = initial
        self._tls = initial.tls
        self._files = initial.files or (initial.path,)
        self._stamp = _stamp(self._files)
        self._lock = threading.Lock()
        self.limiter = request_limiter(initial.model)
        self.on_error = on_error
        self.valid = True  # the files on disk make the config in force

    @property
    def current(self) -> WebConfig | None:
        return self._current

    def get(self, force: bool = False) -> WebConfig | None:
        if not force and _stamp(self._files) == self._stamp:
            return self._current
        with self._lock:
            stamp = _stamp(self._files)  # taken before reading: a change while loading is seen next time
            if not force and stamp == self._stamp:
                return self._current
            self._load(stamp)
            return self._current

    def _load(self, stamp: tuple[Any, ...]) -> None:
        try:
            new = load_web_config(self.path, self._refuse_loose_key)
        except WebConfigError as e:
            self._watch(_named_files(self.path), stamp)
            self._invalid(f"web config changed and is now invalid; still serving under the last valid one: {e}")
            return
        self._watch(new.files, stamp)
        if new.tls != self._tls:
            self._invalid(
                f"web config {self.path} now switches TLS {'on' if new.tls else 'off'}; that needs a restart: "
                "still serving under the last valid one"
            )
            return
        self.valid = True
        old = self._current
        if old is None or old.model.rate_limit != new.model.rate_limit:
            self.limiter = request_limiter(new.model)
        self._current = new
        for w in new.warnings:
            log.warning("%s", w)
        log.info("web config re-read from %s", self.path)
        if self.on_change is not None:
            self.on_change(new)

    def _invalid(self, message: str) -> None:
        self.valid = False
        log.error("%s", message)
        if self.on_error is not None:
            self.on_error(message)

    def _watch(self, files: tuple[Path, ...], stamp: tuple[Any, ...]) -> None:
        if files != self._files:
            self._files = files
            stamp = _stamp(files)
        self._stamp = stamp


def _named_files(path: Path) -> tuple[Path, ...]:
    """The web config and the files it names, as far as it can be parsed."""
    try:
        model = parse_web_config(read_file(path), path)
    except (FileInputError, WebConfigError):
        return (path,)
    tls = model.tls_server_config
    names = (tls.cert_file, tls.key_file, tls.client_ca_file) if tls is not None else ()
    return (path, *(_resolve(path.parent.resolve(), f) for f in names if f))
