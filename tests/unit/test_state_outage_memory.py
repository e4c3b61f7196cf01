"""The state writer while its database fails (a real SQLite database, locked or refusing writes
from another connection): what it keeps for the retry is small and bounded in bytes whatever the
number of results, the newest latest/last_success survive, the history rows written once it
recovers are the kept ones in order with none twice, drops are counted, and a retry does not make
every waiting result JSON again. The store's one connection serves the reads meanwhile."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.state as state
from agent.plugin import Sample
from agent.state import Result, StateStore
from tests.helpers.common import wait_until

T0 = time.time() - 86400.0  # runs a day ago: within the store's retention
PORTS = 48
COUNTERS = ("in_octets", "out_octets", "in_ucast", "out_ucast", "in_errors", "out_errors", "in_discards")
COUNTERS += ("out_discards", "speed", "oper")


def snmp_result(target: str, started: float, ok: bool = True) -> Result:
    """A 48-port interface poll (some 60 KiB of JSON): 10 series per port with its name, alias and description."""
    started += T0
    samples = [
        Sample(
            f"continuity_snmp_if_{c}",
            started + i + j,
            {"ifIndex": str(i + 1), "ifName": f"Gi1/0/{i + 1}", "ifAlias": f"uplink {target} {i}", "ifDescr": "Gi"},
        )
        for i in range(PORTS)
        for j, c in enumerate(COUNTERS)
    ]
    return Result(
        target=target,
        task="",
        kind="snmp",
        site="hq",
        started=started,
        duration=0.5,
        ok=ok,
        reason=None if ok else "timeout",
        message=None if ok else f"no reply {started}",
        samples=samples,
    )


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "BUSY_TIMEOUT", 0.2)
    monkeypatch.setattr(state, "RETRY_SECONDS", 0.05)
    monkeypatch.setattr(state, "MAX_RETRY_SECONDS", 0.2)


@pytest.fixture
def to_json_calls(monkeypatch: pytest.MonkeyPatch) -> list[Result]:
    calls: list[Result] = []
    real = Result.to_json

    def counting(self: Result) -> str:
        calls.append(self)
        return real(self)

    monkeypatch.setattr(Result, "to_json", counting)
    return calls


@contextlib.contextmanager
def locked(db: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holds the database's write lock."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def rows(db: Path) -> list[tuple[str, float, int, str | None]]:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as c:
        return c.execute("SELECT target, started, ok, message FROM results ORDER BY id").fetchall()


def bodies(db: Path, table: str) -> dict[str, dict[str, object]]:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as c:
        got = c.execute(f"SELECT target, body FROM {table}").fetchall()
    return {t: json.loads(b) for t, b in got}


def test_locked_database_keeps_little_and_writes_the_newest(
    tmp_path: Path, fast: None, to_json_calls: list[Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 SNMP-sized results of 4 targets while the database is locked: the rows kept are
    within MAX_PENDING_BYTES (made small here so that some are dropped), the results' samples are
    not kept beyond the newest per target, nothing is made JSON while locked however often it
    retries, and after the lock the kept rows are written in order, once each."""
    bound = 64 * 1024
    monkeypatch.setattr(state, "MAX_PENDING_BYTES", bound)
    store = StateStore(tmp_path)
    db = tmp_path / "state.db"
    try:
        store.put(snmp_result("t0", 1.0))
        store.flush()
        assert store.db_healthy and len(rows(db)) == 1
        fed: list[tuple[str, float, int, str | None]] = []
        with locked(db):
            store.put(snmp_result("t0", 2.0))
            fed.append(("t0", T0 + 2.0, 1, None))
            wait_until(lambda: not store.db_healthy, 10, what="the writer to give up on the lock")
            errors_before = store.db_errors
            to_json_calls.clear()
            gc.collect()
            tracemalloc.start()
            try:
                base, _ = tracemalloc.get_traced_memory()
                for n in range(400):
                    target, ok = f"t{n % 4}", n % 7 != 3
                    started = 10.0 + n
                    store.put(snmp_result(target, started, ok))
                    fed.append((target, T0 + started, int(ok), None if ok else f"no reply {T0 + started}"))
                gc.collect()
                held = tracemalloc.get_traced_memory()[0] - base
            finally:
                tracemalloc.stop()
            attempts = store.db_errors
            wait_until(lambda: store.db_errors >= attempts + 3, 10, what="three more retries")
            with store._wake:
                assert store._outbox.size <= bound
            # One SNMP result is some 20 KiB in memory: 400 of them would be 8 MiB. Kept: the
            # rows within the bound (twice that while an attempt holds some and more arrive), the
            # newest result per target (4 for latest, 4 for last success).
            assert held < 2 * bound + 8 * 64 * 1024, held
            assert to_json_calls == [], "made JSON while the database was locked"
        wait_until(lambda: store.db_healthy, 10, what="the store to write again")
        store.flush()
        written = rows(db)
        kept = len(written) - 1
        assert written[0][:2] == ("t0", T0 + 1.0)
        assert 0 < kept < len(fed)
        assert written[1:] == fed[-kept:], "the newest rows, in the order they came, each once"
        # Every row dropped is counted (with the failed attempts).
        assert store.db_errors - errors_before >= len(fed) - kept
        # Each target's newest result and newest success, made JSON once each.
        latest, success = bodies(db, "latest"), bodies(db, "last_success")
        for i in range(4):
            newest = [f for f in fed if f[0] == f"t{i}"][-1]
            newest_ok = [f for f in fed if f[0] == f"t{i}" and f[2]][-1]
            assert latest[f"t{i}"]["started"] == newest[1]
            assert success[f"t{i}"]["started"] == newest_ok[1]
            assert len(success[f"t{i}"]["samples"]) == PORTS * len(COUNTERS)
        assert len(to_json_calls) == len({id(r) for r in to_json_calls}) <= 8
    finally:
        store.close()


