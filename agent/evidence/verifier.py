"""The verifier: does the estate's recovery promise hold at a given time, and if not, why not.

See :mod:`agent.evidence` for the API and docs/runbooks.md for every rule.

Which records each rule looks at:

* Integrity rules look at every record, always: ``unsealed``, ``unknown_runbook``,
  ``chain_broken``, ``artefact_missing``, ``artefact_hash_mismatch``, ``path_outside_evidence``,
  and ``action_overdue`` (an action stays open until a later record lists it as closed).
* Content rules (``step_timestamps``, ``steps_incomplete``, ``validation_failed``, ``rto_exceeded``,
  ``sign_off_missing``, ``sign_off_segregation``, ``dependency_order``,
  ``runbook_version_mismatch``) judge the records that count at ``at``: each runbook's latest
  record, its latest passing record of an accepted type, and every record of the latest joint
  exercise. Sealed records cannot be corrected, so an older record's content is history: it
  does not fail today's verification once a newer test supersedes it.
* A record is valid evidence when it is fully sealed, its chain links hold, its type is accepted
  by the runbook's test policy, its result is pass, it was declared at or before ``at`` and it
  has no integrity or content error of its own (``rto_exceeded`` and ``dependency_order`` are
  reported but do not void it: the test still proves the system can be recovered).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from agent.durations import format_duration
from agent.escape import terminal
from agent.evidence.critical_path import longest_path, planned_duration
from agent.evidence.hashing import HashCache, resolve_artefact, sha256_file
from agent.evidence.loader import Estate, InputIssue, LoadedEvidence, LoadedRecord, load_records, load_runbooks
from agent.evidence.models import SIGN_OFF_TYPES, EvidenceRecord, Runbook
from agent.graph import find_cycle

Severity = Literal["error", "warning"]

RULES: dict[str, Severity] = {
    "unsealed": "error",
    "unknown_runbook": "error",
    "dependency_cycle": "error",
    "step_timestamps": "error",
    "steps_incomplete": "error",
    "validation_failed": "error",
    "rto_exceeded": "error",
    "dependency_order": "error",
    "estate_objective_exceeded": "error",
    "sign_off_missing": "error",
    "sign_off_segregation": "error",
    "artefact_missing": "error",
    "artefact_hash_mismatch": "error",
    "path_outside_evidence": "error",
    "chain_broken": "error",
    "evidence_overdue": "error",
    "runbook_version_mismatch": "warning",
    "action_overdue": "warning",
    "evidence_expiring": "warning",
    "coverage_gap": "warning",
    "invalid_runbook": "error",
    "invalid_record": "error",
}

CONTENT_RULES = frozenset(
    {
        "step_timestamps",
        "steps_incomplete",
        "validation_failed",
        "rto_exceeded",
        "sign_off_missing",
        "sign_off_segregation",
        "dependency_order",
        "runbook_version_mismatch",
    }
)
# Errors of a record's own that void it as evidence.
VOIDING_RULES = frozenset(
    {
        "unsealed",
        "unknown_runbook",
        "chain_broken",
        "artefact_missing",
        "artefact_hash_mismatch",
        "path_outside_evidence",
        "step_timestamps",
        "steps_incomplete",
        "validation_failed",
        "sign_off_missing",
        "sign_off_segregation",
        "invalid_record",
    }
)
BASES = ("planned", "projected", "measured")
# Records of these types must cover every runbook step and validation; partial recoveries and
# automated restores cover the steps and validations they list (each of which must be ok).
FULL_COVERAGE_TYPES = frozenset({"full_recovery", "tabletop"})


@dataclass(frozen=True)
class Finding:
    severity: Severity
    rule: str
    runbook: str | None
    record: str | None
    message: str
    step: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "rule": self.rule,
            "runbook": self.runbook,
            "record": self.record,
            "step": self.step,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.severity}: {self.rule}: {self.message}"


def _where(record: str | None, runbook: str | None, step: str | None = None) -> str:
    parts = []
    if record:
        parts.append(f"record {record}")
    if runbook:
        parts.append(f"runbook {runbook}")
    if step:
        parts.append(f"step {step}")
    return ", ".join(parts)


def finding(
    rule: str, message: str, *, runbook: str | None = None, record: str | None = None, step: str | None = None
) -> Finding:
    where = _where(record, runbook, step)
    text = terminal(f"{where}: {message}" if where else message)
    return Finding(RULES[rule], rule, runbook, record, text, step)


@dataclass(frozen=True)
class SystemStatus:
    runbook: str
    name: str
    tier: int
    owner: str
    rto_seconds: float
    rpo_seconds: float
    mtpd_seconds: float
    depends_on: tuple[str, ...]
    backups: tuple[str, ...]
    planned_seconds: float
    last_test: datetime | None  # declared_at of the latest test of an accepted type, pass or fail
    last_test_type: str | None
    last_test_result: str | None
    last_record: str | None
    achieved_rto_seconds: float | None  # of that latest test; None if service was not restored
    within_rto: bool | None
    evidence_record: str | None  # the latest valid evidence
    valid: bool  # valid evidence younger than max_evidence_age at `at`
    valid_until: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "name": self.name,
            "tier": self.tier,
            "owner": self.owner,
            "last_test": _ts(self.last_test),
            "last_test_type": self.last_test_type,
            "last_test_result": self.last_test_result,
            "last_record": self.last_record,
            "achieved_rto_seconds": self.achieved_rto_seconds,
            "rto_seconds": self.rto_seconds,
            "within_rto": self.within_rto,
            "valid_until": _ts(self.valid_until),
            "valid": self.valid,
            "evidence_record": self.evidence_record,
            "rpo_seconds": self.rpo_seconds,
            "mtpd_seconds": self.mtpd_seconds,
            "planned_seconds": self.planned_seconds,
            "depends_on": list(self.depends_on),
            "backups": list(self.backups),
        }


@dataclass(frozen=True)
class CriticalPath:
    objective_seconds: float
    planned_seconds: float | None  # None when depends_on has a cycle
    projected_seconds: float | None
    measured_seconds: float | None  # None without a joint exercise with a restore
    paths: dict[str, list[str]]  # basis -> runbook ids, first recovered first
    measured_exercise: str | None

    @property
    def path(self) -> list[str]:
        """The projected path: the best estimate today."""
        return self.paths.get("projected") or self.paths.get("planned") or []

    def seconds(self, basis: str) -> float | None:
        return {
            "planned": self.planned_seconds,
            "projected": self.projected_seconds,
            "measured": self.measured_seconds,
        }[basis]

    def to_json(self) -> dict[str, Any]:
        return {
            "objective_seconds": self.objective_seconds,
            "planned_seconds": self.planned_seconds,
            "projected_seconds": self.projected_seconds,
            "measured_seconds": self.measured_seconds,
            "path": self.path,
            "paths": self.paths,
            "measured_exercise": self.measured_exercise,
        }


@dataclass(frozen=True)
class StepTiming:
    id: str
    title: str
    operator: str
    result: str
    started_at: datetime | None
    ended_at: datetime | None
    start_offset_seconds: float | None  # from the exercise start (earliest declaration)
    end_offset_seconds: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "operator": self.operator,
            "result": self.result,
            "started_at": _ts(self.started_at),
            "ended_at": _ts(self.ended_at),
            "start_offset_seconds": self.start_offset_seconds,
            "end_offset_seconds": self.end_offset_seconds,
        }


@dataclass(frozen=True)
class ExerciseSystem:
    runbook: str
    record: str
    type: str
    result: str
    tier: int | None
    declared_at: datetime
    service_restored_at: datetime | None
    restored_offset_seconds: float | None
    rto_seconds: float | None
    achieved_rto_seconds: float | None
    within_rto: bool | None
    steps: tuple[StepTiming, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "record": self.record,
            "type": self.type,
            "result": self.result,
            "tier": self.tier,
            "declared_at": _ts(self.declared_at),
            "service_restored_at": _ts(self.service_restored_at),
            "restored_offset_seconds": self.restored_offset_seconds,
            "rto_seconds": self.rto_seconds,
            "achieved_rto_seconds": self.achieved_rto_seconds,
            "within_rto": self.within_rto,
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass(frozen=True)
class Exercise:
    id: str
    joint: bool  # records for two or more runbooks
    started_at: datetime  # earliest declaration
    restored_at: datetime | None  # latest service restore
    measured_seconds: float | None
    critical_path: tuple[str, ...]  # runbook ids: the last restored system and what gated it
    systems: tuple[ExerciseSystem, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "joint": self.joint,
            "started_at": _ts(self.started_at),
            "restored_at": _ts(self.restored_at),
            "measured_seconds": self.measured_seconds,
            "critical_path": list(self.critical_path),
            "systems": [s.to_json() for s in self.systems],
        }


@dataclass(frozen=True)
class OpenAction:
    id: str
    description: str
    owner: str
    due: date
    overdue: bool
    record: str
    runbook: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "owner": self.owner,
            "due": self.due.isoformat(),
            "overdue": self.overdue,
            "record": self.record,
            "runbook": self.runbook,
        }


@dataclass
class VerificationReport:
    at: datetime
    estate: Estate
    records: list[LoadedRecord]
    findings: list[Finding]
    systems: list[SystemStatus]
    critical_path: CriticalPath
    exercises: list[Exercise]
    latest_joint_exercise: str | None
    open_actions: list[OpenAction]
    chain_head: str | None  # sha256 of the record with the highest sequence
    chain_length: int
    valid_records: set[str] = field(default_factory=set)
    bad_files: list[InputIssue] = field(default_factory=list)  # lenient mode: runbook, then record files skipped

    def record(self, name: str) -> LoadedRecord | None:
        return next((r for r in self.records if r.name == name), None)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def system(self, runbook: str) -> SystemStatus | None:
        return next((s for s in self.systems if s.runbook == runbook), None)

    def exercise(self, exercise_id: str) -> Exercise | None:
        return next((e for e in self.exercises if e.id == exercise_id), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "at": _ts(self.at),
            "findings": [f.to_json() for f in self.findings],
            "systems": [s.to_json() for s in self.systems],
            "critical_path": self.critical_path.to_json(),
            "exercises": [e.to_json() for e in self.exercises],
            "latest_joint_exercise": self.latest_joint_exercise,
            "open_actions": [a.to_json() for a in self.open_actions],
            "chain": {"head_sha256": self.chain_head, "length": self.chain_length},
            "estate": {
                "name": self.estate.settings.name,
                "objective_seconds": self.estate.settings.objective,
                "expiry_warning_seconds": self.estate.settings.expiry_warning,
            },
        }


def _ts(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


def fmt_hours(seconds: float) -> str:
    """Durations as recovery people say them: ``45m``, ``36h``, ``73h30m``, ``365d`` for whole days over a week."""
    s = round(seconds)
    if s >= 7 * 86400 and s % 86400 == 0:
        return f"{s // 86400}d"
    if s < 3600:
        return format_duration(s)
    h, rest = divmod(s, 3600)
    m = rest // 60
    return f"{h}h{m}m" if m else f"{h}h"


_fmt = fmt_hours


def _when(v: datetime) -> str:
    return v.isoformat()


# -- runbook-level checks --------------------------------------------------------------------------


def check_estate(estate: Estate) -> list[Finding]:
    """``unknown_runbook`` for depends_on naming no runbook, ``dependency_cycle``."""
    out: list[Finding] = []
    for rid, lr in sorted(estate.runbooks.items()):
        for dep in lr.runbook.depends_on:
            if dep not in estate.runbooks:
                out.append(
                    finding(
                        "unknown_runbook",
                        f"depends_on names {dep!r}, which is not a runbook in {estate.directory}",
                        runbook=rid,
                    )
                )
    cycle = find_cycle({rid: list(lr.runbook.depends_on) for rid, lr in estate.runbooks.items()})
    if cycle:
        out.append(finding("dependency_cycle", f"depends_on forms a cycle: {' -> '.join(cycle)}", runbook=cycle[0]))
    return out


def _graph(estate: Estate) -> dict[str, list[str]]:
    return {rid: list(lr.runbook.depends_on) for rid, lr in estate.runbooks.items()}


def planned_path(estate: Estate) -> tuple[float, list[str]] | None:
    weights = {rid: planned_duration(lr.runbook)[0] for rid, lr in estate.runbooks.items()}
    return longest_path(_graph(estate), weights)


def objective_finding(
    estate: Estate,
    basis: str,
    seconds: float,
    path: list[str],
    *,
    record: str | None = None,
    exercise: str | None = None,
) -> Finding | None:
    objective = estate.settings.objective
    if seconds <= objective:
        return None
    where = f"exercise {exercise}: " if exercise else ""
    return finding(
        "estate_objective_exceeded",
        f"{where}{basis} estate recovery takes {_fmt(seconds)}, more than the objective {_fmt(objective)}"
        f" (path {' -> '.join(path) or '-'})",
        runbook=path[-1] if path else None,
        record=record,
    )


# -- record-level checks ---------------------------------------------------------------------------


def _artefact_findings(lr: LoadedRecord, evidence_dir: Path, cache: HashCache | None) -> list[Finding]:
    out: list[Finding] = []
    rec = lr.record
    for i, a in enumerate(rec.artefacts):
        label = f"artefacts[{i}] {a.path!r}"
        where = resolve_artefact(evidence_dir, a.path)
        if not where.ok or where.path is None:
            out.append(
                finding(
                    "path_outside_evidence",
                    f"{label}: {where.problem}; not opened",
                    runbook=rec.runbook,
                    record=lr.name,
                )
            )
            continue
        p = where.path
        if not p.exists():
            out.append(finding("artefact_missing", f"{label} does not exist", runbook=rec.runbook, record=lr.name))
            continue
        if not p.is_file():
            out.append(
                finding("artefact_missing", f"{label} is not a regular file", runbook=rec.runbook, record=lr.name)
            )
            continue
        if a.sha256 is None:
            continue  # reported as unsealed
        try:
            digest = cache.sha256(p) if cache is not None else sha256_file(p)
        except OSError as e:
            out.append(
                finding(
                    "artefact_missing",
                    f"{label} cannot be read: {e.strerror or e}",
                    runbook=rec.runbook,
                    record=lr.name,
                )
            )
            continue
        if digest != a.sha256:
            out.append(
                finding(
                    "artefact_hash_mismatch",
                    f"{label} has sha256 {digest}, the sealed record says {a.sha256}",
                    runbook=rec.runbook,
                    record=lr.name,
                )
            )
    return out


def _step_findings(lr: LoadedRecord, rb: Runbook) -> list[Finding]:
    out: list[Finding] = []
    rec = lr.record
    name = lr.name
    known = {s.id for s in rb.recovery_steps}
    restored = rec.service_restored_at
    if restored is not None and restored < rec.declared_at:
        out.append(
            finding(
                "step_timestamps",
                f"service_restored_at {_when(restored)} is before declared_at {_when(rec.declared_at)}",
                runbook=rb.id,
                record=name,
            )
        )
    for s in rec.steps:
        if s.id not in known:
            out.append(
                finding(
                    "step_timestamps",
                    f"step {s.id!r} is not a recovery step of runbook {rb.id} version {rb.version}",
                    runbook=rb.id,
                    record=name,
                    step=s.id,
                )
            )
            continue
        if s.started_at is None or s.ended_at is None:
            continue
        if s.ended_at < s.started_at:
            out.append(
                finding(
                    "step_timestamps",
                    f"ended_at {_when(s.ended_at)} is before started_at {_when(s.started_at)}",
                    runbook=rb.id,
                    record=name,
                    step=s.id,
                )
            )
        if s.started_at < rec.declared_at:
            out.append(
                finding(
                    "step_timestamps",
                    f"started_at {_when(s.started_at)} is before declared_at {_when(rec.declared_at)}",
                    runbook=rb.id,
                    record=name,
                    step=s.id,
                )
            )
        spec = rb.step(s.id)
        for a in spec.after if spec is not None else []:
            ends = [x.ended_at for x in rec.steps if x.id == a and x.result == "ok" and x.ended_at is not None]
            if ends and s.started_at < min(ends):
                out.append(
                    finding(
                        "step_timestamps",
                        f"started_at {_when(s.started_at)} is before step {a!r}, "
                        f"which it comes after, ended at {_when(min(ends))}",
                        runbook=rb.id,
                        record=name,
                        step=s.id,
                    )
                )
        if restored is not None and s.ended_at > restored:
            out.append(
                finding(
                    "step_timestamps",
                    f"ended_at {_when(s.ended_at)} is after service_restored_at {_when(restored)}",
                    runbook=rb.id,
                    record=name,
                    step=s.id,
                )
            )
    if rec.result == "pass":
        out += _planned_items_findings(
            lr,
            rb,
            "steps_incomplete",
            [(st.id, f"runbook step {st.id!r} ({st.title})") for st in rb.recovery_steps],
            lambda sid: [s for s in rec.steps if s.id == sid],
            lambda got: None if any(s.result == "ok" for s in got) else f"is {'/'.join(s.result for s in got)}, not ok",
        )
    return out


def _planned_items_findings(
    lr: LoadedRecord,
    rb: Runbook,
    rule: str,
    planned: list[tuple[str, str]],
    entries: Callable[[str], list[Any]],
    bad: Callable[[list[Any]], str | None],
) -> list[Finding]:
    """In a passing record, each planned item (id, how to name it) is present (when the record's
    type must cover everything) and good (``bad`` says how it is not, or None)."""
    out: list[Finding] = []
    for item, label in planned:
        got = entries(item)
        if not got:
            if lr.record.type in FULL_COVERAGE_TYPES:
                out.append(
                    finding(rule, f"{label} is missing from a passing record", runbook=rb.id, record=lr.name, step=item)
                )
            continue
        why = bad(got)
        if why is not None:
            out.append(finding(rule, f"{label} {why} in a passing record", runbook=rb.id, record=lr.name, step=item))
    return out


def _validation_findings(lr: LoadedRecord, rb: Runbook) -> list[Finding]:
    out: list[Finding] = []
    rec = lr.record
    known = {v.id for v in rb.validation}
    for v in rec.validations:
        if v.id not in known:
            out.append(
                finding(
                    "validation_failed",
                    f"validation {v.id!r} is not a validation of runbook {rb.id}",
                    runbook=rb.id,
                    record=lr.name,
                    step=v.id,
                )
            )
    if rec.result != "pass":
        return out
    return out + _planned_items_findings(
        lr,
        rb,
        "validation_failed",
        [(rv.id, f"validation {rv.id!r} ({rv.description})") for rv in rb.validation],
        lambda vid: [x for x in rec.validations if x.id == vid],
        lambda got: None if got[-1].result == "pass" else f"failed (by {got[-1].by})",
    )


def _content_findings(lr: LoadedRecord, rb: Runbook, runbook_sha256: str) -> list[Finding]:
    rec = lr.record
    out = _step_findings(lr, rb) + _validation_findings(lr, rb)
    achieved = rec.achieved_rto
    if achieved is not None and achieved > rb.objectives.rto:
        out.append(
            finding(
                "rto_exceeded",
                f"service restored {_fmt(achieved)} after declaration "
                f"({_when(rec.declared_at)} to {_when(rec.service_restored_at or rec.declared_at)}), "
                f"more than the RTO {_fmt(rb.objectives.rto)}",
                runbook=rb.id,
                record=lr.name,
            )
        )
    if rec.type in SIGN_OFF_TYPES and rec.sign_off is None:
        out.append(
            finding(
                "sign_off_missing", f"a {rec.type} record needs sign_off (by, role, at)", runbook=rb.id, record=lr.name
            )
        )
    if rec.sign_off is not None:
        signer = rec.sign_off.by.strip().casefold()
        for s in rec.steps:
            if s.operator.strip().casefold() == signer:
                out.append(
                    finding(
                        "sign_off_segregation",
                        f"signed off by {rec.sign_off.by}, who operated this step",
                        runbook=rb.id,
                        record=lr.name,
                        step=s.id,
                    )
                )
                break
    if rec.runbook_version != rb.version:
        out.append(
            finding(
                "runbook_version_mismatch",
                f"record is for version {rec.runbook_version}, the runbook is at version {rb.version}",
                runbook=rb.id,
                record=lr.name,
            )
        )
    elif rec.runbook_sha256 is not None and rec.runbook_sha256 != runbook_sha256:
        out.append(
            finding(
                "runbook_version_mismatch",
                f"the runbook file changed since the record was sealed "
                f"but its version is still {rb.version}; bump version when the runbook changes",
                runbook=rb.id,
                record=lr.name,
            )
        )
    return out


def _chain_findings(sealed: list[LoadedRecord]) -> tuple[list[Finding], set[str]]:
    out: list[Finding] = []
    tainted: set[str] = set()
    by_seq: dict[int, list[LoadedRecord]] = defaultdict(list)
    for lr in sealed:
        assert lr.record.sequence is not None
        by_seq[lr.record.sequence].append(lr)
    for seq, group in sorted(by_seq.items()):
        if len(group) > 1:
            names = ", ".join(g.name for g in group)
            for g in group:
                tainted.add(g.name)
                out.append(
                    finding(
                        "chain_broken",
                        f"sequence {seq} is used by more than one record ({names})",
                        runbook=g.record.runbook,
                        record=g.name,
                    )
                )
    if not by_seq:
        return out, tainted
    top = max(by_seq)
    for seq in range(1, top + 1):
        group = by_seq.get(seq, [])
        if not group:
            nxt = next((by_seq[s][0] for s in range(seq + 1, top + 1) if s in by_seq), None)
            out.append(
                finding(
                    "chain_broken",
                    f"no record has sequence {seq}: a sealed record was removed or renamed out of the directory",
                    runbook=nxt.record.runbook if nxt else None,
                    record=nxt.name if nxt else None,
                )
            )
            if nxt:
                tainted.add(nxt.name)
            continue
        for lr in group:
            prev_hash = lr.record.prev_record_sha256
            if seq == 1:
                if prev_hash is not None:
                    tainted.add(lr.name)
                    out.append(
                        finding(
                            "chain_broken",
                            "the first record (sequence 1) must have prev_record_sha256 null",
                            runbook=lr.record.runbook,
                            record=lr.name,
                        )
                    )
                continue
            prevs = by_seq.get(seq - 1)
            if not prevs:
                continue  # gap already reported
            prev = prevs[0]
            if prev_hash is None:
                tainted.add(lr.name)
                out.append(
                    finding(
                        "chain_broken",
                        f"prev_record_sha256 is missing; it must be the sha256 of "
                        f"record {prev.name} (sequence {seq - 1})",
                        runbook=lr.record.runbook,
                        record=lr.name,
                    )
                )
            elif prev_hash != prev.sha256:
                tainted.update((lr.name, prev.name))
                out.append(
                    finding(
                        "chain_broken",
                        f"record {prev.name} (sequence {seq - 1}) has sha256 "
                        f"{prev.sha256}, but this record was sealed after one with {prev_hash}: "
                        f"{prev.name} was changed after sealing",
                        runbook=prev.record.runbook,
                        record=lr.name,
                    )
                )
    return out, tainted


# -- the verifier ------------------------------------------------------------------------------------


def _aware(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("--at needs a UTC offset (e.g. 2025-07-01T09:00:00+01:00)")
    return at


def _order_key(lr: LoadedRecord) -> tuple[datetime, int, str]:
    return (lr.record.declared_at, lr.record.sequence or 0, lr.name)


def _evidence_seconds(rec: EvidenceRecord) -> float | None:
    if rec.service_restored_at is None:
        return None
    start = rec.first_step_start or rec.declared_at
    return max(0.0, (rec.service_restored_at - start).total_seconds())


def _covers_all_steps(rec: EvidenceRecord, rb: Runbook) -> bool:
    ok = {s.id for s in rec.steps if s.result == "ok"}
    return all(st.id in ok for st in rb.recovery_steps)


def _build_exercise(ex_id: str, recs: list[LoadedRecord], estate: Estate) -> Exercise:
    start = min(r.record.declared_at for r in recs)
    restores = [r.record.service_restored_at for r in recs if r.record.service_restored_at is not None]
    end = max(restores) if restores else None
    systems: list[ExerciseSystem] = []
    for lr in sorted(recs, key=lambda r: (r.record.first_step_start or r.record.declared_at, r.record.runbook, r.name)):
        rec = lr.record
        rb = estate.get(rec.runbook)
        titles = {s.id: s.title for s in rb.recovery_steps} if rb else {}
        steps = tuple(
            StepTiming(
                id=s.id,
                title=titles.get(s.id, s.id),
                operator=s.operator,
                result=s.result,
                started_at=s.started_at,
                ended_at=s.ended_at,
                start_offset_seconds=(s.started_at - start).total_seconds() if s.started_at else None,
                end_offset_seconds=(s.ended_at - start).total_seconds() if s.ended_at else None,
            )
            for s in rec.steps
        )
        achieved = rec.achieved_rto
        rto = rb.objectives.rto if rb else None
        systems.append(
            ExerciseSystem(
                runbook=rec.runbook,
                record=lr.name,
                type=rec.type,
                result=rec.result,
                tier=rb.tier if rb else None,
                declared_at=rec.declared_at,
                service_restored_at=rec.service_restored_at,
                restored_offset_seconds=(rec.service_restored_at - start).total_seconds()
                if rec.service_restored_at
                else None,
                rto_seconds=rto,
                achieved_rto_seconds=achieved,
                within_rto=(achieved <= rto) if achieved is not None and rto is not None else None,
                steps=steps,
            )
        )
    # Measured critical path: the last system restored, then whichever of its dependencies in the
    # exercise was restored last, and so on.
    restored_at: dict[str, datetime] = {}
    for lr in recs:
        t = lr.record.service_restored_at
        if t is not None and (lr.record.runbook not in restored_at or t > restored_at[lr.record.runbook]):
            restored_at[lr.record.runbook] = t
    path: list[str] = []
    if restored_at:
        cur: str | None = max(restored_at, key=lambda k: (restored_at[k], k))
        while cur is not None and cur not in path:
            path.append(cur)
            rb = estate.get(cur)
            deps = [d for d in (rb.depends_on if rb else []) if d in restored_at]
            cur = max(deps, key=lambda k: (restored_at[k], k)) if deps else None
    return Exercise(
        id=ex_id,
        joint=len({r.record.runbook for r in recs}) >= 2,
        started_at=start,
        restored_at=end,
        measured_seconds=(end - start).total_seconds() if end is not None else None,
        critical_path=tuple(reversed(path)),
        systems=tuple(systems),
    )


def verify(
    runbooks_dir: str | Path,
    evidence_dir: str | Path,
    at: datetime | None = None,
    *,
    hash_cache: HashCache | None = None,
    lenient: bool = False,
) -> VerificationReport:
    """Load and verify. Raises :class:`~agent.evidence.loader.EvidenceInputError` for unreadable or
    schema-invalid input (with ``lenient``, only for a directory that does not exist, cannot be
    listed or holds no runbook file: a bad file is an ``invalid_runbook``/``invalid_record`` finding)
    and ``ValueError`` for a naive ``at``."""
    at = _aware(at)
    estate = load_runbooks(runbooks_dir, lenient=lenient)
    return verify_loaded(estate, load_records(evidence_dir, lenient=lenient), at, hash_cache=hash_cache)


def input_finding(rule: str, issue: InputIssue) -> Finding:
    """A file the lenient loader skipped, named as the strict loader's error names it."""
    path = Path(issue.file)
    runbook = path.stem if rule == "invalid_runbook" and path.name not in ("estate.yml", "estate.yaml") else None
    record = issue.file if rule == "invalid_record" else None
    return Finding(RULES[rule], rule, runbook, record, str(issue))


