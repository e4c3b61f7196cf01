"""A real Prometheus scrapes the agent; promtool lints the exposition."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers.common import agent_process, free_port, metric_value, need, wait_until
from tests.helpers.prom import start_prometheus


def _config(tmp_path: Path) -> Path:
    closed = free_port()
    p = tmp_path / "agent.yml"
    p.write_text(f"""agent: {{site: hq, state_dir: state}}
defaults: {{interval: 1s, timeout: 1s}}
sites: [{{name: hq, class: main_office}}, {{name: library, class: small_site}}]
targets:
  - {{name: me, kind: host}}
  - {{name: lib-router, kind: probe, module: tcp, host: 127.0.0.1, port: {closed}, site: library}}
  - {{name: lo, kind: probe, module: icmp, host: 127.0.0.1}}
""")
    return p


def test_prometheus_scrapes_agent(tmp_path: Path) -> None:
    with agent_process(_config(tmp_path)) as agent:
        prom = start_prometheus(tmp_path, [f"127.0.0.1:{agent.port}"])
        try:

            def has_data() -> bool:
                up = prom.query('up{job="continuity-agent"}')
                probes = prom.query("continuity_probe_success")
                return bool(up) and up[0]["value"][1] == "1" and len(probes) == 2

            wait_until(has_data, timeout=40, what="prometheus to scrape the agent")
            probes = {r["metric"]["target"]: r for r in prom.query("continuity_probe_success")}
            assert set(probes) == {"lib-router", "lo"}
            assert probes["lib-router"]["metric"]["site"] == "library"
            assert probes["lib-router"]["value"][1] == "0"
            health = prom.targets()
            assert health[0]["health"] == "up", health[0].get("lastError")
        finally:
            prom.stop()


def test_promtool_check_metrics_is_silent(tmp_path: Path) -> None:
    promtool = need("promtool")
    with agent_process(_config(tmp_path)) as agent:
        wait_until(
            lambda: (
                metric_value(agent.metrics(), "continuity_target_up", target="me") is not None
                and metric_value(agent.metrics(), "continuity_probe_success", target="lib-router") is not None
            ),
            what="collections",
        )
        text = agent.metrics()
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
