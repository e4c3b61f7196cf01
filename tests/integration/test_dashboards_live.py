"""Every PromQL query of every Grafana panel, run against a real Prometheus scraping a real agent.

The agent runs the demo config (deploy/examples/demo.yml) with its ports and state directory moved
into the test, plus the fixtures the demo cannot carry because they need servers made in the test:

* an SNMP device (net-snmp snmpd on a free port) as the demo site's WAN router;
* a real restic repository and a borg repository (tests/helpers/backups.py) as backup targets named
  as the runbooks' ``backups:`` (``file-shares`` of runbooks/file-services.yml, ``sql-full-nightly``
  of runbooks/pamis.yml and others), the restic one with an integrity check and a restore test;
* an HTTPS server whose certificate no trust store knows, probed with ``tls_verify: false``;
* an iperf3 server on 127.0.0.1 for the demo link's throughput test, and download/upload criteria in
  the demo site's class;
* the DR report job on a once-a-minute schedule, for its metrics.

With every collector kind configured this way, the agent's exposition holds a sample of every metric
in the catalogue, and `promtool check metrics` has nothing to say about it (the last test).

Prometheus (Debian package) scrapes the agent every 2 s and loads the alert and recording rules. Then
each panel query and each dashboard variable query goes through /api/v1/query: it must parse, and it
must return at least one series. No query is excused.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.catalogue import catalogue
from collectors.registry import collectors
from tests.helpers.backups import Repos, make_repos
from tests.helpers.common import ROOT, AgentProcess, free_port, http_get, need, wait_until
from tests.helpers.exercise_script import running_exercise
from tests.helpers.httpserve import serve_http
from tests.helpers.prom import Prometheus
from tests.helpers.promql import RULES_DIR, dashboard_exprs, metric_names, strip_strings
from tests.helpers.tls import make_pki

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO = ROOT / "deploy" / "examples" / "demo.yml"
SCRAPE = "2s"
RATE_WINDOW = "20s"

# Selectors that take a few runs to appear (hysteresis, counter rates, evidence verification), on top
# of every metric name the dashboards use.
SLOW_METRICS = ("continuity_recovery_evidence_valid", "continuity_site_standard_met_all",
                "continuity_link_utilisation_ratio", 'continuity_site_standard_met{criterion="negotiated_speed"}',
                'continuity_site_standard_met{criterion="download"}', 'continuity_runbook_rpo_met{runbook="pamis"}')


@dataclass
class Fixtures:
    snmp_port: int
    repos: Repos
    scratch: Path
    https_port: int
    iperf3_port: int


def _demo_config(tmp_path: Path, port: int, fx: Fixtures) -> Path:
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
    cfg["targets"].append({"name": "demo-router", "kind": "snmp", "host": "127.0.0.1", "port": fx.snmp_port,
                           "auth": "demo-snmp", "interval": "5s"})
    # ... which is the demo site's WAN router: negotiated speed and utilisation for the link panels.
    if any(t["kind"] == "standards" for t in cfg["targets"]):
        site = next(s for s in cfg["sites"] if s["name"] == cfg["agent"]["site"])
        site["wan_interface"] = {"snmp_target": "demo-router", "interface": "lo"}
    _add_fixture_targets(cfg, fx)
    # A DR exercise running now, for the "DR exercise (live)" dashboard.
    exercise_evidence = tmp_path / "exercise-evidence"
    exercise_evidence.mkdir()
    running_exercise(exercise_evidence)
    cfg["exercises"] = {"runbooks_dir": str(ROOT / "runbooks"), "evidence_dir": str(exercise_evidence), "refresh": "2s"}
    path = tmp_path / "demo.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _add_fixture_targets(cfg: dict[str, Any], fx: Fixtures) -> None:
    r = fx.repos
    repo = {"password_file": str(r.password_file), "rpo": "24h", "interval": "5s", "timeout": "30s"}
    cfg["targets"] += [
        # Named as the runbooks' backups (file-shares: file-services; sql-full-nightly: pamis and
        # others), so continuity_runbook_rpo_met has something to say. The integrity check and the
        # restore test first run at start (the scheduler does not wait an interval for them).
        {"name": "file-shares", "kind": "backup", "type": "restic", "repository": str(r.restic),
         "env": dict(r.restic_env), "group": {"host": "fs1", "tags": ["nightly"]}, **repo,
         "integrity": {"interval": "1h", "timeout": "2m", "read_data_subset": "10%"},
         "restore_test": {"interval": "1h", "timeout": "2m", "sample_files": 3, "scratch_dir": str(fx.scratch)}},
        {"name": "sql-full-nightly", "kind": "backup", "type": "borg", "repository": str(r.borg),
         "env": dict(r.borg_env), "archive_glob": "fs-*", **repo},
        # A web server whose certificate is signed by a throw-away CA nothing trusts.
        {"name": "intranet-https", "kind": "probe", "module": "http", "url": f"https://127.0.0.1:{fx.https_port}/",
         "tls_verify": False, "interval": "5s"},
    ]
    link = next(t for t in cfg["targets"] if t["kind"] == "link")
    link["throughput"] = {"port": fx.iperf3_port, "duration": "1s", "omit": "0s", "interval": "6h",
                          "max_tests_per_day": 4}
    site = next(s for s in cfg["sites"] if s["name"] == cfg["agent"]["site"])
    cls = cfg["site_classes"][site["class"]]
    # Throughput criteria, and one agreeing measurement decides a criterion: a single throughput
    # test gives download and upload a verdict (the demo's hysteresis would want three tests).
    cls.update({"min_download": "10Mbit/s", "min_upload": "10Mbit/s", "hysteresis": 1})
    # The DR report job every minute (JSON only: quick), so its metrics appear during the run.
    cfg["reports"] = {"schedule": "* * * * *", "timezone": "UTC", "output_dir": str(fx.scratch.parent / "reports"),
                      "formats": ["json"]}


@contextlib.contextmanager
def _iperf3_server(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = open(tmp_path / "iperf3.log", "wb")
    proc = subprocess.Popen([need("iperf3"), "--server", "--bind", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"iperf3 exited with {proc.returncode}: {(tmp_path / 'iperf3.log').read_text()}")
        out = subprocess.run([need("ss"), "-ltnH"], capture_output=True, text=True, timeout=5).stdout
        return any(f"127.0.0.1:{port} " in line + " " for line in out.splitlines())

    try:
        wait_until(listening, 10, interval=0.05, what=f"iperf3 listening on 127.0.0.1:{port}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _server_pki(tmp_path: Path) -> tuple[Path, Path]:
    pki = make_pki(tmp_path / "pki")
    return pki.server_cert, pki.server_key


def _snmp() -> Any:
    from tests.helpers import snmp

    return snmp


def _substitute(expr: str, instance: str) -> str:
    expr = expr.replace("$__rate_interval", RATE_WINDOW).replace("$__interval", SCRAPE)
    return expr.replace("$site", "demo-hq").replace("$instance", instance).replace("$exercise", "live-1")


def _as_promql(expr: str) -> str:
    """Grafana's label_values(metric, label) as the PromQL query it runs."""
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", expr.strip())
    return f"group by ({m.group(2)}) ({m.group(1)})" if m else expr


