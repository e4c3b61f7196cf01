"""Every metric the agent can emit, declared once: the core's self-metrics plus each collector's
``METRICS``. Exposition refuses undeclared samples; docs/metrics.md is generated from here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache

from agent.exercises.metrics import EXERCISE_METRICS
from agent.plugin import MetricSpec
from agent.registry import KINDS, collector, collectors, loaded
from agent.reports.metrics import REPORT_METRICS

TARGET_LABELS = ("collector", "target", "site")

# The reasons of continuity_target_skipped_runs_total (agent/schedule.py counts them); every target
# exposes each of them from the start, at 0, so the first skipped run shows in increase().
STILL_RUNNING = "still_running"  # the previous run of the same target was still going
LATE = "late"  # the agent could not start it within one interval of when it was due
SKIP_REASONS = (STILL_RUNNING, LATE)

CORE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "continuity_target_up",
        "gauge",
        "1 if the target's last collection succeeded, 0 if it failed.",
        labels=TARGET_LABELS,
        target_labels=False,
    ),
    MetricSpec(
        "continuity_target_collection_duration_seconds",
        "gauge",
        "How long the target's last collection took.",
        "seconds",
        labels=TARGET_LABELS,
        target_labels=False,
    ),
    MetricSpec(
        "continuity_target_last_success_timestamp_seconds",
        "gauge",
        "When the target's last successful collection finished (Unix time).",
        "seconds",
        labels=TARGET_LABELS,
        target_labels=False,
    ),
    MetricSpec(
        "continuity_target_errors_total",
        "counter",
        "Failed collections and failed parts of collections, by reason.",
        labels=(*TARGET_LABELS, "reason"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_target_skipped_runs_total",
        "counter",
        "Scheduled runs that did not start, by reason: still_running (the previous run of the same "
        "target was still going), late (the agent could not start it within one interval of when it "
        "was due: overloaded or paused; such runs are merged into the next one).",
        labels=(*TARGET_LABELS, "reason"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_task_last_success_timestamp_seconds",
        "gauge",
        "When a target's secondary task (integrity check, restore test, throughput test...) last "
        "succeeded: it ran to completion and what it found is not a failure. An integrity check that "
        "found damage, or a restore test that did not verify or could not run, is not a success.",
        "seconds",
        labels=(*TARGET_LABELS, "task"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_agent_info", "info", "Agent version and own site.", labels=("version", "site"), target_labels=False
    ),
    MetricSpec(
        "continuity_agent_start_time_seconds",
        "gauge",
        "When the agent process started (Unix time).",
        "seconds",
        target_labels=False,
    ),
    MetricSpec(
        "continuity_config_last_reload_successful",
        "gauge",
        "1 if the last config load or reload succeeded.",
        target_labels=False,
    ),
    MetricSpec(
        "continuity_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the config was last loaded successfully (Unix time).",
        "seconds",
        target_labels=False,
    ),
    MetricSpec(
        "continuity_state_db_healthy",
        "gauge",
        "1 if results are being written to the SQLite state database, 0 if degraded to memory only.",
        target_labels=False,
    ),
    MetricSpec(
        "continuity_state_db_errors_total",
        "counter",
        "Failed writes to the SQLite state database.",
        target_labels=False,
    ),
    MetricSpec(
        "continuity_http_auth_failures_total",
        "counter",
        "Requests to the agent's HTTP endpoint with wrong credentials, by credential (basic: the web "
        "config's basic auth; token: a route's own token, e.g. the backup push) and outcome (failed: "
        "checked and refused; rate_limited: answered 429 without a check).",
        labels=("credential", "outcome"),
        target_labels=False,
    ),
)

_NAME = re.compile(r"^continuity_[a-z][a-z0-9_]*$")
_LABEL = re.compile(r"^[a-z_][a-z0-9_]*$")

# What `promtool check metrics` (client_golang's promlint) flags in a name, so that no catalogued
# name can make it speak: unit words that are not base units (with SI/IEC prefixes), abbreviated
# units, and metric types as words. Plus the house rule: percentages are `_ratio` (0-1).
_BASE_UNITS = ("amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres", "seconds", "volts")
_NON_BASE_UNITS = {
    "minutes": "seconds", "hours": "seconds", "days": "seconds", "weeks": "seconds",
    "kelvins": "kelvin", "fahrenheit": "celsius", "rankine": "celsius",
    "inches": "meters", "yards": "meters", "miles": "meters",
    "bits": "bytes", "calories": "joules", "pounds": "grams", "ounces": "grams",
    "percent": "ratio", "percentage": "ratio", "percents": "ratio",
}  # fmt: skip
_UNIT_PREFIXES = ("pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi", "mega",
                  "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi")  # fmt: skip
_UNIT_ABBREVIATIONS = ("s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d")
_TYPE_WORDS = ("counter", "gauge", "histogram", "summary", "gauge_histogram")


def _unit_problem(word: str) -> str | None:
    """The base unit to use instead of ``word``, if ``word`` is a non-base unit (``hours``, ``kilobytes``)."""
    for prefix in ("", *_UNIT_PREFIXES):
        if not word.startswith(prefix):
            continue
        unit = word[len(prefix) :]
        base = _NON_BASE_UNITS.get(unit) or (unit if unit in _BASE_UNITS else None)
        if base is not None and (prefix or unit != base):
            return base
    return None


def lint_name(name: str, type_: str) -> list[str]:
    """promlint's objections to a metric name (the rules of `promtool check metrics`), plus percent."""
    problems = []
    words = name.split("_")
    for word in words:
        base = _unit_problem(word)
        if base is not None:
            problems.append(f"{name}: use base unit {base!r} instead of {word!r}")
    for abbr in _UNIT_ABBREVIATIONS:
        if abbr in words[1:]:
            problems.append(f"{name}: abbreviated unit {abbr!r}; write the base unit out")
    for t in _TYPE_WORDS:
        if f"_{t}_" in name or name.endswith(f"_{t}"):
            problems.append(f"{name}: the metric type {t!r} does not belong in the name")
    if name.endswith("_timestamp_seconds") and type_ != "gauge":
        problems.append(f"{name}: only gauges end in _timestamp_seconds")
    return problems


