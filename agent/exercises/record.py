"""Recording: every way of writing to an exercise journal (CLI, board, import) goes through here.

Each function checks its input, then appends under the journal's lock with the replay check, so
a refused entry writes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO

from agent.exercises.journal import ExerciseInputError, Journal, check_name, given_time, iso
from agent.exercises.model import STEP_STATES, TYPES, checker, load_estate
from agent.fileio import link_unnamed, publish, spool, spool_unnamed
from agent.multipart import Readable

ARTEFACT_DIR = "artefacts"
MAX_ARTEFACT_NAME_BYTES = 200  # with the temporary file's affixes, well inside a file system's 255
COPY_CHUNK = 1024 * 1024


class ArtefactTooLarge(ExerciseInputError):
    """An upload over the board's limit (413)."""


def text(value: str | None, what: str, *, required: bool = True, limit: int = 2000) -> str:
    v = (value or "").strip()
    if required and not v:
        raise ExerciseInputError(f"{what} is empty")
    if len(v) > limit:
        raise ExerciseInputError(f"{what} is longer than {limit} characters")
    if any(c in v for c in "\r\n\x00"):
        raise ExerciseInputError(f"{what} must be one line")
    return v


def due_date(value: str, flag: str = "--due") -> str:
    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise ExerciseInputError(f"{flag} {value!r} is not a date (YYYY-MM-DD)") from None


def amend_changes(
    *,
    at: str | None = None,
    operator: str | None = None,
    note: str | None = None,
    by: str | None = None,
    role: str | None = None,
    description: str | None = None,
    owner: str | None = None,
    name: str | None = None,
    result: str | None = None,
    due: str | None = None,
) -> dict[str, Any]:
    """What an amend changes (None: unchanged), each value checked as ``exercise amend``'s flag of
    the same name; for :meth:`Recorder.amend`, from the command line and the board alike."""
    changes: dict[str, Any] = {}
    if at is not None:
        changes["at"] = given_time(at, "--at").isoformat()
    given = {"operator": operator, "note": note, "by": by, "role": role, "description": description, "owner": owner}
    for k, v in given.items():
        if v is not None:
            changes[k] = text(v, f"--{k}", required=k != "note")
    if name is not None:
        changes["name"] = text(name, "--name")
    if result is not None:
        if result not in ("pass", "fail"):
            raise ExerciseInputError(f"--result {result!r}: expected pass or fail")
        changes["result"] = result
    if due is not None:
        changes["due"] = due_date(due)
    return changes


