"""Scheduler behaviour that needs a collector a real peer cannot produce: one that ignores
cancellation and so outlives its interval."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, SchedulerEvent

from agent.config import load_config
from agent.service import Agent
from collectors.base import Collected
from tests.helpers.common import http_get, metric_value


def _overrun(agent: Agent, target: str, seconds: float) -> None:
    """The target's next runs take ``seconds`` whatever their timeout, like a blocking call that
    cannot be interrupted: shielded from the runner's cancellation."""
    col, task = agent.tasks[(target, "")]

    async def uncancellable() -> Collected:
        await asyncio.shield(asyncio.sleep(seconds))
        return Collected()

    agent.tasks[(target, "")] = (col, replace(task, run=uncancellable))


def test_overrunning_task_is_skipped_and_counted_and_others_keep_running(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        "agent: {site: hq, state_dir: state, listen_address: '127.0.0.1:0'}\n"
        "defaults: {interval: 1s, timeout: 1s, start_jitter: 0}\n"
        "targets:\n  - {name: stuck, kind: host}\n  - {name: fine, kind: host}\n"
    )
    loaded = load_config(cfg)

    async def main() -> tuple[float, float, int]:
        agent = Agent(loaded)
        await agent.start()
        _overrun(agent, "stuck", 3.5)
        await asyncio.sleep(6)
        snap = agent.store.snapshot()
        fine_runs = len(agent.store.history("fine", time.time() - 10, time.time() + 1))
        await agent.stop()
        return (
            snap.skipped.get(("stuck", "still_running"), 0),
            sum(snap.skipped.get(("fine", r), 0) for r in ("still_running", "late")),
            fine_runs,
        )

    skipped_stuck, skipped_fine, fine_runs = asyncio.run(main())
    assert skipped_stuck >= 2
    assert skipped_fine == 0
    assert fine_runs >= 5  # one per second despite the stuck neighbour



