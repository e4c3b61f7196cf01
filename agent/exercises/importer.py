"""``exercise import NAME --from FILE``: an exercise logged in a spreadsheet (.csv or .xlsx).

One row per event, a header row naming the columns (any order, any case):

==========  ====================================================================================
runbook     runbook id (empty for ``declared`` and ``participant``)
step        step id for start/done/failed; validation id for pass/fail; empty otherwise
action      ``declared`` (T0), ``start``, ``done``, ``failed``, ``restored``, ``pass``, ``fail``
            (a validation), ``sign-off``, ``participant``
time        ``dd/mm/yyyy HH:MM[:SS]`` (UK), an Excel date cell, or ISO 8601; times without a
            UTC offset are local times in ``--timezone`` (default Europe/London), so a log that
            runs across a clock change is read correctly; a time the change makes ambiguous or
            impossible must carry an offset
operator    who did it (validations and sign-off: by whom; participant: the name)
note        free text (sign-off and participant: the role)
==========  ====================================================================================

Every bad row is reported with its row number and column, and nothing is written unless every row
is good. Rows are applied in time order; the journal's entries are backdated to the rows' times.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.exercises.journal import ExerciseInputError, iso
from agent.exercises.model import replay
from agent.exercises.record import Recorder, text
from agent.yamlfile import FileInputError, read_file

COLUMNS = ("runbook", "step", "action", "time", "operator", "note")
REQUIRED = ("runbook", "step", "action", "time")
ACTIONS = ("declared", "start", "done", "failed", "restored", "pass", "fail", "sign-off", "participant")
UK_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?$")
MAX_ROWS = 20_000
MAX_CSV_BYTES = 16 * 1024 * 1024


class BadRows(ExerciseInputError):
    """Bad rows: one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclass(frozen=True)
class Row:
    number: int  # as the spreadsheet numbers it (the header is row 1)
    cells: dict[str, Any]


