"""agent.fileio.atomic_write: the one writer of files (seal, reports, backup evidence, schemas)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from agent.fileio import atomic_write, kept_secret, link_unnamed, spool_unnamed

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


def test_kept_secret_is_created_private_once_and_read_back(tmp_path: Path) -> None:
    p = tmp_path / "board.key"
    key, where = kept_secret(p)
    assert where == "created" and len(key) == 32
    assert stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_bytes() == key
    again, where = kept_secret(p)
    assert (again, where) == (key, "file")
    assert kept_secret(None)[1] == "memory" and kept_secret(None)[0] != kept_secret(None)[0]


def test_kept_secret_replaces_a_key_it_cannot_trust(tmp_path: Path) -> None:
    p = tmp_path / "board.key"
    key, _ = kept_secret(p)
    p.chmod(0o644)  # readable by others: whoever read it could forge tokens
    new, where = kept_secret(p)
    assert where == "created" and new != key and stat.S_IMODE(p.stat().st_mode) == 0o600
    p.write_bytes(b"short")
    assert kept_secret(p)[1] == "created" and len(p.read_bytes()) == 32
    elsewhere = tmp_path / "planted"
    elsewhere.write_bytes(b"k" * 32)
    elsewhere.chmod(0o600)
    p.unlink()
    p.symlink_to(elsewhere)  # a link is never followed: the key is not the planted one
    new, where = kept_secret(p)
    assert where == "created" and new != b"k" * 32 and not p.is_symlink()
    assert elsewhere.read_bytes() == b"k" * 32


def test_kept_secret_in_a_directory_it_cannot_write_lives_in_memory(tmp_path: Path) -> None:
    key, where = kept_secret(tmp_path / "missing-dir" / "board.key")
    assert where == "memory" and len(key) == 32


def test_an_unnamed_file_has_no_name_until_linked_and_never_replaces_one(tmp_path: Path) -> None:
    d = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = spool_unnamed(d, lambda f: f.write(b"evidence"))
        assert fd is not None, "tmpfs and ext4 have unnamed files"
        try:
            assert os.listdir(tmp_path) == []  # written, flushed, and nowhere to be opened or swapped
            (tmp_path / "taken").write_text("original")
            (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
            for name in ("taken", "link"):
                with pytest.raises(FileExistsError):
                    link_unnamed(fd, tmp_path / name, d)
            assert (tmp_path / "taken").read_text() == "original"
            assert not (tmp_path / "elsewhere").exists()
            link_unnamed(fd, tmp_path / "artefact.bin", d)
        finally:
            os.close(fd)
        assert (tmp_path / "artefact.bin").read_bytes() == b"evidence"
        assert stat.S_IMODE((tmp_path / "artefact.bin").stat().st_mode) == 0o600
        # A failed fill, or a file never linked, leaves nothing.
        with pytest.raises(ValueError):
            spool_unnamed(d, lambda f: (f.write(b"half"), int("x")))
        fd = spool_unnamed(d, lambda f: f.write(b"abandoned"))
        assert fd is not None
        os.close(fd)
        assert sorted(os.listdir(tmp_path)) == ["artefact.bin", "link", "taken"]
    finally:
        os.close(d)
