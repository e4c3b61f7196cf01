"""The one way files are written: :func:`atomic_write`.

A reader (a scrape of /reports/, the evidence verifier, a person) sees the old file or the new one,
never half of one, and after a crash or power cut the new file is either complete or absent: the
data goes to a temporary file in the same directory, which is flushed to disk, renamed over the
target (or linked to it, when an existing file must not be replaced) and the directory entry itself
flushed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
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
    tmp = spool(path, fill)
    try:
        if check is not None:
            check(tmp)
        publish(tmp, path, mode=mode, replace=replace)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def spool(path: Path, fill: Callable[[BinaryIO], object], *, dir_fd: int | None = None) -> Path:
    """The first half of :func:`atomic_fill`, for a writer that must do something between the two
    (an upload is received before the journal's lock is taken): a temporary file beside ``path``
    (mode 0600, created exclusively: never through a symbolic link), written by ``fill`` and
    flushed to disk. If ``fill`` raises, nothing is left. Give it a name with :func:`publish`;
    until then it is the caller's to remove. With ``dir_fd`` (an open directory), the file is made
    in that very directory, whatever ``path.parent`` names by then (give :func:`publish` the same)."""
    if dir_fd is None:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    else:
        for _ in range(100):
            name = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(Path(name).name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name if dir_fd is not None else tmp, dir_fd=dir_fd)
        raise
    return tmp


def spool_unnamed(dir_fd: int, fill: Callable[[BinaryIO], object]) -> int | None:
    """:func:`spool` without a name: an unnamed file (``O_TMPFILE``, mode 0600) in the open
    directory ``dir_fd``, written by ``fill`` and flushed to disk. Nobody can open, replace or swap
    it while it is written: it has no name until :func:`link_unnamed` gives it one; closing the
    returned descriptor without that leaves nothing. None (``fill`` not called) where there are no
    unnamed files -- the file system refuses them (EOPNOTSUPP; EISDIR from a kernel that predates
    them), or /proc, through which one is named, is not mounted: use :func:`spool`."""
    tmpfile = getattr(os, "O_TMPFILE", None)
    if tmpfile is None or not os.path.isdir(_PROC_FD):
        return None
    try:
        fd = os.open(".", tmpfile | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR):
            return None
        raise
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            fill(f)
            f.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def link_unnamed(fd: int, path: Path, dir_fd: int) -> None:
    """The unnamed file ``fd`` (from :func:`spool_unnamed`) takes the name ``path.name`` in the open
    directory ``dir_fd``, durably; an existing name (a symbolic link included) is never replaced:
    FileExistsError. The descriptor stays the caller's to close."""
    os.link(f"{_PROC_FD}/{fd}", path.name, dst_dir_fd=dir_fd, follow_symlinks=True)
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


_PROC_FD = "/proc/self/fd"


def publish(
    tmp: Path, path: Path, *, mode: int | None = 0o644, replace: bool = True, dir_fd: int | None = None
) -> None:
    """The second half of :func:`atomic_fill`: the complete temporary file ``tmp`` (from
    :func:`spool`) takes the name ``path``, durably. With ``replace=False`` an existing ``path``
    (a symbolic link included) is never overwritten: FileExistsError, and ``tmp`` stays. With
    ``dir_fd`` (the one given to :func:`spool`), both are names in that open directory."""
    if dir_fd is not None:
        src, dst = tmp.name, path.name
        if mode is not None:
            os.chmod(src, mode, dir_fd=dir_fd, follow_symlinks=False)
        if replace:
            os.replace(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)  # fails if it exists
            os.unlink(src, dir_fd=dir_fd)
        with contextlib.suppress(OSError):
            os.fsync(dir_fd)
        return
    if mode is not None:
        os.chmod(tmp, mode)
    if replace:
        os.replace(tmp, path)
    else:
        os.link(tmp, path)  # fails if path exists
        os.unlink(tmp)
    fsync_dir(path.parent)


def read_trusted(path: Path, limit: int, forbidden: int = 0o077) -> bytes | None:
    """What ``path`` holds if it can be trusted: a regular file (not a link, never blocking on a
    FIFO) of this user's, with none of the ``forbidden`` permission bits (default: nothing for
    group or others), of at most ``limit`` bytes; else None. FileNotFoundError (or another
    OSError) when it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symbolic link: not ours
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & forbidden:
            return None
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


def kept_secret(path: Path | None, size: int = 32, _tries: int = 1) -> tuple[bytes, str]:
    """A random key kept in ``path`` (mode 0600, created once) so what it signs outlives a restart,
    and where it came from: ``"file"``, ``"created"`` or ``"memory"`` (no path, or the file cannot
    be read or written: a fresh key for this process only). A file that cannot be trusted (a link,
    another user's, readable by others, the wrong size) is replaced by a new key."""
    if path is None:
        return os.urandom(size), "memory"
    path = Path(path)
    try:
        key = read_trusted(path, size)
        if key is not None and len(key) == size:
            return key, "file"
        replace = True
    except FileNotFoundError:
        replace = False
    except OSError:
        return os.urandom(size), "memory"
    key = os.urandom(size)
    try:
        atomic_write(path, key, mode=0o600, replace=replace)
    except FileExistsError:  # another process made it first: use theirs
        return kept_secret(path, size, _tries - 1) if _tries > 0 else (key, "memory")
    except OSError:
        return key, "memory"
    return key, "created"