@dataclass
class Live:
    prom: Prometheus
    instance: str
    scratch: Path
    config: Path


def _dashboard_metrics() -> set[str]:
    return {n for _, e in dashboard_exprs() for n in metric_names(strip_strings(e))}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    need("prometheus")
    snmp = _snmp()
    tmp_path = tmp_path_factory.mktemp("dashboards-live")
    repos = make_repos(tmp_path / "repos")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tls = _server_pki(tmp_path)
    with snmp.snmpd(tmp_path) as device, serve_http(tls=tls) as https_port, _iperf3_server(tmp_path) as iperf3:
        port = free_port()
        fx = Fixtures(device.port, repos, scratch, https_port, iperf3)
        agent = AgentProcess(_demo_config(tmp_path, port, fx), port=port)
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
            wanted = _dashboard_metrics()
            missing: list[str] = []

            def ready() -> bool:
                up = prom.query("count(continuity_target_up)")
                scrapes = prom.query(f"count_over_time(up[{RATE_WINDOW}])")
                names = prom.query('group by (__name__) ({__name__=~"continuity_.+"})')
                present = {r["metric"]["__name__"] for r in names}
                missing[:] = sorted(wanted - present) + [m for m in SLOW_METRICS if not prom.query(f"count({m})")]
                return (bool(up) and int(float(up[0]["value"][1])) == targets and not missing
                        and bool(scrapes) and float(scrapes[0]["value"][1]) >= 6)

            try:
                wait_until(ready, 90, interval=1.0, what="every demo target collected and scraped six times")
            except AssertionError as e:
                raise AssertionError(f"{e}; still missing {missing}; agent log:\n{agent.log()[-3000:]}") from None
            yield Live(prom, instance, scratch, tmp_path / "demo.yml")
        finally:
            if prom is not None:
                prom.stop()
            agent.stop()


def _rules(prom: Prometheus) -> list[dict[str, Any]]:
    with urllib.request.urlopen(prom.url + "/api/v1/rules", timeout=5) as r:
        groups = json.loads(r.read())["data"]["groups"]
    return [dict(rule, group_interval=g["interval"]) for g in groups for rule in g["rules"]]


def test_prometheus_loaded_every_rule(live: Live) -> None:
    loaded = len(_rules(live.prom))
    in_files = sum(len(g["rules"]) for p in RULES_DIR.glob("*.yml") for g in yaml.safe_load(p.read_text())["groups"])
    assert loaded == in_files > 40


def test_every_panel_query_parses_and_returns_data(live: Live) -> None:
    prom, instance = live.prom, live.instance
    exprs = dashboard_exprs()
    assert len(exprs) > 100
    empty = []
    for where, raw in exprs:
        expr = _as_promql(_substitute(raw, instance))
        if not prom.query(expr):  # raises with Prometheus's parse error if it does not parse
            empty.append(f"{where}: {expr}")
    print(f"\n{len(exprs) - len(empty)} of {len(exprs)} panel queries returned data")
    assert not empty, "panel queries with no data against the live demo:\n" + "\n".join(empty)


