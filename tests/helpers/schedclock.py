"""A controlled clock for a real agent's APScheduler: the agent's ``clock`` and the ``datetime``
APScheduler's scheduler and executor read both follow :class:`Clock`, so a test moves time to a cron
fire time instead of waiting for it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest


class Clock:
    def __init__(self, t: datetime) -> None:
        self.now = t

    def time(self) -> float:
        return self.now.timestamp()


def fake_datetime(clock: Clock) -> type[datetime]:
    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return clock.now.astimezone(tz) if tz is not None else clock.now.replace(tzinfo=None)

    return FakeDatetime


@contextmanager
def scheduler_clock(clock: Clock) -> Iterator[pytest.MonkeyPatch]:
    """APScheduler reads ``clock`` while this is open (undo early with the yielded MonkeyPatch)."""
    mp = pytest.MonkeyPatch()
    fake = fake_datetime(clock)
    mp.setattr("apscheduler.schedulers.base.datetime", fake)
    mp.setattr("apscheduler.executors.base.datetime", fake)
    try:
        yield mp
    finally:
        mp.undo()
