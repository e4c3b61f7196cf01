"""What a DR report reads: runbooks, evidence records and the evidence verifier's verdict.

Runbooks and records are read here only for what a report shows (names, owners, step times,
actions); every judgement — findings, achieved RTO, validity, critical path — comes from the
evidence verifier (:mod:`agent.evidence`), in the shape of ``evidence verify --format json``.
Unreadable files never raise: they are listed in ``problems`` and the report states the gap.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from agent.durations import parse_duration
from agent.yamlfile import MAX_FILE_BYTES, FileInputError, FileIssue, load_yaml

log = logging.getLogger(__name__)

# (runbooks_dir, evidence_dir, at) -> the JSON document of ``evidence verify --format json``.
Verifier = Callable[[Path, Path, datetime], dict[str, Any]]


@dataclass(frozen=True)
class PlannedStep:
    id: str
    title: str
    role: str
    after: tuple[str, ...]
    expected_seconds: float | None


@dataclass(frozen=True)
class Runbook:
    id: str
    name: str
    owner: str
    tier: int | None
    rto_seconds: float | None
    rpo_seconds: float | None
    depends_on: tuple[str, ...]
    backups: tuple[str, ...]
    steps: tuple[PlannedStep, ...]
    file: str


@dataclass(frozen=True)
class RecordStep:
    id: str
    started_at: datetime | None
    ended_at: datetime | None
    operator: str
    result: str


@dataclass(frozen=True)
class Action:
    id: str
    description: str
    owner: str
    due: date | None
    status: str


@dataclass(frozen=True)
class Record:
    file: str
    runbook: str
    exercise: str
    type: str
    declared_at: datetime | None
    restored_at: datetime | None
    result: str
    steps: tuple[RecordStep, ...]
    issues: tuple[Action, ...]
    sequence: int | None
    sha256: str


@dataclass
class DrInputs:
    runbooks_dir: Path | None
    evidence_dir: Path | None
    runbooks: dict[str, Runbook] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    objective_seconds: float = 72 * 3600.0
    verification: dict[str, Any] | None = None
    verification_error: str | None = None
    problems: list[str] = field(default_factory=list)
    bad_files: list[FileIssue] = field(default_factory=list)  # unreadable or refused by the loader

    @property
    def chain_head(self) -> str | None:
        """sha256 of the bytes of the sealed record with the highest sequence (the chain head)."""
        sealed = [r for r in self.records if r.sequence is not None]
        if not sealed:
            return None
        return max(sealed, key=lambda r: (r.sequence or 0, r.file)).sha256


# -- tolerant readers ----------------------------------------------------------------------------


def _str(v: Any) -> str:
    return "" if v is None else str(v)


def parse_time(v: Any) -> datetime | None:
    """An aware datetime from YAML (already a datetime, or ISO 8601 text); naive or bad -> None."""
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        return None
    return dt.astimezone(UTC)


def _date(v: Any) -> date | None:
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    if isinstance(v, str):
        try:
            return date.fromisoformat(v.strip())
        except ValueError:
            return None
    return None


def _dur(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return parse_duration(v)
    except ValueError:
        return None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _load_yaml(path: Path, problems: list[str], bad_files: list[FileIssue]) -> tuple[Any, bytes] | None:
    """The agent's one bounded loader (agent.yamlfile), as the evidence verifier reads these files."""
    try:
        return load_yaml(path, str(path), max_bytes=MAX_FILE_BYTES)
    except FileInputError as e:
        problems.extend(str(i) for i in e.issues)
        bad_files.extend(e.issues)
    return None


