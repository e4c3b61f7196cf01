"""The one way files are written: :func:`atomic_write`.

A reader (a scrape of /reports/, the evidence verifier, a person) sees the old file or the new one,
never half of one, and after a crash or power cut the new file is either complete or absent: the
data goes to a temporary file in the same directory, which is flushed to disk, renamed over the
target (or linked to it, when an existing file must not be replaced) and the directory entry itself
flushed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (a rename or link in it) to disk. Best effort where a file system
    cannot open directories."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, *, mode: int | None = 0o644, replace: bool = True) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically and durably. ``mode`` is the file's
    permission bits (None keeps the temporary file's 0600). With ``replace=False`` an existing
    ``path`` is never overwritten: FileExistsError. The directory must exist."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    atomic_fill(path, lambda f: f.write(raw), mode=mode, replace=replace)


def atomic_fill(
    path: Path,
    fill: Callable[[BinaryIO], object],
    *,
    check: Callable[[Path], None] | None = None,
    mode: int | None = 0o644,
    replace: bool = True,
) -> None:
    """:func:`atomic_write` for content written by ``fill`` (a streamed copy, say); ``check`` sees
    the complete temporary file before it takes the name and may raise to abandon it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(Path(tmp))
        if mode is not None:
            os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
