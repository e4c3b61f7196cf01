"""Streaming sha256 of artefacts in constant memory, and safe artefact path resolution.

:func:`sha256_file` reads with ``readinto`` into one reused buffer (1 MiB), so a multi-GB
artefact costs one buffer of memory; hashlib releases the GIL while hashing large buffers.
:class:`HashCache` remembers digests by (device, inode, size, mtime, ctime) so a collector that
re-verifies every few minutes hashes each artefact once; ctime cannot be set back by a user, so
a rewritten file is hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK = 1024 * 1024


def sha256_file(path: str | os.PathLike[str], chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        with os.fdopen(fd, "rb", buffering=0, closefd=True) as f:
            fd = -1
            while True:
                n = f.readinto(view)
                if not n:
                    break
                h.update(view[:n])
    finally:
        if fd >= 0:
            os.close(fd)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class HashCache:
    """Thread-safe digest cache keyed by file identity and times; kept in a file between runs
    of separate processes with :meth:`load` and :meth:`save`."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._d: dict[tuple[int, int, int, int, int], str] = {}
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._saved: dict[tuple[int, int, int, int, int], str] = {}
        self._autosave: tuple[Path, float] | None = None
        self._last_save = time.monotonic()

    @classmethod
    def load(cls, path: Path, save_every: float | None = None) -> HashCache:
        """The cache :meth:`save` left in ``path``; empty when the file is missing or unreadable
        (everything is hashed again). With ``save_every``, a digest computed that many seconds
        after the last save saves the cache there again: a run killed at its timeout while
        hashing a large evidence directory leaves the next run what it had hashed."""
        cache = cls()
        cache._autosave = (path, save_every) if save_every is not None else None
        try:
            for key, digest in json.loads(path.read_bytes())[: cache.max_entries]:
                if isinstance(digest, str) and isinstance(key, list) and len(key) == 5:
                    k0, k1, k2, k3, k4 = (int(k) for k in key)
                    cache._d[(k0, k1, k2, k3, k4)] = digest
        except (OSError, ValueError, TypeError):
            pass
        cache._saved = dict(cache._d)
        return cache

    def save(self, path: Path) -> None:
        """Replace ``path`` (atomically, mode 0600) with the cache, unless nothing changed."""
        from agent.fileio import atomic_write

        with self._lock:
            if self._d == self._saved:
                return
            entries = dict(self._d)
        atomic_write(path, json.dumps([[list(k), v] for k, v in entries.items()]), mode=0o600)
        self._saved = entries
        self._last_save = time.monotonic()

    def sha256(self, path: Path) -> str:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            got = self._d.get(key)
            if got is not None:
                self.hits += 1
                return got
        digest = sha256_file(path)
        st2 = os.stat(path)
        with self._lock:
            self.misses += 1
            if (st2.st_dev, st2.st_ino, st2.st_size, st2.st_mtime_ns, st2.st_ctime_ns) == key:
                if len(self._d) >= self.max_entries:
                    self._d.clear()
                self._d[key] = digest
        if self._autosave is not None and time.monotonic() - self._last_save >= self._autosave[1]:
            with contextlib.suppress(OSError):  # saved again at the end, or not at all: hashed again
                self.save(self._autosave[0])
        return digest


@dataclass(frozen=True)
class ArtefactPath:
    """Where an artefact path points, decided without opening it."""

    ok: bool
    path: Path | None = None  # resolved, inside the evidence directory
    problem: str = ""  # why it is outside (path_outside_evidence) when not ok


def resolve_artefact(evidence_dir: Path, rel: str) -> ArtefactPath:
    """Absolute paths, ``..`` components and symlinks leading out of ``evidence_dir`` are refused
    before anything is opened."""
    if "\x00" in rel:
        return ArtefactPath(False, problem="path contains a NUL byte")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or rel.startswith("\\") or (len(rel) > 1 and rel[1] == ":"):
        return ArtefactPath(False, problem="absolute path")
    if ".." in pure.parts or "\\" in rel:
        return ArtefactPath(False, problem="path contains '..'" if ".." in pure.parts else "path contains '\\'")
    base = evidence_dir.resolve()
    try:
        real = Path(os.path.realpath(base / pure))
    except (OSError, ValueError) as e:
        return ArtefactPath(False, problem=f"cannot resolve: {e}")
    if real != base and base not in real.parents:
        return ArtefactPath(False, problem=f"a symbolic link leads outside the evidence directory (to {real})")
    return ArtefactPath(True, path=real)
