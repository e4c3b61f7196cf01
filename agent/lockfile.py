"""Lock files (the evidence sealer's, an exercise journal's): one way to open them. ``O_NOFOLLOW``
so that a symlink planted in a shared directory cannot make the agent create or lock another
file; a regular file only (a FIFO would block); mode 0600."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class LockFileError(Exception):
    """The lock file cannot be used; the message names it and says why."""


def open_lock_file(path: Path) -> int:
    """A file descriptor for ``path`` (created if missing), ready for ``fcntl.flock``."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        why = "it is a symlink" if e.errno == errno.ELOOP else (e.strerror or str(e))
        raise LockFileError(f"cannot open the lock file: {why}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LockFileError("cannot open the lock file: not a regular file")
    return fd
