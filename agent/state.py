"""Latest results in memory, results and history in SQLite (WAL).

The event loop never waits on SQLite: :meth:`StateStore.put` updates memory under a lock and
queues the row for a writer thread that commits in batches. The store has one SQLite connection,
shared by the writer and the reads (:meth:`StateStore.get_kv`, :meth:`StateStore.history`): a
connection costs its page cache, lookaside and schema (130 KiB of the idle demo agent's RSS, up to
the page cache's size more once the database has grown). The writer holds it only while SQLite's
write lock is its own, so a database another process has locked delays the writer, never a read.

A failing database (full disk, read-only, corrupt, locked by another process) degrades the store
to memory-only, counted in ``continuity_state_db_errors_total``; it never stops collection. The writer keeps the rows it
could not commit and retries after ``RETRY_SECONDS``, backing off to ``MAX_RETRY_SECONDS``: once a
commit goes through, they are written and the store is healthy again.

What waits for the writer is kept small whatever the outage's length: a history row as its nine
columns only (no samples), at most ``MAX_PENDING_BYTES`` of them (the oldest beyond are dropped and
counted in ``continuity_state_db_errors_total``); for ``latest``, ``last_success`` and ``kv`` only
the newest value of each key, the result being the one the store holds in memory anyway. A result
is made JSON once per key when written, not once per run that waited.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import stat
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.plugin import Sample
from agent.samples import compact

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 10.0  # seconds a write waits for another connection's lock before it fails
RETRY_SECONDS = 5.0  # first wait before writing to a failing database again; doubles up to MAX_RETRY_SECONDS
MAX_RETRY_SECONDS = 300.0
# History rows kept for it meanwhile, in bytes as sys.getsizeof counts them (~450 per row: some
# 35,000 rows, ten hours of one run a second); the oldest beyond this are dropped and counted.
MAX_PENDING_BYTES = 16 * 2**20
CLOSE_WAIT = 5.0  # seconds close() waits for a write transaction still under way

# SQLite page cache of the store's connection, KiB. SQLite's default, 2000 KiB, fills up once the
# database is a few MiB (after a few hours) and then stays: 4 MiB of the idle agent. The writer
# appends (a few pages at the end of each table and index per batch) and a read takes a day of one
# target's rows at most; the operating system's file cache serves both as fast (docs/PERFORMANCE.md,
# "Agent memory and start-up").
PAGE_CACHE_KIB = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL, task TEXT NOT NULL, kind TEXT NOT NULL, site TEXT NOT NULL,
    started REAL NOT NULL, duration REAL NOT NULL, ok INTEGER NOT NULL,
    reason TEXT, message TEXT
);
CREATE INDEX IF NOT EXISTS results_target_time ON results (target, task, started);
CREATE INDEX IF NOT EXISTS results_time ON results (started);
CREATE TABLE IF NOT EXISTS latest (
    target TEXT NOT NULL, task TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (target, task)
);
CREATE TABLE IF NOT EXISTS last_success (
    target TEXT NOT NULL, task TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (target, task)
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class Result:
    target: str
    task: str
    kind: str
    site: str
    started: float  # Unix time the run started
    duration: float
    ok: bool
    reason: str | None = None
    message: str | None = None
    samples: Sequence[Sample] = field(default_factory=list)  # a SampleTable once stored
    partial_errors: list[tuple[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    # Results for other tasks of the target that this run produced (Collected.outcomes); stored
    # with it by StateStore.put, not part of its own JSON.
    extra: list[Result] = field(default_factory=list)
    # agent.exposition's cache: this result's exposition lines, made on the first scrape after it
    # was stored and dropped with it. Not part of the result's value.
    rendered: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> float:
        return self.started + self.duration

    def to_json(self) -> str:
        return json.dumps(
            {
                "target": self.target,
                "task": self.task,
                "kind": self.kind,
                "site": self.site,
                "started": self.started,
                "duration": self.duration,
                "ok": self.ok,
                "reason": self.reason,
                "message": self.message,
                "samples": [[s.name, s.value, dict(s.labels)] for s in self.samples],
                "partial_errors": [list(p) for p in self.partial_errors],
                "info": self.info,
            },
            default=str,
        )

    @classmethod
    def from_json(cls, text: str) -> Result:
        d = json.loads(text)
        return cls(
            target=d["target"],
            task=d["task"],
            kind=d["kind"],
            site=d["site"],
            started=float(d["started"]),
            duration=float(d["duration"]),
            ok=bool(d["ok"]),
            reason=d.get("reason"),
            message=d.get("message"),
            samples=[Sample(n, float(v), dict(lb)) for n, v, lb in d.get("samples", [])],
            partial_errors=[(str(a), str(b)) for a, b in d.get("partial_errors", [])],
            info=d.get("info") or {},
        )


Key = tuple[str, str]  # (target, task)
Row = tuple[str, str, str, str, float, float, int, str | None, str | None]  # a row of the results table


def _row_size(row: Row) -> int:
    return sys.getsizeof(row) + sum(sys.getsizeof(v) for v in row)


@dataclass
class _Outbox:
    """What waits for the state writer: history rows oldest first, the newest result per key for
    ``latest`` and ``last_success``, the newest value per kv key."""

    rows: deque[Row] = field(default_factory=deque)
    size: int = 0  # bytes of ``rows`` (_row_size)
    latest: dict[Key, Result] = field(default_factory=dict)
    last_success: dict[Key, Result] = field(default_factory=dict)
    kv: dict[str, str] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.rows or self.latest or self.last_success or self.kv)

    def add(self, r: Result) -> int:
        """Queue ``r``; the number of rows dropped to stay within MAX_PENDING_BYTES."""
        row: Row = (r.target, r.task, r.kind, r.site, r.started, r.duration, int(r.ok), r.reason, r.message)
        self.rows.append(row)
        self.size += _row_size(row)
        key = (r.target, r.task)
        self.latest[key] = r
        if r.ok:
            self.last_success[key] = r
        return self._trim()

    def merge(self, newer: _Outbox) -> int:
        """Add what was queued after this (its values win); the number of rows dropped."""
        self.rows.extend(newer.rows)
        self.size += newer.size
        self.latest.update(newer.latest)
        self.last_success.update(newer.last_success)
        self.kv.update(newer.kv)
        return self._trim()

    def _trim(self) -> int:
        dropped = 0
        while self.size > MAX_PENDING_BYTES and self.rows:
            self.size -= _row_size(self.rows.popleft())
            dropped += 1
        return dropped


@dataclass
class Snapshot:
    latest: dict[Key, Result]
    last_success: dict[Key, Result]
    errors: dict[tuple[str, str], float]  # (target, reason) -> count
    skipped: dict[tuple[str, str], float]  # (target, reason) -> scheduled runs that did not start
    last_skipped: dict[str, float]  # target -> when its last skipped run was counted
    db_healthy: bool
    db_errors: int


def make_private(state_dir: Path, db: Path) -> None:
    """State dir 0700, database 0600 (SQLite gives its -wal and -shm files the database's mode).
    Looser modes left by an older version or a hand-made directory are tightened when we own the
    file; the history of results, push tokens' use and errors is nobody else's business."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(db, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)
    for p, mode in ((state_dir, 0o700), (db, 0o600), (Path(f"{db}-wal"), 0o600), (Path(f"{db}-shm"), 0o600)):
        with contextlib.suppress(FileNotFoundError):
            st = p.lstat()
            if st.st_mode & 0o077 and st.st_uid == os.geteuid() and not stat.S_ISLNK(st.st_mode):
                os.chmod(p, mode)
                log.info("state: tightened %s to %o", p, mode)


class StateStore:
    def __init__(self, state_dir: Path | None, *, retention: float = 400 * 86400.0, clock: Any = time.time) -> None:
        self._lock = threading.Lock()
        self._latest: dict[Key, Result] = {}
        self._last_success: dict[Key, Result] = {}
        self._errors: Counter[tuple[str, str]] = Counter()
        self._skipped: Counter[tuple[str, str]] = Counter()
        self._last_skipped: dict[str, float] = {}
        self.retention = retention
        self.clock = clock
        self.db_healthy = state_dir is not None
        self.db_errors = 0
        self.path: Path | None = None
        self._outbox = _Outbox()  # guarded by _wake
        self._committing: _Outbox | None = None  # the batch the writer is committing (guarded by _wake)
        self._wake = threading.Condition(threading.Lock())  # the writer waits on it
        self._writer_idle = False
        self._stop = False
        self._writer: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None  # the writer's and the reads'
        self._conn_lock = threading.Lock()  # one user at a time: a read, or a write transaction
        if state_dir is not None:
            self._open(state_dir)

    # -- database --------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        return conn

    def _open(self, state_dir: Path) -> None:
        try:
            self.path = state_dir / "state.db"
            make_private(state_dir, self.path)
            conn = self._connect()
            conn.executescript(SCHEMA)
            self._load(conn)
            self._conn = conn
        except (sqlite3.Error, OSError) as e:
            log.error("state database in %s unusable, keeping results in memory only: %s", state_dir, e)
            self._degrade()
            return
        self._writer = threading.Thread(target=self._write_loop, name="state-writer", daemon=True)
        self._writer.start()

    def _degrade(self) -> None:
        self.db_healthy = False
        self.db_errors += 1

    def _load(self, conn: sqlite3.Connection) -> None:
        for table, dest in (("latest", self._latest), ("last_success", self._last_success)):
            for (body,) in conn.execute(f"SELECT body FROM {table}"):  # noqa: S608 - fixed names
                try:
                    r = Result.from_json(body)
                except (ValueError, KeyError, TypeError) as e:
                    log.warning("ignoring unreadable stored result: %s", e)
                    continue
                key = (r.target, r.task)
                if dest is self._last_success and self._latest.get(key) == r:
                    r = self._latest[key]  # a last success that is also the latest: one object, as put() left it
                r.samples = compact(r.samples)
                dest[key] = r

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection, in a write transaction (BEGIN IMMEDIATE) committed at the end, rolled
        back on an error. It is held only once SQLite's write lock is ours: while another process
        has the database locked, the writer waits up to ``BUSY_TIMEOUT`` (as SQLite's busy handler
        would) between attempts that leave the connection to the reads."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        pause = 0.001
        while True:
            with self._conn_lock:
                conn = self._conn
                if conn is None:
                    raise sqlite3.ProgrammingError("the state database is closed")
                try:
                    conn.execute("PRAGMA busy_timeout=0")
                    try:
                        conn.execute("BEGIN IMMEDIATE")
                    finally:
                        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
                except sqlite3.OperationalError as e:
                    if e.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                        raise
                else:
                    try:
                        yield conn
                        conn.execute("COMMIT")
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                        raise
                    return
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 0.1)

    def _write_loop(self) -> None:
        last_prune = 0.0
        retry_at, delay = 0.0, RETRY_SECONDS
        bodies: dict[int, tuple[Result, str]] = {}  # JSON made for a failed attempt, reused by the retry
        while True:
            with self._wake:
                while not self._stop and (
                    self._outbox.empty() or (not self.db_healthy and time.monotonic() < retry_at)
                ):
                    self._writer_idle = True
                    self._wake.notify_all()
                    self._wake.wait(
                        None if self.db_healthy or self._outbox.empty() else max(0.0, retry_at - time.monotonic())
                    )
                self._writer_idle = False
                stop = self._stop
                batch, self._outbox = self._outbox, _Outbox()
                self._committing = None if batch.empty() else batch
            if not batch.empty():
                error = self._commit(batch, bodies)
                if error is not None:
                    if self.db_healthy:
                        log.error("state database write failed, continuing in memory only and retrying: %s", error)
                        delay = RETRY_SECONDS
                    else:
                        delay = min(delay * 2, MAX_RETRY_SECONDS)
                    retry_at = time.monotonic() + delay
                    with self._lock, self._wake:
                        self._degrade()
                        # Back in front of what came meanwhile: the newer latest, kv and rows win.
                        self.db_errors += batch.merge(self._outbox)
                        self._outbox, self._committing = batch, None
                    dirty = {id(r) for d in (batch.latest, batch.last_success) for r in d.values()}
                    for gone in bodies.keys() - dirty:
                        del bodies[gone]
                else:
                    with self._wake:
                        self._committing = None  # in the database now
                    bodies.clear()
                    if not self.db_healthy:
                        log.warning("state database writable again: %d results kept in memory written", len(batch.rows))
                        with self._lock:
                            self.db_healthy = True
                    now = self.clock()
                    if now - last_prune > 3600:
                        last_prune = now
                        try:
                            with self._write_transaction() as conn:
                                conn.execute("DELETE FROM results WHERE started < ?", (now - self.retention,))
                        except sqlite3.Error as e:
                            log.error("state database retention pruning failed: %s", e)
            if stop:
                with self._wake:
                    self._writer_idle = True
                    self._wake.notify_all()
                return

    def _commit(self, batch: _Outbox, bodies: dict[int, tuple[Result, str]]) -> sqlite3.Error | None:
        """Write ``batch`` in one transaction; the error if it did not commit (rolled back).

        The write lock is taken first (BEGIN IMMEDIATE): a database another process holds locked
        fails there, before any result is serialised. Each key's latest result is made JSON once,
        also for its last success when that is the same result, and kept in ``bodies`` for a retry."""
        try:
            with self._write_transaction() as conn:
                conn.executemany(
                    "INSERT INTO results (target, task, kind, site, started, duration, ok, reason, message)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    batch.rows,
                )
                made = sum(len(body) for _r, body in bodies.values())  # bytes of JSON kept

                def json_of(r: Result) -> str:
                    nonlocal made
                    if (kept := bodies.get(id(r))) is not None:
                        return kept[1]
                    body = r.to_json()
                    if made + len(body) <= MAX_PENDING_BYTES:
                        bodies[id(r)] = (r, body)  # the tuple holds r: its id is not reused meanwhile
                        made += len(body)
                    return body

                for key in batch.latest.keys() | batch.last_success.keys():
                    latest, success = batch.latest.get(key), batch.last_success.get(key)
                    body = ""
                    if latest is not None:
                        body = json_of(latest)
                        conn.execute("INSERT OR REPLACE INTO latest VALUES (?, ?, ?)", (*key, body))
                    if success is not None:
                        body = body if success is latest else json_of(success)
                        conn.execute("INSERT OR REPLACE INTO last_success VALUES (?, ?, ?)", (*key, body))
                conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", batch.kv.items())
        except sqlite3.Error as e:
            return e
        return None

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until queued writes are committed, or attempted while the database is failing
        (tests, shutdown)."""
        if self._writer is None:
            return
        with self._wake:
            self._wake.wait_for(
                lambda: self._writer_idle and (self._outbox.empty() or not self.db_healthy), timeout=timeout
            )

    def close(self) -> None:
        if self._writer is not None:
            with self._wake:
                self._stop = True
                self._wake.notify_all()
            self._writer.join(timeout=10)
            self._writer = None
        # A writer still inside a transaction (a hung disk) keeps the connection: give up on closing
        # it after CLOSE_WAIT rather than hold the agent's stop past systemd's timeout.
        if self._conn is not None and self._conn_lock.acquire(timeout=CLOSE_WAIT):
            try:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            finally:
                self._conn_lock.release()

    # -- writes ----------------------------------------------------------------------------------
    def put(self, r: Result) -> None:
        for x in r.extra:
            self.put(x)
        key = (r.target, r.task)
        r.samples = compact(r.samples)
        with self._lock:
            self._latest[key] = r
            if r.ok:
                self._last_success[key] = r
            if not r.ok and r.reason:
                self._errors[(r.target, r.reason)] += 1
            for reason, _msg in r.partial_errors:
                self._errors[(r.target, reason)] += 1
        self._enqueue(r)

    def set_kv(self, key: str, value: Any) -> None:
        self._enqueue((key, json.dumps(value)))

    def get_kv(self, key: str) -> Any:
        """The newest value of ``key``: one still waiting for the writer (the database failing or
        locked, or the write under way) wins over the database's."""
        if self._conn is None:
            return None
        with self._wake:
            for box in (self._outbox, self._committing):
                if box is not None and key in box.kv:
                    return json.loads(box.kv[key])
        with self._conn_lock:
            if self._conn is None:
                return None
            try:
                row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error:
                return None
        return json.loads(row[0]) if row else None

    def _enqueue(self, item: Result | tuple[str, str]) -> None:
        if self._writer is None:  # no database (unusable at start): memory only
            return
        dropped = 0
        with self._wake:
            if isinstance(item, Result):
                dropped = self._outbox.add(item)
            else:
                self._outbox.kv[item[0]] = item[1]
            self._wake.notify_all()
        if dropped:
            with self._lock:
                self.db_errors += dropped

    def count_skipped(self, target: str, reason: str, n: int = 1) -> None:
        """``n`` scheduled runs of ``target`` did not start (reason: agent.schedule.SKIP_REASONS)."""
        with self._lock:
            self._skipped[(target, reason)] += n
            self._last_skipped[target] = self.clock()

    def forget(self, keep_targets: Iterable[str]) -> None:
        """Drop in-memory state for targets no longer configured (after a reload)."""
        keep = set(keep_targets)
        with self._lock:
            for d in (self._latest, self._last_success):
                for k in [k for k in d if k[0] not in keep]:
                    del d[k]
            for ek in [k for k in self._errors if k[0] not in keep]:
                del self._errors[ek]
            for sk in [k for k in self._skipped if k[0] not in keep]:
                del self._skipped[sk]
            for lk in [k for k in self._last_skipped if k not in keep]:
                del self._last_skipped[lk]

    # -- reads -----------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                latest=dict(self._latest),
                last_success=dict(self._last_success),
                errors=dict(self._errors),
                skipped=dict(self._skipped),
                last_skipped=dict(self._last_skipped),
                db_healthy=self.db_healthy,
                db_errors=self.db_errors,
            )

    def latest(self, target: str, task: str = "") -> Result | None:
        with self._lock:
            return self._latest.get((target, task))

    def history(self, target: str, since: float, until: float, task: str = "") -> list[tuple[float, float, bool]]:
        """(started, duration, ok) rows for one target in [since, until), oldest first."""
        if self._conn is None:
            return []
        self.flush(timeout=2.0)
        with self._conn_lock:
            if self._conn is None:
                return []
            try:
                rows = self._conn.execute(
                    "SELECT started, duration, ok FROM results WHERE target = ? AND task = ?"
                    " AND started >= ? AND started < ? ORDER BY started",
                    (target, task, since, until),
                ).fetchall()
            except sqlite3.Error as e:
                log.error("state database read failed: %s", e)
                return []
        return [(float(a), float(b), bool(c)) for a, b, c in rows]
