"""Alert and recording rules: promtool check/test, and the house rules every alert follows.

promtool comes from Debian's ``prometheus`` package; under CI=true a missing promtool fails.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict

import pytest
import yaml

from tests.helpers.common import ROOT, need
from tests.helpers.promql import RULE_TESTS_DIR, RULES_DIR, load_rule_groups

# Every alert issue 9 names.
ISSUE_ALERTS = {
    "SiteBelowConnectionStandard", "SiteLinkDown", "SiteUnreachableInServiceHours",
    "InterfaceSpeedBelowContract", "TargetDown", "SNMPAuthFailing", "BackupLate", "BackupStale",
    "BackupFailed", "BackupNeverRan", "BackupSizeDropped", "BackupIntegrityCheckFailed",
    "RestoreTestOverdue", "RecoveryTestOverdue", "RecoveryEvidenceInvalid", "RTOExceeded",
    "EstateCriticalPathOver72h", "EvidenceChainBroken", "TLSCertificateExpiringSoon", "AgentDown",
    "AgentConfigReloadFailed", "AgentCollectionSkipping",
}
LINK_ALERTS = {"SiteBelowConnectionStandard", "SiteLinkDown", "InterfaceSpeedBelowContract"}
ALERTS_DOC = ROOT / "docs" / "alerts.md"


def _alerts() -> list[dict]:
    return [r for _, r in load_rule_groups() if "alert" in r]


def _anchors() -> set[str]:
    """GitHub-style anchors of docs/alerts.md headings."""
    out = set()
    for line in ALERTS_DOC.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return out


def test_promtool_check_rules() -> None:
    promtool = need("promtool")
    files = sorted(str(p) for p in RULES_DIR.glob("*.yml"))
    assert len(files) >= 4
    r = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == len(files)


def test_promtool_unit_tests() -> None:
    promtool = need("promtool")
    files = sorted(str(p) for p in RULE_TESTS_DIR.glob("*.yml"))
    assert len(files) >= 4
    r = subprocess.run([promtool, "test", "rules", *files], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAILED" not in r.stdout


def test_promtool_unit_tests_detect_a_broken_rule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The unit tests are sharp: a rule whose threshold is off makes them fail."""
    promtool = need("promtool")
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    for p in RULES_DIR.glob("*.yml"):
        text = p.read_text()
        if p.name == "continuity-backups.yml":
            text = text.replace('state="stale"} == 1', 'state="late"} == 1')
        (tmp_path / "rules" / p.name).write_text(text)
    (tmp_path / "tests" / "backups_test.yml").write_text((RULE_TESTS_DIR / "backups_test.yml").read_text())
    r = subprocess.run([promtool, "test", "rules", str(tmp_path / "tests" / "backups_test.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "BackupStale" in r.stdout + r.stderr


def test_every_issue_alert_is_defined() -> None:
    names = {r["alert"] for r in _alerts()}
    assert ISSUE_ALERTS <= names, sorted(ISSUE_ALERTS - names)


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_is_well_formed(rule: dict) -> None:
    name = rule["alert"]
    labels, ann = rule.get("labels", {}), rule.get("annotations", {})
    assert labels.get("severity") in ("critical", "warning"), name
    assert labels.get("category"), name
    assert ann.get("summary") and ann.get("description"), name
    # The summary or description names the site, the system (runbook) or the agent instance.
    text = ann["summary"] + ann["description"]
    assert re.search(r"\$labels\.(site|runbook|instance|basis)", text), name
    url = ann.get("runbook_url", "")
    anchor = name.lower()
    assert url.endswith(f"/docs/alerts.md#{anchor}"), url
    assert anchor in _anchors(), f"docs/alerts.md has no section '## {name}'"


def test_link_alerts_are_silenced_outside_service_hours() -> None:
    for rule in _alerts():
        if rule["labels"].get("category") == "link" or rule["alert"] == "SiteUnreachableInServiceHours":
            assert "continuity_site_in_service" in rule["expr"], rule["alert"]
    assert {r["alert"] for r in _alerts() if r["labels"].get("category") == "link"} == LINK_ALERTS


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    fired: dict[str, int] = defaultdict(int)
    quiet: dict[str, int] = defaultdict(int)
    for path in RULE_TESTS_DIR.glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fired[case["alertname"]] += 1
                else:
                    quiet[case["alertname"]] += 1
    names = {r["alert"] for r in _alerts()}
    assert not names - set(fired), f"never tested firing: {sorted(names - set(fired))}"
    assert not names - set(quiet), f"never tested quiet: {sorted(names - set(quiet))}"
    # Both severities of TLSCertificateExpiringSoon are expected somewhere.
    tls = [a for p in RULE_TESTS_DIR.glob("*.yml") for t in yaml.safe_load(p.read_text())["tests"]
           for c in t.get("alert_rule_test", []) if c["alertname"] == "TLSCertificateExpiringSoon"
           for a in c.get("exp_alerts") or []]
    assert {a["exp_labels"]["severity"] for a in tls} == {"warning", "critical"}


def test_every_recording_rule_is_tested() -> None:
    records = {r["record"] for _, r in load_rule_groups() if "record" in r}
    tested = set()
    for path in RULE_TESTS_DIR.glob("*.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("promql_expr_test", []):
                tested.add(case["expr"].strip())
    assert records == tested, f"recording rules without a promql_expr_test: {sorted(records - tested)}"
