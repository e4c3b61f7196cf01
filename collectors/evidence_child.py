"""The evidence collector's child process (``collectors.evidence``): one verification run.

The agent starts its own Python on :func:`main` with one JSON argument (target, runbooks_dir,
evidence_dir, at, hashes); it verifies leniently and prints one JSON object: ``samples``
(``[name, value, labels]``), ``systems`` (``[labels, backups named]`` per runbook, from which the
agent adds ``continuity_runbook_rpo_met`` with the backup states it holds: :func:`rpo_samples`),
``partial_errors`` (``[reason, message]``) and ``info``, or ``error`` (``[reason, message]``) when
the input cannot be read at all. It imports only the verifier and what it needs (not the agent's config models), so
a run costs the interpreter's start, pydantic and the verification.
"""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.evidence import InputIssue, VerificationReport

INVALID_INPUT = "invalid_input"
RPO_NOT_MET = frozenset({"stale", "failed", "never_ran"})
RPO_MET = frozenset({"fresh", "late"})

PROTOCOL = 1  # request and reply format: an agent and a child of another version refuse each other
SAVE_EVERY = 2.0  # seconds of hashing between saves of the digests (HashCache.load)

SampleRow = tuple[str, float, dict[str, str]]


def rpo_met(backups: tuple[str, ...] | list[str], states: dict[str, str]) -> bool | None:
    """False if any backup is stale/failed/never_ran; None if any is unknown or has no state; True
    if all are fresh or late; None for no backups."""
    if not backups:
        return None
    got = [states.get(b) for b in backups]
    if any(s in RPO_NOT_MET for s in got):
        return False
    if all(s in RPO_MET for s in got):
        return True
    return None


def rpo_samples(systems: list[tuple[dict[str, str], list[str]]], states: dict[str, str]) -> list[SampleRow]:
    """``continuity_runbook_rpo_met`` of each system (its labels and the backups it names), from
    the backup states in the agent's store: the agent adds these to the child's samples."""
    out: list[SampleRow] = []
    for labels, backups in systems:
        met = rpo_met(backups, states)
        if met is not None:
            out.append(("continuity_runbook_rpo_met", 1.0 if met else 0.0, labels))
    return out


def report_samples(rep: VerificationReport) -> list[SampleRow]:
    """The run's samples, but for :func:`rpo_samples`."""
    from agent.evidence import findings_by_rule

    out: list[SampleRow] = []

    def add(name: str, value: float, **labels: str) -> None:
        out.append((name, float(value), labels))

    for s in rep.systems:
        lb = {"runbook": s.runbook, "tier": str(s.tier)}
        add("continuity_runbook_rto_seconds", s.rto_seconds, **lb)
        add("continuity_runbook_rpo_seconds", s.rpo_seconds, **lb)
        if s.last_test is not None:
            add("continuity_recovery_test_last_timestamp_seconds", s.last_test.timestamp(), **lb)
        if s.achieved_rto_seconds is not None:
            add("continuity_recovery_test_achieved_rto_seconds", s.achieved_rto_seconds, **lb)
        if s.within_rto is not None:
            add("continuity_recovery_test_within_rto", 1 if s.within_rto else 0, **lb)
        add("continuity_recovery_evidence_valid", 1 if s.valid else 0, **lb)
        if s.valid_until is not None:
            add("continuity_recovery_evidence_expiry_timestamp_seconds", s.valid_until.timestamp(), **lb)
    for (severity, rule), n in sorted(findings_by_rule(rep.findings).items()):
        add("continuity_recovery_findings", n, severity=severity, rule=rule)
    cp = rep.critical_path
    add("continuity_recovery_objective_seconds", cp.objective_seconds)
    for basis in ("planned", "projected", "measured"):
        v = cp.seconds(basis)
        if v is not None:
            add("continuity_recovery_critical_path_seconds", v, basis=basis)
    if rep.chain_head:
        add("continuity_recovery_evidence_chain_head_info", 1, sha256=rep.chain_head)
    return out


def invalid_input(target: str, issues: list[InputIssue]) -> str:
    first = issues[0] if issues else "invalid input"
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return f"{target}: {first}{more}"


def run(req: dict[str, Any]) -> dict[str, Any]:
    """One verification as ``req`` says; the JSON-ready result :func:`main` prints."""
    from agent.evidence import EvidenceInputError, HashCache, verify

    target = req["target"]
    hashes = Path(req["hashes"])
    _remove_stale(hashes)
    cache = HashCache.load(hashes, save_every=SAVE_EVERY)
    at = datetime.fromtimestamp(req["at"], UTC)
    try:
        rep = verify(Path(req["runbooks_dir"]), Path(req["evidence_dir"]), at, hash_cache=cache, lenient=True)
    except EvidenceInputError as e:  # a directory missing, unlistable or without runbook files
        return {"v": PROTOCOL, "error": [INVALID_INPUT, invalid_input(target, e.issues)]}
    with contextlib.suppress(OSError):  # kept in save_error: the agent logs it; the verdict stands
        cache.save(hashes, prune=True)
    partial = []
    if rep.bad_files:  # skipped files are findings; the rest of the run stands
        partial.append([INVALID_INPUT, invalid_input(target, rep.bad_files)])
    return {
        "v": PROTOCOL,
        "samples": report_samples(rep),
        "systems": [[{"runbook": s.runbook, "tier": str(s.tier)}, list(s.backups)] for s in rep.systems],
        "partial_errors": partial,
        "info": {
            "ok": rep.ok,
            "errors": len(rep.errors),
            "warnings": len(rep.warnings),
            "chain_head": rep.chain_head,
            "findings": [str(f) for f in rep.findings[:50]],
        },
        "hash_cache_error": cache.save_error,
    }


def _remove_stale(hashes: Path) -> None:
    """Temporary files of a save that a killed run left (``.<name>.<random>.tmp``, HashCache.save
    through agent.fileio); unlink never follows a link."""
    for tmp in hashes.parent.glob(f".{hashes.name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def main(request: str) -> None:
    sys.stdout.write(json.dumps(run(json.loads(request))) + "\n")
