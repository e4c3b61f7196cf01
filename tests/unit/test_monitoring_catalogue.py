"""Every ``continuity_*`` metric the alert rules, their promtool tests and the Grafana dashboards use
exists in the metric catalogue (agent.catalogue.catalogue(), read at test time), and every label they
match on is one the metric really has. Every collector has landed: there is no list of pending names.
"""

from __future__ import annotations

import re

import pytest
import yaml

from agent.catalogue import catalogue, exposed_labels
from tests.helpers.promql import RULE_TESTS_DIR, dashboard_exprs, metric_names, rule_exprs, selector_labels

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
    missing = sorted(f"{where}: {name}" for where, expr in _uses() for name in metric_names(expr) if name not in cat)
    assert not missing, "metrics used but not in the catalogue:\n" + "\n".join(missing)


def test_every_label_matched_exists_on_the_metric() -> None:
    bad = []
    for where, expr in _uses():
        for name, labels in selector_labels(expr):
            allowed = _allowed_labels(name)
            if allowed is None:
                continue  # not in the catalogue: test_every_metric_used_is_in_the_catalogue says so
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


def _known_values() -> dict[str, dict[str, set[str]]]:
    """label -> metric -> the values the agent can give it ("*" for any metric with that label).
    ``reason`` is per collector kind (key ``reason:<kind>``)."""
    from agent.catalogue import SKIP_REASONS
    from agent.evidence.verifier import BASES, RULES
    from agent.standards import CRITERIA, WINDOWS
    from collectors.backup.status import STATES
    from collectors.base import CORE_REASONS
    from collectors.link import DIRECTIONS
    from collectors.registry import collectors

    kinds = collectors()
    reasons = {f"reason:{k}": set(CORE_REASONS) | set(c.REASONS) for k, c in kinds.items()}
    return {
        "collector": {"*": set(kinds)},
        "reason": {
            "*": set().union(*reasons.values()),
            **reasons,
            "continuity_target_skipped_runs_total": set(SKIP_REASONS),
        },
        "state": {"continuity_backup_state": set(STATES)},
        "criterion": {"*": set(CRITERIA)},
        "window": {"continuity_site_availability_ratio": set(WINDOWS)},
        "rule": {"continuity_recovery_findings": set(RULES)},
        "severity": {"continuity_recovery_findings": {"error", "warning"}},
        "basis": {"continuity_recovery_critical_path_seconds": set(BASES)},
        "direction": {"*": set(DIRECTIONS)},
        "stat": {"continuity_link_rtt_seconds": {"min", "avg", "max"}},
    }


_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def _value_problems(where: str, name: str, matchers: str) -> list[str]:
    known = _known_values()
    kind = next((v for lb, op, v in _MATCHER.findall(matchers) if lb == "collector" and op == "="), None)
    bad = []
    for label, op, value in _MATCHER.findall(matchers):
        per_metric = known.get(label)
        if per_metric is None or "$" in value:
            continue
        allowed = per_metric.get(name)  # a metric's own values first: a skipped run's reason is no error's
        if allowed is None and label == "reason" and kind:
            allowed = per_metric.get(f"reason:{kind}")
        allowed = allowed or per_metric.get("*")
        if allowed is None:
            continue
        if op in ("=~", "!~"):
            if not re.fullmatch(r"[\w|]+", value):
                continue  # a real pattern, not a list of values
            values = value.split("|")
        else:
            values = [value]
        for v in values:
            if v not in allowed:
                bad.append(f"{where}: {name}{{{label}{op}...}} matches {v!r}, which the agent never sets "
                           f"(known: {', '.join(sorted(allowed))})")
    return bad


def test_label_values_matched_are_ones_the_agent_sets() -> None:
    """A selector on a label value the agent never exports (a misspelt reason, a criterion that does
    not exist) parses and simply never matches: check the values, for rules, dashboards and the
    promtool tests' input series."""
    bad: list[str] = []
    checked = 0
    selector = re.compile(r"(?<![\w:])(continuity_[a-zA-Z0-9_]+)\s*\{([^}]*)\}")
    for where, expr in _uses():
        for m in selector.finditer(expr):
            checked += len(_MATCHER.findall(m.group(2)))
            bad += _value_problems(where, m.group(1), m.group(2))
    for path in sorted(RULE_TESTS_DIR.glob("*.yml")):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for s in test.get("input_series", []):
                m = _SERIES.match(s["series"])
                if m and m.group(1).startswith("continuity_"):
                    bad += _value_problems(path.name, m.group(1), m.group(2))
    assert checked > 20
    assert not bad, "\n".join(bad)


def test_label_value_check_catches_a_wrong_value() -> None:
    assert _value_problems("x", "continuity_target_errors_total", 'collector="snmp",reason=~"wrong_digest|auth"') == []
    assert _value_problems("x", "continuity_target_errors_total", 'collector="snmp",reason="host_key"')
    assert _value_problems("x", "continuity_backup_state", 'state="stail"')
    assert _value_problems("x", "continuity_target_skipped_runs_total", 'collector="snmp",reason="late"') == []
    assert _value_problems("x", "continuity_target_skipped_runs_total", 'collector="snmp",reason="timeout"')
    assert _value_problems("x", "continuity_site_standard_met", 'criterion=~"download|uplaod"')


@pytest.mark.parametrize("expr,names", [
    ('sum by (site) (rate(continuity_target_errors_total{reason="x"}[5m]))', {"continuity_target_errors_total"}),
    ('site:continuity_reachable:max == 0 and continuity_site_in_service', {"continuity_site_in_service"}),
    ('up{job=~"continuity_fake_.*"} == 0', set()),
    ('label_replace(continuity_a, "x", "continuity_b", "", "")', {"continuity_a"}),
])
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
