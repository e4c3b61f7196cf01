"""The exercise journal: hash chain, tamper detection naming the line, corrections as new entries,
and the CLI's bad-input rules (exit 2, one line, journal byte-for-byte unchanged)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import cli
from agent.exercises.journal import ExerciseInputError, Journal, JournalCorrupt, parse_journal
from agent.exercises.model import load_estate, replay

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "runbooks"
RUNBOOKS = Path()  # set per test: a copy of three shipped runbooks (YAML loading dominates a CLI call)
T0 = (datetime.now(UTC) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def run(ev: Path, *args: str) -> int:
    try:
        return cli.main(["exercise", args[0], "--runbooks", str(RUNBOOKS), "--evidence", str(ev), *args[1:]])
    except SystemExit as e:  # argparse usage errors
        return int(e.code or 0)


@pytest.fixture(autouse=True)
def runbooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "runbooks"
    d.mkdir()
    for name in ("estate.yml", "recovery-centre.yml", "core-network.yml", "active-directory.yml"):
        shutil.copy(SHIPPED / name, d / name)
    monkeypatch.setattr(sys.modules[__name__], "RUNBOOKS", d)
    return d


@pytest.fixture
def ev(tmp_path: Path) -> Path:
    d = tmp_path / "evidence"
    d.mkdir()
    assert (
        run(
            d,
            "start",
            "ex1",
            "--type",
            "full_recovery",
            "--systems",
            "core-network,active-directory",
            "--declared-at",
            at(0),
        )
        == 0
    )
    assert run(d, "participant", "ex1", "--name", "A. Engineer", "--role", "Network Engineer") == 0
    assert run(d, "step", "ex1", "core-network", "dr-wan", "start", "--at", at(0.5), "--operator", "A. Engineer") == 0
    assert run(d, "step", "ex1", "core-network", "dr-wan", "done", "--at", at(2.5)) == 0
    assert run(d, "step", "ex1", "core-network", "core-switches", "start", "--at", at(0.5)) == 0
    return d


def journal(ev: Path) -> Path:
    return ev / "exercises" / "ex1.journal.jsonl"


def test_entries_are_chained_and_replay(ev: Path) -> None:
    entries = Journal.open(ev, "ex1").read()
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0]["prev_sha256"] is None
    for a, b in itertools.pairwise(entries):
        assert b["prev_sha256"] == a["sha256"]
    assert entries[2]["at"] == at(0.5) and entries[2]["recorded_at"] != entries[2]["at"]
    assert entries[3]["operator"] == entries[3]["actor"]  # default operator is the actor
    log = replay(entries, load_estate(RUNBOOKS))
    cn = log.systems["core-network"]
    assert cn.done("dr-wan") == T0 + timedelta(hours=2.5)
    assert cn.latest("core-switches") is not None and cn.latest("core-switches").result is None  # type: ignore[union-attr]
    assert log.participants == [("A. Engineer", "Network Engineer")]


def _tamper_cases(data: bytes) -> dict[str, tuple[bytes, int]]:
    lines = data.split(b"\n")[:-1]
    changed = bytearray(data)
    pos = data.index(b"A. Engineer")  # line 2
    changed[pos] = ord("B")
    return {
        "byte changed": (bytes(changed), 2),
        "line removed": (b"\n".join(lines[:2] + lines[3:]) + b"\n", 3),
        "lines swapped": (b"\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + b"\n", 2),
        "last line cut": (data[:-10], 5),
    }


@pytest.mark.parametrize("case", ["byte changed", "line removed", "lines swapped", "last line cut"])
def test_tampering_is_detected_and_named_and_blocks_writes(
    ev: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = journal(ev)
    bad, line = _tamper_cases(path.read_bytes())[case]
    path.write_bytes(bad)
    with pytest.raises(JournalCorrupt, match=rf": line {line}: "):
        Journal.open(ev, "ex1").read()
    capsys.readouterr()
    assert run(ev, "step", "ex1", "core-network", "core-switches", "done", "--at", at(2)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"line {line}" in err and "accepts no more entries" in err
    assert path.read_bytes() == bad


def test_a_changed_line_recomputed_alone_still_breaks_the_next_link(ev: Path) -> None:
    path = journal(ev)
    entries = parse_journal(path.read_bytes(), path)
    from agent.exercises.journal import canonical, entry_sha256

    entries[1]["name"] = "Mallory"
    entries[1]["sha256"] = entry_sha256(entries[1])
    path.write_bytes(b"".join(canonical(e) + b"\n" for e in entries))
    with pytest.raises(JournalCorrupt, match="line 3: prev_sha256"):
        Journal.open(ev, "ex1").read()


BAD_INPUT = {
    "unknown exercise": ("step", "nope", "core-network", "dr-wan", "start"),
    "unknown runbook": ("step", "ex1", "recovery-centre", "power-cooling", "start"),
    "runbook not in the runbooks": ("restored", "ex1", "no-such-system"),
    "unknown step": ("step", "ex1", "core-network", "no-such-step", "start"),
    "unknown validation": ("validate", "ex1", "core-network", "no-such-check", "pass", "--by", "X"),
    "done before start": ("step", "ex1", "core-network", "firewalls", "done"),
    "second start of a step": ("step", "ex1", "core-network", "core-switches", "start"),
    "step done twice": ("step", "ex1", "core-network", "dr-wan", "start"),
    "second start": ("start", "ex1", "--type", "full_recovery"),
    "time before T0": ("step", "ex1", "core-network", "firewalls", "start", "--at", "2000-01-01T00:00:00+00:00"),
    "time in the future": ("restored", "ex1", "core-network", "--at", at(24 * 30)),
    "naive time": ("restored", "ex1", "core-network", "--at", "2026-01-01T00:00:00"),
    "not a time": ("restored", "ex1", "core-network", "--at", "yesterday"),
    "path characters": ("participant", "../ex1", "--name", "X", "--role", "Y"),
    "slash in name": ("start", "a/b", "--type", "tabletop"),
    "bad state": ("step", "ex1", "core-network", "dr-wan", "half-done"),
    "bad type": ("start", "ex2", "--type", "automated_restore"),
    "unknown system": ("start", "ex2", "--type", "tabletop", "--systems", "core-network,nope"),
    "bad due date": ("action", "ex1", "core-network", "--description", "x", "--owner", "y", "--due", "31/12/2026"),
    "multi-line note": ("step", "ex1", "core-network", "firewalls", "start", "--note", "a\nb"),
    "void unknown seq": ("void", "ex1", "99", "--reason", "typo"),
    "void the start": ("void", "ex1", "1", "--reason", "typo"),
    "amend a forbidden field": ("amend", "ex1", "2", "--operator", "X"),
    "amend makes done before start": ("amend", "ex1", "4", "--at", at(0.25)),
    "artefact missing": ("artefact", "ex1", "core-network", "/no/such/file"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_exit_2_one_line_journal_unchanged(ev: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = journal(ev).read_bytes()
    files_before = sorted(p.relative_to(ev) for p in ev.rglob("*"))
    capsys.readouterr()
    assert run(ev, *BAD_INPUT[case]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count("\n") == 1 and out.err.startswith("continuity-agent"), out.err
    assert "Traceback" not in out.err
    assert journal(ev).read_bytes() == before
    assert sorted(p.relative_to(ev) for p in ev.rglob("*")) == files_before


def test_amend_and_void_are_new_entries(ev: Path) -> None:
    before = journal(ev).read_bytes()
    assert run(ev, "amend", "ex1", "4", "--at", at(2.25)) == 0
    assert run(ev, "void", "ex1", "5", "--reason", "recorded against the wrong step") == 0
    after = journal(ev).read_bytes()
    assert after.startswith(before)
    log = replay(Journal.open(ev, "ex1").read(), load_estate(RUNBOOKS))
    cn = log.systems["core-network"]
    assert cn.done("dr-wan") == T0 + timedelta(hours=2.25)
    assert cn.latest("core-switches") is None  # voided
    # After the void the step can be started again.
    assert run(ev, "step", "ex1", "core-network", "core-switches", "start", "--at", at(1)) == 0


def test_failed_step_can_be_retried(ev: Path) -> None:
    assert run(ev, "step", "ex1", "core-network", "core-switches", "failed", "--at", at(1)) == 0
    assert run(ev, "step", "ex1", "core-network", "core-switches", "start", "--at", at(1.5)) == 0
    assert run(ev, "step", "ex1", "core-network", "core-switches", "done", "--at", at(2)) == 0
    cn = replay(Journal.open(ev, "ex1").read(), load_estate(RUNBOOKS)).systems["core-network"]
    assert [a.result for a in cn.attempts if a.step == "core-switches"] == ["failed", "ok"]


def test_artefact_is_copied_and_hashed(ev: Path, tmp_path: Path) -> None:
    src = tmp_path / "wan-log.txt"
    src.write_text("BGP established\n")
    assert run(ev, "artefact", "ex1", "core-network", str(src)) == 0
    e = Journal.open(ev, "ex1").read()[-1]
    assert e["path"] == "artefacts/ex1/core-network/wan-log.txt"
    assert (ev / e["path"]).read_text() == "BGP established\n"
    import hashlib

    assert e["file_sha256"] == hashlib.sha256(b"BGP established\n").hexdigest()
    before = journal(ev).read_bytes()
    assert run(ev, "artefact", "ex1", "core-network", str(src)) == 2  # same name twice
    assert journal(ev).read_bytes() == before


def test_one_lock_many_writers_in_threads(ev: Path) -> None:
    import threading

    j = Journal.open(ev, "ex1")
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for i in range(25):
                j.append(f"w{k}", "participant", {"name": f"P{k}-{i}", "role": "r"})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    names = [e["name"] for e in j.read() if e["action"] == "participant"]
    assert sorted(names) == sorted(["A. Engineer"] + [f"P{k}-{i}" for k in range(4) for i in range(25)])


def test_read_errors_name_the_journal(tmp_path: Path) -> None:
    with pytest.raises(ExerciseInputError, match="no exercise 'x'"):
        Journal.open(tmp_path, "x").read()
    p = tmp_path / "j.jsonl"
    with pytest.raises(JournalCorrupt, match=r"j.jsonl: line 1: not a JSON object"):
        parse_journal(b"{nope\n", p)
    with pytest.raises(JournalCorrupt, match=r"line 1: not a journal entry"):
        parse_journal(json.dumps({"seq": 1}).encode() + b"\n", p)


def test_real_entry_point_bad_input(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "exercise",
            "restored",
            "--runbooks",
            str(RUNBOOKS),
            "--evidence",
            str(tmp_path),
            "a/b",
            "core-network",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


def test_a_start_that_crashed_before_writing_can_be_repeated(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    (ev / "exercises").mkdir(parents=True)
    (ev / "exercises" / "ex2.journal.jsonl").write_bytes(b"")  # created, nothing written, process killed
    assert run(ev, "start", "ex2", "--type", "tabletop", "--systems", "core-network") == 0
    assert [e["action"] for e in Journal.open(ev, "ex2").read()] == ["start"]
