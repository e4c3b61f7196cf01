"""Every PromQL query of every Grafana panel, run against a real Prometheus scraping a real agent.

The agent runs the demo config (deploy/examples/demo.yml) with its ports and state directory moved
into the test, plus an SNMP device (net-snmp snmpd on a free port) as the demo site's WAN router.
Prometheus (Debian package) scrapes
it every 2 s and loads the alert and recording rules. Then each panel query and each dashboard variable
query goes through /api/v1/query: it must parse, and it must return at least one series.

Some panels show data from collectors the demo does not exercise yet (link measurements and site
backups, HTTPS probes, throughput tests). Their metrics are listed in DEMO_PENDING, per
collector: a query using one of them only has to parse while that metric is absent from the live data;
as soon as the demo produces it (targets added to demo.yml as collectors land) the query must return
data like any other. The test prints which queries are still waiting.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.common import ROOT, AgentProcess, free_port, need, wait_until
from tests.helpers.prom import Prometheus
from tests.helpers.promql import RULES_DIR, dashboard_exprs, metric_names, strip_strings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO = ROOT / "deploy" / "examples" / "demo.yml"
SCRAPE = "2s"
RATE_WINDOW = "20s"

# Metrics on dashboards that the demo config does not produce yet, by collector. Empty these as the
# demo grows (the test says which ones it has started to see).
DEMO_PENDING: dict[str, set[str]] = {
    "backup (issue 5): needs backup targets in the demo, named as in runbooks/": {
        "continuity_backup_last_success_timestamp_seconds", "continuity_backup_last_attempt_timestamp_seconds",
        "continuity_backup_size_bytes", "continuity_backup_snapshots", "continuity_backup_rpo_seconds",
        "continuity_backup_state", "continuity_backup_integrity_check_last_success_timestamp_seconds",
        "continuity_backup_integrity_ok", "continuity_backup_restore_test_last_success_timestamp_seconds",
        "continuity_backup_restore_test_duration_seconds",
        # evidence: only when the backups its runbooks name are configured
        "continuity_runbook_rpo_met",
    },
    "probe: needs an HTTPS probe in the demo": {"continuity_probe_tls_cert_expiry_timestamp_seconds"},
    "link: needs an iperf3 server and a throughput test in the demo": {
        "continuity_link_throughput_bits_per_second", "continuity_link_throughput_test_timestamp_seconds",
    },
}
PENDING = set().union(*DEMO_PENDING.values())
# Single queries that need more than a metric: the demo's site class has no download/upload criteria
# (they need throughput tests, see DEMO_PENDING).
DEMO_PENDING_QUERIES = {
    "site-detail.json:Throughput vs contracted vs standard:C": "download/upload criteria in the demo class",
}
# Metrics that take a few runs to appear (hysteresis, counter rates, evidence verification).
SLOW_METRICS = ("continuity_recovery_evidence_valid", "continuity_site_standard_met_all",
                "continuity_link_utilisation_ratio", 'continuity_site_standard_met{criterion="negotiated_speed"}')


def _demo_config(tmp_path: Path, port: int, snmp_port: int) -> Path:
    cfg: dict[str, Any] = yaml.safe_load(DEMO.read_text())
    cfg["agent"]["state_dir"] = str(tmp_path / "state")
    cfg["agent"]["listen_address"] = f"127.0.0.1:{port}"
    cfg.setdefault("defaults", {}).update({"interval": "5s", "start_jitter": 0.0})
    demo_port = str(yaml.safe_load(DEMO.read_text())["agent"]["listen_address"]).rpartition(":")[2]
    for t in cfg["targets"]:
        t["interval"] = "5s"
        for key, value in list(t.items()):
            if isinstance(value, str) and f":{demo_port}" in value:
                t[key] = value.replace(f":{demo_port}", f":{port}")
            elif key == "port" and str(value) == demo_port:
                t[key] = port
            elif key.endswith(("_dir", "_file", "_path")) and isinstance(value, str) and not value.startswith("/"):
                t[key] = str((DEMO.parent / value).resolve())
    # An SNMP device for the interface panels: snmpd on loopback, v2c.
    community = tmp_path / "snmp-community"
    community.write_text(_snmp().COMMUNITY)
    community.chmod(0o600)
    cfg.setdefault("auths", {})["demo-snmp"] = {"type": "snmp_v2c", "community_file": str(community)}
    cfg["targets"].append({"name": "demo-router", "kind": "snmp", "host": "127.0.0.1", "port": snmp_port,
                           "auth": "demo-snmp", "interval": "5s"})
    # ... which is the demo site's WAN router: negotiated speed and utilisation for the link panels.
    if any(t["kind"] == "standards" for t in cfg["targets"]):
        site = next(s for s in cfg["sites"] if s["name"] == cfg["agent"]["site"])
        site["wan_interface"] = {"snmp_target": "demo-router", "interface": "lo"}
    path = tmp_path / "demo.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _snmp() -> Any:
    from tests.helpers import snmp

    return snmp


def _substitute(expr: str, instance: str) -> str:
    expr = expr.replace("$__rate_interval", RATE_WINDOW).replace("$__interval", SCRAPE)
    return expr.replace("$site", "demo-hq").replace("$instance", instance)


def _as_promql(expr: str) -> str:
    """Grafana's label_values(metric, label) as the PromQL query it runs."""
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", expr.strip())
    return f"group by ({m.group(2)}) ({m.group(1)})" if m else expr


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Any:
    need("prometheus")
    snmp = _snmp()
    tmp_path = tmp_path_factory.mktemp("dashboards-live")
    with snmp.snmpd(tmp_path) as device:
        port = free_port()
        agent = AgentProcess(_demo_config(tmp_path, port, device.port), port=port)
        prom = None
        try:
            agent.wait_ready()
            instance = f"127.0.0.1:{port}"
            prom = Prometheus(tmp_path, {
                "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
                "rule_files": [str(p) for p in sorted(RULES_DIR.glob("*.yml"))],
                "scrape_configs": [{"job_name": "continuity-agent",
                                    "static_configs": [{"targets": [instance]}]}],
            }).start()
            targets = len(yaml.safe_load((tmp_path / "demo.yml").read_text())["targets"])

            missing: list[str] = []

            def ready() -> bool:
                up = prom.query("count(continuity_target_up)")
                scrapes = prom.query(f"count_over_time(up[{RATE_WINDOW}])")
                missing[:] = [m for m in SLOW_METRICS if not prom.query(f"count({m})")]
                return (bool(up) and int(float(up[0]["value"][1])) == targets and not missing
                        and bool(scrapes) and float(scrapes[0]["value"][1]) >= 6)

            try:
                wait_until(ready, 90, interval=0.5, what="every demo target collected and scraped six times")
            except AssertionError as e:
                raise AssertionError(f"{e}; still missing {missing}; agent log:\n{agent.log()[-3000:]}") from None
            yield prom, instance
        finally:
            if prom is not None:
                prom.stop()
            agent.stop()


