"""``exercise finish``: the journal becomes evidence.

Under the journal's lock the journal is replayed and one evidence record per system is built in
the existing record format (:class:`agent.evidence.EvidenceRecord`); only if every record is
valid is the ``finish`` entry appended, which closes the journal. Then each record is written
directly into the evidence directory and sealed with :func:`agent.evidence.seal`, exactly as
``evidence seal`` does; the journal itself is an artefact of every record, hashed by the seal.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.evidence import EvidenceInputError, EvidenceRecord, SealResult, dump_yaml, seal
from agent.exercises.journal import SUBDIR, SUFFIX, ExerciseInputError, iso
from agent.exercises.model import ExerciseLog, SystemLog, replay
from agent.exercises.record import Recorder
from agent.exercises.status import action_id
from agent.fileio import atomic_write
from agent.yamlfile import format_loc


@dataclass(frozen=True)
class FinishResult:
    records: list[Path]
    seals: list[SealResult]


def record_name(exercise: str, runbook: str) -> str:
    return f"{exercise}-{runbook}.yml"


def _participants(log: ExerciseLog) -> list[str]:
    out = [f"{n} ({r})" for n, r in log.participants]
    names = {n for n, _ in log.participants}
    for sl in log.systems.values():
        for a in sl.attempts:
            if a.operator not in names:
                names.add(a.operator)
                out.append(a.operator)
    return out


def _result(log: ExerciseLog, sl: SystemLog) -> str:
    rb = sl.runbook
    if any(sl.done(s.id) is None for s in rb.recovery_steps):
        return "fail"
    if log.type != "tabletop" and sl.restored_at is None:
        return "fail"
    if any(sl.validations.get(v.id, ("fail",))[0] != "pass" for v in rb.validation):
        return "fail"
    return "pass"


def build_record(name: str, log: ExerciseLog, sl: SystemLog, journal_rel: str) -> dict[str, Any]:
    """One system's evidence record, unsealed, as the YAML writes it."""
    rb = sl.runbook
    attempts = sorted((a for a in sl.attempts if a.result is not None), key=lambda a: (a.started_at, a.step))
    doc: dict[str, Any] = {
        "runbook": rb.id,
        "runbook_version": rb.version,
        "exercise": name,
        "type": log.type,
        "declared_at": iso(log.declared_at),
        "steps": [
            {
                "id": a.step,
                "started_at": iso(a.started_at),
                "ended_at": iso(a.ended_at) if a.ended_at else None,
                "operator": a.operator,
                "result": a.result,
                **({"notes": a.note} if a.note else {}),
            }
            for a in attempts
        ],
        "service_restored_at": iso(sl.restored_at) if sl.restored_at else None,
        "validations": [{"id": vid, "result": v[0], "by": v[1]} for vid, v in sl.validations.items()],
        "result": _result(log, sl),
        "issues": [
            {
                "id": action_id(name, e["seq"]),
                "description": e["description"],
                "owner": e["owner"],
                "due": e["due"],
                "status": "open",
            }
            for e in sl.actions
        ],
        "participants": _participants(log),
        "sign_off": {"by": sl.sign_off[0], "role": sl.sign_off[1], "at": iso(sl.sign_off[2])} if sl.sign_off else None,
        "artefacts": [
            *({"path": a["path"], "sha256": a["file_sha256"]} for a in sl.artefacts),
            {"path": journal_rel, "description": "exercise journal (hash-chained, closed by exercise finish)"},
        ],
        "notes": f"Recorded with `continuity-agent exercise`; journal {journal_rel}.",
    }
    try:
        rec = EvidenceRecord.model_validate(doc)
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        key = format_loc(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ExerciseInputError(f"exercise {name}: the record for {rb.id} would not be valid: {key}: {msg}") from None
    out: dict[str, Any] = rec.model_dump(mode="json", exclude_none=True)
    return out


def finish(recorder: Recorder, at: datetime | None = None) -> FinishResult:
    """Close the journal and write and seal the records. Run again after a crash between the
    ``finish`` entry and the last seal, it writes and seals the records still missing."""
    name = recorder.journal.name
    ev = recorder.evidence_dir
    journal_rel = f"{SUBDIR}/{name}{SUFFIX}"
    built: dict[str, dict[str, Any]] = {}
    entries = recorder.journal.read()
    if entries and entries[-1]["action"] == "finish":
        log = replay(entries, recorder.estate)
        missing = {
            rid: build_record(name, log, sl, journal_rel)
            for rid, sl in log.systems.items()
            if not (ev / record_name(name, rid)).exists()
        }
        if not missing:
            raise ExerciseInputError(f"exercise {name!r} is finished and its records are written")
        return _write_and_seal(recorder, missing)

    def check(entries: list[dict[str, Any]], new: dict[str, Any]) -> None:
        log = replay([*entries, new], recorder.estate)
        running = [f"{a.step} of {rid}" for rid, sl in log.systems.items() for a in sl.attempts if a.result is None]
        if running:
            raise ExerciseInputError(
                f"exercise {name}: steps still in progress: {', '.join(running)} (record done or failed first)"
            )
        for rid, sl in log.systems.items():
            path = ev / record_name(name, rid)
            if path.exists():
                raise ExerciseInputError(f"{path} already exists")
            built[rid] = build_record(name, log, sl, journal_rel)

    recorder.journal.append(recorder.actor, "finish", {}, at=at, check=check)
    return _write_and_seal(recorder, built)


def _write_and_seal(recorder: Recorder, docs: dict[str, dict[str, Any]]) -> FinishResult:
    name, ev = recorder.journal.name, recorder.evidence_dir
    paths: list[Path] = []
    seals: list[SealResult] = []
    for rid, doc in docs.items():
        path = ev / record_name(name, rid)
        atomic_write(path, dump_yaml(doc), mode=0o644)  # as evidence seal writes records
        paths.append(path)
        try:
            seals.append(seal(recorder.estate.directory, ev, path))
        except EvidenceInputError as e:
            raise ExerciseInputError(f"{path}: cannot seal: {e.issues[0] if e.issues else e}") from None
    return FinishResult(paths, seals)