class CatalogueError(Exception):
    pass


def check_spec(spec: MetricSpec) -> list[str]:
    problems = []
    if not _NAME.match(spec.name):
        problems.append(f"{spec.name}: name must match {_NAME.pattern}")
    if spec.type == "counter" and not spec.name.endswith("_total"):
        problems.append(f"{spec.name}: counters end in _total")
    if spec.type != "counter" and spec.name.endswith("_total"):
        problems.append(f"{spec.name}: only counters end in _total")
    if spec.name.endswith(("_count", "_sum", "_bucket")):
        problems.append(f"{spec.name}: _count/_sum/_bucket suffixes are for histograms and summaries")
    if spec.type == "info" and not spec.name.endswith("_info"):
        problems.append(f"{spec.name}: info metrics end in _info")
    if spec.unit and spec.unit not in spec.name:
        problems.append(f"{spec.name}: unit {spec.unit!r} missing from name")
    problems.extend(lint_name(spec.name, spec.type))
    if not spec.help or not spec.help.strip():
        problems.append(f"{spec.name}: help text is empty")
    for label in spec.labels:
        if not _LABEL.match(label) or label.startswith("__"):
            problems.append(f"{spec.name}: bad label name {label!r}")
        elif label in ("le", "quantile"):
            problems.append(f"{spec.name}: label {label!r} is reserved for histograms and summaries")
    if spec.target_labels and ({"target", "site"} & set(spec.labels)):
        problems.append(f"{spec.name}: target/site labels are added by exposition, do not declare them")
    return problems


def catalogue() -> dict[str, MetricSpec]:
    """Every metric of the agent and of every collector kind (imports every collector module)."""
    collectors()
    return _catalogue(frozenset(KINDS))


def running_catalogue() -> dict[str, MetricSpec]:
    """The agent's own metrics and those of the collector kinds imported so far: what a running
    agent can emit, without importing the kinds its config does not use."""
    return _catalogue(loaded())


@cache
def _catalogue(kinds: frozenset[str]) -> dict[str, MetricSpec]:
    out: dict[str, MetricSpec] = {}
    problems: list[str] = []
    specs = [*CORE_METRICS, *REPORT_METRICS, *EXERCISE_METRICS]
    for kind in KINDS:
        if kind in kinds:
            specs.extend(collector(kind).METRICS)
    for spec in specs:
        problems.extend(check_spec(spec))
        if spec.name in out and out[spec.name] != spec:
            problems.append(f"{spec.name}: declared twice with different definitions")
        out[spec.name] = spec
    if problems:
        raise CatalogueError("; ".join(problems))
    return out


def check_dynamic(specs: Iterable[MetricSpec]) -> list[str]:
    """Problems with metrics a target declares from its config (Collector.dynamic_metrics): checked
    like static ones, never allowed to shadow a static name."""
    static = catalogue()
    problems: list[str] = []
    for spec in specs:
        problems.extend(check_spec(spec))
        if spec.name in static:
            problems.append(f"{spec.name}: already declared by the agent")
    return problems


def spec_for(name: str, dynamic: Mapping[str, MetricSpec] | None = None) -> MetricSpec | None:
    """The declaration of a metric: static, or one of ``dynamic`` (the running targets' own). A name
    the kinds imported so far do not declare is looked up in every kind's (importing them all)
    before it counts as undeclared."""
    return running_catalogue().get(name) or (dynamic or {}).get(name) or catalogue().get(name)


def exposed_labels(spec: MetricSpec) -> tuple[str, ...]:
    return (*spec.labels, "target", "site") if spec.target_labels else spec.labels


def owners() -> dict[str, str]:
    """metric name -> collector kind (or 'agent')."""
    out = {s.name: "agent" for s in CORE_METRICS}
    out.update({s.name: "reports" for s in REPORT_METRICS})
    out.update({s.name: "exercises" for s in EXERCISE_METRICS})
    for kind, cls in collectors().items():
        for s in cls.METRICS:
            out.setdefault(s.name, kind)
    return out
