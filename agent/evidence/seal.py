"""Sealing: fill artefact hashes, the runbook's hash and the record's place in the hash chain.

The chain: records in an evidence directory are numbered 1, 2, 3... in the order they were
sealed; each record's ``prev_record_sha256`` is the sha256 of the bytes of the record numbered
one less (null for the first). Editing any sealed record changes its hash and breaks the link
from the next one (``chain_broken``); editing an artefact changes its hash
(``artefact_hash_mismatch``). Only the newest record has no successor: export the chain head
(``continuity_recovery_evidence_chain_head_info``) so it is recorded outside the directory.

Sealing holds an exclusive lock on ``<evidence>/.seal.lock`` so two sealers never take the same
sequence number, and replaces the file atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.evidence.hashing import resolve_artefact, sha256_bytes, sha256_file
from agent.evidence.loader import (
    EvidenceInputError,
    InputIssue,
    dump_yaml,
    load_records,
    load_runbooks,
    parse_yaml,
    read_bytes,
    validate,
)
from agent.evidence.models import SEAL_FIELDS, EvidenceRecord
from agent.fileio import atomic_write
from agent.lockfile import LockFileError, open_lock_file

HEADER = "# Sealed by `continuity-agent evidence seal`. Do not edit: any change breaks the hash chain.\n"


@dataclass(frozen=True)
class SealResult:
    path: Path
    sequence: int
    prev_record_sha256: str | None
    sha256: str  # of the sealed file
    artefacts: int


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    lock = directory / ".seal.lock"
    try:
        fd = open_lock_file(lock)
    except LockFileError as e:
        raise EvidenceInputError([InputIssue(str(lock), "", str(e))]) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def seal(runbooks_dir: str | Path, evidence_dir: str | Path, file: str | Path) -> SealResult:
    """Seal one record in place. Raises :class:`EvidenceInputError` (naming the file and key) for a
    record that fails the schema, is already sealed, names an unknown runbook, is not directly in
    the evidence directory, or whose artefacts are missing, outside the directory or differ from
    a hash already written in the record."""
    ev = Path(evidence_dir)
    path = Path(file)
    name = path.name
    if not ev.is_dir():
        raise EvidenceInputError([InputIssue(str(ev), "", "evidence directory does not exist")])
    if path.is_symlink() or not path.is_file():
        raise EvidenceInputError([InputIssue(str(path), "", "not a regular file")])
    if path.resolve().parent != ev.resolve():
        raise EvidenceInputError(
            [InputIssue(str(path), "", f"a record must be directly in the evidence directory {ev}")]
        )
    estate = load_runbooks(runbooks_dir)
    with _locked(ev):
        raw = read_bytes(path, name)
        data = parse_yaml(raw, name)
        rec = validate(EvidenceRecord, data, name)
        assert isinstance(data, dict)
        present = [k for k in SEAL_FIELDS if k in data]
        if present:
            raise EvidenceInputError(
                [
                    InputIssue(
                        name,
                        present[0],
                        "record is already sealed (or has seal "
                        "fields written by hand); seal fields are written only by "
                        "`evidence seal`",
                    )
                ]
            )
        lrb = estate.runbooks.get(rec.runbook)
        if lrb is None:
            raise EvidenceInputError([InputIssue(name, "runbook", f"no runbook {rec.runbook!r} in {runbooks_dir}")])
        issues: list[InputIssue] = []
        hashes: list[str] = []
        for i, a in enumerate(rec.artefacts):
            key = f"artefacts[{i}].path"
            where = resolve_artefact(ev, a.path)
            if not where.ok or where.path is None:
                issues.append(InputIssue(name, key, f"{a.path!r}: {where.problem}"))
                continue
            if not where.path.is_file():
                issues.append(InputIssue(name, key, f"{a.path!r} does not exist or is not a regular file"))
                continue
            try:
                digest = sha256_file(where.path)
            except OSError as e:
                issues.append(InputIssue(name, key, f"{a.path!r} cannot be read: {e.strerror or e}"))
                continue
            if a.sha256 is not None and a.sha256 != digest:
                issues.append(
                    InputIssue(
                        name,
                        f"artefacts[{i}].sha256",
                        f"{a.path!r} has sha256 {digest}, not the {a.sha256} written here",
                    )
                )
            hashes.append(digest)
        if issues:
            raise EvidenceInputError(issues)
        others = [r for r in load_records(ev).records if r.record.sealed and r.path.resolve() != path.resolve()]
        prev = max(others, key=lambda r: (r.record.sequence or 0, r.name)) if others else None
        sequence = (prev.record.sequence or 0) + 1 if prev else 1
        out: dict[str, Any] = dict(data)
        if rec.artefacts:
            arts = []
            for item, digest in zip(data["artefacts"], hashes, strict=True):
                entry = dict(item)
                entry["sha256"] = digest
                arts.append(entry)
            out["artefacts"] = arts
        out["runbook_sha256"] = lrb.sha256
        out["sequence"] = sequence
        out["prev_record_sha256"] = prev.sha256 if prev else None
        text = HEADER + dump_yaml(out)
        body = text.encode("utf-8")
        # The sealed text must read back as the same record plus the seal.
        validate(EvidenceRecord, parse_yaml(body, name), name)
        atomic_write(path, body)
    return SealResult(path, sequence, prev.sha256 if prev else None, sha256_bytes(body), len(hashes))