def verify_loaded(
    estate: Estate,
    evidence: LoadedEvidence,
    at: datetime,
    *,
    hash_cache: HashCache | None = None,
) -> VerificationReport:
    """Every rule family over loaded input, one function each, into one typed report. The files the
    lenient loaders skipped (``estate.bad_files``, ``evidence.bad_files``) are the first findings."""
    at = _aware(at)
    records = evidence.records
    bad_files = [*estate.bad_files, *evidence.bad_files]
    findings = [input_finding("invalid_runbook", i) for i in estate.bad_files]
    findings += [input_finding("invalid_record", i) for i in evidence.bad_files]
    findings.extend(check_estate(estate))
    integrity = _integrity(estate, records, evidence.directory, hash_cache)
    findings.extend(integrity.findings)
    content: dict[str, list[Finding]] = {}
    for lr in records:
        lrb = estate.runbooks.get(lr.record.runbook)
        if lrb is not None:
            content[lr.name] = _content_findings(lr, lrb.runbook, lrb.sha256)
    past = [r for r in records if r.record.runbook in estate.runbooks and r.record.declared_at <= at]
    by_ex, exercises, latest_joint = _exercises(past, estate)
    ev = _evidence(estate, past, integrity.own, content, at, latest_joint)
    findings.extend(ev.findings)
    # Content findings of the records that count now.
    for lr in records:
        if lr.name in ev.current:
            findings.extend(content.get(lr.name, []))
    findings.extend(_dependency_order_findings(by_ex, ev.current, estate, at))
    cpath, path_findings = _critical_path(estate, past, ev.valid_records, latest_joint)
    findings.extend(path_findings)
    findings.extend(_coverage_findings(estate, latest_joint))
    actions, action_findings = _actions(records, at)
    findings.extend(action_findings)

    order = {"error": 0, "warning": 1}
    uniq = list(dict.fromkeys(findings))
    uniq.sort(key=lambda f: (order[f.severity], f.rule, f.runbook or "", f.record or "", f.step or "", f.message))
    head = integrity.head
    return VerificationReport(
        at=at,
        estate=estate,
        records=records,
        findings=uniq,
        systems=ev.systems,
        critical_path=cpath,
        exercises=exercises,
        latest_joint_exercise=latest_joint.id if latest_joint else None,
        open_actions=actions,
        chain_head=head.sha256 if head else None,
        chain_length=integrity.sealed,
        valid_records=ev.valid_records,
        bad_files=bad_files,
    )


