"""A restore test written as recovery-test evidence (docs/runbooks: evidence record, type
``automated_restore``): one YAML record per test plus a JSON artefact listing every file verified,
in the configured evidence directory. The record is built with the verifier's own model and, with
``seal`` on (the default), sealed into the directory's hash chain exactly as ``evidence seal``
does, so it counts towards the 72-hour evidence without a manual step."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.fileio import atomic_write
from collectors.backup.config import BackupTarget, EvidenceConfig
from collectors.backup.restore import RestoreOutcome

log = logging.getLogger(__name__)

EVIDENCE_FAILED = "evidence_failed"


class EvidenceError(Exception):
    """The record could not be written or sealed (message names the file)."""


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%SZ")


def build_record(target: BackupTarget, ev: EvidenceConfig, outcome: RestoreOutcome, artefact_path: str) -> Any:
    """The record as the verifier's own model (so a schema problem shows here, not later)."""
    from agent.evidence import EvidenceRecord

    exercise = f"auto-restore-{target.label}-{_stamp(outcome.started_at)}"
    record: dict[str, Any] = {
        "runbook": ev.runbook,
        "runbook_version": ev.runbook_version,
        "exercise": exercise[:100],
        "type": "automated_restore",
        "declared_at": iso(outcome.started_at),
        "steps": [
            {
                "id": ev.step,
                "started_at": iso(outcome.restore_started_at),
                "ended_at": iso(outcome.restore_ended_at),
                "operator": ev.operator,
                "result": "ok" if outcome.restore_ok else "failed",
            }
        ],
        "service_restored_at": iso(outcome.verified_at),
        "validations": [{"id": ev.validation, "result": "pass" if outcome.ok else "fail", "by": ev.operator}],
    }
    if outcome.not_run_reason is not None:
        # Nothing was restored or verified: the step is skipped (with why), no validation is claimed.
        record["steps"] = [
            {"id": ev.step, "operator": ev.operator, "result": "skipped", "notes": outcome.summary()[:1000]}
        ]
        del record["service_restored_at"]
        record["validations"] = []
    record |= {
        "result": "pass" if outcome.ok else "fail",
        "participants": [ev.operator],
        "artefacts": [{"path": artefact_path, "description": "files restored and verified (JSON)"}],
        "notes": f"Automated restore test of backup {target.label} ({target.type}): {outcome.summary()}"[:1000],
    }
    if not outcome.ok:
        due = (datetime.fromtimestamp(outcome.verified_at, UTC) + timedelta(days=7)).date().isoformat()
        record["issues"] = [
            {
                "id": f"restore-{_stamp(outcome.started_at)}",
                "description": (
                    f"Restore test of {target.label} "
                    + ("could not run" if outcome.not_run_reason is not None else "failed")
                    + f": {outcome.summary()}"
                )[:500],
                "owner": ev.operator,
                "due": due,
                "status": "open",
            }
        ]
    return EvidenceRecord.model_validate(record)


def write_evidence(target: BackupTarget, outcome: RestoreOutcome, where: str) -> Path:
    """Write the artefact and the record, then seal the record into the directory's chain.
    Raises :class:`EvidenceError` or OSError."""
    from agent.evidence import EvidenceInputError, dump_yaml, seal

    assert target.restore_test is not None and target.restore_test.evidence is not None
    ev = target.restore_test.evidence
    ev.dir.mkdir(parents=True, exist_ok=True)
    stem = f"{ev.runbook}-auto-restore-{target.label}-{_stamp(outcome.started_at)}"
    report = {
        "backup": target.label,
        "type": target.type,
        "repository": target.repository,
        "host": where,
        "agent_host": socket.gethostname(),
        "summary": outcome.summary(),
        "snapshot": outcome.snapshot,
        "snapshot_time": iso(outcome.snapshot_time) if outcome.snapshot_time is not None else None,
        "duration_seconds": round(outcome.duration, 3),
        "ok": outcome.ok,
        "not_run_reason": outcome.not_run_reason,
        "problems": outcome.problems,
        "cleanup_error": outcome.cleanup_error,
        "files": outcome.files,
    }
    art_bytes = (json.dumps(report, indent=1, sort_keys=True) + "\n").encode()
    art_path = ev.dir / "artefacts" / f"{stem}.json"
    art_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        record = build_record(target, ev, outcome, f"artefacts/{art_path.name}")
    except ValueError as e:  # pydantic ValidationError: config gives ids the evidence schema refuses
        raise EvidenceError(f"record for {stem} does not fit the evidence schema: {e}") from None
    atomic_write(art_path, art_bytes, mode=None, replace=False)
    rec_path = ev.dir / f"{stem}.yml"
    text = dump_yaml(record.model_dump(mode="json", exclude_none=True))
    atomic_write(rec_path, text, mode=None, replace=False)
    if ev.seal:
        assert ev.runbooks_dir is not None
        try:
            seal(ev.runbooks_dir, ev.dir, rec_path)
        except EvidenceInputError as e:
            raise EvidenceError(f"{rec_path} written but not sealed: {e}") from None
    return rec_path