class Recorder:
    """One exercise, the runbooks it is judged against, and who is recording."""

    def __init__(self, runbooks_dir: str | Path, evidence_dir: str | Path, name: str, actor: str) -> None:
        check_name(name)
        self.estate = load_estate(runbooks_dir)
        self.evidence_dir = Path(evidence_dir)
        if not self.evidence_dir.is_dir():
            raise ExerciseInputError(f"{self.evidence_dir}: evidence directory does not exist")
        self.journal = Journal.open(self.evidence_dir, name)
        self.actor = text(actor, "actor", limit=200)
        self.check = checker(self.estate)

    def _append(self, action: str, fields: dict[str, Any], at: datetime | None = None) -> dict[str, Any]:
        return self.journal.append(self.actor, action, fields, at=at, check=self.check)

    def start(self, type_: str, systems: list[str] | None, declared_at: datetime | None = None) -> dict[str, Any]:
        if type_ not in TYPES:
            raise ExerciseInputError(f"--type {type_!r}: expected one of {', '.join(TYPES)}")
        ids = systems if systems else sorted(self.estate.runbooks)
        for rid in ids:
            if rid not in self.estate.runbooks:
                raise ExerciseInputError(f"--systems: no runbook {rid!r} in {self.estate.directory}")
        if len(set(ids)) != len(ids):
            raise ExerciseInputError("--systems: a runbook is listed more than once")
        return self.journal.append(
            self.actor, "start", {"type": type_, "systems": ids}, at=declared_at, check=self.check, create=True
        )

    def step(
        self,
        runbook: str,
        step: str,
        state: str,
        *,
        at: datetime | None = None,
        operator: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        if state not in STEP_STATES:
            raise ExerciseInputError(f"step state {state!r}: expected one of {', '.join(STEP_STATES)}")
        fields = {
            "runbook": runbook,
            "step": step,
            "state": state,
            "operator": text(operator or self.actor, "--operator", limit=200),
            "note": text(note, "--note", required=False),
        }
        return self._append("step", fields, at)

    def restored(self, runbook: str, at: datetime | None = None) -> dict[str, Any]:
        return self._append("restored", {"runbook": runbook}, at)

    def validate(
        self, runbook: str, validation: str, result: str, by: str, at: datetime | None = None
    ) -> dict[str, Any]:
        if result not in ("pass", "fail"):
            raise ExerciseInputError(f"validation result {result!r}: expected pass or fail")
        fields = {"runbook": runbook, "validation": validation, "result": result, "by": text(by, "--by", limit=200)}
        return self._append("validate", fields, at)

    def action(self, runbook: str, description: str, owner: str, due: str) -> dict[str, Any]:
        d = due_date(due)
        fields = {
            "runbook": runbook,
            "description": text(description, "--description"),
            "owner": text(owner, "--owner", limit=200),
            "due": d,
        }
        return self._append("action", fields)

    def participant(self, name: str, role: str) -> dict[str, Any]:
        return self._append(
            "participant", {"name": text(name, "--name", limit=200), "role": text(role, "--role", limit=200)}
        )

    def sign_off(self, runbook: str, by: str, role: str, at: datetime | None = None) -> dict[str, Any]:
        fields = {"runbook": runbook, "by": text(by, "--by", limit=200), "role": text(role, "--role", limit=200)}
        return self._append("sign_off", fields, at)

    def artefact(self, runbook: str, file: str | Path) -> dict[str, Any]:
        """``exercise artefact``: the file copied under the evidence directory (:meth:`add_artefact`)."""
        src = Path(file)
        if not src.is_file():
            raise ExerciseInputError(f"{src}: not a regular file")
        try:
            f = open(src, "rb")
        except OSError as e:
            raise ExerciseInputError(f"{src}: cannot read: {e.strerror or e}") from None
        with f:
            return self.add_artefact(runbook, src.name, f, source=str(src))

    def add_artefact(
        self, runbook: str, name: str, data: Readable, *, source: str, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """Store what ``data`` gives as ``artefacts/<exercise>/<runbook>/<name>`` under the evidence
        directory and record its sha256: the one implementation behind ``exercise artefact`` and
        the board's upload. ``source`` names where the bytes come from in a message.

        Everything that can refuse the entry is checked before a byte is read (the name, the
        runbook, a finished exercise, the same path recorded or on disk already); the bytes go to
        an unnamed file in their destination's directory (:func:`spool_unnamed`: nobody who may
        write there can swap it for another file meanwhile; where the file system has none, a
        temporary file beside the destination), hashed as they are written (at most
        ``max_bytes``: :class:`ArtefactTooLarge`), which takes its name under the journal's lock
        only if the entry is still accepted. A refusal leaves nothing behind and the journal as it
        was. No directory on the way is created or entered through a symbolic link."""
        name = artefact_name(name)
        rel = f"{ARTEFACT_DIR}/{self.journal.name}/{runbook}/{name}"
        dest = self.evidence_dir / rel

        def refuse(entries: list[dict[str, Any]], new: dict[str, Any]) -> None:
            self.check(entries, new)
            if any(e["action"] == "artefact" and e.get("path") == rel for e in entries):
                raise ExerciseInputError(f"artefact {rel} is already recorded in this exercise")
            if os.path.lexists(dest):
                raise ExerciseInputError(f"{dest} already exists")

        fields = {"runbook": runbook, "path": rel, "file_sha256": "0" * 64}
        self.journal.append(self.actor, "artefact", fields, check=refuse, dry_run=True)
        dirs = _RealDirs(self.evidence_dir, (ARTEFACT_DIR, self.journal.name, runbook))
        digest = hashlib.sha256()
        size = 0

        def fill(out: BinaryIO) -> None:
            nonlocal size
            while True:
                try:
                    chunk = data.read(COPY_CHUNK)
                except OSError as e:
                    raise ExerciseInputError(f"{source}: cannot read: {e.strerror or e}") from None
                if not chunk:
                    return
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise ArtefactTooLarge(
                        f"artefact {_shown(name)} is larger than {fmt_bytes(max_bytes)}, the most the board "
                        "takes: add it with `continuity-agent exercise artefact`"
                    )
                digest.update(chunk)
                out.write(chunk)

        def commit(entries: list[dict[str, Any]], new: dict[str, Any]) -> None:
            refuse(entries, new)
            try:
                if unnamed is not None:
                    link_unnamed(unnamed, dest, dirs.fd)
                else:
                    assert tmp is not None
                    publish(tmp, dest, mode=None, replace=False, dir_fd=dirs.fd)
            except FileExistsError:
                raise ExerciseInputError(f"{dest} already exists") from None
            published.append(dest.name)

        unnamed: int | None = None  # the open unnamed file, or
        tmp: Path | None = None  # the named temporary file where the file system has no unnamed ones
        published: list[str] = []  # the name taken, until its journal entry is written too
        done = False
        try:
            try:
                unnamed = spool_unnamed(dirs.fd, fill)
                if unnamed is None:
                    tmp = spool(dest, fill, dir_fd=dirs.fd)
            except OSError as e:
                raise ExerciseInputError(f"{dest}: cannot write: {e.strerror or e}") from None
            fields["file_sha256"] = digest.hexdigest()
            got = self.journal.append(self.actor, "artefact", fields, check=commit)
            done = True
            return got
        finally:
            # The temporary file, and the name it took if its entry was not written (a full disk).
            for n in ([tmp.name] if tmp is not None else []) + ([] if done else published):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(n, dir_fd=dirs.fd)
            if unnamed is not None:
                os.close(unnamed)
            dirs.close(undo=not done)  # the directories this refused artefact made, if still empty

    def amend(self, seq: int, changes: dict[str, Any]) -> dict[str, Any]:
        if not changes:
            raise ExerciseInputError("amend: nothing to change (give --at, --operator, --note, --by, --role, ...)")
        return self._append("amend", {"target": seq, "changes": changes})

    def void(self, seq: int, reason: str) -> dict[str, Any]:
        return self._append("void", {"target": seq, "reason": text(reason, "--reason")})


def artefact_name(name: str) -> str:
    """The file name an artefact is stored under, from ``exercise artefact``'s FILE or the board's
    upload, refused unless it is a plain, visible, one-line UTF-8 name the verifier can follow:
    no '/' or '\\', not starting with '.', no control characters, no invisible or formatting
    characters (bidirectional overrides, zero-width spaces, line separators), no space at either
    end, at most ``MAX_ARTEFACT_NAME_BYTES`` bytes. Returned in Unicode normal form NFC, so two
    spellings of one name (``é`` composed, or ``e`` and an accent) are one artefact, not two files
    that look alike."""
    what = f"artefact file name {_shown(name)}"
    if not name:
        raise ExerciseInputError("artefact file name is empty")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ExerciseInputError(f"{what} is not valid UTF-8") from None
    if "/" in name or "\\" in name:
        raise ExerciseInputError(f"{what} must be a plain file name (no '/' or '\\')")
    if name.startswith("."):
        raise ExerciseInputError(f"{what} must not start with '.'")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise ExerciseInputError(f"{what} contains a control character")
    hidden = next((c for c in name if unicodedata.category(c) in _INVISIBLE), None)
    if hidden is not None:
        raise ExerciseInputError(f"{what} contains an invisible or formatting character (U+{ord(hidden):04X})")
    if name != name.strip():
        raise ExerciseInputError(f"{what} must not begin or end with a space")
    name = unicodedata.normalize("NFC", name)
    if len(name.encode("utf-8")) > MAX_ARTEFACT_NAME_BYTES:
        raise ExerciseInputError(f"{what} is longer than {MAX_ARTEFACT_NAME_BYTES} bytes")
    return name


# Unicode categories that show as nothing, or change how the rest shows: format characters (U+202E
# right-to-left override, U+200B zero-width space, U+FEFF), line and paragraph separators.
_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})


