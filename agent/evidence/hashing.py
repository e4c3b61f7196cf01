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


Key = tuple[int, int, int, int, int]
MAX_CACHE_FILE = 16 * 1024 * 1024  # 10,000 entries take about 1.2 MB


class HashCache:
    """Thread-safe digest cache keyed by file identity and times; kept in a file between runs
    of separate processes with :meth:`load` and :meth:`save`."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._d: dict[Key, str] = {}
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._used: set[Key] = set()  # looked up or added in this run
        self._saved: dict[Key, str] = {}
        self._autosave: tuple[Path, float] | None = None
        self._last_save = time.monotonic()
        self.save_error: str | None = None  # why the last save failed

    @classmethod
    def load(cls, path: Path, save_every: float | None = None) -> HashCache:
        """The cache :meth:`save` left in ``path``. Empty (everything is hashed again) when the
        file is missing, unreadable, not a regular file of this user's that nobody else may
        write, larger than MAX_CACHE_FILE, or holds anything but [identity, sha256 hex] pairs:
        a digest in it is believed, so only the agent's own file counts. With ``save_every``, a
        digest computed that many seconds after the last save attempt saves the cache there
        again: a run killed at its timeout while hashing a large evidence directory leaves the
        next run what it had hashed."""
        from agent.fileio import read_trusted

        cache = cls()
        cache._autosave = (path, save_every) if save_every is not None else None
        try:
            raw = read_trusted(path, MAX_CACHE_FILE, forbidden=0o022)
            if raw is None:
                return cache
            entries = json.loads(raw)
            got: dict[Key, str] = {}
            for key, digest in entries[: cache.max_entries]:
                k0, k1, k2, k3, k4 = (int(k) for k in key)
                if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX):
                    raise ValueError("not a sha256")
                got[(k0, k1, k2, k3, k4)] = digest
        except Exception:  # noqa: BLE001 -- whatever the file holds (or an OSError): hash again
            return cache
        cache._d = got
        cache._saved = dict(got)
        return cache

    def save(self, path: Path, prune: bool = False) -> None:
        """Replace ``path`` (atomically, mode 0600) with the cache, unless nothing changed; with
        ``prune``, keep only the digests this run looked up or added (artefacts deleted or
        rewritten since drop out). An OSError is raised and kept in :attr:`save_error`."""
        from agent.fileio import atomic_write

        with self._lock:
            entries = {k: v for k, v in self._d.items() if k in self._used} if prune else dict(self._d)
            self._last_save = time.monotonic()
        if entries == self._saved:
            return
        try:
            atomic_write(path, json.dumps([[list(k), v] for k, v in entries.items()]), mode=0o600)
        except OSError as e:
            self.save_error = f"{path}: cannot keep the artefact digests: {e.strerror or e}"
            raise
        self._saved = entries
        self.save_error = None

    def sha256(self, path: Path) -> str:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            got = self._d.get(key)
            if got is not None:
                self.hits += 1
                self._used.add(key)
                return got
        digest = sha256_file(path)
        st2 = os.stat(path)
        with self._lock:
            self.misses += 1
            if (st2.st_dev, st2.st_ino, st2.st_size, st2.st_mtime_ns, st2.st_ctime_ns) == key:
                if len(self._d) >= self.max_entries:
                    self._d.clear()
                self._d[key] = digest
                self._used.add(key)
        if self._autosave is not None and time.monotonic() - self._last_save >= self._autosave[1]:
            with contextlib.suppress(OSError):  # kept in save_error; tried again after save_every
                self.save(self._autosave[0])
        return digest


_HEX = frozenset("0123456789abcdef")


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
