"""Who may reach the agent's HTTP endpoints, and how often: the parts that apply with or without
``--web.config.file``. Failed credentials are counted per client (:class:`FailureLimiter`, for basic
auth and for routes with their own credentials), ``rate_limit`` is one token bucket for all requests
(:class:`RequestLimiter`), and an exposed listen address is warned about at start-up
(:func:`exposure_warnings`). The web config itself (TLS, basic auth; :mod:`agent.webconfig`) is
loaded only when one is given."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from agent.plugin import HttpResponse

if TYPE_CHECKING:
    from agent.webconfig import WebConfig

# The logger the failed-login warning has always been logged under (the log lines stay the same).
log = logging.getLogger("agent.webconfig")


def too_many(wait: float) -> HttpResponse:
    return HttpResponse(429, b"too many failed logins; try again later\n", headers={"Retry-After": str(int(wait) + 1)})


def client_key(client: str) -> str:
    """The address a limit applies to: IPv4 as is, IPv6 per /64 (one host usually has the whole
    prefix), IPv4-mapped IPv6 as IPv4."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class _Buckets:
    """Token buckets of failures by key, ``burst`` at once then ``rate`` a second; a key with no
    failure on record is full. At most ``max_keys`` keys (least recently failed dropped)."""

    def __init__(self, burst: float, rate: float, max_keys: int) -> None:
        self.burst = burst
        self.rate = rate
        self.max_keys = max_keys
        self.b: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def tokens(self, key: Hashable, now: float) -> float:
        rec = self.b.get(key)
        if rec is None:
            return self.burst
        return min(self.burst, rec[0] + (now - rec[1]) * self.rate)

    def wait(self, key: Hashable, now: float) -> float:
        t = self.tokens(key, now)
        return 0.0 if t >= 1.0 else (1.0 - t) / self.rate

    def has_failed(self, key: Hashable, now: float) -> bool:
        return self.tokens(key, now) < self.burst

    def fail(self, key: Hashable, now: float) -> None:
        self.b[key] = (max(0.0, self.tokens(key, now) - 1.0), now)
        self.b.move_to_end(key)
        while len(self.b) > self.max_keys:
            self.b.popitem(last=False)


class FailureLimiter:
    """Failed authentication, counted three ways, each a token bucket (``burst`` failures at
    once, then ``rate`` a second):

    * per (client address, user) -- IPv6 per /64 -- ``burst``/``rate``;
    * per user, over all addresses -- ``user_burst``/``user_rate``;
    * in total -- ``total_burst``/``total_rate``.

    A request is refused (429, before any password check) when its (address, user) bucket is
    empty, or when its address has failed recently (for any user) and the user's or the total
    bucket is empty. An address with no recent failure is always checked, so other clients'
    failures never shut out a client that has not failed itself; credentials verified before from
    the same address are never refused at all (:meth:`BasicAuth.authenticate`). Only failed checks are counted, never
    requests refused with 429, so a blocked client gets one try per refilled token."""

    def __init__(
        self,
        burst: float = 10.0,
        rate: float = 0.2,
        *,
        user_burst: float = 30.0,
        user_rate: float = 0.5,
        total_burst: float = 100.0,
        total_rate: float = 2.0,
        max_clients: int = 4096,
        clock: Any = time.monotonic,
    ) -> None:
        self.pairs = _Buckets(burst, rate, max_clients)
        # Only "has this address failed recently" (each failure kept on record for a minute).
        self.addresses = _Buckets(burst, 1 / 60, max_clients)
        self.users = _Buckets(user_burst, user_rate, max_clients)
        self.total = _Buckets(total_burst, total_rate, 1)
        self.clock = clock
        self._lock = threading.Lock()
        self.failures = 0  # failed checks counted (continuity_http_auth_failures_total)
        self.refusals = 0  # requests answered 429
        self._warned_at: float | None = None

    @staticmethod
    def _pair(client: str, user: str) -> tuple[str, str]:
        return client_key(client), user[:256]

    def retry_after(self, client: str, user: str = "") -> float:
        """Seconds until ``client`` may try ``user`` again; 0 when it is not blocked (a positive
        answer is counted as a refusal: call it once per request, just before the check)."""
        pair = self._pair(client, user)
        with self._lock:
            now = self.clock()
            wait = self.pairs.wait(pair, now)
            if wait == 0 and self.addresses.has_failed(pair[0], now):
                wait = max(self.users.wait(pair[1], now), self.total.wait(None, now))
            if wait > 0:
                self.refusals += 1
            return wait

    def failed(self, client: str, user: str = "") -> None:
        pair = self._pair(client, user)
        with self._lock:
            now = self.clock()
            self.pairs.fail(pair, now)
            self.addresses.fail(pair[0], now)
            self.users.fail(pair[1], now)
            self.total.fail(None, now)
            self.failures += 1
            if self.total.wait(None, now) > 0 and (self._warned_at is None or now - self._warned_at > 60):
                self._warned_at = now
                log.warning(
                    "http: %d failed logins in all, the total limit is reached: addresses that keep failing get "
                    "429 (credentials verified before from the same address are never refused)",
                    self.failures,
                )


class RequestLimiter:
    """``rate_limit``: one token bucket for all requests, as the toolkit's ``rate.Limiter``: holds
    ``burst`` tokens, starts full, gains one every ``interval``; a request without a token gets 429.
    A burst of 0 (or less) with an interval lets nothing through, as in Go."""

    def __init__(self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self._tokens = float(max(burst, 0))
        self._at = clock()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        if self.burst < 1:
            return False
        with self._lock:
            now = self.clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.interval)
            self._at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


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
