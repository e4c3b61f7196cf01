"""Read runbooks, the estate file and evidence records from YAML into models.

Every problem is reported as an :class:`InputIssue` naming the file and the key path
(``recovery_steps[2].after[0]``); :class:`EvidenceInputError` carries all of them, so one run
lists every mistake. Nothing here raises anything else for bad input.

The YAML is read with a safe loader that keeps timestamps as text (the models decide what a
valid timestamp is), refuses duplicate keys (a sealed record must mean one thing) and refuses
anchors/aliases (no billion-laughs expansion). Files over :data:`MAX_FILE_BYTES` are refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agent.evidence.models import EstateSettings, EvidenceRecord, Runbook
from agent.yamlstrict import construct_mapping_unique

MAX_FILE_BYTES = 1024 * 1024
ESTATE_FILE = "estate.yml"
YAML_SUFFIXES = (".yml", ".yaml")


def printable(text: str) -> str:
    """One line, whatever the input held: control characters are escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class InputIssue:
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        f, k, m = printable(self.file), printable(self.key), printable(self.message)
        return f"{f}: {k}: {m}" if k else f"{f}: {m}"


class EvidenceInputError(Exception):
    """Unreadable or schema-invalid input (the CLI exits 2)."""

    def __init__(self, issues: list[InputIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


# -- YAML --------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _no_alias_compose(self: Any, parent: Any, index: Any) -> Any:
    if self.check_event(yaml.AliasEvent):
        ev = self.peek_event()
        raise yaml.composer.ComposerError(None, None, "anchors and aliases are not allowed", ev.start_mark)
    ev = self.peek_event()
    if getattr(ev, "anchor", None) is not None:
        raise yaml.composer.ComposerError(None, None, "anchors and aliases are not allowed", ev.start_mark)
    return yaml.composer.Composer.compose_node(self, parent, index)


_Loader.compose_node = _no_alias_compose  # type: ignore[method-assign]
_Loader.construct_mapping = construct_mapping_unique  # type: ignore[method-assign]


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeDumper.yaml_implicit_resolvers.items()
}


def dump_yaml(data: Any) -> str:
    """YAML as the loader reads it back (timestamps stay text, key order kept)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False)


def read_bytes(path: Path, name: str) -> bytes:
    """A regular file's bytes, at most MAX_FILE_BYTES."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise EvidenceInputError([InputIssue(name, "", f"cannot read: {e.strerror or e}")]) from None
    if not stat.S_ISREG(st.st_mode):
        raise EvidenceInputError([InputIssue(name, "", "not a regular file")])
    if st.st_size > MAX_FILE_BYTES:
        raise EvidenceInputError([InputIssue(name, "", f"file is larger than {MAX_FILE_BYTES} bytes")])
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise EvidenceInputError([InputIssue(name, "", f"cannot read: {e.strerror or e}")]) from None
    if len(data) > MAX_FILE_BYTES:
        raise EvidenceInputError([InputIssue(name, "", f"file is larger than {MAX_FILE_BYTES} bytes")])
    return data


def parse_yaml(data: bytes, name: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EvidenceInputError([InputIssue(name, "", f"not UTF-8 text (byte {e.start})")]) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise EvidenceInputError([InputIssue(name, "", f"invalid YAML: {where}{problem}")]) from None
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        raise EvidenceInputError([InputIssue(name, "", f"invalid YAML: {str(e).splitlines()[0][:200]}")]) from None


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "tagged-union", "function-after", "function-before")):
            continue
        elif part in ("str", "datetime", "date", "float", "none", "int"):
            # Union branch names pydantic adds for `X | None`.
            continue
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += ("." if out else "") + part
        else:
            out += f"[{part!r}]"
    return out


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, name: str) -> M:
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}"
        raise EvidenceInputError([InputIssue(name, "", f"must be a YAML mapping, not {what}")])
    for k in data:
        if not isinstance(k, str):
            raise EvidenceInputError([InputIssue(name, str(k), "keys must be strings")])
    try:
        return model.model_validate(data)
    except ValidationError as e:
        issues: list[InputIssue] = []
        seen: set[tuple[str, str]] = set()
        for err in e.errors(include_url=False, include_input=False):
            key = format_loc(tuple(err["loc"]))
            msg = str(err["msg"])
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            for line in msg.splitlines():
                k, sep, rest = line.partition(": ")
                # Model-level checks carry their own key ("recovery_steps[2].after[0]: unknown step").
                if sep and k and " " not in k and (k.split("[")[0].split(".")[0] in model.model_fields):
                    item = (f"{key}.{k}" if key else k, rest)
                else:
                    item = (key, line)
                if item not in seen:
                    seen.add(item)
                    issues.append(InputIssue(name, *item))
        raise EvidenceInputError(issues) from None


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

    def get(self, runbook_id: str) -> Runbook | None:
        lr = self.runbooks.get(runbook_id)
        return lr.runbook if lr else None


def _yaml_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in YAML_SUFFIXES and not p.name.startswith("."))


def _check_dir(directory: Path, what: str) -> None:
    if not directory.is_dir():
        raise EvidenceInputError([InputIssue(str(directory), "", f"{what} directory does not exist")])


def load_runbooks(directory: str | Path) -> Estate:
    """Every ``*.yml``/``*.yaml`` in ``directory`` (not recursive) is a runbook, except
    ``estate.yml``. A runbook's ``id`` must equal its file name without the suffix."""
    d = Path(directory)
    _check_dir(d, "runbooks")
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
    try:
        files = [p for p in _yaml_files(d) if p.name not in (ESTATE_FILE, "estate.yaml")]
    except OSError as e:
        raise EvidenceInputError([InputIssue(str(d), "", f"cannot list: {e.strerror or e}")]) from None
    for p in files:
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
        issues.append(InputIssue(str(d), "", "no runbooks (*.yml) found"))
    if issues:
        raise EvidenceInputError(issues)
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


def load_records(directory: str | Path) -> list[LoadedRecord]:
    """Every ``*.yml``/``*.yaml`` directly in the evidence directory is a record (artefacts go in
    subdirectories). Sorted by sequence (sealed first), then name."""
    d = Path(directory)
    _check_dir(d, "evidence")
    issues: list[InputIssue] = []
    out: list[LoadedRecord] = []
    try:
        files = _yaml_files(d)
    except OSError as e:
        raise EvidenceInputError([InputIssue(str(d), "", f"cannot list: {e.strerror or e}")]) from None
    for p in files:
        if p.is_symlink():
            issues.append(InputIssue(p.name, "", "a record must not be a symbolic link"))
            continue
        try:
            out.append(load_record_file(p, p.name))
        except EvidenceInputError as e:
            issues.extend(e.issues)
    if issues:
        raise EvidenceInputError(issues)
    out.sort(key=lambda r: (r.record.sequence is None, r.record.sequence or 0, r.name))
    return out
