"""Just enough PromQL reading for tests: which ``continuity_*`` metrics an expression uses and
which labels its selectors match on. Not a parser — Prometheus itself checks that expressions parse
(promtool, and the live panel-query test) — but strict about what it does report."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_TESTS_DIR = ROOT / "deploy" / "prometheus" / "tests"
DASHBOARDS_DIR = ROOT / "grafana" / "dashboards"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# A metric name: not part of a longer identifier or a recording-rule name (level:metric:ops),
# not a function call.
_METRIC = re.compile(r"(?<![\w:])(continuity_[a-zA-Z0-9_]+)(?![\w:(])")
_SELECTOR = re.compile(r"(?<![\w:])(continuity_[a-zA-Z0-9_]+)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def strip_strings(expr: str) -> str:
    """Blank out string literals, keeping their quotes, so label values are never read as names."""
    return _STRING.sub(lambda m: m.group(0)[0] * 2, expr)


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(strip_strings(expr)))


def selector_labels(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric, label names it matches on) for every ``continuity_x{...}`` selector."""
    for m in _SELECTOR.finditer(strip_strings(expr)):
        yield m.group(1), set(_MATCHER_LABEL.findall(m.group(2)))


def load_rule_groups() -> list[tuple[Path, dict[str, Any]]]:
    """(file, rule) for every rule in deploy/prometheus/rules."""
    out = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                out.append((path, rule))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every rule expression, plus the queries inside annotation templates."""
    out = []
    for path, rule in load_rule_groups():
        name = rule.get("alert") or rule.get("record")
        out.append((f"{path.name}:{name}", rule["expr"]))
        for key, text in (rule.get("annotations") or {}).items():
            for q in re.findall(r'printf\s+"((?:[^"\\]|\\.)*)"', text):
                out.append((f"{path.name}:{name}:{key}", q.replace('\\"', '"')))
    return out


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every panel target and every query variable in grafana/dashboards."""
    import json

    out = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash.get("panels", []):
            for t in panel.get("targets", []):
                out.append((f"{path.name}:{panel['title']}:{t['refId']}", t["expr"]))
        for var in dash.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                out.append((f"{path.name}:${var['name']}", q))
    return out
