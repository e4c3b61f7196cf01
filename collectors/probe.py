"""Availability probes (kind ``probe``): TCP connect, HTTP(S) and ICMP echo.

Like blackbox_exporter, a probe that fails is a measurement, not a collector failure:
``continuity_probe_success`` is 0, ``continuity_probe_duration_seconds`` says how long it took,
and the reason is counted in ``continuity_target_errors_total{reason}``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from agent.configtypes import Secret, StrictModel
from collectors import icmp
from collectors.base import (
    BAD_REPLY,
    TIMEOUT,
    UNREACHABLE,
    Collected,
    Collector,
    CollectorError,
    MetricSpec,
    TargetBase,
    describe_oserror,
)

TLS_ERROR = "tls"
HTTP_STATUS = "http_status"
MAX_HEADER_BYTES = 64 * 1024


class HttpBasicAuth(StrictModel):
    type: Literal["http_basic"] = Field(description="Selects this auth type: `http_basic`.")
    username: str = Field(description="HTTP basic-auth user name.")
    password: Secret = Field(description="HTTP basic-auth password (secret).")


class ProbeTarget(TargetBase):
    """``module: tcp`` needs host and port; ``http`` needs url; ``icmp`` needs host."""

    kind: Literal["probe"] = Field(description="Selects this collector: `probe`.")
    module: Literal["tcp", "http", "icmp"] = Field(
        description="What the probe does: a TCP connect, an HTTP request or ICMP echo.",
    )
    host: str | None = Field(default=None, description="Host to probe (tcp and icmp).")
    port: int | None = Field(default=None, ge=1, le=65535, description="Port to connect to (tcp).")
    url: str | None = Field(default=None, description="URL to request (http).")
    method: Literal["GET", "HEAD"] = Field(default="GET", description="HTTP method (http).")
    expected_status: list[int] = Field(
        default_factory=lambda: list(range(200, 300)),
        description="HTTP status codes that count as up (http).",
    )
    tls_verify: bool = Field(default=True, description="Verify the server's certificate (https).")
    ca_file: Path | None = Field(
        default=None,
        description="CA certificates to verify the server with, instead of the system's (https).",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (http).")
    auth: str | None = Field(default=None, description="Name of an http_basic auth (http).")
    count: int = Field(
        default=1, ge=1, le=20, description="ICMP echo requests per run, 0.2 s apart; one reply is success (icmp)."
    )

    @model_validator(mode="after")
    def _module_fields(self) -> ProbeTarget:
        if self.module == "tcp" and (not self.host or self.port is None):
            raise ValueError("tcp probes need host and port")
        if self.module == "icmp" and not self.host:
            raise ValueError("icmp probes need host")
        if self.module == "http":
            if not self.url:
                raise ValueError("http probes need url")
            u = urlsplit(self.url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError(f"url {self.url!r} must be http:// or https:// with a host")
        for code in self.expected_status:
            if not 100 <= code <= 599:
                raise ValueError(f"expected_status {code} is not an HTTP status code")
        return self


METRICS = (
    MetricSpec("continuity_probe_success", "gauge", "1 if the probe succeeded, 0 if it failed."),
    MetricSpec("continuity_probe_duration_seconds", "gauge", "How long the probe took.", "seconds"),
    MetricSpec("continuity_probe_http_status_code", "gauge", "HTTP status code of the probe's response."),
    MetricSpec(
        "continuity_probe_tls_cert_expiry_timestamp_seconds",
        "gauge",
        "When the peer's TLS certificate expires (Unix time).",
        "seconds",
    ),
)


class ProbeCollector(Collector):
    kind = "probe"
    config_model = ProbeTarget
    METRICS = METRICS
    REASONS = (TIMEOUT, UNREACHABLE, BAD_REPLY, TLS_ERROR, HTTP_STATUS, icmp.ICMP_NOT_PERMITTED)
    AUTH_TYPES = ("http_basic",)
    target: ProbeTarget

    async def collect(self) -> Collected:
        out = Collected()
        # Finish before the runner's timeout so a failed probe is still reported as a measurement.
        budget = max(0.05, min(self.timeout * 0.8, self.timeout - 0.25))
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(budget):
                await self._probe(out)
            out.add("continuity_probe_success", 1)
        except TimeoutError:
            out.add("continuity_probe_success", 0)
            out.partial_errors.append((TIMEOUT, f"{self.target.name}: no answer within {budget:.1f}s"))
        except CollectorError as e:
            if e.reason == icmp.ICMP_NOT_PERMITTED:
                raise
            out.add("continuity_probe_success", 0)
            out.partial_errors.append((e.reason, f"{self.target.name}: {e.message}"))
        except ssl.SSLError as e:
            out.add("continuity_probe_success", 0)
            out.partial_errors.append((TLS_ERROR, f"{self.target.name}: TLS: {e.reason or e}"))
        except OSError as e:
            out.add("continuity_probe_success", 0)
            out.partial_errors.append((UNREACHABLE, f"{self.target.name}: {describe_oserror(e, self._where())}"))
        out.add("continuity_probe_duration_seconds", time.perf_counter() - t0)
        return out

    def _where(self) -> str:
        t = self.target
        if t.module == "http" and t.url:
            u = urlsplit(t.url)
            return f"{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"
        return f"{t.host}:{t.port}" if t.port else str(t.host)

    async def _probe(self, out: Collected) -> None:
        t = self.target
        if t.module == "tcp":
            assert t.host and t.port
            _r, w = await asyncio.open_connection(t.host, t.port)
            w.close()
            try:
                await w.wait_closed()
            except OSError:
                pass
        elif t.module == "icmp":
            assert t.host
            burst = await icmp.ping(t.host, t.count, 0.2, max(0.1, self.timeout * 0.8 - 0.2 * t.count))
            if all(r is None for r in burst.rtts):
                if burst.unsent == len(burst.rtts):
                    raise CollectorError(
                        UNREACHABLE, f"cannot send ICMP echo to {t.host}: {', '.join(burst.send_errors)}"
                    )
                raise CollectorError(TIMEOUT, f"no ICMP echo reply from {t.host}")
        else:
            await self._http(out)

    def _ssl_context(self) -> ssl.SSLContext:
        t = self.target
        ctx = ssl.create_default_context(cafile=str(t.ca_file) if t.ca_file else None)
        if not t.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    async def _http(self, out: Collected) -> None:
        t = self.target
        assert t.url
        u = urlsplit(t.url)
        host = u.hostname or ""
        https = u.scheme == "https"
        port = u.port or (443 if https else 80)
        ctx = self._ssl_context() if https else None
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if https else None)
        try:
            if https:
                _cert_expiry(writer, out)
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            hdrs = {
                "Host": u.netloc.rsplit("@", 1)[-1],
                "User-Agent": "continuity-agent",
                "Connection": "close",
                "Accept": "*/*",
                **t.headers,
            }
            if t.auth:
                auth = self.ctx.auths[t.auth]
                token = base64.b64encode(f"{auth.username}:{auth.password.reveal()}".encode()).decode()
                hdrs["Authorization"] = f"Basic {token}"
            req = f"{t.method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
            writer.write(req.encode("latin-1"))
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise CollectorError(BAD_REPLY, "connection closed before an HTTP status line")
            parts = status_line.decode("latin-1").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise CollectorError(BAD_REPLY, f"not an HTTP reply: {status_line[:60]!r}")
            code = int(parts[1])
            out.add("continuity_probe_http_status_code", code)
            if code not in t.expected_status:
                raise CollectorError(HTTP_STATUS, f"HTTP status {code} not in expected_status")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass


def _cert_expiry(writer: asyncio.StreamWriter, out: Collected) -> None:
    from cryptography import x509

    sslobj: Any = writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj else None
    if der:
        cert = x509.load_der_x509_certificate(der)
        out.add("continuity_probe_tls_cert_expiry_timestamp_seconds", cert.not_valid_after_utc.timestamp())


COLLECTORS = [ProbeCollector]
AUTH_MODELS = [HttpBasicAuth]
