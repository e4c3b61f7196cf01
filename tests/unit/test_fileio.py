"""agent.fileio.atomic_write: the one writer of files (seal, reports, backup evidence, schemas)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from agent.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[2]


def test_writes_replaces_and_sets_the_mode(tmp_path: Path) -> None:
    p = tmp_path / "report.html"
    atomic_write(p, "first")
    assert p.read_text() == "first"
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    atomic_write(p, b"second\xff")
    assert p.read_bytes() == b"second\xff"
    assert os.listdir(tmp_path) == ["report.html"]  # no temporary file left behind


def test_mode_none_keeps_the_private_temporary_mode(tmp_path: Path) -> None:
    p = tmp_path / "record.yml"
    atomic_write(p, "x: 1\n", mode=None)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


def test_never_replaces_when_told_not_to(tmp_path: Path) -> None:
    p = tmp_path / "record.yml"
    p.write_text("original")
    with pytest.raises(FileExistsError):
        atomic_write(p, "new", replace=False)
    assert p.read_text() == "original"
    assert os.listdir(tmp_path) == ["record.yml"]
    q = tmp_path / "fresh.yml"
    atomic_write(q, "new", replace=False)
    assert q.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["fresh.yml", "record.yml"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing-dir" / "f.txt", "x")
    assert os.listdir(tmp_path) == []


def test_no_other_module_renames_or_makes_temporary_files_itself() -> None:
    # One helper per job: every writer in agent/ and collectors/ goes through atomic_write.
    pattern = re.compile(r"\bos\.(replace|rename)\(|\bmkstemp\(|NamedTemporaryFile\(")
    offenders = [
        str(p.relative_to(ROOT))
        for pkg in ("agent", "collectors")
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if p.name != "fileio.py" and pattern.search(p.read_text())
    ]
    assert offenders == []
