"""The run ledger: every fire time of a job that did not start a run, counted once, with its reason.

The events are APScheduler's own classes as its scheduler and executor build them; the last test
drives a real AsyncIOScheduler whose event loop is blocked, the way an overloaded agent's is."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta

from apscheduler.events import (
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from agent.schedule import EVENTS, RunLedger

T0 = datetime(2026, 12, 2, 1, 0, 0, 123456, tzinfo=UTC)
INTERVAL = 10.0


_FIRES = [T0]
for _ in range(1000):  # each from the one before, as APScheduler computes them (rounded to the µs)
    _FIRES.append(datetime.fromtimestamp(_FIRES[-1].timestamp() + INTERVAL, tz=UTC))


def _at(k: int) -> datetime:
    """The k-th fire time of an interval trigger started at T0."""
    return _FIRES[k]


def _submitted(job: str, k: int) -> JobSubmissionEvent:
    return JobSubmissionEvent(EVENT_JOB_SUBMITTED, job, "default", [_at(k)])


def _busy(job: str, k: int) -> JobSubmissionEvent:
    return JobSubmissionEvent(EVENT_JOB_MAX_INSTANCES, job, "default", [_at(k)])


def _ledger() -> RunLedger:
    led = RunLedger()
    led.expect("web", IntervalTrigger(seconds=INTERVAL, start_date=T0), T0)
    return led


def test_runs_started_on_time_never_count() -> None:
    led = _ledger()
    for k in range(1000):
        assert led.on_event(_submitted("web", k)) == []
        assert led.on_event(JobExecutionEvent(EVENT_JOB_EXECUTED, "web", "default", _at(k))) == []


def test_fire_times_merged_by_a_late_scheduler_are_late() -> None:
    led = _ledger()
    assert led.on_event(_submitted("web", 0)) == []
    # The scheduler next looked at the job after fire time 4: 1, 2 and 3 were merged into 4.
    assert led.on_event(_submitted("web", 4)) == [("web", "late", 3)]
    assert led.on_event(_submitted("web", 5)) == []
    # The very first fire time can be merged too.
    led = _ledger()
    assert led.on_event(_submitted("web", 2)) == [("web", "late", 2)]


def test_previous_run_still_going() -> None:
    led = _ledger()
    led.on_event(_submitted("web", 0))
    assert led.on_event(_busy("web", 1)) == [("web", "still_running", 1)]
    assert led.on_event(_busy("web", 2)) == [("web", "still_running", 1)]
    assert led.on_event(_submitted("web", 3)) == []
    # Still going and looked at late: the merged fire times are late, the one looked at is busy.
    assert led.on_event(_busy("web", 7)) == [("web", "late", 3), ("web", "still_running", 1)]


def test_misfired_run_counts_once() -> None:
    led = _ledger()
    led.on_event(_submitted("web", 0))
    led.on_event(_submitted("web", 1))
    # Submitted, but its task started more than the grace time after the fire time.
    assert led.on_event(JobExecutionEvent(EVENT_JOB_MISSED, "web", "default", _at(1))) == [("web", "late", 1)]
    assert led.on_event(_submitted("web", 2)) == []


def test_other_jobs_and_events_are_ignored() -> None:
    led = _ledger()
    assert led.on_event(_submitted("report:monthly", 3)) == []
    assert led.on_event(JobExecutionEvent(EVENT_JOB_MISSED, "report:monthly", "default", T0)) == []
    led.keep([])
    assert led.on_event(_submitted("web", 5)) == []


def test_rescheduled_job_starts_a_new_count() -> None:
    led = _ledger()
    led.on_event(_submitted("web", 0))
    # A reload: the job's new schedule starts 3.5 s later with another interval.
    t1 = _at(1) + timedelta(seconds=3.5)
    led.expect("web", IntervalTrigger(seconds=30, start_date=t1), t1)
    assert led.on_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "web", "default", [t1])) == []
    later = datetime.fromtimestamp(t1.timestamp() + 90, tz=UTC)
    assert led.on_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "web", "default", [later])) == [("web", "late", 2)]


def test_unknown_first_fire_time_takes_the_first_as_baseline() -> None:
    led = RunLedger()
    led.expect("web", IntervalTrigger(seconds=INTERVAL, start_date=T0), None)
    assert led.on_event(_submitted("web", 6)) == []
    assert led.on_event(_submitted("web", 8)) == [("web", "late", 1)]


def test_cron_fire_times_are_walked() -> None:
    trig = CronTrigger.from_crontab("0 * * * *", timezone="UTC")  # hourly
    first = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
    led = RunLedger()
    led.expect("b:check", trig, first)
    ev = JobSubmissionEvent(EVENT_JOB_SUBMITTED, "b:check", "default", [first + timedelta(hours=5)])
    assert led.on_event(ev) == [("b:check", "late", 5)]


def test_real_scheduler_on_a_blocked_loop_counts_the_merged_runs() -> None:
    """APScheduler merges the fire times that passed while its event loop was blocked without an
    event; the ledger counts them. Fire times: every 0.2 s; the loop is blocked for 1.1 s."""
    interval, block = 0.2, 1.1
    runs: list[float] = []
    late: list[int] = []

    async def job() -> None:
        runs.append(time.monotonic())

    async def main() -> None:
        sched = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone="UTC")
        led = RunLedger()

        def listen(ev: object) -> None:
            for _job, reason, n in led.on_event(ev):  # type: ignore[arg-type]
                assert reason == "late"
                late.append(n)

        sched.add_listener(listen, EVENTS)
        first = datetime.now(UTC) + timedelta(seconds=0.1)
        trig = IntervalTrigger(seconds=interval, start_date=first)
        sched.add_job(job, trig, next_run_time=first, id="j", coalesce=True, max_instances=1, misfire_grace_time=1)
        led.expect("j", trig, first)
        sched.start()
        await asyncio.sleep(0.55)  # fire times at 0.1, 0.3 and 0.5 s run
        assert len(runs) == 3
        time.sleep(block)  # the agent gets no time: about 5 fire times pass
        await asyncio.sleep(0.3)
        sched.shutdown(wait=False)

    asyncio.run(main())
    # The scheduler woke once after the block and ran the job once for all the passed fire times.
    gap = max(b - a for a, b in itertools.pairwise(runs))
    assert gap > block - 0.1
    merged = round(gap / interval) - 1  # fire times between the two runs around the block
    assert sum(late) >= 4
    assert abs(sum(late) - merged) <= 1, (late, gap)