def test_skipped_and_misfired_runs_are_counted_and_logged_by_the_agent_not_apscheduler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real scheduler driven into both conditions APScheduler logs a warning for every run of:
    a fire time that finds the previous run still going (max instances reached), and a run
    submitted on time whose task starts more than its grace time (one interval) late because the
    event loop was blocked in between (misfire). The ledger counts both; APScheduler's own lines are
    dropped and the agent's rate-limited line says it instead. An APScheduler that words its
    warnings differently fails here (its lines get through) instead of flooding the log."""
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        "agent: {site: hq, state_dir: state, listen_address: '127.0.0.1:0'}\n"
        "defaults: {interval: 1s, timeout: 1s, start_jitter: 0}\n"
        "targets:\n  - {name: stuck, kind: host}\n  - {name: delayed, kind: host}\n"
    )
    loaded = load_config(cfg)
    caplog.set_level(logging.WARNING)

    async def main() -> tuple[list[tuple[int, str]], str]:
        agent = Agent(loaded)
        await agent.start()
        assert agent.scheduler is not None and agent.http is not None
        seen: list[tuple[int, str]] = []

        def on_event(ev: SchedulerEvent) -> None:
            seen.append((ev.code, getattr(ev, "job_id", "")))
            if seen.count((EVENT_JOB_SUBMITTED, "delayed")) == 2 and seen[-1] == (EVENT_JOB_SUBMITTED, "delayed"):
                # delayed's second run is submitted (stuck's first is still going) and the loop is
                # blocked before that run's task can start.
                time.sleep(2.5)

        agent.scheduler.add_listener(on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        _overrun(agent, "stuck", 4.5)
        await asyncio.sleep(5)
        status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{agent.http.port}/metrics")
        assert status == 200
        await agent.stop()
        return seen, body.decode()

    seen, metrics = asyncio.run(main())
    # APScheduler went down both paths that log its warning ...
    assert (EVENT_JOB_MAX_INSTANCES, "stuck") in seen and (EVENT_JOB_MISSED, "delayed") in seen, seen
    # ... the ledger counted them ...
    skipped = "continuity_target_skipped_runs_total"
    assert (metric_value(metrics, skipped, target="stuck", reason="still_running") or 0) >= 1
    assert (metric_value(metrics, skipped, target="delayed", reason="late") or 0) >= 1
    # ... none of APScheduler's own warnings reached the log, and the agent's lines did.
    theirs = [r.getMessage() for r in caplog.records if r.name.startswith("apscheduler")]
    assert theirs == []
    ours = [r.getMessage() for r in caplog.records if r.name == "agent.service" and r.levelno == logging.WARNING]
    assert any(m.startswith("stuck: ") and "the previous run was still going" in m for m in ours), ours
    assert any("not started within one interval of when they were due" in m for m in ours), ours

def test_log_format_json(tmp_path: Path) -> None:
    import json
    import subprocess

    from tests.helpers.common import AGENT_BIN

    cfg = tmp_path / "agent.yml"
    cfg.write_text("agent: {site: hq}\ntargets:\n  - {name: t, kind: probe, module: tcp, host: 127.0.0.1, port: 1}\n")
    r = subprocess.run(
        [str(AGENT_BIN), "--log-format", "json", "--log-level", "debug", "collect-once", "--config", str(cfg), "t"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for line in r.stderr.splitlines():
        rec = json.loads(line)  # every log line is one JSON object
        assert {"ts", "level", "logger", "msg"} <= set(rec)


def test_long_interval_task_runs_soon_after_start(tmp_path: Path) -> None:
    """A 6-hour task must not wait 6 hours for its first run because the scheduler started a
    moment after the job was added."""
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        "agent: {site: hq, state_dir: state, listen_address: '127.0.0.1:0'}\n"
        "defaults: {interval: 6h, timeout: 5s, start_jitter: 0}\n"
        "targets:\n" + "".join(f"  - {{name: h{i}, kind: host}}\n" for i in range(20))
    )
    loaded = load_config(cfg)

    async def main() -> int:
        agent = Agent(loaded)
        await agent.start()
        await asyncio.sleep(0.3)  # the scheduler starts after the jobs were added
        for _ in range(50):
            if all(agent.store.latest(f"h{i}") is not None for i in range(20)):
                break
            await asyncio.sleep(0.1)
        n = sum(agent.store.latest(f"h{i}") is not None for i in range(20))
        await agent.stop()
        return n

    assert asyncio.run(main()) == 20


def test_saturated_worker_pool_shows_as_runs_still_going(tmp_path: Path) -> None:
    """The only worker thread is held by a call that does not return (a hung NFS mount's
    statvfs, say): host runs wait for it until their timeout, the interval, and the next fire time
    finds them still going. Every fire time is accounted for: a run or a skipped run, never late."""
    interval, stuck_for, n = 1.0, 3.5, 3
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        "agent: {site: hq, state_dir: state, listen_address: '127.0.0.1:0', max_workers: 1}\n"
        f"defaults: {{interval: {interval:g}s, timeout: {interval:g}s, start_jitter: 0.3}}\n"
        "targets:\n" + "".join(f"  - {{name: h{i}, kind: host}}\n" for i in range(n))
    )
    loaded = load_config(cfg)

    async def main() -> tuple[dict[tuple[str, str], float], dict[str, int], float, float]:
        agent = Agent(loaded)
        await agent.start()
        await asyncio.sleep(1.5)  # first runs done
        assert not agent.store.snapshot().skipped
        t0 = time.time()
        agent.executor.submit(time.sleep, stuck_for)
        await asyncio.sleep(stuck_for + 2.5)
        t1 = time.time()
        snap = agent.store.snapshot()
        agent.store.flush()
        runs = {f"h{i}": len(agent.store.history(f"h{i}", t0, t1)) for i in range(n)}
        await agent.stop()
        return snap.skipped, runs, t1 - t0, snap.errors.get(("h0", "timeout"), 0)

    skipped, runs, elapsed, timeouts = asyncio.run(main())
    due = elapsed / interval
    for i in range(n):
        still = skipped.get((f"h{i}", "still_running"), 0)
        assert skipped.get((f"h{i}", "late"), 0) == 0
        assert 1 <= still <= stuck_for / interval, (i, still)
        assert abs(runs[f"h{i}"] + still - due) <= 2, (i, runs, still, due)
    assert timeouts >= 1


def test_reload_starts_a_new_schedule_without_counting_skips(tmp_path: Path) -> None:
    """A reload replaces every job with a new first fire time (and here a new interval): the fire
    times of the old schedule that will never come are not runs skipped."""
    cfg = tmp_path / "agent.yml"
    base = "agent: {site: hq, state_dir: state, listen_address: '127.0.0.1:0'}\n"
    targets = "targets:\n  - {name: a, kind: host}\n  - {name: b, kind: host}\n"
    cfg.write_text(base + "defaults: {interval: 1s, start_jitter: 0.5}\n" + targets)
    loaded = load_config(cfg)

    async def main() -> tuple[dict[tuple[str, str], float], int]:
        agent = Agent(loaded)
        await agent.start()
        await asyncio.sleep(2.2)
        cfg.write_text(base + "defaults: {interval: 700ms, start_jitter: 0.5}\n" + targets)
        assert await agent.reload()
        await asyncio.sleep(3)
        assert await agent.reload()  # the same schedule again, restarted from the stored results
        await asyncio.sleep(2)
        snap = agent.store.snapshot()
        agent.store.flush()
        runs = len(agent.store.history("a", 0, time.time() + 1))
        await agent.stop()
        return snap.skipped, runs

    skipped, runs = asyncio.run(main())
    assert skipped == {}
    assert runs >= 8  # it kept running through both reloads
