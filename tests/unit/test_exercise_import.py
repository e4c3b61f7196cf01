"""``exercise import``: the scripted exercise as a .csv (UK dates, a BOM) and as an .xlsx (Excel
date cells, made here with openpyxl), run across the October clock change, imports to the same
records; every bad row is named with its row and column and nothing is written."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import yaml

from tests.helpers import exercise_script as xs
from tests.unit.test_exercise_status import run

LONDON = ZoneInfo("Europe/London")
# 17:00 BST on Saturday 24 October 2026; the clocks go back at 02:00 BST on Sunday 25 October,
# 9 hours later, in the middle of Active Directory's restore-dc (7h-10h): no event falls in the
# repeated hour.
T0 = datetime(2026, 10, 24, 16, 0, tzinfo=UTC)
HEADER = ["Runbook", "Step", "Action", "Time", "Operator", "Note"]


def when(h: float) -> datetime:
    return T0 + timedelta(hours=h)


def local(h: float) -> datetime:
    return when(h).astimezone(LONDON).replace(tzinfo=None)


def uk(h: float) -> str:
    return local(h).strftime("%d/%m/%Y %H:%M")


def rows() -> list[tuple[list[str], float]]:
    """(runbook, step, action, operator, note) rows and their hours."""
    out: list[tuple[list[str], float]] = [(["", "", "declared", "", ""], 0.0)]
    out += [(["", "", "participant", who, role], 0.0) for who, role in xs.PARTICIPANTS]
    for h, kind, args in xs.events():
        if kind == "step":
            rid, sid, state, who = args
            out.append(([rid, sid, state, who, ""], h))
        elif kind == "restored":
            out.append(([args[0], "", "restored", "", ""], h))
        elif kind == "validate":
            rid, vid, result, by = args
            out.append(([rid, vid, result, by, ""], h))
        else:
            rid, by, role = args
            out.append(([rid, "", "sign-off", by, role], h))
    return out


def write_csv(path: Path, extra: list[list[str]] | None = None) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADER)
    for (rid, sid, action, who, note), h in rows():
        w.writerow([rid, sid, action, uk(h), who, note])
    for r in extra or []:
        w.writerow(r)
    path.write_bytes(buf.getvalue().encode("utf-8-sig"))  # as Excel saves "CSV UTF-8": with a BOM


def write_xlsx(path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["runbook", "ACTION", "step", "time", "operator", "note"])  # another order and case
    for i, ((rid, sid, action, who, note), h) in enumerate(rows()):
        t: Any = local(h) if i % 5 else uk(h)  # mostly Excel date cells, some typed as text
        ws.append([rid, action, sid, t, who, note])
        if i % 5:
            ws.cell(row=ws.max_row, column=4).number_format = "dd/mm/yyyy hh:mm"
    wb.save(path)


def import_and_finish(tmp_path: Path, source: Path, label: str) -> dict[str, dict[str, Any]]:
    ev = tmp_path / label
    ev.mkdir()
    rc, _, err = run(ev, "exercise", "import", xs.NAME, "--from", str(source), "--timezone", "Europe/London")
    assert rc == 0, err
    rc, _out, err = run(ev, "exercise", "finish", xs.NAME, "--at", when(43).isoformat())
    assert rc in (0, 1), err
    recs = {}
    for rid in xs.SYSTEMS:
        doc = yaml.safe_load((ev / f"{xs.NAME}-{rid}.yml").read_text())
        for k in ("sequence", "prev_record_sha256"):
            doc.pop(k)
        # The journal differs (its entries carry when they were recorded); the rest must not.
        doc["artefacts"] = [a["path"] for a in doc["artefacts"]]
        recs[rid] = doc
    return recs


def test_csv_and_xlsx_import_to_the_same_records_across_the_clock_change(tmp_path: Path) -> None:
    write_csv(tmp_path / "log.csv")
    write_xlsx(tmp_path / "log.xlsx")
    from_csv = import_and_finish(tmp_path, tmp_path / "log.csv", "ev-csv")
    from_xlsx = import_and_finish(tmp_path, tmp_path / "log.xlsx", "ev-xlsx")
    assert from_csv == from_xlsx
    ad = from_csv["active-directory"]
    # 07:00 GMT on Sunday is 15h after 17:00 BST on Saturday, not 16h.
    assert ad["declared_at"] == datetime(2026, 10, 24, 16, 0, tzinfo=UTC)
    assert ad["service_restored_at"] == datetime(2026, 10, 25, 7, 0, tzinfo=UTC) == when(15)
    assert from_csv["core-network"]["service_restored_at"] == datetime(2026, 10, 24, 23, 0, tzinfo=UTC)
    assert ad["result"] == "pass" and ad["sign_off"]["by"] == "Z. Ahmed"
    steps = {(s["id"], s["result"]): (s["started_at"], s["ended_at"]) for s in from_csv["sql-cluster"]["steps"]}
    assert steps[("cluster", "failed")] == (when(18), when(19))
    assert "Z. Ahmed (Head of ICT Service Delivery)" in ad["participants"]


def test_every_bad_row_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    n_good = len(rows()) + 1  # data rows start at 2
    write_csv(
        src,
        extra=[
            ["email", "activate-dag", "begun", uk(50), "X", ""],
            ["email", "activate-dag", "start", "31/02/2026 10:00", "X", ""],
            ["no-such-system", "x", "start", uk(50), "X", ""],
            ["email", "no-such-step", "start", uk(50), "X", ""],
            ["email", "activate-dag", "done", uk(50), "X", ""],  # already done in the script
            ["email", "owa-login", "pass", "25/10/2026 01:30", "X", ""],  # happens twice that night
            ["email", "owa-login", "pass", "29/03/2026 01:30", "X", ""],  # never happens in London
            ["email", "owa-login", "pass", uk(-1), "X", ""],  # before T0
        ],
    )
    ev = tmp_path / "ev"
    ev.mkdir()
    rc, out, err = run(ev, "exercise", "import", xs.NAME, "--from", str(src))
    assert rc == 2 and out == ""
    lines = err.splitlines()
    base = n_good + 1
    expect = [
        (base, "action (C)", "'begun' is not one of"),
        (base + 1, "time (D)", "not a valid date"),
        (base + 2, "runbook (A)", "no runbook 'no-such-system'"),
        (base + 3, "step (B)", "has no step 'no-such-step'"),
        (base + 4, "step (B)", "before it was started"),
        (base + 5, "time (D)", "happens twice in Europe/London"),
        (base + 6, "time (D)", "does not exist in Europe/London"),
        (base + 7, "action (C)", "before the exercise was declared"),
    ]
    assert len(lines) == len(expect), err
    for line, (row, col, needle) in zip(lines, expect, strict=True):
        assert f"row {row}, column {col}: " in line and needle in line, line
    assert list(ev.iterdir()) == []  # no journal, no lock, nothing


def test_import_refuses_a_missing_column_and_a_bad_zone(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    src = tmp_path / "x.csv"
    src.write_text("runbook,step,when\n")
    rc, _, err = run(ev, "exercise", "import", xs.NAME, "--from", str(src))
    assert rc == 2 and "row 1: missing column(s) action, time" in err and err.count("\n") == 1
    write_csv(src)
    rc, _, err = run(ev, "exercise", "import", xs.NAME, "--from", str(src), "--timezone", "Mars/Olympus")
    assert rc == 2 and "Mars/Olympus" in err
    (tmp_path / "x.txt").write_text("")
    rc, _, err = run(ev, "exercise", "import", xs.NAME, "--from", str(tmp_path / "x.txt"))
    assert rc == 2 and ".csv or .xlsx" in err
    assert list(ev.iterdir()) == []
