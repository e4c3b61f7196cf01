"""Every scheduled run that did not start is counted, once, with its reason (#20's scale finding:
an overloaded agent started 85 % of its due runs and counted none skipped).

A real agent process with its real scheduler on loopback targets: a probe to a listener that never
answers takes its whole interval (its timeout) and finds the next run due while it is still going
(``still_running``); an agent paused with SIGSTOP (no CPU, like a saturated event loop or a VM
stall) wakes up with several fire times of every target passed, which APScheduler merges into one
run without an event (``late``). Counts are checked against the elapsed time: over a window, the
runs started plus the runs counted skipped are the fire times in it."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.common import agent_process, http_get, metric_value

INTERVAL = 1.0
SKIPPED = "continuity_target_skipped_runs_total"


@contextlib.contextmanager
def _listener() -> Iterator[int]:
    """A loopback TCP port whose kernel completes the handshake; nobody ever reads or answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


def _config(tmp_path: Path, lines: list[str]) -> Path:
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        "agent: {site: hq, state_dir: state}\n"
        f"defaults: {{interval: {INTERVAL:g}s, timeout: 10s, start_jitter: 0.2}}\n"
        "targets:\n" + "\n".join(lines) + "\n"
    )
    return cfg


def _skipped(text: str, target: str) -> dict[str, float]:
    out = {}
    for reason in ("still_running", "late"):
        v = metric_value(text, SKIPPED, target=target, reason=reason)
        assert v is not None, (target, reason)
        out[reason] = v
    return out


def _runs(tmp_path: Path, target: str, since: float, until: float) -> int:
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "state.db")) as db:
        row = db.execute(
            "SELECT COUNT(*) FROM results WHERE target = ? AND task = '' AND started >= ? AND started < ?",
            (target, since, until),
        ).fetchone()
    return int(row[0])


def test_paused_agent_counts_every_passed_fire_time_and_healthy_runs_none(tmp_path: Path) -> None:
    steady, pause, n = 4.0, 4.0, 5
    with _listener() as up:
        cfg = _config(
            tmp_path, [f"  - {{name: t{i}, kind: probe, module: tcp, host: 127.0.0.1, port: {up}}}" for i in range(n)]
        )
        with agent_process(cfg) as agent:
            time.sleep(2 * INTERVAL)  # first runs done
            t0, first = time.time(), agent.metrics()
            time.sleep(steady)
            t1, before = time.time(), agent.metrics()
            page = http_get(agent.url + "/")[1].decode()
            agent.signal(signal.SIGSTOP)
            try:
                time.sleep(pause)
            finally:
                agent.signal(signal.SIGCONT)
            time.sleep(2 * INTERVAL)
            t2, after = time.time(), agent.metrics()
            api = json.loads(http_get(agent.url + "/api/v1/status")[1])
            page_after = http_get(agent.url + "/")[1].decode()
            log = agent.log()
    targets = {t["name"]: t for t in api["targets"]}
    for i in range(n):
        name = f"t{i}"
        # On schedule: a run at every fire time, nothing counted skipped.
        assert _skipped(first, name) == _skipped(before, name) == {"still_running": 0.0, "late": 0.0}
        assert abs(_runs(tmp_path, name, t0, t1) - (t1 - t0) / INTERVAL) <= 1.5
        # Paused: the fire times in the pause but the last, which runs when the agent wakes up, did
        # not start. (A run caught by the pause mid-way is still going when the scheduler wakes.)
        b, a = _skipped(before, name), _skipped(after, name)
        late = a["late"] - b["late"]
        skipped = late + a["still_running"] - b["still_running"]
        assert pause / INTERVAL - 2 <= skipped <= pause / INTERVAL + 1, (name, a, b)
        assert late >= pause / INTERVAL - 3, (name, a, b)
        runs = _runs(tmp_path, name, t1, t2)
        due = (t2 - t1) / INTERVAL
        assert abs(runs + skipped - due) <= 2, (name, runs, skipped, due)
        # The API and the status page show the target behind its schedule, and why.
        t = targets[name]
        assert t["behind_schedule"] is True
        assert t["skipped_runs_by_reason"]["late"] == a["late"]
        assert t["skipped_runs"] == a["late"] + a["still_running"]
        assert t["last_skipped_run"] >= t1
        row = next(r for r in page_after.split("<tr>") if r.startswith(f"<td>{name}</td>"))
        assert "BEHIND SCHEDULE: runs not started: " in row and "late: " in row
    assert "BEHIND SCHEDULE" not in page
    assert "not started within one interval of when they were due: the agent is overloaded or was paused" in log
