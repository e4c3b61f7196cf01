"""The catalogue's naming check refuses every name `promtool check metrics` would flag, so a non-base
unit (bits, hours, percent...) cannot come back into the catalogue or an SNMP mapping."""

from __future__ import annotations

import subprocess

import pytest

from agent.catalogue import catalogue, check_spec, lint_name
from collectors.base import MetricSpec
from tests.helpers.common import need

# The names issue #14 renamed, and what they became.
RENAMED = {
    "continuity_interface_speed_bits_per_second": "continuity_interface_speed_bytes_per_second",
    "continuity_link_contracted_bits_per_second": "continuity_link_contracted_bytes_per_second",
    "continuity_link_throughput_bits_per_second": "continuity_link_throughput_bytes_per_second",
    "continuity_site_in_service_hours": "continuity_site_in_service",
}

# Names promtool flags (each for a different promlint rule), and names it accepts.
FLAGGED = [
    *RENAMED,
    "continuity_backup_age_days",
    "continuity_disk_kilobytes",
    "continuity_link_megabits_per_second",
    "continuity_probe_duration_milliseconds",
    "continuity_link_latency_ms",
    "continuity_probe_time_sec_total",
    "continuity_host_uptime_s",
    "continuity_queue_gauge",
    "continuity_request_counter_value",
    "continuity_x_summary",
    "continuity_room_fahrenheit",
    "continuity_cable_miles",
    "continuity_site_hours_open",  # a unit word anywhere in the name, not only at the end
]
CLEAN = [
    "continuity_link_throughput_bytes_per_second",
    "continuity_site_in_service",
    "continuity_host_load1",
    "continuity_backup_rpo_seconds",
    "continuity_ups_battery_temperature_celsius",
    "continuity_ups_output_volts",
]


def test_every_catalogued_name_is_clean() -> None:
    cat = catalogue()
    assert {spec.name for spec in cat.values() if lint_name(spec.name, spec.type)} == set()
    for old, new in RENAMED.items():
        assert new in cat and old not in cat


@pytest.mark.parametrize("name", sorted(RENAMED))
def test_the_old_names_are_refused(name: str) -> None:
    problems = check_spec(MetricSpec(name, "gauge", "a rate", labels=("direction",)))
    assert problems and all(p.startswith(f"{name}: ") for p in problems), problems
    assert any("use base unit" in p for p in problems)


def test_percent_is_refused_though_promtool_lets_it_pass() -> None:
    assert lint_name("continuity_host_cpu_usage_percent", "gauge") == [
        "continuity_host_cpu_usage_percent: use base unit 'ratio' instead of 'percent'"
    ]


def test_only_gauges_end_in_timestamp_seconds() -> None:
    assert check_spec(MetricSpec("continuity_x_timestamp_seconds", "gauge", "when", "seconds")) == []
    assert check_spec(MetricSpec("continuity_x_timestamp_seconds", "info", "when", "seconds")) != []


def test_reserved_labels_are_refused() -> None:
    assert check_spec(MetricSpec("continuity_x_seconds", "gauge", "x", "seconds", labels=("le",))) != []
    assert check_spec(MetricSpec("continuity_x_seconds", "gauge", "x", "seconds", labels=("quantile",))) != []


def _exposition(names: list[str]) -> str:
    out = []
    for n in names:
        kind = "counter" if n.endswith("_total") else "gauge"
        out += [f"# HELP {n} x", f"# TYPE {n} {kind}", f"{n} 1"]
    return "\n".join(out) + "\n"


def test_the_check_agrees_with_promtool() -> None:
    """What promtool says about each name, against what the catalogue's check says: the same names
    are flagged (percent aside, which promtool lets through and the house style does not)."""
    r = subprocess.run(
        [need("promtool"), "check", "metrics"],
        input=_exposition(FLAGGED + CLEAN),
        capture_output=True,
        text=True,
        timeout=60,
    )
    flagged_by_promtool = {line.split()[0] for line in (r.stdout + r.stderr).splitlines() if line.strip()}
    assert flagged_by_promtool == set(FLAGGED), r.stdout + r.stderr
    kind = {n: "counter" if n.endswith("_total") else "gauge" for n in FLAGGED + CLEAN}
    assert {n for n in FLAGGED + CLEAN if lint_name(n, kind[n])} == set(FLAGGED)
