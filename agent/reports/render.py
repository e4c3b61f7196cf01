"""Render a :class:`~agent.reports.model.Report` to HTML (one self-contained file), Markdown or
JSON. Templates are Jinja2 with autoescaping on for every format, so evidence text can never
inject markup; every field of the Markdown also goes through :func:`agent.escape.markdown` (one
line, Markdown metacharacters escaped) and every field of the HTML through
:func:`agent.escape.terminal` (control characters escaped)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import markupsafe  # small; Jinja2 itself loads when a report is rendered

from agent import escape
from agent.reports import svg
from agent.reports.model import SECTIONS, Report

if TYPE_CHECKING:
    import jinja2

# Colour pairs (foreground, background) used for text in the HTML; tests check WCAG AA 4.5:1.
PALETTE: dict[str, tuple[str, str]] = {
    "body": ("#1a1a1a", "#ffffff"),
    "muted": ("#4d4d4d", "#ffffff"),
    "th": ("#1a1a1a", "#e8e8e8"),
    "ok": ("#1e6b32", "#ffffff"),
    "bad": ("#a11d12", "#ffffff"),
    "warn": ("#7a5300", "#ffffff"),
    "badge-green": ("#ffffff", "#1e6b32"),
    "badge-amber": ("#1a1a1a", "#f2c14e"),
    "badge-red": ("#ffffff", "#a11d12"),
    "link": ("#1d4f91", "#ffffff"),
    "svg-ok": (svg.INK, svg.OK_FILL),
    "svg-bad": (svg.INK, svg.BAD_FILL),
    "svg-warn": (svg.INK, svg.WARN_FILL),
    "svg-neutral": (svg.INK, svg.NEUTRAL_FILL),
    "svg-muted": (svg.MUTED, "#ffffff"),
    "svg-objective": (svg.OBJECTIVE, "#ffffff"),
}

VERDICT_WORDS = {
    "green": "GREEN — recoverable within the objective",
    "amber": "AMBER — recoverable, with reservations",
    "red": "RED — recovery within the objective not demonstrated",
}


def _hours(seconds: float | None) -> str:
    return svg.hours(seconds)


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.2f} %"


def _yesno(v: bool | None, yes: str = "Yes", no: str = "No", unknown: str = "Unknown") -> str:
    return unknown if v is None else yes if v else no


def _when(iso: str | None, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    if not iso:
        return "—"
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime(fmt)
    except ValueError:
        return iso


def _day(iso: str | None) -> str:
    return _when(iso, "%Y-%m-%d")


def _state_class(v: bool | None) -> str:
    return "unknown" if v is None else "ok" if v else "bad"


def _finalize_html(value: Any) -> Any:
    """Every ``{{ }}`` of the HTML: control characters escaped (autoescaping does the markup)."""
    if isinstance(value, markupsafe.Markup) or not isinstance(value, str):
        return value
    return escape.terminal(value)


def _finalize_md(value: Any) -> Any:
    """Every ``{{ }}`` of the Markdown: inert text on one line (agent.escape.markdown)."""
    if isinstance(value, markupsafe.Markup):
        return value  # a macro's output, its own fields already escaped
    return markupsafe.Markup(escape.markdown("" if value is None else value))  # noqa: S704


@cache
def environment(fmt: str = "html") -> jinja2.Environment:
    import jinja2  # loaded when a report is rendered, not when the agent starts

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("agent", "templates"),
        autoescape=True,  # every format: evidence text is data, never markup
        finalize=_finalize_md if fmt == "md" else _finalize_html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    filters: dict[str, Callable[..., Any]] = {
        "hours": _hours,
        "pct": _pct,
        "yesno": _yesno,
        "when": _when,
        "day": _day,
        "state_class": _state_class,
        "words": lambda v: "" if v is None else str(v).replace("_", " "),
    }
    env.filters.update(filters)
    return env


def charts(report: Report) -> dict[str, str | None]:
    """The two inline SVG charts (None where the section states a gap instead)."""
    tl = report.timeline
    gantt = None
    if tl.systems:
        rows = [
            svg.GanttRow(
                label=s.name,
                bars=[
                    svg.GanttBar(st.title, st.start_seconds, st.end_seconds, st.result != "failed") for st in s.steps
                ],
                rto_at=None if s.rto_seconds is None else s.declared_seconds + s.rto_seconds,
                restored_at=s.restored_seconds,
                critical=s.critical,
                verdict=("within RTO" if s.within_rto else "RTO EXCEEDED" if s.within_rto is False else "RTO unknown"),
            )
            for s in tl.systems
        ]
        crit = " → ".join(tl.critical_path) or "none"
        gantt = svg.gantt(
            rows,
            objective=tl.objective_seconds,
            title=f"Timeline of exercise {tl.exercise}",
            desc=(
                f"Recovery steps of {len(rows)} systems in hours since declaration; the estate objective of "
                f"{_hours(tl.objective_seconds)} is a dashed line; measured {_hours(tl.measured_seconds)}; "
                f"critical path {crit}."
            ),
        )
    graph = None
    if report.dependencies:
        status = {"in policy": "ok", "out of policy": "bad", "not tested": "warn"}
        nodes = [
            svg.GraphNode(
                id=n.runbook,
                label=n.name,
                sublabel=f"tier {n.tier}" if n.tier is not None else "",
                status=status.get(n.status, "neutral"),
                status_text=n.status,
            )
            for n in report.dependencies
        ]
        graph = svg.dependency_graph(
            nodes,
            {n.runbook: n.depends_on for n in report.dependencies},
            title="Dependency graph of the estate",
            desc=(
                f"{len(nodes)} systems; arrows point from a system to what it depends on; foundations at the top. "
                f"{sum(1 for n in report.dependencies if n.status == 'out of policy')} out of policy, "
                f"{sum(1 for n in report.dependencies if n.status == 'not tested')} not tested."
            ),
        )
    return {"gantt": gantt, "graph": graph}


def _context(report: Report) -> dict[str, Any]:
    return {
        "r": report,
        "sections": SECTIONS,
        "verdict_words": VERDICT_WORDS,
        "palette": PALETTE,
        "charts": charts(report),
        "gap": lambda key: report.gaps.get(key, []),
    }


def render_html(report: Report) -> str:
    ctx = _context(report)
    # The charts are built by agent.reports.svg, which escapes every piece of text it writes.
    ctx["charts"] = {k: (markupsafe.Markup(v) if v else None) for k, v in ctx["charts"].items()}  # noqa: S704
    return environment().get_template("report_dr.html.j2").render(ctx)


def render_md(report: Report) -> str:
    ctx = _context(report)
    ctx["charts"] = {}
    return environment("md").get_template("report_dr.md.j2").render(ctx)


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"


RENDERERS: dict[str, Callable[[Report], str]] = {"html": render_html, "md": render_md, "json": render_json}