def _value(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)
    assert len(result) <= 1, (expr, result)
    return float(result[0]["value"][1]) if result else None


def test_fixtures_show_what_they_really_are(live: Live) -> None:
    """The data behind the panels is the fixtures' truth, not just any series. (Checked until they all
    hold at once, for a few seconds: a run that finds the repository busy reports "unknown" for a moment.)"""
    two_days = 2 * 86400
    expect: dict[str, Any] = {
        # restic: two snapshots of host fs1 tagged nightly, made a minute ago; repository intact; a
        # restore of three sampled files verified.
        'continuity_backup_state{backup="file-shares",state="fresh"}': 1,
        'continuity_backup_snapshots{backup="file-shares"}': 2,
        'continuity_backup_size_drop{backup="file-shares"}': 0,
        'continuity_backup_integrity_ok{backup="file-shares"}': 1,
        'continuity_backup_restore_test_ok{backup="file-shares"}': 1,
        'continuity_backup_restore_test_duration_seconds{backup="file-shares"}': lambda v: 0 < v < 120,
        "time() - continuity_backup_restore_test_last_success_timestamp_seconds": lambda v: 0 <= v < 300,
        'continuity_backup_snapshots{backup="sql-full-nightly",kind="borg"}': 2,
        # Runbooks whose every backup is configured and fresh meet their RPO.
        'continuity_runbook_rpo_met{runbook="file-services"}': 1,
        'continuity_runbook_rpo_met{runbook="pamis"}': 1,
        # make_pki's server certificate is valid for two days.
        "continuity_probe_tls_cert_expiry_timestamp_seconds - time()": lambda v: 0.95 * two_days < v < two_days,
        # Loopback iperf3 runs far above the 10 Mbit/s the class asks for, both ways (bytes/s).
        'continuity_link_throughput_bytes_per_second{direction="download"}': lambda v: v > 10e6 / 8,
        'continuity_link_throughput_bytes_per_second{direction="upload"}': lambda v: v > 10e6 / 8,
        'continuity_site_standard_met{criterion="download"}': 1,
        'continuity_site_standard_met{criterion="upload"}': 1,
    }
    wrong: dict[str, float | None] = {}

    def hold() -> bool:
        got = {expr: _value(live.prom, expr) for expr in expect}
        wrong.clear()
        wrong.update({e: v for e, v in got.items()
                      if v is None or not (expect[e](v) if callable(expect[e]) else v == expect[e])})
        return not wrong

    try:
        wait_until(hold, 20, interval=1.0, what="the fixtures' values")
    except AssertionError as e:
        raise AssertionError(f"{e}: {wrong}") from None
    assert list(live.scratch.iterdir()) == []  # the restore test cleaned up after itself


def test_alerts_evaluate_against_live_data(live: Live) -> None:
    """The demo's closed port makes TargetDown-style data real: the alert expression sees it, and the
    rules report no evaluation errors."""
    prom = live.prom

    def healthy() -> bool:
        rules = [rule for rule in _rules(prom) if rule["group_interval"] <= 5]
        assert all(rule["health"] != "err" for rule in rules), [r.get("lastError") for r in rules]
        return all(rule["health"] == "ok" for rule in rules)

    wait_until(healthy, 30, interval=0.5, what="alert rules evaluated")
    assert prom.query('continuity_probe_success{target="closed-port"} == 0')
    started = time.time()
    assert prom.query('max by (site) (continuity_device_up or continuity_probe_success)', at=started)


def _sample_names(text: str) -> set[str]:
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_catalogued_metric_has_a_sample_and_promtool_is_silent(live: Live) -> None:
    """Every collector kind is configured, against real peers; every metric of the catalogue then
    has at least one sample in the agent's own exposition, and `promtool check metrics` prints
    nothing for it (so no metric promtool would flag can hide behind a config that does not emit it)."""
    promtool = need("promtool")
    kinds = {t["kind"] for t in yaml.safe_load(live.config.read_text())["targets"]}
    assert kinds == set(collectors()), f"collector kinds not configured: {sorted(set(collectors()) - kinds)}"
    wanted = set(catalogue())
    missing: list[str] = []
    text = ""

    def all_exposed() -> bool:
        nonlocal text
        status, body = http_get(f"http://{live.instance}/metrics")
        assert status == 200
        text = body.decode()
        missing[:] = sorted(wanted - _sample_names(text))
        return not missing

    try:  # the report job runs on the next minute
        wait_until(all_exposed, 90, interval=1.0, what="a sample of every catalogued metric")
    except AssertionError as e:
        raise AssertionError(f"{e}; catalogued metrics with no sample: {missing}") from None
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    print(f"\n{len(wanted)} catalogued metrics, all exposed; {len(text.splitlines())} exposition lines; "
          f"promtool: {r.stdout.strip() or 'silent'}")
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
