"""The exercise journal: one append-only JSON Lines file per exercise, hash-chained.

``<evidence_dir>/exercises/<exercise>.journal.jsonl``; one entry a line::

    {"seq": 3, "recorded_at": "...", "at": "...", "actor": "...", "action": "step", ...fields,
     "prev_sha256": "<sha256 of entry 2>", "sha256": "<sha256 of this entry>"}

An entry's ``sha256`` is the sha256 of its canonical JSON (sorted keys, no spaces, UTF-8) without
the ``sha256`` key; ``prev_sha256`` is the previous entry's ``sha256`` (null for entry 1). Changing
a byte, removing a line or swapping two lines breaks the chain at a line the reader names.

Writers (the CLI and the agent's board) hold an exclusive ``flock`` on
``<exercise>.journal.lock`` while they read, check and append; an entry is acknowledged only after
``fsync``. Corrections are new ``amend``/``void`` entries; nothing is rewritten. A journal that does
not verify accepts no more entries, nor does one with a ``finish`` entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.lockfile import LockFileError, open_lock_file
from agent.yamlfile import FileInputError, read_file

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")  # the evidence record's `exercise` id
SUBDIR = "exercises"
SUFFIX = ".journal.jsonl"
MAX_LINE_BYTES = 64 * 1024
MAX_FUTURE = timedelta(minutes=5)
CHAIN_KEYS = ("seq", "recorded_at", "at", "actor", "action", "prev_sha256", "sha256")


# A journal holds one line per recorded step, decision and note of one exercise: far below this.
MAX_JOURNAL_BYTES = 16 * 1024 * 1024


class ExerciseInputError(Exception):
    """Bad input the user can fix: one line, exit 2, nothing written."""


class JournalCorrupt(ExerciseInputError):
    """The journal does not verify: the message names the file and line."""


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def entry_sha256(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "sha256"})).hexdigest()


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise ExerciseInputError(
            f"exercise name {name!r} is not allowed: use letters, digits, '_', '.', ':' and '-' "
            "(no path characters), starting with a letter or digit, at most 100 characters"
        )
    return name


def journal_path(evidence_dir: str | Path, name: str) -> Path:
    return Path(evidence_dir) / SUBDIR / f"{check_name(name)}{SUFFIX}"


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError("no UTC offset")
    return t


def given_time(text: str, flag: str) -> datetime:
    """A time a person gave (a command's flag, a board form's field), in UTC; ``flag`` names it in
    the error."""
    t = text.strip()
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise ExerciseInputError(
            f"{flag} {text!r} is not an ISO 8601 timestamp (e.g. 2026-03-13T18:00:00+00:00)"
        ) from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ExerciseInputError(f"{flag} {text!r} has no UTC offset (write e.g. +00:00 or Z)")
    return dt.astimezone(UTC)


def _corrupt(path: Path, line: int, why: str) -> JournalCorrupt:
    return JournalCorrupt(f"{path}: line {line}: {why}; the journal does not verify and accepts no more entries")


def parse_journal(data: bytes, path: Path) -> list[dict[str, Any]]:
    """Entries of a journal's bytes, the chain checked. Raises :class:`JournalCorrupt` naming the
    first line that does not verify."""
    entries: list[dict[str, Any]] = []
    if not data:
        return entries
    lines = data.split(b"\n")
    if lines[-1] != b"":
        raise _corrupt(path, len(lines), "the last line is incomplete (no newline)")
    prev: str | None = None
    for i, raw in enumerate(lines[:-1], start=1):
        try:
            e = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _corrupt(path, i, "not a JSON object") from None
        except RecursionError:
            raise _corrupt(path, i, "nested too deeply") from None
        if not isinstance(e, dict) or any(k not in e for k in CHAIN_KEYS):
            raise _corrupt(path, i, "not a journal entry (seq, recorded_at, at, actor, action, prev_sha256, sha256)")
        if e["seq"] != i:
            raise _corrupt(path, i, f"seq is {e['seq']!r}, expected {i} (a line was removed, added or moved)")
        if e["prev_sha256"] != prev:
            raise _corrupt(path, i, "prev_sha256 does not match the previous entry (lines removed or swapped)")
        try:
            digest = entry_sha256(e)
        except ValueError:
            raise _corrupt(path, i, "not canonical JSON") from None
        if e["sha256"] != digest:
            raise _corrupt(path, i, "sha256 does not match the entry (the line was changed)")
        if canonical(e) != raw:
            raise _corrupt(path, i, "the line is not in canonical form (the line was changed)")
        prev = digest
        entries.append(e)
    return entries


@dataclass(frozen=True)
class Journal:
    evidence_dir: Path
    name: str

    @classmethod
    def open(cls, evidence_dir: str | Path, name: str) -> Journal:
        return cls(Path(evidence_dir), check_name(name))

    @property
    def path(self) -> Path:
        return journal_path(self.evidence_dir, self.name)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(f"{self.name}.journal.lock")

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            raise ExerciseInputError(
                f"no exercise {self.name!r} in {self.evidence_dir} (start it with `exercise start`)"
            )
        try:  # the agent's one bounded file reader: a regular file, at most MAX_JOURNAL_BYTES
            data = read_file(self.path, max_bytes=MAX_JOURNAL_BYTES)
        except FileInputError as e:
            raise ExerciseInputError(str(e.issues[0])) from None
        return parse_journal(data, self.path)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        if not self.evidence_dir.is_dir():
            raise ExerciseInputError(f"{self.evidence_dir}: evidence directory does not exist")
        self.path.parent.mkdir(exist_ok=True)
        try:
            fd = open_lock_file(self.lock_path)
        except LockFileError as e:
            raise ExerciseInputError(f"{self.lock_path}: {e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def append(
        self,
        actor: str,
        action: str,
        fields: dict[str, Any],
        *,
        at: datetime | None = None,
        check: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None,
        now: datetime | None = None,
        create: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Append one entry under the lock and return it once it is on disk (fsync). ``check``
        sees the entries so far and the new one and raises :class:`ExerciseInputError` to refuse
        it; then nothing is written. ``dry_run``: every check, nothing written (whether an entry
        would be taken now, before a long upload for it is received)."""
        return self.append_many(actor, [(action, fields, at)], check=check, now=now, create=create, dry_run=dry_run)[0]

    def append_many(
        self,
        actor: str,
        items: list[tuple[str, dict[str, Any], datetime | None]],
        *,
        check: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None,
        now: datetime | None = None,
        create: bool = False,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        """All of ``items`` or none of them, in one write and one fsync."""
        recorded = (now or datetime.now(UTC)).astimezone(UTC)
        if not create and not self.exists():
            raise ExerciseInputError(
                f"no exercise {self.name!r} in {self.evidence_dir} (start it with `exercise start`)"
            )
        with self.locked():
            # An empty file is a start that crashed between creating the journal and writing to it.
            if self.exists() and (not create or self.path.stat().st_size > 0):
                if create:
                    raise ExerciseInputError(f"exercise {self.name!r} already exists ({self.path}): a second start")
                entries = self.read()
            elif not create:
                raise ExerciseInputError(
                    f"no exercise {self.name!r} in {self.evidence_dir} (start it with `exercise start`)"
                )
            else:
                entries = []
            if any(e["action"] == "finish" for e in entries):
                raise ExerciseInputError(f"exercise {self.name!r} is finished: its journal accepts no more entries")
            new: list[dict[str, Any]] = []
            prev = entries[-1]["sha256"] if entries else None
            for action, fields, at in items:
                when = (at or recorded).astimezone(UTC)
                if when > recorded + MAX_FUTURE:
                    raise ExerciseInputError(
                        f"time {iso(when)} is more than 5 minutes in the future (now {iso(recorded)})"
                    )
                entry: dict[str, Any] = {
                    "seq": len(entries) + 1,
                    "recorded_at": iso(recorded),
                    "at": iso(when),
                    "actor": actor,
                    "action": action,
                    **fields,
                    "prev_sha256": prev,
                }
                entry["sha256"] = entry_sha256(entry)
                if check is not None:
                    check(entries, entry)
                entries.append(entry)
                new.append(entry)
                prev = entry["sha256"]
            data = b"".join(canonical(e) + b"\n" for e in new)
            if any(len(canonical(e)) > MAX_LINE_BYTES for e in new):
                raise ExerciseInputError(f"an entry is longer than {MAX_LINE_BYTES} bytes")
            if dry_run:
                return new
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    os.fsync(fd)
                except OSError as e:
                    # A full disk: a torn last line would make the journal refuse every later
                    # entry. Cut back to what it was; the entry is not recorded.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                        os.fsync(fd)
                    raise ExerciseInputError(f"{self.path}: cannot write: {e.strerror or e}") from None
            finally:
                os.close(fd)
            if create:
                dfd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            return new


def list_exercises(evidence_dir: str | Path) -> list[str]:
    d = Path(evidence_dir) / SUBDIR
    if not d.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in d.iterdir() if p.name.endswith(SUFFIX))
