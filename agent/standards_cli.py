"""``continuity-agent sites``: each site, its class, every criterion's threshold, last value and
verdict — read from the agent's state database, without touching the network.

Verdicts are the agent's own (with hysteresis, as last evaluated by the ``standards`` target);
values are the latest measurements in the state store. Exit 0 when no criterion is failing,
1 when any is, 2 for bad input."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from agent.standards import CRITERIA, KV_KEY, Evaluator, EvaluatorState, SiteReport, format_bitrate

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sites", help="print each site's connection standard: thresholds, last values, verdicts"
    )
    p.add_argument("--config", required=True, help="agent config file (YAML)")
    p.add_argument("--site", action="append", default=None, help="only this site (repeatable)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_sites)


def format_value(unit: str, v: float | None) -> str:
    if v is None:
        return "-"
    if unit == "bytes_per_second":
        return format_bitrate(v)
    if unit == "seconds":
        return f"{v * 1000:.3g} ms" if v < 10 else f"{v:.3g} s"
    return f"{v * 100:.4g}%"


def _age(now: float, t: float | None) -> str:
    if t is None:
        return ""
    s = max(0.0, now - t)
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    if s < 172800:
        return f"{s / 3600:.0f}h ago"
    return f"{s / 86400:.0f}d ago"


def _verdict(c: Any) -> str:
    if c.verdict is True:
        return "met"
    if c.verdict is False:
        return "FAILED"
    if c.streak:
        return f"unknown ({c.streak}/{c.hysteresis} {'good' if c.streak_good else 'bad'})"
    return "unknown"


def render(reports: list[SiteReport], now: float) -> str:
    lines: list[str] = []
    for r in reports:
        overall = {True: "meets its standard", False: "BELOW STANDARD", None: "standard not yet known"}[
            r.met_all
        ]
        hours = "in service hours" if r.in_service_hours else "outside service hours"
        lines.append(f"{r.site}  class {r.site_class}  {hours}  — {overall}")
        facts = []
        if r.link_target:
            facts.append(f"link target {r.link_target}")
        if r.contracted:
            facts.append(
                "contracted " + ", ".join(f"{d} {format_bitrate(v)}" for d, v in sorted(r.contracted.items()))
            )
        if r.negotiated is not None:
            facts.append(f"WAN negotiated {format_bitrate(r.negotiated)}")
        if r.utilisation:
            facts.append(
                "utilisation " + ", ".join(f"{d} {v * 100:.3g}%" for d, v in sorted(r.utilisation.items()))
            )
        for window, ratio in sorted(r.availability.items()):
            facts.append(f"availability {window} {ratio * 100:.4g}%")
        if facts:
            lines.append("  " + "; ".join(facts))
        for n in r.notes:
            lines.append(f"  note: {n}")
        rows = [("CRITERION", "THRESHOLD", "LAST VALUE", "MEASURED", "VERDICT")]
        for c in r.criteria:
            unit = CRITERIA[c.criterion].unit
            rows.append(
                (
                    c.criterion,
                    f"{c.spec.comparison} {format_value(unit, c.threshold)}",
                    format_value(unit, c.value),
                    _age(now, c.measured_at),
                    _verdict(c),
                )
            )
        if len(rows) == 1:
            lines.append("  (its class sets no criteria)")
        else:
            widths = [max(len(row[i]) for row in rows) for i in range(5)]
            for row in rows:
                lines.append("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        lines.append("")
    return "\n".join(lines)


def cmd_sites(args: argparse.Namespace) -> int:
    from agent.cli import _err, _load
    from agent.state import StateStore

    loaded = _load(args.config)
    cfg = loaded.config
    if not cfg.site_classes:
        _err(f"{args.config}: no site_classes in the config; nothing to evaluate")
        return EXIT_BAD_INPUT
    db = cfg.agent.state_dir / "state.db"
    store = StateStore(cfg.agent.state_dir) if db.exists() else None
    try:
        state = EvaluatorState.from_json(store.get_kv(KV_KEY) if store is not None else None)
        now = time.time()
        ev = Evaluator(cfg, store, clock=lambda: now, state=state)
        reports = ev.evaluate(advance=False)
    finally:
        if store is not None:
            store.close()
    if args.site:
        known = {r.site for r in reports}
        unknown = [s for s in args.site if s not in known]
        if unknown:
            _err(
                f"{args.config}: no site named {unknown[0]!r} with a class (sites: {', '.join(sorted(known))})"
            )
            return EXIT_BAD_INPUT
        reports = [r for r in reports if r.site in args.site]
    if args.format == "json":
        print(json.dumps({"generated": now, "sites": [r.to_dict() for r in reports]}, indent=1))
    else:
        if store is None:
            print(f"# no state database at {db}: thresholds only, nothing measured yet\n")
        sys.stdout.write(render(reports, now))
    failing = any(c.verdict is False for r in reports for c in r.criteria)
    return EXIT_FINDINGS if failing else EXIT_OK
