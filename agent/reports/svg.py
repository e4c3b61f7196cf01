"""Small SVG charts for reports, written as text: no browser, no external service.

Every chart is a ``<svg role="img">`` with ``aria-labelledby`` pointing at its own ``<title>`` and
``<desc>``, and every mark that colour distinguishes also carries a text label or a pattern, so
colour is never the only signal. All text is XML-escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import quoteattr

from agent import escape
from agent.graph import depths

# Palette (text colours pass WCAG AA 4.5:1 on white; fills carry dark text; see tests).
INK = "#1a1a1a"
MUTED = "#4d4d4d"
GRID = "#c8c8c8"
OK_FILL = "#cfe8d5"
OK_STROKE = "#1e6b32"
BAD_FILL = "#f6d0cd"
BAD_STROKE = "#a11d12"
WARN_FILL = "#fbe7b8"
WARN_STROKE = "#7a5300"
NEUTRAL_FILL = "#e4e4e4"
CRIT_STROKE = "#1a1a1a"
OBJECTIVE = "#a11d12"
RTO_MARK = "#3b2d8f"


def _t(text: object) -> str:
    return escape.html(text)


def _a(text: object) -> str:
    return quoteattr(escape.terminal(text))


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def hours(seconds: float | None) -> str:
    """``36 h``, ``1 h 30 min``, ``45 min`` — for axis labels and captions."""
    if seconds is None:
        return "n/a"
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    if h and m:
        return f"{h} h {m} min"
    if h or not m:
        return f"{h} h"
    return f"{m} min"


def _open(width: float, height: float, title: str, desc: str, key: str) -> tuple[str, str]:
    tid, did = f"{key}-title", f"{key}-desc"
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="{tid} {did}" '
        f'viewBox="0 0 {_f(width)} {_f(height)}" width="100%" '
        f'style="max-width:{_f(width)}px" font-family="sans-serif" font-size="12">'
        f'<title id="{tid}">{_t(title)}</title><desc id="{did}">{_t(desc)}</desc>'
    )
    return head, "</svg>"


# -- Gantt ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GanttBar:
    label: str
    start: float  # seconds from the exercise start
    end: float
    ok: bool = True


@dataclass(frozen=True)
class GanttRow:
    label: str
    bars: Sequence[GanttBar]
    rto_at: float | None = None  # seconds from the exercise start where this system's RTO falls
    restored_at: float | None = None
    critical: bool = False
    verdict: str = ""  # text verdict shown at the end of the row ("within RTO", "RTO exceeded")


def gantt(
    rows: Sequence[GanttRow],
    *,
    objective: float,
    title: str,
    desc: str,
    row_height: float = 26.0,
    label_width: float | None = None,
    plot_width: float = 560.0,
    verdict_width: float = 130.0,
    key: str = "gantt",
) -> str:
    """Steps of each system as bars against hours since declaration, with each system's RTO as a
    diamond, the estate objective as a dashed vertical line, critical-path rows in bold with a
    heavy outline and a "critical path" tag."""
    # Room for the longest label (about 7 px a character at 12 px), within reason; longer ones are
    # shortened with an ellipsis and given in full in the row's title and aria-label.
    max_chars = 34
    if label_width is None:
        label_width = min(max((len(r.label) for r in rows), default=10), max_chars) * 7.0 + 16
    ends = [b.end for r in rows for b in r.bars] + [r.rto_at or 0 for r in rows] + [objective]
    span = max([*ends, 3600.0]) * 1.05
    # Round the axis up to whole 6-hour ticks (or hours for short exercises).
    tick = 6 * 3600.0 if span > 12 * 3600 else 3600.0 if span > 2 * 3600 else 900.0
    span = (int(span // tick) + 1) * tick
    top, axis_h = 30.0, 28.0
    height = top + axis_h + row_height * max(len(rows), 1) + 40
    width = label_width + plot_width + verdict_width + 10

    def x(sec: float) -> float:
        return label_width + plot_width * max(0.0, sec) / span

    head, tail = _open(width, height, title, desc, key)
    out = [head]
    pid = f"{key}-hatch"
    out.append(
        f'<defs><pattern id="{pid}" patternUnits="userSpaceOnUse" width="6" height="6" '
        f'patternTransform="rotate(45)"><rect width="6" height="6" fill="{BAD_FILL}"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{BAD_STROKE}" stroke-width="2"/></pattern></defs>'
    )
    # Axis and grid.
    y0 = top + axis_h
    y1 = y0 + row_height * max(len(rows), 1)
    n = int(span // tick)
    for i in range(n + 1):
        sec = i * tick
        xx = x(sec)
        out.append(f'<line x1="{_f(xx)}" y1="{_f(y0)}" x2="{_f(xx)}" y2="{_f(y1)}" stroke="{GRID}"/>')
        out.append(f'<text x="{_f(xx)}" y="{_f(y0 - 8)}" text-anchor="middle" fill="{MUTED}">{_t(hours(sec))}</text>')
    out.append(
        f'<text x="{_f(label_width)}" y="{_f(top - 12)}" fill="{INK}">Hours since the incident was declared</text>'
    )
    # Rows.
    for i, row in enumerate(rows):
        ry = y0 + i * row_height
        weight = ' font-weight="bold"' if row.critical else ""
        label = row.label + (" (critical path)" if row.critical else "")
        out.append(f"<g aria-label={_a(label + '. ' + row.verdict)}>")
        short = row.label if len(row.label) <= max_chars else row.label[: max_chars - 1] + "…"
        out.append(
            f'<text x="{_f(label_width - 6)}" y="{_f(ry + row_height * 0.65)}" text-anchor="end" '
            f'fill="{INK}"{weight}><title>{_t(row.label)}</title>{_t(short)}</text>'
        )
        for b in row.bars:
            bx, bw = x(b.start), max(1.5, x(b.end) - x(b.start))
            fill = OK_FILL if b.ok else f"url(#{pid})"
            stroke = CRIT_STROKE if row.critical else (OK_STROKE if b.ok else BAD_STROKE)
            sw = 2.5 if row.critical else 1
            out.append(
                f'<rect x="{_f(bx)}" y="{_f(ry + 5)}" width="{_f(bw)}" height="{_f(row_height - 10)}" '
                f'fill="{fill}" stroke="{stroke}" stroke-width="{sw}">'
                f"<title>{_t(b.label)}: {_t(hours(b.start))} to {_t(hours(b.end))}"
                f"{'' if b.ok else ' (failed)'}</title></rect>"
            )
        if row.rto_at is not None:
            rx, cy = x(row.rto_at), ry + row_height / 2
            out.append(
                f'<path d="M{_f(rx)} {_f(cy - 7)} L{_f(rx + 6)} {_f(cy)} L{_f(rx)} {_f(cy + 7)} '
                f'L{_f(rx - 6)} {_f(cy)} Z" fill="#ffffff" stroke="{RTO_MARK}" stroke-width="2">'
                f"<title>RTO of {_t(row.label)}: {_t(hours(row.rto_at))} after declaration</title></path>"
            )
        tx = label_width + plot_width + 8
        out.append(f'<text x="{_f(tx)}" y="{_f(ry + row_height * 0.65)}" fill="{INK}"{weight}>{_t(row.verdict)}</text>')
        out.append("</g>")
    # The estate objective.
    ox = x(objective)
    out.append(
        f'<line x1="{_f(ox)}" y1="{_f(y0 - 4)}" x2="{_f(ox)}" y2="{_f(y1 + 4)}" stroke="{OBJECTIVE}" '
        f'stroke-width="2" stroke-dasharray="6 4"><title>Estate objective {_t(hours(objective))}</title></line>'
    )
    out.append(
        f'<text x="{_f(ox)}" y="{_f(y1 + 18)}" text-anchor="middle" fill="{OBJECTIVE}" font-weight="bold">'
        f"Objective {_t(hours(objective))}</text>"
    )
    # Legend.
    ly = y1 + 34
    out.append(
        f'<text x="{_f(label_width)}" y="{_f(ly)}" fill="{MUTED}">Bars: recovery steps (hatched = failed). '
        "Diamond: the system's RTO. Bold with heavy outline: critical path.</text>"
    )
    out.append(tail)
    return "".join(out)


# -- Dependency graph ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphNode:
    id: str
    label: str
    sublabel: str = ""  # e.g. "tier 1"
    status: str = "neutral"  # ok | bad | warn | neutral
    status_text: str = ""  # the verdict in words, always shown


@dataclass
class Layout:
    layers: list[list[str]] = field(default_factory=list)
    position: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (layer, index)


def layered_layout(nodes: Iterable[str], depends_on: Mapping[str, Sequence[str]]) -> Layout:
    """Layer 0 holds systems that depend on nothing; each other system sits one layer below its
    deepest dependency. Cycles are broken (a back edge is ignored for layering). Within a layer,
    nodes are ordered by the mean position of their dependencies (barycentre), then by id."""
    ids = sorted(set(nodes))
    known = set(ids)
    deps = {n: [d for d in depends_on.get(n, ()) if d in known and d != n] for n in ids}
    layer = depths(ids, depends_on)
    n_layers = max(layer.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(n_layers)]
    for n in ids:
        layers[layer[n]].append(n)
    pos: dict[str, tuple[int, int]] = {}
    for li, members in enumerate(layers):
        if li > 0:

            def key(n: str) -> tuple[float, str]:
                ps = [pos[d][1] for d in deps[n] if d in pos]
                return (sum(ps) / len(ps) if ps else 0.0, n)

            members.sort(key=key)
        for i, n in enumerate(members):
            pos[n] = (li, i)
    return Layout(layers=layers, position=pos)


_STATUS = {
    "ok": (OK_FILL, OK_STROKE),
    "bad": (BAD_FILL, BAD_STROKE),
    "warn": (WARN_FILL, WARN_STROKE),
    "neutral": (NEUTRAL_FILL, MUTED),
}


def dependency_graph(
    nodes: Sequence[GraphNode],
    depends_on: Mapping[str, Sequence[str]],
    *,
    title: str,
    desc: str,
    box_w: float = 150.0,
    box_h: float = 50.0,
    gap_x: float = 20.0,
    gap_y: float = 46.0,
    key: str = "deps",
) -> str:
    """Systems as boxes in layers (foundations at the top), arrows from each system to what it
    depends on. Box fill follows the status and the status is also written in the box."""
    lay = layered_layout((n.id for n in nodes), depends_on)
    by_id = {n.id: n for n in nodes}
    widest = max((len(layer) for layer in lay.layers), default=1)
    width = max(widest * (box_w + gap_x) + gap_x, 300.0)
    height = max(len(lay.layers), 1) * (box_h + gap_y) + gap_y
    head, tail = _open(width, height, title, desc, key)
    mid = f"{key}-arrow"
    out = [
        head,
        f'<defs><marker id="{mid}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" '
        f'orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 Z" fill="{MUTED}"/></marker></defs>',
    ]

    def box(nid: str) -> tuple[float, float]:
        li, i = lay.position[nid]
        row = lay.layers[li]
        offset = (width - len(row) * (box_w + gap_x) + gap_x) / 2
        return offset + i * (box_w + gap_x), gap_y / 2 + li * (box_h + gap_y)

    for n in sorted(by_id):
        for d in depends_on.get(n, ()):
            if d not in by_id or d == n:
                continue
            (x1, y1), (x2, y2) = box(n), box(d)
            sx, sy = x1 + box_w / 2, y1
            ex, ey = x2 + box_w / 2, y2 + box_h
            if y2 >= y1:  # same layer or below (a cycle): route from the side
                sy, ey = y1 + box_h / 2, y2 + box_h / 2
                sx, ex = (x1, x2 + box_w) if x2 < x1 else (x1 + box_w, x2)
            out.append(
                f'<line x1="{_f(sx)}" y1="{_f(sy)}" x2="{_f(ex)}" y2="{_f(ey)}" stroke="{MUTED}" '
                f'stroke-width="1.2" marker-end="url(#{mid})"><title>{_t(by_id[n].label)} depends on '
                f"{_t(by_id[d].label)}</title></line>"
            )
    for n in sorted(by_id):
        node = by_id[n]
        bx, by = box(n)
        fill, stroke = _STATUS.get(node.status, _STATUS["neutral"])
        label = node.label if len(node.label) <= 22 else node.label[:21] + "…"
        sub = " · ".join(s for s in (node.sublabel, node.status_text) if s)
        out.append(f"<g aria-label={_a(f'{node.label}: {sub}')}>")
        out.append(
            f'<rect x="{_f(bx)}" y="{_f(by)}" width="{_f(box_w)}" height="{_f(box_h)}" rx="5" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"/>'
        )
        out.append(
            f'<text x="{_f(bx + box_w / 2)}" y="{_f(by + 20)}" text-anchor="middle" fill="{INK}" '
            f'font-weight="bold">{_t(label)}</text>'
        )
        out.append(
            f'<text x="{_f(bx + box_w / 2)}" y="{_f(by + 38)}" text-anchor="middle" fill="{INK}" '
            f'font-size="11">{_t(sub)}</text>'
        )
        out.append("</g>")
    out.append(tail)
    return "".join(out)
