"""Crash safety of the state database: ``kill -9`` in the middle of heavy writes, 20 times, and a
full disk under ``state_dir`` (a tiny tmpfs), which must degrade to memory-only, never crash."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.state import Result, StateStore
from tests.helpers.common import agent_process, metric_value, need_root, unavailable, wait_until

ROUNDS = 20

# A writer as hard as the agent could ever be: results queued as fast as Python makes them. After
# each flush it prints the highest sequence number that is committed.
WRITER = r"""
import sys, time
from pathlib import Path
from agent.state import Result, StateStore
store = StateStore(Path(sys.argv[1]), retention=1e12)  # rows use small fake times
assert store.db_healthy, "database did not open"
seq = int(sys.argv[2])
print("open", flush=True)
while True:
    for _ in range(400):
        seq += 1
        store.put(Result(f"t{seq % 50}", "", "probe", "hq", float(seq), 0.01, seq % 7 != 0,
                         None if seq % 7 else "timeout", None if seq % 7 else "m" * 200))
    store.flush(timeout=30)
    print(f"committed {seq}", flush=True)
"""


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def test_kill_9_during_heavy_writes_20_times(tmp_path: Path) -> None:
    state = tmp_path / "state"
    db = state / "state.db"
    rng = random.Random(10)
    committed = 0
    for rnd in range(ROUNDS):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(state), str(committed + 1_000_000 * (rnd + 1))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == "open", proc.stderr.read() if proc.stderr else ""
        # Let a few batches commit, then kill in the middle of the next one.
        last = 0
        want = rng.randint(1, 4)
        t_end = time.monotonic() + 20
        while want and time.monotonic() < t_end:
            line = proc.stdout.readline()
            if line.startswith("committed"):
                last = int(line.split()[1])
                want -= 1
        time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
        assert last > 0, f"round {rnd}: nothing committed before the kill"
        committed = last
        assert _integrity(db) == "ok", f"round {rnd}"
        conn = sqlite3.connect(db)
        try:
            (top,) = conn.execute("SELECT max(started) FROM results").fetchone()
        finally:
            conn.close()
        assert top >= last, f"round {rnd}: committed result {last} lost (newest row {top})"
        # The store opens again, healthy, with the latest result of every target loaded.
        store = StateStore(state, retention=1e12)
        try:
            assert store.db_healthy
            snap = store.snapshot()
            assert len(snap.latest) == 50
            assert max(r.started for r in snap.latest.values()) >= last
        finally:
            store.close()


@pytest.mark.slow
def test_agent_restarts_cleanly_after_kill_9(tmp_path: Path) -> None:
    lines = [
        f"  - {{name: p{i}, kind: probe, module: tcp, host: 127.0.0.1, port: 1, interval: 1s, timeout: 200ms}}"
        for i in range(40)
    ]
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        "agent: {site: hq, state_dir: state}\n"
        "defaults: {start_jitter: 0.2}\n"
        "targets:\n  - {name: host, kind: host, interval: 1s}\n" + "\n".join(lines) + "\n"
    )
    last_ok_before = None
    for _ in range(3):
        with agent_process(cfg) as agent:
            m = agent.metrics()
            assert metric_value(m, "continuity_state_db_healthy") == 1.0
            if last_ok_before is not None:
                # The last success from before the kill was committed and is loaded again.
                after = metric_value(m, "continuity_target_last_success_timestamp_seconds", target="host")
                assert after is not None and after >= last_ok_before
            wait_until(
                lambda a=agent: metric_value(a.metrics(), "continuity_target_up", target="host") == 1.0,
                what="host collected",
            )
            time.sleep(2.5)
            last_ok_before = metric_value(
                agent.metrics(), "continuity_target_last_success_timestamp_seconds", target="host"
            )
            time.sleep(0.3)  # the writer commits in well under a second
            agent.proc.send_signal(signal.SIGKILL)
            agent.proc.wait(10)
        assert _integrity(tmp_path / "state" / "state.db") == "ok"


# -- full disk -------------------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    need_root("mounting a tmpfs")
    opts = f"size={size},mode=0700"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        unavailable(f"cannot mount tmpfs: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(d: Path) -> None:
    """Write until the file system is full (ENOSPC)."""
    with contextlib.suppress(OSError), open(d / "filler", "wb", buffering=0) as f:
        for _ in range(100_000):
            f.write(b"\0" * 4096)
    assert os.statvfs(d).f_bavail == 0


def test_full_disk_degrades_to_memory_only_store(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "state") as d:
        store = StateStore(d)
        assert store.db_healthy
        _fill(d)
        for i in range(3000):
            store.put(Result(f"t{i % 10}", "", "probe", "hq", float(i), 0.01, True, None, "x" * 300))
        store.flush(timeout=20)
        snap = store.snapshot()
        assert not snap.db_healthy and snap.db_errors >= 1
        assert len(snap.latest) == 10 and snap.latest[("t9", "")].started == 2999.0  # memory still current
        store.put(Result("t0", "", "probe", "hq", 5000.0, 0.01, True))
        assert store.latest("t0").started == 5000.0  # type: ignore[union-attr]
        store.set_kv("k", {"a": 1})
        store.history("t0", 0, 1e9)
        store.close()


def test_full_disk_at_start_up_still_runs(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "state", size="64k") as d:
        _fill(d)
        store = StateStore(d)
        assert not store.db_healthy and store.db_errors == 1
        store.put(Result("a", "", "probe", "hq", 1.0, 0.01, True))
        assert store.latest("a") is not None
        store.close()


@pytest.mark.slow
def test_agent_with_full_state_disk_keeps_serving(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "state", size="8m") as d:  # room for the WAL until filled
        lines = [
            f"  - {{name: p{i}, kind: probe, module: tcp, host: 127.0.0.1, port: 1, interval: 500ms, timeout: 100ms}}"
            for i in range(30)
        ]
        cfg = tmp_path / "agent.yml"
        cfg.write_text(
            f"agent: {{site: hq, state_dir: {d}}}\ndefaults: {{start_jitter: 0.1}}\n"
            "targets:\n  - {name: host, kind: host, interval: 1s}\n" + "\n".join(lines) + "\n"
        )
        with agent_process(cfg) as agent:
            assert metric_value(agent.metrics(), "continuity_state_db_healthy") == 1.0
            _fill(d)

            def degraded() -> bool:
                m = agent.metrics()
                return metric_value(m, "continuity_state_db_healthy") == 0.0

            wait_until(degraded, timeout=30, what="state db marked unhealthy")
            m = agent.metrics()
            assert (metric_value(m, "continuity_state_db_errors_total") or 0) >= 1
            # Collection goes on in memory: the host target keeps getting fresh results.
            t1 = metric_value(m, "continuity_target_last_success_timestamp_seconds", target="host")
            time.sleep(2.5)
            t0 = time.perf_counter()
            m2 = agent.metrics()
            assert time.perf_counter() - t0 < 1.0
            t2 = metric_value(m2, "continuity_target_last_success_timestamp_seconds", target="host")
            assert t1 is not None and t2 is not None and t2 > t1
            assert agent.proc.poll() is None
            log = agent.log()
            assert "continuing in memory only" in log or "unusable" in log
            assert "Traceback" not in log
