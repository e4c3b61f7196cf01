"""Connection standards, availability: service-hour windows and time-weighted availability from
the history of the link target's ``reachability`` records (pure functions).

Each run's outcome holds until the next run, for at most two run intervals; time with no runs
(agent down) is unknown and left out of both numerator and denominator.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from zoneinfo import ZoneInfo

from agent.standards.types import DAY_NAMES, ServiceHours

# --------------------------------------------------------------------------------------------------
# Service hours and availability (pure functions)
# --------------------------------------------------------------------------------------------------

Interval = tuple[float, float]
Row = tuple[float, float, bool]  # (started, duration, ok) as StateStore.history returns


def _at(d: dt.date, hhmm: str, tz: ZoneInfo) -> float:
    h, m = (int(x) for x in hhmm.split(":"))
    if h == 24:
        d, h = d + dt.timedelta(days=1), 0
    return dt.datetime(d.year, d.month, d.day, h, m, tzinfo=tz).timestamp()


def service_windows(hours: ServiceHours | None, since: float, until: float) -> list[Interval]:
    """Service-hour windows intersected with [since, until), as sorted Unix-time intervals.
    ``None`` means 24x7. Local times follow the zone's clock changes; bank holidays are skipped."""
    if until <= since:
        return []
    if hours is None:
        return [(since, until)]
    tz = hours.tz
    first = dt.datetime.fromtimestamp(since, tz).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(until, tz).date()
    days = {DAY_NAMES.index(d) for d in hours.days}
    out: list[Interval] = []
    d = first
    while d <= last:
        if d.weekday() in days and d not in hours.holidays:
            a = _at(d, hours.start, tz)
            end_day = d if hours.end > hours.start or hours.end == "24:00" else d + dt.timedelta(days=1)
            b = _at(end_day, hours.end, tz)
            a, b = max(a, since), min(b, until)
            if b > a:
                out.append((a, b))
        d += dt.timedelta(days=1)
    out.sort()
    return out


def in_service(hours: ServiceHours | None, t: float) -> bool:
    return bool(service_windows(hours, t, t + 1e-3))


def coverage(
    rows: Sequence[Row], since: float, until: float, max_gap: float
) -> list[tuple[float, float, bool]]:
    """Each run's outcome holds from its start until the next run starts, for at most ``max_gap``;
    clipped to [since, until). Rows must be sorted by start."""
    out: list[tuple[float, float, bool]] = []
    for i, (started, _dur, ok) in enumerate(rows):
        nxt = rows[i + 1][0] if i + 1 < len(rows) else math.inf
        a = max(started, since)
        b = min(nxt, started + max_gap, until)
        if b > a:
            out.append((a, b, ok))
    return out


def overlap(cov: Sequence[tuple[float, float, bool]], windows: Sequence[Interval]) -> tuple[float, float]:
    """(up seconds, known seconds) of the coverage inside the windows. Both lists sorted."""
    up = known = 0.0
    j = 0
    for a, b, ok in cov:
        while j < len(windows) and windows[j][1] <= a:
            j += 1
        k = j
        while k < len(windows) and windows[k][0] < b:
            s = max(a, windows[k][0])
            e = min(b, windows[k][1])
            if e > s:
                known += e - s
                if ok:
                    up += e - s
            k += 1
    return up, known


def availability(
    rows: Sequence[Row], since: float, until: float, max_gap: float, hours: ServiceHours | None
) -> tuple[float, float]:
    """(up seconds, known seconds) over [since, until) within service hours (``None``: 24x7).
    Include the row before ``since`` in ``rows`` so its outcome carries into the window."""
    return overlap(coverage(rows, since, until, max_gap), service_windows(hours, since, until))


class AvailabilityCalc:
    """Availability over long windows from the history, a UTC day at a time; finished days are
    cached so an evaluation reads about one day of rows per site, not thirty."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, float, float, str], tuple[float, float]] = {}

    def compute(
        self,
        history: Callable[[str, float, float], list[Row]],
        target: str,
        hours: ServiceHours | None,
        max_gap: float,
        since: float,
        until: float,
        now: float,
    ) -> tuple[float, float]:
        key_hours = hours.cache_key() if hours is not None else "24x7"
        up = known = 0.0
        day = math.floor(since / 86400.0) * 86400.0
        while day < until:
            a, b = max(day, since), min(day + 86400.0, until)
            full = a == day and b == day + 86400.0 and b <= now - max_gap
            key = (target, day, max_gap, key_hours)
            if full and key in self._cache:
                u, k = self._cache[key]
            else:
                rows = history(target, a - max_gap, b)
                u, k = availability(rows, a, b, max_gap, hours)
                if full:
                    self._cache[key] = (u, k)
            up += u
            known += k
            day += 86400.0
        # Forget days that fell out of every window.
        old = since - 2 * 86400.0
        for key in [k for k in self._cache if k[1] < old]:
            del self._cache[key]
        return up, known


# The link collector records whether each burst got any reply under this task name; availability
# is computed from its history.
REACHABILITY_TASK = "reachability"