@dataclass
class _Integrity:
    findings: list[Finding]
    own: dict[str, list[Finding]]  # record -> its integrity findings (they void it as evidence)
    head: LoadedRecord | None  # the last sealed record of the chain
    sealed: int


def _integrity(
    estate: Estate, records: list[LoadedRecord], evidence_dir: Path, hash_cache: HashCache | None
) -> _Integrity:
    """Chain and sealing (``chain_broken``, ``unsealed``), ``unknown_runbook`` and the artefacts."""
    findings: list[Finding] = []
    sealed = [r for r in records if r.record.sealed]
    chain, tainted = _chain_findings(sealed)
    findings.extend(chain)
    head = max(sealed, key=lambda r: (r.record.sequence or 0, r.name)) if sealed else None
    own: dict[str, list[Finding]] = defaultdict(list)
    for f in chain:
        if f.record:
            own[f.record].append(f)
    for t in tainted:
        if not any(f.record == t for f in chain):
            own[t].append(finding("chain_broken", "a later record's link to this one does not match", record=t))
    for lr in records:
        rec = lr.record
        mine: list[Finding] = []
        if not rec.sealed:
            mine.append(
                finding(
                    "unsealed",
                    "record is not sealed; run `continuity-agent evidence seal`",
                    runbook=rec.runbook,
                    record=lr.name,
                )
            )
        elif rec.runbook_sha256 is None or any(a.sha256 is None for a in rec.artefacts):
            missing = "runbook_sha256" if rec.runbook_sha256 is None else "an artefact sha256"
            mine.append(
                finding(
                    "unsealed",
                    f"record has a sequence but no {missing}: partly sealed or edited",
                    runbook=rec.runbook,
                    record=lr.name,
                )
            )
        if rec.runbook not in estate.runbooks:
            mine.append(
                finding(
                    "unknown_runbook",
                    f"no runbook {rec.runbook!r} in {estate.directory}",
                    runbook=rec.runbook,
                    record=lr.name,
                )
            )
        else:
            mine.extend(_artefact_findings(lr, evidence_dir, hash_cache))
        findings.extend(mine)
        own[lr.name].extend(mine)
    return _Integrity(findings, own, head, len(sealed))


