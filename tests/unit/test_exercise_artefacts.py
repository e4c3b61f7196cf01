"""``Recorder.add_artefact``, the one implementation behind ``exercise artefact`` and the board's
upload: hostile file names get one message (the same from the CLI), every refusal is decided
before a byte is read, a refused or failed artefact leaves nothing on disk and the journal as it
was, and nothing is written through a symbolic link."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from agent.exercises.journal import ExerciseInputError
from agent.exercises.record import ArtefactTooLarge, Recorder, artefact_name
from tests.helpers import exercise_script as xs
from tests.unit.test_exercise_status import ok, run

HOSTILE = {
    "": "artefact file name is empty",
    ".hidden": "artefact file name '.hidden' must not start with '.'",
    "..": "artefact file name '..' must not start with '.'",
    "../x": "artefact file name '../x' must be a plain file name (no '/' or '\\')",
    "a\\b.txt": "artefact file name 'a\\\\b.txt' must be a plain file name (no '/' or '\\')",
    "a\x1b[31m.txt": "artefact file name 'a\\x1b[31m.txt' contains a control character",
    "line\nbreak": "artefact file name 'line\\nbreak' contains a control character",
    "nul\x00": "artefact file name 'nul\\x00' contains a control character",
    "c1\x85": "artefact file name 'c1\\x85' contains a control character",
    os.fsdecode(b"\xff.txt"): "artefact file name '\\udcff.txt' is not valid UTF-8",
    "x" * 201: f"artefact file name {'x' * 60!r}... is longer than 200 bytes",
    "é" * 101: f"artefact file name {'é' * 60!r}... is longer than 200 bytes",
    # Names that show as another name: invisible and formatting characters, spaces at either end.
    "inv\u202egnp.exe": "artefact file name 'inv\\u202egnp.exe' contains an invisible or formatting character (U+202E)",
    "a\u200bb.txt": "artefact file name 'a\\u200bb.txt' contains an invisible or formatting character (U+200B)",
    "\ufeffx.txt": "artefact file name '\\ufeffx.txt' contains an invisible or formatting character (U+FEFF)",
    "two\u2028lines": "artefact file name 'two\\u2028lines' contains an invisible or formatting character (U+2028)",
    "x.txt ": "artefact file name 'x.txt ' must not begin or end with a space",
    " x.txt": "artefact file name ' x.txt' must not begin or end with a space",
    "x.txt\u00a0": "artefact file name 'x.txt\\xa0' must not begin or end with a space",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_names_are_refused_with_one_message(name: str) -> None:
    with pytest.raises(ExerciseInputError) as got:
        artefact_name(name)
    assert str(got.value) == HOSTILE[name]
    assert "\n" not in str(got.value)


def test_plain_names_are_kept_as_given() -> None:
    for name in ("restore log 2026-09-04.txt", "skärmdump.png", "x" * 200, "a.b.c", "日本語.pdf"):
        assert artefact_name(name) == name


def test_two_spellings_of_one_name_are_one_name() -> None:
    composed, decomposed = "caf\u00e9.txt", "cafe\u0301.txt"
    assert composed != decomposed
    assert artefact_name(decomposed) == artefact_name(composed) == composed


@pytest.fixture
def ev(tmp_path: Path) -> Path:
    d = tmp_path / "ev"
    d.mkdir()
    ok(d, "start", "ex1", "--type", "partial_recovery", "--systems", "email", "--declared-at", xs.at(0))
    return d


def _state(ev: Path) -> tuple[bytes, list[str]]:
    files = sorted(str(p.relative_to(ev)) for p in ev.rglob("*") if not p.name.endswith(".lock"))
    return (ev / "exercises" / "ex1.journal.jsonl").read_bytes(), files


class NeverRead:
    def read(self, n: int) -> bytes:
        raise AssertionError("read before the entry was known to be accepted")


def test_the_cli_names_a_file_on_disk_with_the_same_message(ev: Path, tmp_path: Path) -> None:
    for name in ("a\x1bb.txt", "back\\slash", os.fsdecode(b"\xfe\xff"), "é" * 101):
        f = tmp_path / name
        f.write_bytes(b"x")
        before = _state(ev)
        rc, out, err = run(ev, "exercise", "artefact", "ex1", "email", str(f))
        assert (rc, out) == (2, "")
        with pytest.raises(ExerciseInputError) as got:
            artefact_name(name)
        assert err == f"continuity-agent: {got.value}\n"
        assert _state(ev) == before


def test_refusals_are_decided_before_a_byte_is_read(ev: Path) -> None:
    rec = Recorder(xs.RUNBOOKS, ev, "ex1", "tester")
    before = _state(ev)
    for runbook, name, message in (
        ("payroll", "a.txt", "runbook 'payroll' is not part of this exercise"),
        ("../../x", "a.txt", "is not part of this exercise"),
        ("email", ".a", "must not start with '.'"),
    ):
        with pytest.raises(ExerciseInputError, match=message):
            rec.add_artefact(runbook, name, NeverRead(), source="test")
    assert _state(ev) == before
    rec.add_artefact("email", "a.txt", io.BytesIO(b"one"), source="test")
    before = _state(ev)
    with pytest.raises(ExerciseInputError, match="already recorded"):
        rec.add_artefact("email", "a.txt", NeverRead(), source="test")
    assert _state(ev) == before


def test_too_large_or_failing_sources_leave_nothing(ev: Path) -> None:
    rec = Recorder(xs.RUNBOOKS, ev, "ex1", "tester")
    before = _state(ev)
    with pytest.raises(ArtefactTooLarge, match=r"'big\.bin' is larger than 1 MiB"):
        rec.add_artefact("email", "big.bin", io.BytesIO(b"\0" * (2**20 + 1)), source="test", max_bytes=2**20)
    assert _state(ev) == before

    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, n: int) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise ConnectionResetError(104, "Connection reset by peer")
            return b"y" * 1000

    with pytest.raises(ExerciseInputError, match="the upload: cannot read: Connection reset by peer"):
        rec.add_artefact("email", "cut.bin", Broken(), source="the upload")
    assert _state(ev) == before
    # Exactly at the limit is taken; the sha256 is of what was stored.
    got = rec.add_artefact("email", "edge.bin", io.BytesIO(b"\1" * 2**20), source="test", max_bytes=2**20)
    assert got["file_sha256"] == hashlib.sha256(b"\1" * 2**20).hexdigest()
    assert (ev / got["path"]).read_bytes() == b"\1" * 2**20


def test_nothing_is_written_through_a_symbolic_link(ev: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (ev / "artefacts").mkdir()
    (ev / "artefacts" / "ex1").symlink_to(outside)
    rec = Recorder(xs.RUNBOOKS, ev, "ex1", "tester")
    before = _state(ev)
    with pytest.raises(ExerciseInputError, match="not a directory \\(a symbolic link\\?\\)"):
        rec.add_artefact("email", "a.txt", io.BytesIO(b"x"), source="test")
    assert list(outside.iterdir()) == [] and _state(ev) == before
    # A link in place of the file itself: refused as existing, never followed.
    (ev / "artefacts" / "ex1").unlink()
    (ev / "artefacts" / "ex1" / "email").mkdir(parents=True)
    (ev / "artefacts" / "ex1" / "email" / "b.txt").symlink_to(outside / "b.txt")
    with pytest.raises(ExerciseInputError, match="already exists"):
        rec.add_artefact("email", "b.txt", NeverRead(), source="test")
    assert list(outside.iterdir()) == []