def test_a_failed_transaction_is_rolled_back_and_retried_without_new_json(
    tmp_path: Path, fast: None, to_json_calls: list[Result]
) -> None:
    """The database refuses the write after the results were made JSON (here a trigger another
    connection put on ``kv``, written last, as a full disk fails a commit): the transaction is rolled back,
    no history row is written twice once it works again, and the retries reuse the JSON made for
    the first attempt instead of making it again for every result that waited."""
    store = StateStore(tmp_path)
    db = tmp_path / "state.db"
    try:
        store.put(snmp_result("t0", 1.0))
        store.flush()
        with contextlib.closing(sqlite3.connect(db, isolation_level=None, timeout=5)) as other:
            other.execute("CREATE TRIGGER refuse BEFORE INSERT ON kv BEGIN SELECT RAISE(ABORT, 'refused'); END")
            results = [snmp_result(f"t{n % 2}", 10.0 + n) for n in range(200)]
            to_json_calls.clear()
            store.set_kv("k", 1)
            for r in results:
                store.put(r)
            del results, r
            wait_until(lambda: not store.db_healthy, 10, what="the write to fail")
            attempts = store.db_errors
            # The second attempt from now began after the last put: it made the JSON of both.
            wait_until(lambda: store.db_errors >= attempts + 2, 10, what="two retries")
            made = len(to_json_calls)
            assert 0 < made < 100, "made JSON for each of the 200 results that waited"
            assert len({id(r) for r in to_json_calls}) == made, "a result made JSON twice"
            attempts = store.db_errors
            wait_until(lambda: store.db_errors >= attempts + 3, 10, what="three more retries")
            assert len(rows(db)) == 1, "a refused transaction left rows"
            assert len(to_json_calls) == made, "a retry made the JSON again"
            store.put(snmp_result("t0", 500.0))  # a newer result for one target: its JSON is made
            attempts = store.db_errors
            wait_until(lambda: store.db_errors >= attempts + 2, 10, what="two more retries")
            assert len(to_json_calls) == made + 1
            other.execute("DROP TRIGGER refuse")
        wait_until(lambda: store.db_healthy, 10, what="the store to write again")
        store.flush()
        started = [r[1] - T0 for r in rows(db)]
        assert started == [1.0, *(10.0 + n for n in range(200)), 500.0]
        assert {t: b["started"] for t, b in bodies(db, "latest").items()} == {"t0": T0 + 500.0, "t1": T0 + 209.0}
        assert store.get_kv("k") == 1
    finally:
        store.close()


