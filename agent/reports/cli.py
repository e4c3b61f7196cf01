"""``continuity-agent report dr``: write one DR report now."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.cli import EXIT_BAD_INPUT, EXIT_FINDINGS, EXIT_OK, UsageError, _load
from agent.durations import parse_duration
from agent.reports.config import FORMATS
from agent.yamlfile import FileInputError


def parse_at(text: str) -> datetime:
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at {text!r} is not an ISO 8601 timestamp (e.g. 2025-03-31T09:00:00+00:00)") from None
    if dt.tzinfo is None:
        raise UsageError(f"--at {text!r} has no UTC offset (write e.g. +00:00 or Z)")
    return dt.astimezone(UTC)


def _open_store(state_dir: Path) -> Any:
    """The agent's state database if there is one; never creates one."""
    if not (state_dir / "state.db").is_file():
        return None
    from agent.state import StateStore

    store = StateStore(state_dir)
    return store if store.db_healthy else None


def cmd_report_dr(args: argparse.Namespace) -> int:
    from agent.reports.render import RENDERERS
    from agent.reports.runner import generate, write_atomic

    loaded = _load(args.config)
    at = parse_at(args.at) if args.at else datetime.now(UTC)
    period = None
    if args.period is not None:
        try:
            period = parse_duration(args.period)
        except ValueError as e:
            raise UsageError(f"--period: {e}") from None
        if period <= 0:
            raise UsageError("--period must be more than 0")
    store = _open_store(loaded.config.agent.state_dir)
    try:
        report = generate(
            loaded.config,
            at=at,
            period=period,
            store=store,
            config_path=loaded.path,
            config_sha256=loaded.sha256,
            strict=True,
        )
    except FileInputError as e:
        for issue in e.issues:
            print(f"continuity-agent: {issue}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if store is not None:
            store.close()
    text = RENDERERS[args.format](report)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.output)
        if out.is_dir():
            raise UsageError(f"--output {args.output}: is a directory; give a file name")
        if not out.parent.is_dir():
            raise UsageError(f"--output {args.output}: directory {out.parent} does not exist")
        try:
            write_atomic(out, text)
        except OSError as e:
            raise UsageError(f"--output {args.output}: cannot write: {e.strerror or e}") from None
        print(f"{out}: {report.summary.verdict.upper()} — {report.summary.sentence}", file=sys.stderr)
    return EXIT_FINDINGS if report.summary.verdict == "red" else EXIT_OK


def register(subparsers: Any) -> None:
    rep = subparsers.add_parser("report", help="write reports (DR test report for committees)")
    sub = rep.add_subparsers(dest="report_kind", metavar="KIND")
    dr = sub.add_parser(
        "dr",
        help="DR test report: recovery within the objective, tests, actions, sites, coverage, integrity",
        description="Exit 0 when written (green or amber), 1 when written and red, 2 on bad input.",
    )
    dr.add_argument("--config", required=True, help="agent config file (YAML)")
    dr.add_argument("--at", default=None, help="report as at this ISO 8601 time with offset (default now)")
    dr.add_argument("--period", default=None, help="reporting period, e.g. 30d (default reports.period or 30d)")
    dr.add_argument("--format", choices=sorted(FORMATS), default="html")
    dr.add_argument("--output", required=True, help="file to write, or - for standard output")
    dr.set_defaults(func=cmd_report_dr)
    rep.set_defaults(func=lambda _a: (rep.print_help(sys.stderr), EXIT_BAD_INPUT)[1])
