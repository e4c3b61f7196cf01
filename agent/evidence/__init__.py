"""Runbooks as data and recovery-test evidence, sealed and verified.

Python API (used by the CLI, the ``evidence`` collector and the DR report)::

    from agent.evidence import verify, seal, check_runbooks, EvidenceInputError

    report = verify("runbooks", "runbooks/evidence", at=datetime(2025, 7, 1, 9, tzinfo=UTC))
    report.ok                      # no finding of severity error
    report.findings                # [Finding(severity, rule, runbook, record, message, step)]
    report.systems                 # [SystemStatus]: tier, owner, rto/rpo/mtpd, last_test, achieved
                                   #   RTO, within_rto, valid, valid_until, planned_seconds, backups
    report.critical_path           # CriticalPath: objective/planned/projected/measured seconds,
                                   #   paths[basis] (runbook ids), measured_exercise
    report.exercises               # [Exercise]: id, joint, started_at, restored_at, measured_seconds,
                                   #   critical_path, systems[ExerciseSystem] with steps[StepTiming]
                                   #   (started/ended and offsets in seconds from the exercise start:
                                   #   ready for a Gantt chart)
    report.latest_joint_exercise   # id of the exercise the measured basis and coverage use
    report.open_actions            # [OpenAction]: id, description, owner, due, overdue, record
    report.chain_head              # sha256 of the newest sealed record (None if none)
    report.estate                  # loaded runbooks (report.estate.get(id) -> Runbook) and settings
    report.records                 # [LoadedRecord]: every record loaded (report.record(name))
    report.bad_files               # [InputIssue]: files skipped in lenient mode (also findings)
    report.to_json()               # what `evidence verify --format json` prints

    seal(runbooks_dir, evidence_dir, file) -> SealResult(path, sequence, prev_record_sha256, sha256)
    check_runbooks(runbooks_dir) -> RunbookCheck(estate, findings, planned_seconds, planned_path)

Unreadable or schema-invalid input raises :class:`EvidenceInputError`, whose ``issues`` each
name the file and key path. With ``verify(..., lenient=True)`` (the collector and the DR report)
a bad runbook or record file is an ``invalid_runbook``/``invalid_record`` finding instead and the
rest is verified; a directory that is missing, cannot be listed or holds no runbook file still raises.
Rule ids are in :data:`RULES` (rule id -> severity). To write a record
from code (the backup restore test does), build an :class:`EvidenceRecord`, dump it with
``dump_yaml(record.model_dump(mode="json", exclude_none=True))`` into the evidence directory and
call :func:`seal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.evidence.hashing import HashCache, sha256_file
from agent.evidence.loader import (
    Estate,
    EvidenceInputError,
    InputIssue,
    LoadedEvidence,
    LoadedRecord,
    dump_yaml,
    load_records,
    load_runbooks,
)
from agent.evidence.models import EstateSettings, EvidenceRecord, Runbook
from agent.evidence.seal import SealResult, seal
from agent.evidence.verifier import (
    RULES,
    CriticalPath,
    Exercise,
    ExerciseSystem,
    Finding,
    OpenAction,
    StepTiming,
    SystemStatus,
    VerificationReport,
    check_estate,
    findings_by_rule,
    objective_finding,
    planned_path,
    verify,
    verify_loaded,
)


@dataclass(frozen=True)
class RunbookCheck:
    estate: Estate
    findings: list[Finding]
    planned_seconds: float | None
    planned_path: list[str]

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)


def check_runbooks(runbooks_dir: str | Path) -> RunbookCheck:
    """Schema (raises EvidenceInputError), unknown or cyclic depends_on, step graphs, and whether
    the planned estate critical path fits the objective."""
    estate = load_runbooks(runbooks_dir)
    findings = check_estate(estate)
    planned = planned_path(estate)
    if planned is not None:
        f = objective_finding(estate, "planned", planned[0], planned[1])
        if f:
            findings.append(f)
    return RunbookCheck(estate, findings, planned[0] if planned else None, planned[1] if planned else [])


__all__ = [
    "RULES",
    "CriticalPath",
    "Estate",
    "EstateSettings",
    "EvidenceInputError",
    "EvidenceRecord",
    "Exercise",
    "ExerciseSystem",
    "Finding",
    "HashCache",
    "InputIssue",
    "LoadedEvidence",
    "LoadedRecord",
    "OpenAction",
    "Runbook",
    "RunbookCheck",
    "SealResult",
    "StepTiming",
    "SystemStatus",
    "VerificationReport",
    "check_runbooks",
    "dump_yaml",
    "findings_by_rule",
    "load_records",
    "load_runbooks",
    "seal",
    "sha256_file",
    "verify",
    "verify_loaded",
]