def test_prometheus_loaded_every_rule(live: Any) -> None:
    prom, _ = live
    import json
    import urllib.request

    with urllib.request.urlopen(prom.url + "/api/v1/rules", timeout=5) as r:
        groups = json.loads(r.read())["data"]["groups"]
    loaded = sum(len(g["rules"]) for g in groups)
    in_files = sum(len(g["rules"]) for p in RULES_DIR.glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"])
    assert loaded == in_files > 40


def test_every_panel_query_parses_and_returns_data(live: Any) -> None:
    prom, instance = live
    present = {r["metric"]["__name__"] for r in prom.query('{__name__=~"continuity_.+"}')}
    exprs = dashboard_exprs()
    assert len(exprs) > 60
    empty, waiting = [], []
    for where, raw in exprs:
        expr = _as_promql(_substitute(raw, instance))
        result = prom.query(expr)  # raises with Prometheus's parse error if it does not parse
        if result:
            continue
        missing_pending = {n for n in metric_names(strip_strings(raw)) if n in PENDING and n not in present}
        if where in DEMO_PENDING_QUERIES:
            waiting.append(f"{where}: waits for {DEMO_PENDING_QUERIES[where]}")
        elif missing_pending:
            waiting.append(f"{where}: waits for {', '.join(sorted(missing_pending))}")
        else:
            empty.append(f"{where}: {expr}")
    assert not empty, "panel queries with no data against the live demo:\n" + "\n".join(empty)
    started = sorted(PENDING & present)
    print(f"\n{len(exprs) - len(waiting)} of {len(exprs)} panel queries returned data; "
          f"{len(waiting)} wait for collectors the demo does not exercise yet:\n" + "\n".join(waiting))
    if started:
        print("DEMO_PENDING metrics the demo now produces (remove them from the list): " + ", ".join(started))
    # The demo exercises at least the core, probe, host, snmp and evidence panels.
    assert len(exprs) - len(waiting) >= 50


def test_alerts_evaluate_against_live_data(live: Any) -> None:
    """The demo's closed port makes TargetDown-style data real: the alert expression sees it, and the
    rules report no evaluation errors."""
    prom, _ = live
    import json
    import urllib.request

    def healthy() -> bool:
        with urllib.request.urlopen(prom.url + "/api/v1/rules", timeout=5) as r:
            groups = json.loads(r.read())["data"]["groups"]
        rules = [rule for g in groups if g["interval"] <= 5 for rule in g["rules"]]
        assert all(rule["health"] != "err" for rule in rules), [r.get("lastError") for r in rules]
        return all(rule["health"] == "ok" for rule in rules)

    wait_until(healthy, 30, interval=0.5, what="alert rules evaluated")
    assert prom.query('continuity_probe_success{target="closed-port"} == 0')
    started = time.time()
    assert prom.query('max by (site) (continuity_device_up or continuity_probe_success)', at=started)
