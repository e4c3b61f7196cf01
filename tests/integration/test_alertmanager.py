"""The example Alertmanager config: amtool accepts it, routes go where the comments say, and a real
Alertmanager inhibits a site's link alerts while its router is down.

The example's receivers point at example.org; the live test swaps them for receivers without
integrations so nothing leaves the machine.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.common import ROOT, free_port, http_get, need, wait_until

CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def test_amtool_check_config() -> None:
    amtool = need("amtool")
    r = subprocess.run([amtool, "check-config", str(CONFIG)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@pytest.mark.parametrize("labels,receivers", [
    ({"severity": "critical", "site": "hq", "category": "agent"}, "ict-ops-pager"),
    ({"severity": "critical", "site": "library-north", "category": "link"}, "ict-ops-pager,libraries-team"),
    ({"severity": "warning", "site": "library-north", "category": "link"}, "libraries-team"),
    ({"severity": "warning", "site": "hq", "category": "backup"}, "infrastructure-team"),
    ({"severity": "warning", "site": "hq", "category": "dr"}, "infrastructure-team"),
    ({"severity": "warning", "site": "hq", "category": "target"}, "ict-ops-mail"),
    ({"severity": "critical", "site": "ns-depot", "council": "northshire"}, "northshire-ict"),
])
def test_routes(labels: dict[str, str], receivers: str) -> None:
    amtool = need("amtool")
    r = subprocess.run([amtool, "config", "routes", "test", f"--config.file={CONFIG}",
                        *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == receivers


def _offline_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["global"] = {"resolve_timeout": "5m"}
    cfg["receivers"] = [{"name": r["name"]} for r in cfg["receivers"]]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _post(url: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(url + "/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def _alert(name: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, **labels}, "annotations": {"summary": name}}


def test_router_down_inhibits_link_alerts_of_that_site_only(tmp_path: Path) -> None:
    binary = need("prometheus-alertmanager")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "am.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={_offline_config(tmp_path)}",
                             f"--storage.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--cluster.listen-address="], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: http_get(url + "/-/ready", timeout=1)[0] == 200, 30, what="alertmanager ready")
        _post(url, [
            _alert("TargetDown", severity="warning", category="target", collector="snmp",
                   target="library-north-router", site="library-north"),
            _alert("SiteLinkDown", severity="critical", category="link", target="link-library-north",
                   site="library-north"),
            _alert("SiteBelowConnectionStandard", severity="warning", category="link", criterion="rtt",
                   site="library-north"),
            # Another site's link alert, and a non-link alert at the router's site: not inhibited.
            _alert("SiteLinkDown", severity="critical", category="link", target="link-depot-east", site="depot-east"),
            _alert("BackupStale", severity="critical", category="backup", backup="opac", site="library-north"),
            # A down switch (not a router) inhibits nothing.
            _alert("TargetDown", severity="warning", category="target", collector="snmp",
                   target="school-west-switch", site="school-west"),
            _alert("SiteBelowConnectionStandard", severity="warning", category="link", criterion="loss",
                   site="school-west"),
        ])

        def states() -> dict[tuple[str, str], str]:
            _s, body = http_get(url + "/api/v2/alerts")
            return {(a["labels"]["alertname"], a["labels"]["site"]): a["status"]["state"] for a in json.loads(body)}

        wait_until(lambda: len(states()) == 7, 15, what="alerts received")
        expected = {
            ("SiteLinkDown", "library-north"): "suppressed",
            ("SiteBelowConnectionStandard", "library-north"): "suppressed",
            ("TargetDown", "library-north"): "active",
            ("SiteLinkDown", "depot-east"): "active",
            ("BackupStale", "library-north"): "active",
            ("TargetDown", "school-west"): "active",
            ("SiteBelowConnectionStandard", "school-west"): "active",
        }
        wait_until(lambda: states() == expected, 15, what=f"inhibition to settle (have {states()})")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
