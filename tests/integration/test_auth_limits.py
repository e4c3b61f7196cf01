"""Issue 19, M1: the failed-login limiter must not blind monitoring. Each test runs the real agent
(``continuity-agent run``) on loopback and reproduces one finding: a scraper with the right
password kept getting 429 while another local client failed logins; ten bad push tokens made
/metrics answer 429; rotating addresses never hit any limit."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.common import AgentProcess, http_get, metric_value, wait_until
from tests.helpers.tls import bcrypt_hash


def _request(port: int, method: str, path: str, auth: str | None = None, src: str = "127.0.0.1") -> int:
    extra = f"Authorization: {auth}\r\n" if auth else ""
    length = "Content-Length: 0\r\n" if method == "POST" else ""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(src, 0)) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{length}{extra}\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.") else 0


FAILURES = "continuity_http_auth_failures_total"


def _metrics(port: int) -> str:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": basic("prom", "right-pw")})
    assert status == 200
    return body.decode()


def basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


def _config(d: Path) -> Path:
    cfg = d / "agent.yml"
    cfg.write_text("agent:\n  site: hq\n  state_dir: state\n")
    return cfg


@pytest.fixture
def auth_agent(tmp_path: Path) -> Iterator[AgentProcess]:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prom: '{bcrypt_hash('right-pw')}'\n  alice: '{bcrypt_hash('alice-pw')}'\n")
    agent = AgentProcess(_config(tmp_path), extra_args=["--web.config.file", str(web)])
    try:
        wait_until(lambda: _request(agent.port, "GET", "/-/healthy") == 401, 30, what="agent up")
        yield agent
    finally:
        agent.stop()


@pytest.mark.parametrize(
    "interval",
    [pytest.param(1.0, marks=pytest.mark.slow, id="once-a-second-for-30s"), pytest.param(0.1, id="10x-faster")],
)
def test_scraper_with_the_right_password_always_gets_200(auth_agent: AgentProcess, interval: float) -> None:
    """Finding: one wrong login a second from the scraper's address gave the scraper (right
    password) 26 x 429 and 2 x 200 in 30 s."""
    port = auth_agent.port
    scraper: list[int] = []
    attacker: list[int] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            scraper.append(_request(port, "GET", "/metrics", basic("prom", "right-pw")))
            stop.wait(interval / 2)

    assert _request(port, "GET", "/metrics", basic("prom", "right-pw")) == 200  # scraping before the attack
    t = threading.Thread(target=scrape)
    t.start()
    try:
        for _ in range(30):  # same address, same user, wrong password
            attacker.append(_request(port, "GET", "/metrics", basic("prom", "guess")))
            time.sleep(interval)
    finally:
        stop.set()
        t.join()
    assert len(scraper) >= 30 and set(scraper) == {200}, scraper
    assert 429 in attacker and set(attacker) <= {401, 429}, attacker  # the limiter did engage
    assert attacker[:10] == [401] * 10


def test_bad_push_tokens_never_make_metrics_answer_429(tmp_path: Path) -> None:
    """Finding: with no web config, 10 bad push tokens made every endpoint, /metrics included,
    answer 429 to that address."""
    agent = AgentProcess(_config(tmp_path))
    try:
        agent.wait_ready()
        push = "/api/v1/backup/anything/success"
        codes = [_request(agent.port, "POST", push, "Bearer wrong") for _ in range(12)]
        assert codes == [403] * 10 + [429] * 2  # limited on the push route ...
        for path in ("/metrics", "/-/healthy", "/api/v1/status", "/"):
            assert _request(agent.port, "GET", path) == 200, path  # ... and nowhere else
        assert _request(agent.port, "POST", "/api/v1/backup/x/explode", "Bearer x") == 429  # 404s count too
        text = agent.metrics()
        assert metric_value(text, FAILURES, credential="token", outcome="failed") == 10
        assert metric_value(text, FAILURES, credential="token", outcome="rate_limited") == 3
        assert metric_value(text, FAILURES, credential="basic", outcome="failed") == 0
    finally:
        agent.stop()


def test_rotating_addresses_hit_the_total_limit(auth_agent: AgentProcess) -> None:
    """Finding: 128 rotating addresses sent 1,280 bad logins in 30 s with no 429 at all."""
    port = auth_agent.port
    assert _request(port, "GET", "/metrics", basic("prom", "right-pw")) == 200
    codes = [
        _request(port, "GET", "/metrics", basic(f"user{i}-{j}" if j % 2 else "prom", "guess"), src=f"127.0.0.{i + 2}")
        for i in range(128)
        for j in range(10)
    ]
    assert set(codes) <= {401, 429}
    text = _metrics(port)
    assert metric_value(text, FAILURES, credential="basic", outcome="rate_limited") == codes.count(429)
    assert metric_value(text, FAILURES, credential="basic", outcome="failed") == codes.count(401)
    # The total budget (100 at once) is spent early; after that each address gets the one check
    # an address that has not failed yet is owed, then 429.
    assert codes.count(429) >= 1000, codes.count(429)
    # Monitoring is not blinded: the scraper, and a user never checked before from a fresh address.
    assert _request(port, "GET", "/metrics", basic("prom", "right-pw")) == 200
    assert _request(port, "GET", "/metrics", basic("alice", "alice-pw"), src="127.0.1.1") == 200
