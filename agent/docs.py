"""Generates docs/metrics.md from the metric catalogue: ``python -m agent.docs > docs/metrics.md``."""

from __future__ import annotations

import sys

from agent.catalogue import catalogue, exposed_labels, owners


def render_metrics_md() -> str:
    own = owners()
    lines = [
        "# Metrics reference",
        "",
        "Generated from the metric catalogue by `make docs` (`python -m agent.docs`); do not edit by hand.",
        "A test fails when this file and the catalogue disagree.",
        "",
        "Every collector sample also carries `target` and `site` labels unless the table says otherwise.",
        "",
        "Names are in base units and pass `promtool check metrics`: the catalogue refuses a name promtool",
        "would flag (bits, hours, minutes, kilobytes, abbreviations such as `_ms`, a metric type in the name)",
        "and percent. Rates are bytes per second (the config writes `100Mbit/s`; dashboards show bit/s).",
        "",
    ]
    by_owner: dict[str, list[str]] = {}
    for name in sorted(catalogue()):
        by_owner.setdefault(own.get(name, "agent"), []).append(name)
    for owner in sorted(by_owner, key=lambda o: (o != "agent", o)):
        lines += [f"## {owner}", "", "| Metric | Type | Unit | Labels | Help |", "|---|---|---|---|---|"]
        for name in by_owner[owner]:
            s = catalogue()[name]
            labels = ", ".join(f"`{lb}`" for lb in exposed_labels(s)) or "—"
            lines.append(f"| `{s.name}` | {s.type} | {s.unit or '—'} | {labels} | {s.help.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render_metrics_md())