def load_runbooks(
    directory: Path, problems: list[str], bad_files: list[FileIssue] | None = None
) -> tuple[dict[str, Runbook], float]:
    out: dict[str, Runbook] = {}
    objective = 72 * 3600.0
    if not directory.is_dir():
        problems.append(f"{directory}: runbooks directory not found")
        return out, objective
    for path in sorted(directory.glob("*.y*ml")):
        loaded = _load_yaml(path, problems, [] if bad_files is None else bad_files)
        if loaded is None:
            continue
        data = loaded[0]
        if not isinstance(data, dict):
            problems.append(f"{path}: not a YAML mapping")
            continue
        if path.stem == "estate":
            objective = _dur(data.get("objective")) or objective
            continue
        rid = data.get("id")
        if not isinstance(rid, str) or not rid:
            problems.append(f"{path}: runbook has no id")
            continue
        obj = _dict(data.get("objectives"))
        steps = tuple(
            PlannedStep(
                id=_str(s.get("id")),
                title=_str(s.get("title")),
                role=_str(s.get("role")),
                after=tuple(_str(a) for a in _list(s.get("after"))),
                expected_seconds=_dur(s.get("expected_duration")),
            )
            for s in _list(data.get("recovery_steps"))
            if isinstance(s, dict)
        )
        out[rid] = Runbook(
            id=rid,
            name=_str(data.get("name")) or rid,
            owner=_str(data.get("owner")),
            tier=_int(data.get("tier")),
            rto_seconds=_dur(obj.get("rto")),
            rpo_seconds=_dur(obj.get("rpo")),
            depends_on=tuple(_str(d) for d in _list(data.get("depends_on"))),
            backups=tuple(_str(b) for b in _list(data.get("backups"))),
            steps=steps,
            file=path.name,
        )
    return out, objective


def load_records(directory: Path, problems: list[str], bad_files: list[FileIssue] | None = None) -> list[Record]:
    out: list[Record] = []
    if not directory.is_dir():
        problems.append(f"{directory}: evidence directory not found")
        return out
    for path in sorted(p for p in directory.glob("*.y*ml") if p.is_file() and not p.is_symlink()):
        loaded = _load_yaml(path, problems, [] if bad_files is None else bad_files)
        if loaded is None:
            continue
        data, raw = loaded
        if not isinstance(data, dict) or "runbook" not in data:
            continue  # not an evidence record (e.g. an artefact that happens to be YAML)
        steps = tuple(
            RecordStep(
                id=_str(s.get("id")),
                started_at=parse_time(s.get("started_at")),
                ended_at=parse_time(s.get("ended_at")),
                operator=_str(s.get("operator")),
                result=_str(s.get("result")),
            )
            for s in _list(data.get("steps"))
            if isinstance(s, dict)
        )
        issues = tuple(
            Action(
                id=_str(i.get("id")),
                description=_str(i.get("description")),
                owner=_str(i.get("owner")),
                due=_date(i.get("due")),
                status=_str(i.get("status")) or "open",
            )
            for i in _list(data.get("issues"))
            if isinstance(i, dict)
        )
        out.append(
            Record(
                file=str(path.relative_to(directory)),
                runbook=_str(data.get("runbook")),
                exercise=_str(data.get("exercise")),
                type=_str(data.get("type")),
                declared_at=parse_time(data.get("declared_at")),
                restored_at=parse_time(data.get("service_restored_at")),
                result=_str(data.get("result")),
                steps=steps,
                issues=issues,
                sequence=_int(data.get("sequence")),
                sha256=hashlib.sha256(raw).hexdigest(),
            )
        )
    return out


def default_verifier() -> Verifier | None:
    """The evidence verifier's Python API, or None while agent.evidence is not installed."""
    try:
        from agent.reports import evidence_api
    except ImportError:
        return None
    return evidence_api.verify


def load_inputs(
    runbooks_dir: Path | None,
    evidence_dir: Path | None,
    at: datetime,
    verifier: Verifier | None = None,
) -> DrInputs:
    inp = DrInputs(runbooks_dir=runbooks_dir, evidence_dir=evidence_dir)
    if runbooks_dir is None:
        inp.problems.append("no runbooks directory configured (reports.runbooks_dir)")
    else:
        inp.runbooks, inp.objective_seconds = load_runbooks(runbooks_dir, inp.problems, inp.bad_files)
    if evidence_dir is None:
        inp.problems.append("no evidence directory configured (reports.evidence_dir)")
    else:
        inp.records = load_records(evidence_dir, inp.problems, inp.bad_files)
    if runbooks_dir is None or evidence_dir is None:
        return inp
    verify = verifier or default_verifier()
    if verify is None:
        inp.verification_error = "the evidence verifier (agent.evidence) is not installed"
        return inp
    try:
        inp.verification = verify(runbooks_dir, evidence_dir, at)
    except ValueError as e:  # unreadable or schema-invalid input: a gap the report states
        log.warning("evidence not verified: %s", e)
        inp.verification_error = f"invalid runbooks or evidence: {e}"
    except Exception as e:  # a verifier bug must not stop the report; logged with its traceback
        log.exception("evidence verification failed")
        inp.verification_error = f"evidence verification failed: {e}"
    return inp
