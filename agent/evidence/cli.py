"""``continuity-agent runbooks check`` and ``continuity-agent evidence seal|verify``.

Exit codes: 0 the promise holds (warnings allowed), 1 findings of severity error, 2 unreadable or
schema-invalid input (one line per problem naming the file and key; never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from agent.escape import terminal
from agent.evidence import EvidenceInputError, check_runbooks, seal, verify
from agent.evidence.verifier import Finding, VerificationReport, fmt_hours

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2


def _err(msg: str) -> None:
    print(f"continuity-agent: {terminal(msg)}", file=sys.stderr)


def _input_error(e: EvidenceInputError) -> int:
    for issue in e.issues:
        _err(str(issue))
    return EXIT_BAD_INPUT


def parse_at(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--at {text!r} is not an ISO 8601 timestamp (e.g. 2025-07-01T09:00:00+01:00)") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"--at {text!r} has no UTC offset (e.g. 2025-07-01T09:00:00+01:00)")
    return at


def _dur(v: float | None) -> str:
    return fmt_hours(v) if v is not None else "n/a"


def _print_findings(findings: list[Finding]) -> None:
    for f in findings:
        print(f"{f.severity.upper():7} {f.rule}: {f.message}")


def cmd_runbooks_check(args: argparse.Namespace) -> int:
    try:
        res = check_runbooks(args.dir)
    except EvidenceInputError as e:
        return _input_error(e)
    _print_findings(res.findings)
    obj = res.estate.settings.objective
    path = " -> ".join(res.planned_path) or "-"
    n = len(res.estate.runbooks)
    status = "OK" if res.ok else "FAILED"
    print(
        f"{args.dir}: {status}: {n} runbooks; planned critical path {_dur(res.planned_seconds)} "
        f"(objective {_dur(obj)}): {path}"
    )
    return EXIT_OK if res.ok else EXIT_FINDINGS


def cmd_evidence_seal(args: argparse.Namespace) -> int:
    try:
        r = seal(args.runbooks, args.evidence, args.file)
    except EvidenceInputError as e:
        return _input_error(e)
    except OSError as e:
        _err(f"{args.file}: cannot seal: {e.strerror or e}")
        return EXIT_BAD_INPUT
    prev = r.prev_record_sha256 or "none (first record)"
    print(
        f"{r.path}: sealed as record {r.sequence} ({r.artefacts} artefacts hashed); sha256 {r.sha256}; previous {prev}"
    )
    return EXIT_OK


def render_text(rep: VerificationReport) -> str:
    lines: list[str] = []
    for f in rep.findings:
        lines.append(f"{f.severity.upper():7} {f.rule}: {f.message}")
    if rep.findings:
        lines.append("")
    lines.append(f"{'system':22} {'tier':>4} {'last test':25} {'achieved':>9} {'RTO':>6} {'in RTO':>6} valid until")
    for s in rep.systems:
        within = {True: "yes", False: "NO", None: "-"}[s.within_rto]
        lines.append(
            f"{s.runbook:22} {s.tier:>4} {(s.last_test.isoformat() if s.last_test else 'never'):25} "
            f"{_dur(s.achieved_rto_seconds):>9} {_dur(s.rto_seconds):>6} {within:>6} "
            f"{s.valid_until.isoformat() if s.valid_until else '-'}{'' if s.valid else ' (not valid)'}"
        )
    cp = rep.critical_path
    lines.append("")
    lines.append(
        f"estate objective {_dur(cp.objective_seconds)}: planned {_dur(cp.planned_seconds)}, "
        f"projected {_dur(cp.projected_seconds)}, measured {_dur(cp.measured_seconds)}"
        + (f" (exercise {cp.measured_exercise})" if cp.measured_exercise else "")
    )
    lines.append(f"critical path: {' -> '.join(cp.path) or '-'}")
    lines.append(f"open actions: {len(rep.open_actions)} ({sum(a.overdue for a in rep.open_actions)} overdue)")
    lines.append(f"evidence chain: {rep.chain_length} sealed records, head {rep.chain_head or '-'}")
    errors, warnings = len(rep.errors), len(rep.warnings)
    verdict = "HOLDS" if rep.ok else "DOES NOT HOLD"
    lines.append(f"at {rep.at.isoformat()}: the recovery promise {verdict} ({errors} errors, {warnings} warnings)")
    return "\n".join(lines)


def cmd_evidence_verify(args: argparse.Namespace) -> int:
    try:
        at = parse_at(args.at) if args.at else None
    except ValueError as e:
        _err(str(e))
        return EXIT_BAD_INPUT
    try:
        rep = verify(args.runbooks, args.evidence, at)
    except EvidenceInputError as e:
        return _input_error(e)
    if args.format == "json":
        doc: dict[str, Any] = rep.to_json()
        print(json.dumps(doc, indent=2))
    else:
        print(render_text(rep))
    return EXIT_OK if rep.ok else EXIT_FINDINGS


def register(subparsers: Any) -> None:
    rb = subparsers.add_parser("runbooks", help="check DR runbooks")
    rbs = rb.add_subparsers(dest="runbooks_command", metavar="COMMAND", required=True)
    c = rbs.add_parser("check", help="schema, unknown or cyclic depends_on, step graphs, planned critical path")
    c.add_argument("dir", help="runbooks directory")
    c.set_defaults(func=cmd_runbooks_check)

    ev = subparsers.add_parser("evidence", help="seal and verify recovery-test evidence")
    evs = ev.add_subparsers(dest="evidence_command", metavar="COMMAND", required=True)
    s = evs.add_parser("seal", help="hash artefacts and add the record to the evidence hash chain")
    s.add_argument("--runbooks", required=True, help="runbooks directory")
    s.add_argument("--evidence", required=True, help="evidence directory")
    s.add_argument("file", help="the record to seal (a YAML file directly in the evidence directory)")
    s.set_defaults(func=cmd_evidence_seal)

    v = evs.add_parser("verify", help="does the recovery promise hold; exit 1 on errors")
    v.add_argument("--runbooks", required=True, help="runbooks directory")
    v.add_argument("--evidence", required=True, help="evidence directory")
    v.add_argument("--at", default=None, help="verify as of this time (ISO 8601 with offset; default now)")
    v.add_argument("--format", choices=("text", "json"), default="text")
    v.set_defaults(func=cmd_evidence_verify)