def _exercises(
    past: list[LoadedRecord], estate: Estate
) -> tuple[dict[str, list[LoadedRecord]], list[Exercise], Exercise | None]:
    """Records grouped by exercise, the exercises in time order, and the latest joint one."""
    by_ex: dict[str, list[LoadedRecord]] = defaultdict(list)
    for lr in past:
        by_ex[lr.record.exercise].append(lr)
    exercises = sorted(
        (_build_exercise(ex, recs, estate) for ex, recs in by_ex.items()), key=lambda e: (e.started_at, e.id)
    )
    joint = [e for e in exercises if e.joint]
    return by_ex, exercises, joint[-1] if joint else None


@dataclass
class _Evidence:
    systems: list[SystemStatus]
    valid_records: set[str]
    current: set[str]  # the records that count now (latest per system, latest passing, latest joint)
    findings: list[Finding]


def _evidence(
    estate: Estate,
    past: list[LoadedRecord],
    own: Mapping[str, list[Finding]],
    content: Mapping[str, list[Finding]],
    at: datetime,
    latest_joint: Exercise | None,
) -> _Evidence:
    """Each system's status and valid evidence; ``evidence_overdue`` and ``evidence_expiring``."""
    settings = estate.settings

    def is_valid(lr: LoadedRecord, rb: Runbook) -> bool:
        rec = lr.record
        if not rec.sealed or rec.result != "pass" or rec.type not in rb.test_policy.accepted_types:
            return False
        bad = own.get(lr.name, []) + content.get(lr.name, [])
        return not any(f.severity == "error" and f.rule in VOIDING_RULES for f in bad)

    findings: list[Finding] = []
    current: set[str] = set()
    if latest_joint:
        current.update(s.record for s in latest_joint.systems)
    systems: list[SystemStatus] = []
    valid_records: set[str] = set()
    for rid, lrb in sorted(estate.runbooks.items(), key=lambda kv: (kv[1].runbook.tier, kv[0])):
        rb = lrb.runbook
        mine = sorted((r for r in past if r.record.runbook == rid), key=_order_key)
        if mine:
            current.add(mine[-1].name)
        accepted = [r for r in mine if r.record.type in rb.test_policy.accepted_types]
        passing = [r for r in accepted if r.record.result == "pass"]
        if passing:
            current.add(passing[-1].name)
        valid = [r for r in passing if is_valid(r, rb)]
        valid_records.update(r.name for r in valid)
        best = valid[-1] if valid else None
        last = accepted[-1] if accepted else None
        valid_until = best.record.declared_at + timedelta(seconds=rb.test_policy.max_evidence_age) if best else None
        achieved = last.record.achieved_rto if last else None
        systems.append(
            SystemStatus(
                runbook=rid,
                name=rb.name,
                tier=rb.tier,
                owner=rb.owner,
                rto_seconds=rb.objectives.rto,
                rpo_seconds=rb.objectives.rpo,
                mtpd_seconds=rb.objectives.mtpd,
                depends_on=tuple(rb.depends_on),
                backups=tuple(rb.backups),
                planned_seconds=planned_duration(rb)[0],
                last_test=last.record.declared_at if last else None,
                last_test_type=last.record.type if last else None,
                last_test_result=last.record.result if last else None,
                last_record=last.name if last else None,
                achieved_rto_seconds=achieved,
                within_rto=(achieved <= rb.objectives.rto) if achieved is not None else None,
                evidence_record=best.name if best else None,
                valid=valid_until is not None and valid_until > at,
                valid_until=valid_until,
            )
        )
        age = _fmt(rb.test_policy.max_evidence_age)
        types = ", ".join(rb.test_policy.accepted_types)
        if best is None:
            why = "never tested" if not mine else "no accepted passing evidence"
            findings.append(
                finding(
                    "evidence_overdue",
                    f"{why} (accepted types: {types}; required every {age})",
                    runbook=rid,
                    record=last.name if last else None,
                )
            )
        elif valid_until is not None and valid_until <= at:
            findings.append(
                finding(
                    "evidence_overdue",
                    f"latest accepted passing evidence is from "
                    f"{_when(best.record.declared_at)}, older than max_evidence_age {age}; "
                    f"it expired at {_when(valid_until)}",
                    runbook=rid,
                    record=best.name,
                )
            )
        elif valid_until is not None and valid_until - at <= timedelta(seconds=settings.expiry_warning):
            findings.append(
                finding(
                    "evidence_expiring",
                    f"evidence expires at {_when(valid_until)}, within "
                    f"{_fmt(settings.expiry_warning)}; schedule the next test",
                    runbook=rid,
                    record=best.name,
                )
            )
    return _Evidence(systems, valid_records, current, findings)


