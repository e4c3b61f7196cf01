"""Every ``continuity_*`` metric the alert rules, their promtool tests and the Grafana dashboards use
exists in the metric catalogue (agent.catalogue.catalogue(), read at test time), and every label they
match on is one the metric really has.

Collectors land at different times. A metric named in its issue whose collector has not landed yet
goes in PENDING_METRICS below, by collector; the lead empties the list as collectors land. A pending
name that has meanwhile appeared in the catalogue is reported as a warning (remove it from the list);
its labels are then checked like any other metric's.
"""

from __future__ import annotations

import re
import warnings

import pytest
import yaml

from agent.catalogue import catalogue, exposed_labels
from tests.helpers.promql import RULE_TESTS_DIR, dashboard_exprs, metric_names, rule_exprs, selector_labels

# Names exactly as written in issue 5 (backup), whose collector has not landed; remove as they land.
# (snmp, issue 4, and link, issue 6, have landed.)
PENDING_METRICS: dict[str, set[str]] = {
    "backup (issue 5)": {
        "continuity_backup_last_success_timestamp_seconds",
        "continuity_backup_last_attempt_timestamp_seconds",
        "continuity_backup_size_bytes",
        "continuity_backup_snapshots",
        "continuity_backup_rpo_seconds",
        "continuity_backup_state",
        "continuity_backup_integrity_check_last_success_timestamp_seconds",
        "continuity_backup_integrity_ok",
        "continuity_backup_restore_test_last_success_timestamp_seconds",
        "continuity_backup_restore_test_duration_seconds",
    },
}
PENDING = set().union(*PENDING_METRICS.values())

# Labels Prometheus adds to every scraped series, and the external label partner councils set.
SCRAPE_LABELS = {"job", "instance", "council"}


def _uses() -> list[tuple[str, str]]:
    return rule_exprs() + dashboard_exprs()


def _allowed_labels(name: str) -> set[str] | None:
    spec = catalogue().get(name)
    if spec is None:
        return None
    labels = set(exposed_labels(spec)) | SCRAPE_LABELS
    if spec.type == "info":
        labels.discard("__name__")
    return labels


def test_rules_and_dashboards_use_metrics() -> None:
    # Guard against the extraction silently finding nothing.
    assert len(rule_exprs()) > 30
    assert len(dashboard_exprs()) > 40
    used = {n for _, e in _uses() for n in metric_names(e)}
    assert "continuity_target_up" in used and "continuity_backup_state" in used


def test_every_metric_used_is_in_the_catalogue() -> None:
    cat = catalogue()
    missing = sorted(
        f"{where}: {name}"
        for where, expr in _uses()
        for name in metric_names(expr)
        if name not in cat and name not in PENDING
    )
    assert not missing, "metrics used but not in the catalogue (and not pending):\n" + "\n".join(missing)
    landed = sorted(PENDING & set(cat))
    if landed:
        warnings.warn(
            "now in the catalogue, remove from PENDING_METRICS in tests/unit/test_monitoring_catalogue.py: "
            + ", ".join(landed),
            stacklevel=1,
        )


def test_every_label_matched_exists_on_the_metric() -> None:
    bad = []
    for where, expr in _uses():
        for name, labels in selector_labels(expr):
            allowed = _allowed_labels(name)
            if allowed is None:
                continue  # pending: checked once it lands
            extra = labels - allowed
            if extra:
                bad.append(f"{where}: {name} has no label(s) {sorted(extra)} (has {sorted(allowed)})")
    assert not bad, "\n".join(bad)


_SERIES = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{(.*)\}\s*$")


def test_promtool_test_inputs_look_like_real_series() -> None:
    """The unit tests' input series use only names and labels the agent really exposes, so a rule
    test cannot pass against made-up data."""
    bad = []
    seen = 0
    for path in sorted(RULE_TESTS_DIR.glob("*.yml")):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for s in test.get("input_series", []):
                m = _SERIES.match(s["series"])
                assert m, f"{path.name}: cannot read series {s['series']!r}"
                name = m.group(1)
                labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"', m.group(2)))
                if not name.startswith("continuity_"):
                    continue
                seen += 1
                if name not in catalogue():
                    if name not in PENDING:
                        bad.append(f"{path.name}: {name} is not in the catalogue")
                    continue
                allowed = _allowed_labels(name)
                assert allowed is not None
                if labels - allowed:
                    bad.append(f"{path.name}: {name} has no label(s) {sorted(labels - allowed)}")
                missing = (allowed - SCRAPE_LABELS) - labels
                if missing:
                    bad.append(f"{path.name}: {name} lacks label(s) {sorted(missing)} the agent always sets")
    assert seen > 50
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("expr,names", [
    ('sum by (site) (rate(continuity_target_errors_total{reason="x"}[5m]))', {"continuity_target_errors_total"}),
    ('site:continuity_reachable:max == 0 and continuity_site_in_service_hours', {"continuity_site_in_service_hours"}),
    ('up{job=~"continuity_fake_.*"} == 0', set()),
    ('label_replace(continuity_a, "x", "continuity_b", "", "")', {"continuity_a"}),
])
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