def _shown(name: str) -> str:
    """A name in a message: quoted with its control characters escaped, cut short if long."""
    return repr(name) if len(name) <= 60 else repr(name[:60]) + "..."


def fmt_bytes(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n} bytes"


class _RealDirs:
    """``base/part/part/...`` opened one directory at a time, each created if missing and refused if
    it is not a real directory: a symbolic link is never followed, and the last one stays open
    (:attr:`fd`), so what is written there lands in that very directory even if a name on the way
    is swapped for a link meanwhile (the evidence stays inside the evidence directory).
    :meth:`close` removes the directories it created if they are still empty (``undo``)."""

    def __init__(self, base: Path, parts: tuple[str, ...]) -> None:
        self._fds: list[int] = []
        self._made: list[int] = []  # indexes into parts
        self._parts = parts
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        d = base
        try:
            self._fds.append(os.open(base, flags))
            for i, part in enumerate(parts):
                d = d / part
                try:
                    os.mkdir(part, dir_fd=self._fds[-1])
                    self._made.append(i)
                except FileExistsError:
                    pass
                self._fds.append(os.open(part, flags | os.O_NOFOLLOW, dir_fd=self._fds[-1]))
        except OSError as e:
            self.close(undo=True)
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ExerciseInputError(
                    f"{d}: not a directory (a symbolic link?); artefacts are not written through one"
                ) from None
            raise ExerciseInputError(f"{d}: cannot create: {e.strerror or e}") from None

    @property
    def fd(self) -> int:
        return self._fds[-1]

    def close(self, undo: bool = False) -> None:
        if undo:
            for i in reversed(self._made):
                if i + 1 < len(self._fds):
                    with contextlib.suppress(OSError):
                        os.rmdir(self._parts[i], dir_fd=self._fds[i])
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "ArtefactTooLarge",
    "Recorder",
    "amend_changes",
    "artefact_name",
    "due_date",
    "iso",
    "load_estate",
    "now",
    "text",
]