def _dependency_order_findings(
    by_ex: Mapping[str, list[LoadedRecord]], current: set[str], estate: Estate, at: datetime
) -> list[Finding]:
    """``dependency_order`` in the exercises that contain a record that counts now."""
    findings: list[Finding] = []
    for ex, recs in by_ex.items():
        if not any(r.name in current for r in recs):
            continue
        restored: dict[str, list[LoadedRecord]] = defaultdict(list)
        for r in recs:
            restored[r.record.runbook].append(r)
        for lr in recs:
            if lr.name not in current:
                continue
            erb = estate.get(lr.record.runbook)
            first = lr.record.first_step_start
            if erb is None or first is None:
                continue
            first_step = min(
                (s for s in lr.record.steps if s.started_at is not None), key=lambda s: s.started_at or first
            ).id
            for dep in erb.depends_on:
                if dep not in restored:
                    continue  # not part of this exercise: assumed available
                times = [d.record.service_restored_at for d in restored[dep] if d.record.service_restored_at]
                if not times:
                    findings.append(
                        finding(
                            "dependency_order",
                            f"exercise {ex}: started at {_when(first)} but {dep} was never restored in this exercise",
                            runbook=erb.id,
                            record=lr.name,
                            step=first_step,
                        )
                    )
                elif first < min(times):
                    dep_rec = min(restored[dep], key=lambda d: d.record.service_restored_at or at).name
                    findings.append(
                        finding(
                            "dependency_order",
                            f"exercise {ex}: started at {_when(first)}, before "
                            f"{dep} (record {dep_rec}) was restored at {_when(min(times))}",
                            runbook=erb.id,
                            record=lr.name,
                            step=first_step,
                        )
                    )
    return findings