def test_kv_keeps_the_newest_value_per_key(tmp_path: Path, fast: None) -> None:
    store = StateStore(tmp_path)
    db = tmp_path / "state.db"
    try:
        store.set_kv("a", 0)
        store.flush()
        with locked(db):
            store.put(snmp_result("t0", 1.0))
            wait_until(lambda: not store.db_healthy, 10, what="the writer to give up on the lock")
            for n in range(1000):
                store.set_kv("a", n)
                store.set_kv(f"b{n % 3}", {"n": n})
            with store._wake:
                assert len(store._outbox.kv) == 4
        wait_until(lambda: store.db_healthy, 10, what="the store to write again")
        store.flush()
        assert store.get_kv("a") == 999
        assert [store.get_kv(f"b{i}") for i in range(3)] == [{"n": 999}, {"n": 997}, {"n": 998}]
    finally:
        store.close()


def test_one_connection_serves_the_writer_and_the_reads(tmp_path: Path) -> None:
    """Writes, kv and history reads all go through one SQLite connection (each costs its own page
    cache, lookaside and schema): the process has the database file open once."""
    store = StateStore(tmp_path)
    try:
        store.put(snmp_result("t0", 1.0))
        store.set_kv("k", {"n": 1})
        store.flush()
        assert store.get_kv("k") == {"n": 1}
        assert [r[0] - T0 for r in store.history("t0", T0, T0 + 10.0)] == [1.0]
        db = str(tmp_path / "state.db")
        fds = [fd for fd in os.listdir("/proc/self/fd") if _target(f"/proc/self/fd/{fd}") == db]
        assert len(fds) == 1, fds
    finally:
        store.close()


def _target(link: str) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def test_reads_go_on_while_another_process_holds_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another connection holds the write lock, the writer waits for it (up to BUSY_TIMEOUT)
    without holding the store's connection: kv and history reads answer from what was committed,
    long before that wait could end, and the waiting result is written once the lock goes."""
    monkeypatch.setattr(state, "BUSY_TIMEOUT", 60.0)
    store = StateStore(tmp_path)
    db = tmp_path / "state.db"
    try:
        store.put(snmp_result("t0", 1.0))
        store.set_kv("k", 1)
        store.flush()
        got: list[object] = []
        with locked(db):
            store.put(snmp_result("t0", 2.0))
            wait_until(lambda: not store._writer_idle, 10, what="the writer to wait for the lock")

            def read() -> None:
                got.append(store.get_kv("k"))
                got.append([r[0] - T0 for r in store.history("t0", T0, T0 + 10.0)])

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            reader.join(20)  # a read held up by the writer's wait would take 60 s
            assert not reader.is_alive(), "a read waited for the writer, which waits for the lock"
            assert got == [1, [1.0]]
            assert not store._writer_idle and store.db_healthy, "the writer gave up before BUSY_TIMEOUT"
        store.flush()
        assert store.db_healthy
        assert [r[1] - T0 for r in rows(db)] == [1.0, 2.0]
    finally:
        store.close()


def test_close_gives_up_on_a_connection_held_by_a_hung_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write transaction that never ends (the state disk hung in fsync, simulated by holding the
    connection's lock: a real hung disk cannot be made on demand) must not hold the agent's stop
    past CLOSE_WAIT; once the lock is free, close() closes the connection, and a second close()
    is harmless."""
    monkeypatch.setattr(state, "CLOSE_WAIT", 0.3)
    store = StateStore(tmp_path)
    store._conn_lock.acquire()
    try:
        t0 = time.monotonic()
        store.close()
        assert time.monotonic() - t0 < 5
        assert store._conn is not None  # not closed under a transaction
    finally:
        store._conn_lock.release()
    store.close()
    assert store._conn is None
    store.close()
