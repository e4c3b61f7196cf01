"""Parsers for what backup tools print. Pure functions: bytes in, facts out. Anything malformed
raises ``CollectorError("bad_output", ...)`` naming the command, never another exception
(fuzzed in tests/unit/test_backup_parsers.py).

Recorded outputs these parsers were written against are in tests/fixtures/backup/.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from collectors.base import CollectorError
from collectors.commands import BAD_OUTPUT

CHECKPOINT_RE = re.compile(r"\.checkpoint(\.\d+)?$")
_TS_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,12}))?(Z|z|[+-]\d{2}:?\d{2})?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_TS = 32503680000.0  # year 3000: anything later is not a real backup time


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: float
    name: str = ""


@dataclass(frozen=True)
class FileEntry:
    mtime: float
    size: int
    path: str


@dataclass(frozen=True)
class Node:
    """A regular file in a snapshot/archive listing."""

    path: str
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class CommandStatus:
    """The documented object a ``type: command`` script prints (docs/backups.md)."""

    last_success: float | None
    last_attempt: float | None
    ok: bool
    size_bytes: int | None
    snapshots: int | None
    message: str


def bad(what: str, msg: str) -> CollectorError:
    return CollectorError(BAD_OUTPUT, f"{what}: {msg}")


def parse_timestamp(text: str, *, naive_utc: bool = False) -> float:
    """ISO 8601 / RFC 3339 with up to 12 fractional digits (restic prints nanoseconds). Naive
    times are refused unless ``naive_utc`` (borg 1.x prints local time; we run it with TZ=UTC)."""
    m = _TS_RE.match(text)
    if not m:
        raise ValueError(f"not an ISO 8601 timestamp: {text[:40]!r}")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    if tz is None:
        if not naive_utc:
            raise ValueError(f"timestamp {text[:40]!r} has no UTC offset")
        tzinfo: timezone = UTC
    elif tz in ("Z", "z"):
        tzinfo = UTC
    else:
        sign = -1 if tz[0] == "-" else 1
        hh, mm = int(tz[1:3]), int(tz[-2:])
        if hh > 23 or mm > 59:
            raise ValueError(f"bad UTC offset in {text[:40]!r}")
        tzinfo = timezone(sign * timedelta(hours=hh, minutes=mm))
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=tzinfo)
        value = dt.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0.0)
    except OverflowError:
        raise ValueError(f"timestamp {text[:40]!r} is out of range") from None
    if not 0 <= value < MAX_TS:
        raise ValueError(f"timestamp {text[:40]!r} is out of range")
    return value


def load_json(data: bytes, what: str) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad(what, "output is not UTF-8") from None
    if not text.strip():
        raise bad(what, "empty output")
    try:
        return json.loads(text)
    except RecursionError:
        raise bad(what, "JSON nested too deeply") from None
    except ValueError as e:
        raise bad(what, f"not JSON ({str(e)[:80]})") from None


def _json_lines(data: bytes, what: str) -> list[Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise bad(what, "output is not UTF-8") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except RecursionError:
            raise bad(what, f"line {n}: JSON nested too deeply") from None
        except ValueError as e:
            raise bad(what, f"line {n}: not JSON ({str(e)[:60]})") from None
    return out


def _ts_field(obj: dict[str, Any], key: str, what: str, *, naive_utc: bool = False) -> float:
    v = obj.get(key)
    if not isinstance(v, str):
        raise bad(what, f"{key!r} missing or not a string")
    try:
        return parse_timestamp(v, naive_utc=naive_utc)
    except ValueError as e:
        raise bad(what, str(e)) from None


def _size(v: Any, what: str, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 2**63:
        raise bad(what, f"{key!r} must be a non-negative integer")
    return v


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# -- restic -------------------------------------------------------------------------------------


def parse_restic_snapshots(data: bytes) -> list[Snapshot]:
    what = "restic snapshots --json"
    doc = load_json(data, what)
    if not isinstance(doc, list):
        raise bad(what, "expected a JSON list of snapshots")
    out = []
    for i, s in enumerate(doc):
        w = f"{what}: snapshot {i}"
        if not isinstance(s, dict):
            raise bad(w, "not an object")
        sid = s.get("id")
        if not isinstance(sid, str) or not _HEX64.match(sid):
            raise bad(w, "'id' missing or not a 64-digit hex id")
        for key in ("paths", "tags"):
            if key in s and s[key] is not None and not _str_list(s[key]):
                raise bad(w, f"{key!r} is not a list of strings")
        out.append(Snapshot(sid, _ts_field(s, "time", w)))
    out.sort(key=lambda x: x.time)
    return out


def parse_restic_stats(data: bytes) -> int:
    what = "restic stats --json"
    doc = load_json(data, what)
    if not isinstance(doc, dict):
        raise bad(what, "expected a JSON object")
    return _size(doc.get("total_size"), what, "total_size")


def parse_restic_ls(data: bytes) -> list[Node]:
    """Regular files from ``restic ls --json`` (JSON lines; the first is the snapshot)."""
    what = "restic ls --json"
    out = []
    for i, obj in enumerate(_json_lines(data, what)):
        if not isinstance(obj, dict):
            raise bad(what, f"line {i + 1} is not an object")
        if obj.get("struct_type") == "snapshot" or obj.get("type") != "file":
            continue
        path = obj.get("path")
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise bad(what, f"line {i + 1}: 'path' missing or not absolute")
        out.append(Node(path, _size(obj.get("size", 0), what, "size")))
    return out


# -- borg ---------------------------------------------------------------------------------------


def parse_borg_list(data: bytes) -> tuple[list[Snapshot], list[Snapshot]]:
    """(complete archives, checkpoint archives), each oldest first. Times are read as UTC: the
    collector runs borg with TZ=UTC because borg 1.x prints naive local times."""
    what = "borg list --json"
    doc = load_json(data, what)
    if not isinstance(doc, dict) or not isinstance(doc.get("archives"), list):
        raise bad(what, "expected an object with an 'archives' list")
    done: list[Snapshot] = []
    checkpoints: list[Snapshot] = []
    for i, a in enumerate(doc["archives"]):
        w = f"{what}: archive {i}"
        if not isinstance(a, dict):
            raise bad(w, "not an object")
        name, aid = a.get("name", a.get("archive")), a.get("id")
        if not isinstance(name, str) or not name:
            raise bad(w, "'name' missing")
        if not isinstance(aid, str) or not _HEX64.match(aid):
            raise bad(w, "'id' missing or not a 64-digit hex id")
        key = "time" if "time" in a else "start"
        snap = Snapshot(aid, _ts_field(a, key, w, naive_utc=True), name)
        (checkpoints if CHECKPOINT_RE.search(name) else done).append(snap)
    done.sort(key=lambda x: x.time)
    checkpoints.sort(key=lambda x: x.time)
    return done, checkpoints


def parse_borg_info(data: bytes) -> int:
    """``original_size`` of the (single) archive in ``borg info --json REPO::ARCHIVE``."""
    what = "borg info --json"
    doc = load_json(data, what)
    if not isinstance(doc, dict) or not isinstance(doc.get("archives"), list) or not doc["archives"]:
        raise bad(what, "expected an object with a non-empty 'archives' list")
    a = doc["archives"][0]
    if not isinstance(a, dict) or not isinstance(a.get("stats"), dict):
        raise bad(what, "archive without 'stats'")
    return _size(a["stats"].get("original_size"), what, "stats.original_size")


def parse_borg_items(data: bytes) -> list[Node]:
    """Regular files from ``borg list --json-lines REPO::ARCHIVE`` (with ``{sha256}`` when asked)."""
    what = "borg list --json-lines"
    out = []
    for i, obj in enumerate(_json_lines(data, what)):
        if not isinstance(obj, dict):
            raise bad(what, f"line {i + 1} is not an object")
        if obj.get("type") != "-":
            continue
        path = obj.get("path")
        if not isinstance(path, str) or not path or "\0" in path:
            raise bad(what, f"line {i + 1}: 'path' missing")
        digest = obj.get("sha256")
        if digest is not None and not (isinstance(digest, str) and _HEX64.match(digest)):
            raise bad(what, f"line {i + 1}: 'sha256' is not a sha256 digest")
        out.append(Node(path, _size(obj.get("size", 0), what, "size"), digest))
    return out


# -- files / restore verification ----------------------------------------------------------------


def parse_find(data: bytes) -> list[FileEntry]:
    """``find DIR -type f -name PAT -printf '%T@\\t%s\\t%P\\0'`` output."""
    what = "find"
    out = []
    for rec in data.split(b"\0"):
        if not rec:
            continue
        parts = rec.split(b"\t", 2)
        if len(parts) != 3:
            raise bad(what, "record is not 'mtime<TAB>size<TAB>path'")
        try:
            mtime = float(parts[0])
            size = int(parts[1])
            path = parts[2].decode("utf-8", "surrogateescape")
        except ValueError:
            raise bad(what, "mtime or size is not a number") from None
        if not math.isfinite(mtime) or not 0 <= mtime < MAX_TS or size < 0:
            raise bad(what, "mtime or size out of range")
        out.append(FileEntry(mtime, size, path))
    return out


def parse_sha256sum(data: bytes) -> dict[str, str]:
    """``sha256sum -z`` output: ``<hex>  <path>\\0`` per file."""
    what = "sha256sum"
    out: dict[str, str] = {}
    for rec in data.split(b"\0"):
        if not rec:
            continue
        head, sep, path = rec[:64], rec[64:66], rec[66:]
        digest = head.decode("ascii", "replace")
        if sep not in (b"  ", b" *") or not _HEX64.match(digest) or not path:
            raise bad(what, "record is not '<sha256>  <path>'")
        out[path.decode("utf-8", "surrogateescape")] = digest
    return out


def parse_mktemp(data: bytes, parent: str) -> str:
    what = "mktemp"
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise bad(what, "output is not UTF-8") from None
    prefix = parent.rstrip("/") + "/continuity-restore."
    rest = text[len(prefix) :]
    if not text.startswith(prefix) or not rest or "/" in rest or "\n" in text or ".." in rest:
        raise bad(what, f"unexpected scratch directory {text[:80]!r}")
    return text


# -- type: command ------------------------------------------------------------------------------


def _cmd_time(v: Any, key: str, what: str, now: float) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise bad(what, f"{key!r} must be a Unix time, an ISO 8601 string with offset, or null")
    if isinstance(v, int | float):
        if abs(v) > MAX_TS * 10:
            raise bad(what, f"{key!r} is not a valid time")
        t = float(v)
    elif isinstance(v, str):
        try:
            t = parse_timestamp(v)
        except ValueError as e:
            raise bad(what, f"{key!r}: {e}") from None
    else:
        raise bad(what, f"{key!r} must be a Unix time, an ISO 8601 string with offset, or null")
    if not math.isfinite(t) or t < 0:
        raise bad(what, f"{key!r} is not a valid time")
    if t > now + 86400:
        raise bad(what, f"{key!r} is more than a day in the future")
    return t


def parse_command_status(data: bytes, now: float, what: str = "command") -> CommandStatus:
    doc = load_json(data, what)
    if not isinstance(doc, dict):
        raise bad(what, "expected a JSON object with ok, last_attempt, last_success, size_bytes")
    ok = doc.get("ok")
    if not isinstance(ok, bool):
        raise bad(what, "'ok' missing or not true/false")
    last_success = _cmd_time(doc.get("last_success"), "last_success", what, now)
    last_attempt = _cmd_time(doc.get("last_attempt"), "last_attempt", what, now)
    size = doc.get("size_bytes")
    if size is not None:
        size = _size(size, what, "size_bytes")
    snaps = doc.get("snapshots")
    if snaps is not None:
        snaps = _size(snaps, what, "snapshots")
    msg = doc.get("message", "")
    if not isinstance(msg, str):
        raise bad(what, "'message' must be a string")
    if ok and last_attempt is not None and (last_success is None or last_success < last_attempt):
        last_success = last_attempt  # ok describes the attempt at last_attempt
    if last_attempt is None:
        last_attempt = last_success
    return CommandStatus(last_success, last_attempt, ok, size, snaps, msg[:500])
