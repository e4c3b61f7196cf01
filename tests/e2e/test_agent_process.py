"""The agent as a real process: endpoints, SIGHUP reload, restart, collect-once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.helpers.common import (
    AGENT_BIN,
    agent_process,
    free_port,
    http_get,
    metric_value,
    need_root,
    wait_until,
)


def _config(tmp_path: Path, targets: str) -> Path:
    p = tmp_path / "agent.yml"
    p.write_text(
        "agent: {site: hq, state_dir: state}\n"
        "defaults: {interval: 1s, timeout: 1s}\n"
        "sites: [{name: hq, class: main_office}, {name: depot, class: small_site}]\n"
        "targets:\n" + targets
    )
    return p


def test_endpoints(tmp_path: Path) -> None:
    closed = free_port()
    cfg = _config(
        tmp_path,
        f"""  - {{name: self-tcp, kind: probe, module: tcp, host: 127.0.0.1, port: {closed}, site: depot}}
  - {{name: me, kind: host}}
""",
    )
    with agent_process(cfg) as agent:
        wait_until(
            lambda: (
                metric_value(agent.metrics(), "continuity_probe_success", target="self-tcp") is not None
                and metric_value(agent.metrics(), "continuity_target_up", target="me") is not None
            ),
            what="first collections",
        )
        text = agent.metrics()
        assert metric_value(text, "continuity_probe_success", target="self-tcp", site="depot") == 0.0
        assert metric_value(text, "continuity_target_up", target="me", collector="host", site="hq") == 1.0
        assert (metric_value(text, "continuity_host_memory_total_bytes", target="me") or 0) > 0
        assert http_get(agent.url + "/-/healthy")[0] == 200
        assert http_get(agent.url + "/-/ready")[0] == 200
        assert http_get(agent.url + "/nope")[0] == 404
        status, body = http_get(agent.url + "/api/v1/status")
        st = json.loads(body)
        assert status == 200 and st["site"] == "hq"
        by_name = {t["name"]: t for t in st["targets"]}
        assert by_name["self-tcp"]["site"] == "depot"
        assert by_name["self-tcp"]["last_error"] and "Connection refused" in by_name["self-tcp"]["last_error"]
        status, page = http_get(agent.url + "/")
        html = page.decode()
        assert status == 200 and "self-tcp" in html and '<th scope="col">Collection</th>' in html
        assert "Connection refused" in html  # the last error, under the collection state
        # gzip for scrapers that ask for it
        status, gz = http_get(agent.url + "/metrics", headers={"Accept-Encoding": "gzip"})
        assert status == 200 and gz[:2] == b"\x1f\x8b"


def test_sighup_with_broken_config_keeps_old_config(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "  - {name: me, kind: host}\n")
    with agent_process(cfg) as agent:
        wait_until(lambda: metric_value(agent.metrics(), "continuity_target_up", target="me") == 1.0, what="up")
        good = cfg.read_text()
        cfg.write_text(good + "  - {name: broken, kind: probe, module: tcp}\n")  # invalid: no host/port
        agent.signal(signal.SIGHUP)
        wait_until(
            lambda: metric_value(agent.metrics(), "continuity_config_last_reload_successful") == 0.0,
            what="reload marked failed",
        )
        text = agent.metrics()
        assert metric_value(text, "continuity_target_up", target="me") == 1.0  # old config still running
        assert "broken" not in text
        assert "tcp probes need host and port" in agent.log()
        before = metric_value(text, "continuity_target_last_success_timestamp_seconds", target="me")
        wait_until(
            lambda: (
                (metric_value(agent.metrics(), "continuity_target_last_success_timestamp_seconds", target="me") or 0)
                > (before or 0)
            ),
            what="old targets keep running",
        )
        # A valid config then loads, with the new target.
        cfg.write_text(good + "  - {name: me2, kind: host}\n")
        agent.signal(signal.SIGHUP)
        wait_until(
            lambda: metric_value(agent.metrics(), "continuity_target_up", target="me2") == 1.0,
            what="new target after reload",
        )
        assert metric_value(agent.metrics(), "continuity_config_last_reload_successful") == 1.0
        assert agent.proc.poll() is None


def test_restart_reexposes_last_known_values(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "  - {name: me, kind: host, interval: 1h}\n")
    with agent_process(cfg) as agent:
        wait_until(lambda: metric_value(agent.metrics(), "continuity_target_up", target="me") == 1.0, what="up")
        first = metric_value(agent.metrics(), "continuity_target_last_success_timestamp_seconds", target="me")
    assert first
    # With a 1h interval nothing new is collected soon after restart: what shows is the stored result.
    with agent_process(cfg) as agent:
        text = agent.metrics()
        assert metric_value(text, "continuity_target_last_success_timestamp_seconds", target="me") == first
        assert (metric_value(text, "continuity_host_memory_total_bytes", target="me") or 0) > 0


def test_port_in_use_is_one_clear_error(tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        cfg = _config(tmp_path, "  - {name: me, kind: host}\n")
        r = subprocess.run(
            [str(AGENT_BIN), "run", "--config", str(cfg), "--web.listen-address", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 2
        assert "cannot listen on" in r.stderr and "Traceback" not in r.stderr
    finally:
        s.close()


def test_collect_once_prints_samples_and_errors(tmp_path: Path) -> None:
    closed = free_port()
    cfg = _config(
        tmp_path,
        f"""  - {{name: me, kind: host}}
  - {{name: shut, kind: probe, module: tcp, host: 127.0.0.1, port: {closed}}}
""",
    )
    r = subprocess.run(
        [str(AGENT_BIN), "collect-once", "--config", str(cfg), "me"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "continuity_host_memory_total_bytes" in r.stdout and "OK" in r.stdout
    r = subprocess.run(
        [str(AGENT_BIN), "collect-once", "--config", str(cfg), "shut"], capture_output=True, text=True, timeout=60
    )
    assert "partial error (unreachable)" in r.stdout and "continuity_probe_success 0.0\n" in r.stdout
    r = subprocess.run(
        [str(AGENT_BIN), "collect-once", "--config", str(cfg), "nope"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "no target named 'nope'" in r.stderr


def test_icmp_without_permission_names_the_fix(tmp_path: Path) -> None:
    need_root("dropping CAP_NET_RAW in a private network namespace")
    cfg = _config(tmp_path, "  - {name: lo, kind: probe, module: icmp, host: 127.0.0.1}\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(cfg, 0o644)
    r = subprocess.run(
        [
            # ping_group_range is per network namespace: in a private one, no group may ping.
            "unshare",
            "--net",
            "sh",
            "-c",
            'sysctl -q -w net.ipv4.ping_group_range="1 0" && exec "$@"',
            "sh",
            "setpriv",
            "--bounding-set=-net_raw",
            "--inh-caps=-net_raw",
            str(AGENT_BIN),
            "collect-once",
            "--config",
            str(cfg),
            "lo",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "icmp_not_permitted" in r.stdout
    assert "ping_group_range" in r.stdout and "CAP_NET_RAW" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