def _critical_path(
    estate: Estate, past: list[LoadedRecord], valid_records: set[str], latest_joint: Exercise | None
) -> tuple[CriticalPath, list[Finding]]:
    """Planned, projected and measured critical paths against the objective."""
    findings: list[Finding] = []
    graph = _graph(estate)
    planned_weights = {rid: planned_duration(lr.runbook)[0] for rid, lr in estate.runbooks.items()}
    planned = longest_path(graph, planned_weights)
    projected_weights = dict(planned_weights)
    for rid, lrb in estate.runbooks.items():
        whole = [
            r
            for r in past
            if r.name in valid_records and r.record.runbook == rid and _covers_all_steps(r.record, lrb.runbook)
        ]
        if not whole:
            continue
        secs = _evidence_seconds(max(whole, key=_order_key).record)
        if secs is not None:
            projected_weights[rid] = secs
    projected = longest_path(graph, projected_weights)
    paths: dict[str, list[str]] = {}
    for basis, res in (("planned", planned), ("projected", projected)):
        if res is not None:
            paths[basis] = res[1]
            pf = objective_finding(estate, basis, res[0], res[1])
            if pf:
                findings.append(pf)
    measured = latest_joint.measured_seconds if latest_joint else None
    if latest_joint is not None and measured is not None:
        paths["measured"] = list(latest_joint.critical_path)
        last_sys = max(
            (s for s in latest_joint.systems if s.service_restored_at),
            key=lambda s: (s.service_restored_at or latest_joint.started_at, s.runbook),
        )
        mf = objective_finding(
            estate,
            "measured",
            measured,
            list(latest_joint.critical_path),
            record=last_sys.record,
            exercise=latest_joint.id,
        )
        if mf:
            findings.append(mf)
    cpath = CriticalPath(
        objective_seconds=estate.settings.objective,
        planned_seconds=planned[0] if planned else None,
        projected_seconds=projected[0] if projected else None,
        measured_seconds=measured,
        paths=paths,
        measured_exercise=latest_joint.id if latest_joint else None,
    )
    return cpath, findings