def _letter(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def read_rows(path: Path) -> tuple[list[Row], dict[str, str]]:
    """Rows and the column letters by header name."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:  # the agent's one bounded file reader
            raw = read_file(path, max_bytes=MAX_CSV_BYTES)
        except FileInputError as e:
            raise ExerciseInputError(str(e.issues[0])) from None
        try:
            content = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ExerciseInputError(f"{path}: not UTF-8 text (byte {e.start})") from None
        table: list[list[Any]] = list(csv.reader(io.StringIO(content, newline="")))
    elif suffix == ".xlsx":
        import openpyxl  # heavy, and only needed here

        try:
            wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        except Exception as e:  # noqa: BLE001 - openpyxl raises many types for a bad file
            raise ExerciseInputError(f"{path}: not a readable .xlsx workbook ({type(e).__name__})") from None
        try:
            ws = wb.worksheets[0]
            table = [list(r) for r in ws.iter_rows(values_only=True, max_row=MAX_ROWS + 1)]
        finally:
            wb.close()
    else:
        raise ExerciseInputError(f"{path}: --from must be a .csv or .xlsx file")
    if not table:
        raise ExerciseInputError(f"{path}: empty")
    header = [str(c).strip().lower() if c is not None else "" for c in table[0]]
    cols = {h: i for i, h in enumerate(header) if h}
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise ExerciseInputError(
            f"{path}: row 1: missing column(s) {', '.join(missing)} (columns: {', '.join(COLUMNS)})"
        )
    unknown = [h for h in cols if h not in COLUMNS]
    if unknown:
        raise ExerciseInputError(f"{path}: row 1, column {_letter(cols[unknown[0]])}: unknown column {unknown[0]!r}")
    if len(table) > MAX_ROWS + 1:
        raise ExerciseInputError(f"{path}: more than {MAX_ROWS} rows")
    rows = []
    for n, r in enumerate(table[1:], start=2):
        cells = {h: (r[i] if i < len(r) else None) for h, i in cols.items()}
        if all(v is None or (isinstance(v, str) and not v.strip()) for v in cells.values()):
            continue
        rows.append(Row(n, cells))
    return rows, {h: _letter(i) for h, i in cols.items()}


def _local(naive: datetime, tz: ZoneInfo) -> datetime:
    """A naive local time in ``tz``; refuses the hour a clock change skips or repeats."""
    a, b = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if a.utcoffset() != b.utcoffset():
        if a.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
            raise ValueError(f"{naive:%d/%m/%Y %H:%M} does not exist in {tz.key} (the clocks went forward)")
        raise ValueError(f"{naive:%d/%m/%Y %H:%M} happens twice in {tz.key} (the clocks went back): add a UTC offset")
    return a.astimezone(UTC)


def parse_cell_time(v: Any, tz: ZoneInfo) -> datetime:
    if isinstance(v, datetime):
        return _local(v, tz) if v.tzinfo is None else v.astimezone(UTC)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        from openpyxl.utils.datetime import from_excel

        got = from_excel(v)
        if not isinstance(got, datetime):
            raise ValueError(f"{v!r} is not an Excel date and time")
        return _local(got, tz)
    s = str(v or "").strip()
    if not s:
        raise ValueError("empty")
    m = UK_RE.match(s)
    if m:
        d, mo, y, hh, mm, ss = m.groups()
        try:
            naive = datetime(int(y), int(mo), int(d), int(hh), int(mm), int(ss or 0))
        except ValueError as e:
            raise ValueError(f"{s!r} is not a valid date: {e}") from None
        return _local(naive, tz)
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"{s!r} is not a time (write dd/mm/yyyy HH:MM or ISO 8601)") from None
    return _local(t, tz) if t.tzinfo is None else t.astimezone(UTC)


def _cell(row: Row, key: str) -> str:
    v = row.cells.get(key)
    return "" if v is None else str(v).strip()


def import_file(
    recorder: Recorder,
    file: str | Path,
    *,
    timezone: str = "Europe/London",
    type_: str = "full_recovery",
    systems: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Check every row, then append all of them (and the start, if the sheet declares it) in
    one locked write. Raises :class:`BadRows` listing every bad row."""
    path = Path(file)
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExerciseInputError(f"--timezone {timezone!r} is not a known time zone (e.g. Europe/London)") from None
    rows, letters = read_rows(path)
    estate = recorder.estate
    bad: list[str] = []

    def problem(row: Row, col: str, msg: str) -> None:
        where = f"column {col} ({letters[col]})" if col in letters else f"column {col}"
        bad.append(f"{path}: row {row.number}, {where}: {msg}")

    parsed: list[tuple[datetime, int, Row, str, dict[str, Any]]] = []
    for row in rows:
        n_before = len(bad)
        action = _cell(row, "action").lower()
        rid, sid, who, note = (_cell(row, k) for k in ("runbook", "step", "operator", "note"))
        if action not in ACTIONS:
            problem(row, "action", f"{action!r} is not one of {', '.join(ACTIONS)}")
            continue
        try:
            when = parse_cell_time(row.cells.get("time"), tz)
        except ValueError as e:
            problem(row, "time", str(e))
            continue
        fields: dict[str, Any] = {}
        try:
            if action in ("declared", "participant"):
                if action == "participant":
                    fields = {"name": text(who, "operator (the name)"), "role": text(note, "note (the role)")}
            else:
                rb = estate.get(rid)
                if rb is None:
                    problem(row, "runbook", f"no runbook {rid!r} in {estate.directory}")
                    continue
                if action in ("start", "done", "failed"):
                    if rb.step(sid) is None:
                        problem(row, "step", f"runbook {rid} has no step {sid!r}")
                        continue
                    fields = {
                        "runbook": rid,
                        "step": sid,
                        "state": action,
                        "operator": text(who or recorder.actor, "operator"),
                        "note": text(note, "note", required=False),
                    }
                elif action in ("pass", "fail"):
                    if sid not in {v.id for v in rb.validation}:
                        problem(row, "step", f"runbook {rid} has no validation {sid!r}")
                        continue
                    fields = {"runbook": rid, "validation": sid, "result": action, "by": text(who, "operator")}
                elif action == "sign-off":
                    fields = {"runbook": rid, "by": text(who, "operator"), "role": text(note, "note (the role)")}
                else:
                    fields = {"runbook": rid}
        except ExerciseInputError as e:
            col = "note" if "note" in str(e) else "operator"
            problem(row, col, str(e))
            continue
        if len(bad) == n_before:
            parsed.append((when, row.number, row, action, fields))
    parsed.sort(key=lambda p: (p[3] != "declared", p[0], p[1]))

    exists = recorder.journal.exists()
    entries: list[dict[str, Any]] = recorder.journal.read() if exists else []
    declared = [p for p in parsed if p[3] == "declared"]
    if exists and declared:
        problem(declared[0][2], "action", f"exercise {recorder.journal.name!r} has already started (a second start)")
    elif not exists and len(declared) != 1:
        if declared:
            problem(declared[1][2], "action", "a second declared row")
        else:
            bad.append(
                f"{path}: exercise {recorder.journal.name!r} does not exist and no row declares it (action declared)"
            )
    if not exists and len(declared) == 1:
        ids = systems or list(dict.fromkeys(p[4]["runbook"] for p in parsed if "runbook" in p[4]))
        unknown = [r for r in ids if r not in estate.runbooks]
        if unknown:
            raise ExerciseInputError(f"--systems: no runbook {unknown[0]!r} in {estate.directory}")
        declared[0][4].update({"type": type_, "systems": ids})

    # Replay row by row (in time order) to find every row the journal would refuse.
    items: list[tuple[str, dict[str, Any], datetime | None]] = []
    sim = list(entries)
    now = datetime.now(UTC)
    for when, _, row, action, fields in parsed:
        if action == "declared" and (exists or declared[0][2] is not row):
            continue
        kind = {
            "declared": "start",
            "start": "step",
            "done": "step",
            "failed": "step",
            "pass": "validate",
            "fail": "validate",
            "sign-off": "sign_off",
        }.get(action, action)
        if when > now + timedelta(minutes=5):
            problem(row, "time", f"{iso(when)} is in the future")
            continue
        cand = {
            "seq": len(sim) + 1,
            "recorded_at": iso(now),
            "at": iso(when),
            "actor": recorder.actor,
            "action": kind,
            **fields,
        }
        try:
            replay([*sim, cand], estate)
        except ExerciseInputError as e:
            msg = str(e).split("): ", 1)[-1]
            problem(row, "action" if kind != "step" else "step", msg)
            continue
        sim.append(cand)
        items.append((kind, fields, when))
    if bad:
        raise BadRows(sorted(bad, key=_row_key))
    if not items:
        raise ExerciseInputError(f"{path}: no rows to import")
    create = not exists
    return recorder.journal.append_many(recorder.actor, items, check=recorder.check, create=create)


def _row_key(line: str) -> tuple[int, str]:
    m = re.search(r": row (\d+)", line)
    return (int(m.group(1)) if m else 0, line)
