"""Read runbooks, the estate file and evidence records from YAML into models.

Every problem is reported as an :class:`InputIssue` naming the file and the key path
(``recovery_steps[2].after[0]``); :class:`EvidenceInputError` carries all of them, so one run
lists every mistake. Nothing here raises anything else for bad input.

Strict (the default, ``evidence verify``): any bad file raises. Lenient (``lenient=True``, the
evidence collector and the DR report): a bad file is skipped and its problems are kept with what
was loaded (:attr:`Estate.bad_files`, :attr:`LoadedEvidence.bad_files`), so the verifier turns them
into findings and judges the rest. A directory that does not exist, cannot be listed or holds no
runbook file raises in both modes.

The YAML is read by the agent's one bounded loader (:mod:`agent.yamlfile`): size, depth and
value caps, timestamps kept as text (the models decide what a valid timestamp is), duplicate keys
refused (a sealed record must mean one thing) and anchors/aliases refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from agent.evidence.models import EstateSettings, EvidenceRecord, Runbook
from agent.yamlfile import MAX_FILE_BYTES, FileInputError, FileIssue, read_file
from agent.yamlfile import parse_yaml as _parse_yaml
from agent.yamlfile import validate as _validate

ESTATE_FILE = "estate.yml"
YAML_SUFFIXES = (".yml", ".yaml")

# One problem in one file, and the error carrying all of them: the shared loader's types.
InputIssue = FileIssue


class EvidenceInputError(FileInputError):
    """Unreadable or schema-invalid input (the CLI exits 2)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeDumper.yaml_implicit_resolvers.items()
}


def dump_yaml(data: Any) -> str:
    """YAML as the loader reads it back (timestamps stay text, key order kept)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)


def _evidence_error(e: FileInputError) -> EvidenceInputError:
    return EvidenceInputError(e.issues)


def read_bytes(path: Path, name: str) -> bytes:
    """A regular file's bytes, at most MAX_FILE_BYTES."""
    try:
        return read_file(path, name, MAX_FILE_BYTES)
    except FileInputError as e:
        raise _evidence_error(e) from None


def parse_yaml(data: bytes, name: str) -> Any:
    """The shared bounded loader, without anchors or aliases (records are sealed and hashed)."""
    try:
        return _parse_yaml(data, name)
    except FileInputError as e:
        raise _evidence_error(e) from None


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, name: str) -> M:
    try:
        return _validate(model, data, name)
    except FileInputError as e:
        raise _evidence_error(e) from None


# -- runbooks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedRunbook:
    runbook: Runbook
    path: Path
    name: str  # file name as shown in messages
    sha256: str


@dataclass
class Estate:
    """The runbooks directory: runbooks by id, estate settings and where they came from."""

    directory: Path
    settings: EstateSettings
    runbooks: dict[str, LoadedRunbook] = field(default_factory=dict)
    bad_files: list[InputIssue] = field(default_factory=list)  # lenient mode: the files skipped

    def get(self, runbook_id: str) -> Runbook | None:
        lr = self.runbooks.get(runbook_id)
        return lr.runbook if lr else None


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in YAML_SUFFIXES and not p.name.startswith("."))


def _check_dir(directory: Path, what: str) -> None:
    if not directory.is_dir():
        raise EvidenceInputError([InputIssue(str(directory), "", f"{what} directory does not exist")])


def _list_dir(d: Path, what: str) -> list[Path]:
    _check_dir(d, what)
    try:
        return _yaml_files(d)
    except OSError as e:
        raise EvidenceInputError([InputIssue(str(d), "", f"cannot list: {e.strerror or e}")]) from None


def load_runbooks(directory: str | Path, *, lenient: bool = False) -> Estate:
    """Every ``*.yml``/``*.yaml`` in ``directory`` (not recursive) is a runbook, except
    ``estate.yml``. A runbook's ``id`` must equal its file name without the suffix."""
    d = Path(directory)
    files = _list_dir(d, "runbooks")
    issues: list[InputIssue] = []
    settings = EstateSettings()
    estate_path = d / ESTATE_FILE
    if estate_path.exists():
        try:
            settings = validate(
                EstateSettings,
                parse_yaml(read_bytes(estate_path, str(estate_path)), str(estate_path)),
                str(estate_path),
            )
        except EvidenceInputError as e:
            issues.extend(e.issues)
    estate = Estate(directory=d, settings=settings)
    for p in (p for p in files if p.name not in (ESTATE_FILE, "estate.yaml")):
        name = str(p)
        try:
            raw = read_bytes(p, name)
            rb = validate(Runbook, parse_yaml(raw, name), name)
        except EvidenceInputError as e:
            issues.extend(e.issues)
            continue
        if rb.id != p.stem:
            issues.append(InputIssue(name, "id", f"runbook id {rb.id!r} must equal the file name {p.stem!r}"))
            continue
        if rb.id in estate.runbooks:
            other = estate.runbooks[rb.id].name
            issues.append(InputIssue(name, "id", f"runbook id {rb.id!r} is also defined in {other}"))
            continue
        estate.runbooks[rb.id] = LoadedRunbook(rb, p, name, hashlib.sha256(raw).hexdigest())
    if not estate.runbooks and not issues:
        raise EvidenceInputError([InputIssue(str(d), "", "no runbooks (*.yml) found")])
    if issues and not lenient:
        raise EvidenceInputError(issues)
    estate.bad_files = issues
    return estate


# -- evidence records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedRecord:
    record: EvidenceRecord
    path: Path
    name: str  # file name relative to the evidence directory: the record's identity in findings
    raw: bytes
    sha256: str  # of the file's bytes; the next record's prev_record_sha256 must equal it


def load_record_file(path: Path, name: str) -> LoadedRecord:
    raw = read_bytes(path, name)
    rec = validate(EvidenceRecord, parse_yaml(raw, name), name)
    return LoadedRecord(rec, path, name, raw, hashlib.sha256(raw).hexdigest())


@dataclass(frozen=True)
class LoadedEvidence:
    """The evidence directory: its records, sorted by sequence (sealed first) then name, and in
    lenient mode the record files skipped as bad (empty in strict mode, which raises instead)."""

    directory: Path
    records: list[LoadedRecord]
    bad_files: list[InputIssue]


def load_records(directory: str | Path, *, lenient: bool = False) -> LoadedEvidence:
    """Every ``*.yml``/``*.yaml`` directly in the evidence directory is a record (artefacts go in
    subdirectories)."""
    d = Path(directory)
    files = _list_dir(d, "evidence")
    issues: list[InputIssue] = []
    out: list[LoadedRecord] = []
    for p in files:
        if p.is_symlink():
            issues.append(InputIssue(p.name, "", "a record must not be a symbolic link"))
            continue
        try:
            out.append(load_record_file(p, p.name))
        except EvidenceInputError as e:
            issues.extend(e.issues)
    if issues and not lenient:
        raise EvidenceInputError(issues)
    out.sort(key=lambda r: (r.record.sequence is None, r.record.sequence or 0, r.name))
    return LoadedEvidence(d, out, issues)