def _coverage_findings(estate: Estate, latest_joint: Exercise | None) -> list[Finding]:
    """``coverage_gap``: a tier-1 system missing from the latest joint exercise."""
    in_latest = {s.runbook for s in latest_joint.systems} if latest_joint else set()
    findings: list[Finding] = []
    for rid, lrb in sorted(estate.runbooks.items()):
        if lrb.runbook.tier == 1 and rid not in in_latest:
            msg = (
                f"tier-1 system missing from the latest joint exercise {latest_joint.id}"
                if latest_joint
                else "tier-1 system, and no joint exercise is on record"
            )
            findings.append(finding("coverage_gap", msg, runbook=rid))
    return findings


def _actions(records: list[LoadedRecord], at: datetime) -> tuple[list[OpenAction], list[Finding]]:
    """Open actions (the latest mention of each issue id decides) and ``action_overdue``."""
    latest_issue: dict[str, tuple[Any, LoadedRecord]] = {}
    for lr in sorted(records, key=_order_key):
        for iss in lr.record.issues:
            latest_issue[iss.id] = (iss, lr)
    today = at.date()
    actions: list[OpenAction] = []
    findings: list[Finding] = []
    for iss, lr in latest_issue.values():
        if iss.status != "open":
            continue
        overdue = iss.due < today
        actions.append(OpenAction(iss.id, iss.description, iss.owner, iss.due, overdue, lr.name, lr.record.runbook))
        if overdue:
            findings.append(
                finding(
                    "action_overdue",
                    f"action {iss.id} ({iss.description}) owned by {iss.owner} "
                    f"was due {iss.due.isoformat()} and is still open",
                    runbook=lr.record.runbook,
                    record=lr.name,
                )
            )
    actions.sort(key=lambda a: (not a.overdue, a.due, a.id))
    return actions, findings


def findings_by_rule(findings: Iterable[Finding]) -> dict[tuple[str, str], int]:
    """(severity, rule) -> count, with every rule present (0 when it did not fire)."""
    out: dict[tuple[str, str], int] = {(sev, rule): 0 for rule, sev in RULES.items()}
    for f in findings:
        out[(f.severity, f.rule)] += 1
    return out
