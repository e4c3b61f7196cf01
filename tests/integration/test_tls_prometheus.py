"""The acceptance test for endpoint security: one exporter-toolkit web config file, used by the
agent and by Debian's prometheus-node-exporter; a real Prometheus scrapes both over TLS with basic
auth; a wrong password gets 401; plain HTTP to the TLS port fails; mutual TLS refuses a client
certificate from another CA."""

from __future__ import annotations

import base64
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers.common import AGENT_BIN, agent_process, free_port, need, wait_until
from tests.helpers.prom import Prometheus
from tests.helpers.tls import Pki, bcrypt_hash, make_pki

PASSWORD = "scrape-pw-7Hq2"


def _https(
    url: str, pki: Pki, auth: tuple[str, str] | None = None, client: tuple[Path, Path] | None = None
) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if client:
        ctx.load_cert_chain(*client)
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _web_config(d: Path, pki: Pki, **tls_extra: object) -> Path:
    # Relative paths: both programs resolve them against the web config's own directory.
    for src, name in ((pki.server_cert, "server.crt"), (pki.server_key, "server.key"), (pki.ca, "ca.crt")):
        (d / name).write_bytes(src.read_bytes())
    (d / "server.key").chmod(0o600)
    cfg = {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "min_version": "TLS12", **tls_extra},
        "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
        "basic_auth_users": {"prometheus": bcrypt_hash(PASSWORD, rounds=10)},
    }
    f = d / "web-config.yml"
    f.write_text(yaml.safe_dump(cfg))
    return f


