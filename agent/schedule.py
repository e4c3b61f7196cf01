"""Which scheduled runs of a target did not start, and why, counted once each from the schedule.

Every target task is an APScheduler 3 job with ``coalesce=True``, ``max_instances=1`` and
``misfire_grace_time`` of one interval. Each fire time of the job's trigger ends one of four ways:

* the scheduler submits it and it runs: ``EVENT_JOB_SUBMITTED`` with that fire time;
* the previous run is still going: ``EVENT_JOB_MAX_INSTANCES`` with that fire time
  (reason ``still_running``);
* it was submitted, but its task only started more than the grace time after the fire time (the
  event loop was busy): ``EVENT_JOB_MISSED`` after the submission (reason ``late``);
* silently: when the scheduler looks at a job more than one interval after its next fire time
  (the agent got no CPU, or its event loop was saturated), every passed fire time but the last is
  merged into the last one (coalesce) and no event names them (reason ``late``).

The ledger keeps, per job, the next fire time the scheduler should act on. On each submission or
max-instances event it counts the trigger's fire times from there up to the event's fire time:
those are the silently merged ones. A run that started on time is never counted, and wall-clock
time is never guessed at: the counts come from the trigger's own fire times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
    SchedulerEvent,
)
from apscheduler.triggers.interval import IntervalTrigger

from agent.catalogue import LATE, STILL_RUNNING

# The events the ledger listens to (for AsyncIOScheduler.add_listener).
EVENTS = EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED

# Fire times of a non-interval trigger (cron) walked at most per event: a per-minute task of an
# agent suspended for two months.
_MAX_WALKED = 100_000


@dataclass
class _Job:
    trigger: Any
    next_fire: datetime | None  # the next fire time the scheduler should act on; None: not known yet


class RunLedger:
    """Per job: which of its fire times did not start a run. Single-threaded (the event loop's)."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}

    def expect(self, job_id: str, trigger: Any, first: datetime | None) -> None:
        """A job (re)scheduled with ``trigger``, first due at ``first`` (None: the scheduler works
        it out; the first fire time it acts on is then the baseline)."""
        self._jobs[job_id] = _Job(trigger, first)

    def keep(self, job_ids: Iterable[str]) -> None:
        """Forget jobs no longer scheduled (after a reload)."""
        keep = set(job_ids)
        for j in [j for j in self._jobs if j not in keep]:
            del self._jobs[j]

    def on_event(self, event: SchedulerEvent) -> list[tuple[str, str, int]]:
        """(job id, reason, count) of the fire times this event shows did not start a run."""
        if not isinstance(event, JobSubmissionEvent | JobExecutionEvent):
            return []
        job = self._jobs.get(event.job_id)
        if job is None:
            return []
        if event.code == EVENT_JOB_MISSED:
            return [(event.job_id, LATE, 1)]  # its fire time was accounted at its submission
        if not isinstance(event, JobSubmissionEvent):
            return []
        out: list[tuple[str, str, int]] = []
        for fire in event.scheduled_run_times:
            merged = self._passed_over(job, fire)
            if merged:
                out.append((event.job_id, LATE, merged))
            if event.code == EVENT_JOB_MAX_INSTANCES:
                out.append((event.job_id, STILL_RUNNING, 1))
            job.next_fire = job.trigger.get_next_fire_time(fire, fire)
        return out

    @staticmethod
    def _passed_over(job: _Job, fire: datetime) -> int:
        """The job's fire times from its expected next one up to ``fire`` (exclusive)."""
        start = job.next_fire
        if start is None or fire <= start:
            return 0
        trigger = job.trigger
        if isinstance(trigger, IntervalTrigger) and trigger.jitter is None:
            # Fire times are start + k x interval (each rounded to the microsecond).
            length: float = trigger.interval_length
            return max(0, round((fire - start).total_seconds() / length))
        n = 0
        t: datetime | None = start
        while t is not None and t < fire and n < _MAX_WALKED:
            n += 1
            t = trigger.get_next_fire_time(t, t)
        return n


# How far back :func:`last_fire_time` looks for a trigger's latest fire time: a crontab line as rare
# as "0 0 29 2 1" (29 February on a Monday) fires about once in 28 years.
_MAX_LOOKBACK = timedelta(days=40 * 366)


def last_fire_time(trigger: Any, now: datetime, since: datetime) -> datetime | None:
    """The trigger's latest fire time in ``[since, now]``, or None. APScheduler 3 triggers only go
    forward, so the window looks back from ``now`` in doubling steps until it holds a fire time,
    then walks forward to the last one (the walk never spans more than twice the gap between two
    fire times)."""
    if now < since:
        return None
    span = timedelta(minutes=1)
    while True:
        start = max(since, now - span)
        first: datetime | None = trigger.get_next_fire_time(None, start)
        if first is not None and first <= now:
            t = first
            for _ in range(_MAX_WALKED):
                nxt: datetime | None = trigger.get_next_fire_time(t, t)
                if nxt is None or nxt > now:
                    break
                t = nxt
            return t
        if start == since or span > _MAX_LOOKBACK:
            return None
        span *= 2


class LastDue:
    """When a trigger last fired at or before a given time (its latest fire time since ``since``),
    cached until its next fire time, so a scrape costs one comparison. A trigger with no next fire
    time (its end date passed, or a line such as 31 February) keeps its answer for good: searching
    again would find nothing new, and each search of such a trigger costs seconds. Not thread-safe."""

    def __init__(self, trigger: Any, since: datetime) -> None:
        self.trigger = trigger
        self.since = since
        self._due: datetime | None = None
        self._next: datetime | None = None  # the fire time after _due; None: work it out
        self._final = False  # the trigger fires no more after _due (or at all): _due is the answer

    def at(self, now: datetime) -> datetime | None:
        if (self._due is None or self._due <= now) and (self._final or (self._next is not None and now < self._next)):
            return self._due
        if self._due is not None and now < self._due:  # the clock went back
            self._due = None
        lo = self._next if self._next is not None and self._next <= now and self._due is not None else self.since
        due = last_fire_time(self.trigger, now, lo)
        if due is not None:
            self._due = due
        base = self._due
        nxt: datetime | None = (
            self.trigger.get_next_fire_time(base, base)
            if base is not None
            else self.trigger.get_next_fire_time(None, now)
        )
        self._next = nxt
        self._final = nxt is None
        return self._due