def _start_agent(tmp_path: Path, web: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    cfg = tmp_path / "agent.yml"
    cfg.write_text("agent: {site: hq, state_dir: state}\ntargets:\n  - {name: host, kind: host, interval: 5s}\n")
    port = free_port()
    log = tmp_path / "agent.log"
    proc = subprocess.Popen(
        [str(AGENT_BIN), "run", "--config", str(cfg), "--web.listen-address", f"127.0.0.1:{port}",
         "--web.config.file", str(web)],
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    return proc, port, log


def test_prometheus_scrapes_agent_and_node_exporter_over_tls_with_basic_auth(tmp_path: Path) -> None:
    need("prometheus")
    node_exporter = need("prometheus-node-exporter")
    pki = make_pki(tmp_path / "pki")
    webdir = tmp_path / "web"
    webdir.mkdir()
    web = _web_config(webdir, pki)
    agent, aport, alog = _start_agent(tmp_path, web)
    nport = free_port()
    node = subprocess.Popen(
        [node_exporter, f"--web.listen-address=127.0.0.1:{nport}", f"--web.config.file={web}",
         "--collector.disable-defaults", "--collector.loadavg"],
        stdout=open(tmp_path / "node.log", "wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    prom = None
    try:
        for port, proc, name in ((aport, agent, "agent"), (nport, node, "node_exporter")):

            def up(port: int = port, proc: subprocess.Popen[bytes] = proc, name: str = name) -> bool:
                assert proc.poll() is None, f"{name} exited: {(tmp_path / 'node.log').read_text()[-2000:]}"
                return _https(f"https://127.0.0.1:{port}/metrics", pki, ("prometheus", PASSWORD))[0] == 200

            wait_until(up, timeout=30, what=f"{name} over TLS")

        for port in (aport, nport):
            assert _https(f"https://127.0.0.1:{port}/metrics", pki)[0] == 401
            assert _https(f"https://127.0.0.1:{port}/metrics", pki, ("prometheus", "wrong"))[0] == 401
            assert _https(f"https://127.0.0.1:{port}/metrics", pki, ("nobody", PASSWORD))[0] == 401
            # Plain HTTP to the TLS port: both answer Go's 400, not a reset.
            with pytest.raises(urllib.error.HTTPError) as ei:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert ei.value.code == 400
            assert ei.value.read() == b"Client sent an HTTP request to an HTTPS server.\n"
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        with urllib.request.urlopen(
            urllib.request.Request(
                f"https://127.0.0.1:{aport}/metrics",
                headers={"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()},
            ),
            context=ctx,
            timeout=5,
        ) as r:
            assert r.headers["X-Frame-Options"] == "deny"  # http_server_config.headers

        (tmp_path / "pw").write_text(PASSWORD)
        (tmp_path / "ca.crt").write_bytes(pki.ca.read_bytes())
        tls = {"ca_file": str(tmp_path / "ca.crt"), "server_name": "localhost"}
        good = {"username": "prometheus", "password_file": str(tmp_path / "pw")}
        bad = {"username": "prometheus", "password": "not-the-password"}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "agent", "scheme": "https", "tls_config": tls, "basic_auth": good,
                 "static_configs": [{"targets": [f"127.0.0.1:{aport}"]}]},
                {"job_name": "node", "scheme": "https", "tls_config": tls, "basic_auth": good,
                 "static_configs": [{"targets": [f"127.0.0.1:{nport}"]}]},
                {"job_name": "agent-wrong-password", "scheme": "https", "tls_config": tls, "basic_auth": bad,
                 "static_configs": [{"targets": [f"127.0.0.1:{aport}"]}]},
                {"job_name": "agent-plain-http", "scheme": "http",
                 "static_configs": [{"targets": [f"127.0.0.1:{aport}"]}]},
            ],
        }  # fmt: skip
        prom = Prometheus(tmp_path, config).start()

        def scraped() -> bool:
            ts = {t["labels"]["job"]: t for t in prom.targets()}
            return len(ts) == 4 and all(t["health"] != "unknown" for t in ts.values())

        wait_until(scraped, timeout=30, what="prometheus scraped every job")
        ts = {t["labels"]["job"]: t for t in prom.targets()}
        assert ts["agent"]["health"] == "up", ts["agent"]
        assert ts["node"]["health"] == "up", ts["node"]
        assert ts["agent-wrong-password"]["health"] == "down"
        assert "401" in ts["agent-wrong-password"]["lastError"]
        assert ts["agent-plain-http"]["health"] == "down"
        wait_until(
            lambda: prom.query('continuity_agent_info{job="agent"}') != [], timeout=20, what="agent series in TSDB"
        )
        log = alog.read_text()
        assert "TLS on, basic auth on (1 users)" in log
        assert PASSWORD not in log
    finally:
        if prom is not None:
            prom.stop()
        for p in (agent, node):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_mutual_tls_refuses_unknown_client_certificates(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    webdir = tmp_path / "web"
    webdir.mkdir()
    web = _web_config(
        webdir,
        pki,
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file="ca.crt",
        client_allowed_sans=["prometheus.example"],
    )
    agent, port, log = _start_agent(tmp_path, web)
    url = f"https://127.0.0.1:{port}/metrics"
    auth = ("prometheus", PASSWORD)
    try:

        def up() -> bool:
            assert agent.poll() is None, log.read_text()
            return _https(url, pki, auth, (pki.client_cert, pki.client_key))[0] == 200

        wait_until(up, timeout=30, what="agent with mTLS")
        for client in (None, (pki.other_client_cert, pki.other_client_key)):
            with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
                _https(url, pki, auth, client)
        # Still answering the good client after the refused ones.
        assert _https(url, pki, auth, (pki.client_cert, pki.client_key))[0] == 200
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)


def test_bad_web_config_exits_2_with_one_line(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users: {alice: plain-text-pw}\n")
    cfg = tmp_path / "agent.yml"
    cfg.write_text("agent: {site: hq, state_dir: state}\n")
    r = subprocess.run(
        [str(AGENT_BIN), "run", "--config", str(cfg), "--web.config.file", str(web)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "basic_auth_users" in r.stderr and "bcrypt" in r.stderr
    assert "plain-text-pw" not in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_non_loopback_without_tls_or_auth_warns(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yml"
    cfg.write_text("agent: {site: hq, state_dir: state}\n")
    port = free_port()
    proc = subprocess.Popen(
        [str(AGENT_BIN), "run", "--config", str(cfg), "--web.listen-address", f"0.0.0.0:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 30
        out = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline and "listening on" not in out:
            out += proc.stdout.readline()
        out += proc.stdout.readline() + proc.stdout.readline()
        assert "WARNING" in out and "without TLS or authentication" in out, out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    with agent_process(cfg) as a:
        wait_until(lambda: "loopback only" in a.log(), timeout=10, what="start-up message")
        assert "without TLS or authentication" not in a.log()


def test_web_config_changes_apply_without_a_signal(tmp_path: Path) -> None:
    """As exporter-toolkit: the file is re-read when it changes (users for the next request); SIGHUP
    re-reads it too. Unlike it, a broken file does not blind monitoring: the last valid config stays
    in force and the reload metric drops to 0."""
    pki = make_pki(tmp_path / "pki")
    webdir = tmp_path / "web"
    webdir.mkdir()
    web = _web_config(webdir, pki)
    agent, port, log = _start_agent(tmp_path, web)
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: _https(url, pki, ("prometheus", PASSWORD))[0] == 200, timeout=30, what="agent up")
        good = yaml.safe_load(web.read_text())
        good["basic_auth_users"] = {"rotated": bcrypt_hash("new-pw-2", rounds=4)}
        web.write_text(yaml.safe_dump(good))
        wait_until(lambda: _https(url, pki, ("rotated", "new-pw-2"))[0] == 200, timeout=20, what="new user")
        assert _https(url, pki, ("prometheus", PASSWORD))[0] == 401
        # A broken web config: the last valid one stays in force (the scraper still gets 200, the
        # removed user still 401), the reason is logged, and the reload metric says so.
        web.write_text("basic_auth_users: {x: not-a-hash}\n")
        # (the file is looked at on the next connection and request)
        wait_until(lambda: _https(url, pki, ("rotated", "new-pw-2"))[0] == 200
                   and "web config changed and is now invalid" in log.read_text(), timeout=20,
                   what="broken file noticed", interval=0.3)
        status, body = _https(url, pki, ("rotated", "new-pw-2"))
        assert status == 200 and b"continuity_config_last_reload_successful 0.0" in body
        assert _https(url, pki, ("prometheus", PASSWORD))[0] == 401
        assert "still serving under the last valid one" in log.read_text()
        assert "not-a-hash" not in log.read_text()
        web.write_text(yaml.safe_dump(good))
        wait_until(lambda: _https(url, pki, ("rotated", "new-pw-2"))[0] == 200, timeout=20, what="fixed")
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reloaded" in log.read_text(), timeout=20, what="SIGHUP reload")
        assert _https(url, pki, ("rotated", "new-pw-2"))[0] == 200
        assert agent.poll() is None

        def reload_ok() -> float:
            status, body = _https(url, pki, ("rotated", "new-pw-2"))
            assert status == 200
            name = "continuity_config_last_reload_successful"
            return float(next(x for x in body.decode().splitlines() if x.startswith(name)).split()[-1])

        assert reload_ok() == 1.0
        # SIGHUP with a web config nested 2,000 deep: one clear error from the bounded loader, no
        # task exception; the reload counts as failed, and still does once the file is fixed
        # (re-read without a signal) until the next SIGHUP reload succeeds.
        web.write_text("basic_auth_users: " + "[" * 2000 + "\n")
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: log.read_text().count("config reloaded") >= 2, timeout=20, what="second reload")
        text = log.read_text()
        assert "nested too deeply" in text and "Task exception was never retrieved" not in text
        assert "Traceback" not in text and agent.poll() is None
        web.write_text(yaml.safe_dump(good))
        wait_until(lambda: _https(url, pki, ("rotated", "new-pw-2"))[0] == 200, timeout=20, what="fixed again")
        assert reload_ok() == 0.0  # the metric says the last reload failed
        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: reload_ok() == 1.0, timeout=20, what="good reload")
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)
