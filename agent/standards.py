"""Connection standards for sites: site classes, service hours, availability and hysteresis.

A site class (config ``site_classes:``) says what a site's connection must achieve: minimum
download/upload rate, maximum RTT, jitter and loss, minimum availability over its service hours.
:class:`Evaluator` compares each site's latest measurements (from the ``link`` and ``snmp``
collectors, via the :class:`~agent.state.StateStore`) with its class, one criterion at a time, with
hysteresis: a criterion changes verdict only after ``hysteresis`` (K) consecutive measurements
say so. A criterion is evaluated only when a *new* measurement arrived, so a throughput test run
four times a day counts once per test, however often the evaluation itself runs.

Availability is time-weighted from the history in SQLite of the link target's ``reachability``
records (did a burst get any reply): each run's outcome holds until the next run, for at most two
run intervals; time with no runs (agent down) is unknown and left out of both numerator and
denominator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agent.configtypes import NAME_RE, Duration, StrictModel, TimeZoneName, resolve_path
from agent.plugin import Sample, StoreView

if TYPE_CHECKING:
    from agent.config import AgentConfig

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------------

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)\s*(bit/s|bits/s|bps|bit|b/s)?\s*$", re.IGNORECASE)
_RATE_MULT = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_bitrate(value: object) -> float:
    """Bits per second from ``10Mbit/s``, ``10M``, ``2.5 Mbps``, ``100k`` or a plain number."""
    if isinstance(value, bool):
        raise ValueError(f"invalid bit rate {value!r}")
    if isinstance(value, int | float):
        v = float(value)
    elif isinstance(value, str):
        m = _RATE.match(value)
        if not m:
            raise ValueError(f"invalid bit rate {value!r}: write bits per second like 10Mbit/s, 512k or 2.5G")
        v = float(m.group(1)) * _RATE_MULT[m.group(2).lower()]
    else:
        raise ValueError(f"invalid bit rate {value!r}: write bits per second like 10Mbit/s")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"bit rate must be positive, got {value!r}")
    return v


def format_bitrate(bytes_per_second: float) -> str:
    """A rate held in bytes per second, written as people (and the config) write it: ``100Mbit/s``."""
    bps = bytes_per_second * 8.0
    for mult, unit in ((1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")):
        if bps >= mult:
            return f"{bps / mult:.4g}{unit}"
    return f"{bps:.4g}bit/s"


def _bitrate(v: object) -> float:
    try:
        return parse_bitrate(v) / 8.0
    except ValueError as e:
        raise PydanticCustomError("bitrate", str(e)) from None


Bitrate = Annotated[float, BeforeValidator(_bitrate), PlainSerializer(format_bitrate, return_type=str)]
"""A data rate written in bits per second (``10Mbit/s``, ``10M``, ``512k`` or a number), held in
bytes per second, the base unit of every rate the agent exposes."""


def _ratio(v: object) -> float:
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            r = float(v.strip()[:-1]) / 100.0
        except ValueError:
            raise PydanticCustomError("ratio", "invalid percentage {v}", {"v": repr(v)}) from None
    elif isinstance(v, int | float) and not isinstance(v, bool):
        r = float(v)
    else:
        raise PydanticCustomError(
            "ratio", "expected a ratio 0-1 or a percentage like 99.5%, got {v}", {"v": repr(v)}
        )
    if not 0.0 <= r <= 1.0:
        raise PydanticCustomError(
            "ratio", "ratio must be between 0 and 1 (0% and 100%), got {v}", {"v": repr(v)}
        )
    return r


Ratio = Annotated[float, BeforeValidator(_ratio)]
"""A ratio 0-1, written as ``0.995`` or ``99.5%``."""

# --------------------------------------------------------------------------------------------------
# Config models
# --------------------------------------------------------------------------------------------------

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[DayName, ...] = ("mon", "tue", "wed", "thu", "fri")


def _clock_time(v: object) -> str:
    # YAML 1.1 reads an unquoted 18:00 as the sexagesimal integer 1080; take it back.
    if isinstance(v, int) and not isinstance(v, bool):
        v = f"{v // 60:02d}:{v % 60:02d}"
    if not isinstance(v, str) or not re.fullmatch(r"\d{1,2}:\d{2}", v.strip()):
        raise PydanticCustomError(
            "clock_time", 'expected a time of day like "08:00", got {v}', {"v": repr(v)}
        )
    h, m = (int(x) for x in v.strip().split(":"))
    if not (0 <= h <= 24 and 0 <= m <= 59) or (h == 24 and m):
        raise PydanticCustomError("clock_time", "{v} is not a time of day (00:00-24:00)", {"v": repr(v)})
    return f"{h:02d}:{m:02d}"


ClockTime = Annotated[str, BeforeValidator(_clock_time)]


def load_bank_holidays(path: Path, division: str) -> frozenset[dt.date]:
    """Dates from a text file (one ``YYYY-MM-DD`` per line, ``#`` comments) or from GOV.UK's
    ``bank-holidays.json`` (``{"england-and-wales": {"events": [{"date": ...}]}}``)."""
    from agent.yamlfile import FileInputError, read_file

    try:
        text = read_file(path).decode("utf-8")
    except FileInputError as e:
        raise ValueError(f"cannot read bank holidays file {path}: {e.issues[0].message}") from None
    except UnicodeDecodeError:
        raise ValueError(f"bank holidays file {path} is not UTF-8 text") from None
    out: set[dt.date] = set()
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            events = data[division]["events"]
            for ev in events:
                out.add(dt.date.fromisoformat(ev["date"]))
        except json.JSONDecodeError as e:
            raise ValueError(f"bank holidays file {path}: invalid JSON: {e.msg} (line {e.lineno})") from None
        except RecursionError:
            raise ValueError(f"bank holidays file {path}: JSON nested too deeply") from None
        except KeyError as e:
            raise ValueError(
                f"bank holidays file {path}: no {e.args[0]!r} in the JSON (expected GOV.UK format with "
                f"division {division!r})"
            ) from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"bank holidays file {path}: bad event: {e}") from None
        return frozenset(out)
    for n, line in enumerate(text.splitlines(), 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        word = s.split()[0]
        try:
            out.add(dt.date.fromisoformat(word))
        except ValueError:
            raise ValueError(
                f"bank holidays file {path}: line {n}: {word!r} is not a date (YYYY-MM-DD)"
            ) from None
    return frozenset(out)


class ServiceHours(StrictModel):
    """When a site is meant to be in service, in the site's own time zone."""

    timezone: TimeZoneName = "Europe/London"
    days: list[DayName] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    start: ClockTime = "08:00"
    end: ClockTime = "18:00"  # before start = runs past midnight; "24:00" = end of day
    bank_holidays: list[dt.date] = Field(default_factory=list)
    bank_holidays_file: Path | None = None
    bank_holidays_division: str = "england-and-wales"  # for GOV.UK's bank-holidays.json
    _holidays: frozenset[dt.date] = PrivateAttr(default=frozenset())

    @field_validator("bank_holidays_file", mode="before")
    @classmethod
    def _resolve_file(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_path(v, info) if isinstance(v, str) and v else v

    @model_validator(mode="after")
    def _load_holidays(self) -> ServiceHours:
        if self.start == self.end:
            raise ValueError("service_hours start and end are the same; omit service_hours for 24x7")
        days = set(self.bank_holidays)
        if self.bank_holidays_file is not None:
            days |= load_bank_holidays(self.bank_holidays_file, self.bank_holidays_division)
        self._holidays = frozenset(days)
        return self

    @property
    def holidays(self) -> frozenset[dt.date]:
        return self._holidays

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def cache_key(self) -> str:
        return self.model_dump_json() + ",".join(sorted(d.isoformat() for d in self._holidays))


class SiteClass(StrictModel):
    """What a site's connection must achieve. Omitted criteria are not evaluated."""

    description: str = ""
    min_download: Bitrate | None = None
    min_upload: Bitrate | None = None
    max_rtt: Duration | None = None
    max_jitter: Duration | None = None
    max_loss: Ratio | None = None
    min_availability: Ratio | None = None  # over service hours, last 30 days
    min_availability_24x7: Ratio | None = None  # around the clock, last 30 days
    check_negotiated_speed: bool = True  # WAN interface speed >= contracted rate
    service_hours: ServiceHours | None = None  # None: always in service (24x7)
    hysteresis: int = Field(default=3, ge=1, le=100)


class WanInterface(StrictModel):
    """The site's WAN interface as the SNMP collector sees it."""

    snmp_target: str = Field(pattern=NAME_RE)
    interface: str = Field(min_length=1)
    # Which way traffic the interface receives is flowing for the site.
    receive_is: Literal["download", "upload"] = "download"


class Site(StrictModel):
    """One site of the estate (config ``sites:``); its class says which standard applies."""

    name: str = Field(pattern=NAME_RE)
    class_: str = Field(alias="class", default="default")
    description: str = ""
    contracted_download: Bitrate | None = None  # the rate the provider contracted to deliver (bytes/s)
    contracted_upload: Bitrate | None = None
    wan_interface: WanInterface | None = None  # SNMP target + interface name of the site's WAN link


# --------------------------------------------------------------------------------------------------
# Criteria
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    name: str
    better: Literal["higher", "lower"]
    unit: Literal["bytes_per_second", "seconds", "ratio"]
    description: str

    def passes(self, value: float, threshold: float) -> bool:
        return value >= threshold if self.better == "higher" else value <= threshold

    @property
    def comparison(self) -> str:
        return ">=" if self.better == "higher" else "<="


CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in (
        Criterion("download", "higher", "bytes_per_second", "measured download throughput (iperf3 -R)"),
        Criterion("upload", "higher", "bytes_per_second", "measured upload throughput (iperf3)"),
        Criterion("rtt", "lower", "seconds", "average round-trip time of the last burst"),
        Criterion("jitter", "lower", "seconds", "mean absolute difference of consecutive RTTs"),
        Criterion("loss", "lower", "ratio", "share of the last burst's packets not answered"),
        Criterion("availability", "higher", "ratio", "far end reachable, service hours, last 30 days"),
        Criterion(
            "availability_24x7", "higher", "ratio", "far end reachable, around the clock, last 30 days"
        ),
        Criterion("negotiated_speed", "higher", "bytes_per_second", "WAN interface speed vs contracted rate"),
    )
}

AVAILABILITY_WINDOW = 30 * 86400.0
WINDOWS = ("service_hours_30d", "24x7_30d")


def thresholds(site: Site, cls: SiteClass) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, v in (
        ("download", cls.min_download),
        ("upload", cls.min_upload),
        ("rtt", cls.max_rtt),
        ("jitter", cls.max_jitter),
        ("loss", cls.max_loss),
        ("availability", cls.min_availability),
        ("availability_24x7", cls.min_availability_24x7),
    ):
        if v is not None:
            out[name] = float(v)
    contracted = [r for r in (site.contracted_download, site.contracted_upload) if r is not None]
    if cls.check_negotiated_speed and site.wan_interface is not None and contracted:
        out["negotiated_speed"] = max(contracted)
    return out


# --------------------------------------------------------------------------------------------------
# Config cross-checks (called from AgentConfig's validator)
# --------------------------------------------------------------------------------------------------


def check_config(cfg: AgentConfig) -> list[str]:
    """Messages prefixed with their key, for AgentConfig's cross-check."""
    errors: list[str] = []
    classes = cfg.site_classes
    for name in classes:
        if not re.match(NAME_RE, name):
            errors.append(f"site_classes.{name}: class names are letters, digits and _.:- (at most 100)")
    targets = {t.name: t for t in cfg.targets}
    for i, s in enumerate(cfg.sites):
        if classes and s.class_ not in classes:
            known = ", ".join(sorted(classes))
            errors.append(f"sites[{i}].class: class {s.class_!r} is not in site_classes (known: {known})")
        if s.wan_interface is not None:
            t = targets.get(s.wan_interface.snmp_target)
            if t is None:
                errors.append(
                    f"sites[{i}].wan_interface.snmp_target: target {s.wan_interface.snmp_target!r} is not in targets"
                )
            elif t.kind != "snmp":
                errors.append(
                    f"sites[{i}].wan_interface.snmp_target: target {t.name!r} is a {t.kind} target, not snmp"
                )
    standards = [(i, t) for i, t in enumerate(cfg.targets) if t.kind == "standards"]
    if classes and not standards:
        errors.append(
            "site_classes: no target of kind standards evaluates them; add "
            "{name: site-standards, kind: standards} to targets"
        )
    if standards and not classes:
        errors.append(f"targets[{standards[0][0]}]: a standards target needs site_classes")
    for i, _t in standards[1:]:
        errors.append(f"targets[{i}]: only one target of kind standards is allowed")
    per_site: dict[str, list[str]] = {}
    for t in cfg.targets:
        if t.kind == "link" and getattr(t, "standards", True):
            per_site.setdefault(cfg.site_of(t), []).append(t.name)
    for site, names in sorted(per_site.items()):
        if len(names) > 1:
            i = next(n for n, t in enumerate(cfg.targets) if t.name == names[1])
            errors.append(
                f"targets[{i}].standards: site {site!r} already has link target {names[0]!r} feeding its "
                "standards; set standards: false on all but one"
            )
    return errors


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


# --------------------------------------------------------------------------------------------------
# Hysteresis
# --------------------------------------------------------------------------------------------------


@dataclass
class CriterionState:
    """Verdict of one criterion for one site. ``verdict`` is None until K agreeing evaluations."""

    verdict: bool | None = None
    streak: int = 0  # consecutive evaluations agreeing with streak_good
    streak_good: bool | None = None
    last_measured_at: float | None = None

    def observe(self, good: bool, k: int) -> None:
        if self.streak_good is good:
            self.streak += 1
        else:
            self.streak_good, self.streak = good, 1
        if self.verdict is not good and self.streak >= k:
            self.verdict = good


@dataclass
class EvaluatorState:
    """Everything the evaluation remembers between runs. Criteria states are persisted in the
    state store (kv ``standards.state``) so a restart neither alerts nor clears."""

    criteria: dict[str, dict[str, CriterionState]] = field(default_factory=dict)  # site -> criterion
    counters: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # site -> (t, rx, tx)
    utilisation: dict[str, dict[str, float]] = field(default_factory=dict)  # site -> direction -> ratio
    availability: AvailabilityCalc | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "criteria": {
                site: {c: asdict(st) for c, st in crit.items()} for site, crit in self.criteria.items()
            },
            "counters": {site: list(v) for site, v in self.counters.items()},
            "utilisation": self.utilisation,
        }

    @classmethod
    def from_json(cls, data: Any) -> EvaluatorState:
        out = cls()
        if not isinstance(data, dict):
            return out
        for site, v in (data.get("counters") or {}).items():
            with contextlib.suppress(TypeError, ValueError):
                t, rx, tx = (float(x) for x in v)
                out.counters[str(site)] = (t, rx, tx)
        for site, u in (data.get("utilisation") or {}).items():
            with contextlib.suppress(AttributeError, TypeError, ValueError):
                out.utilisation[str(site)] = {str(d): float(r) for d, r in u.items()}
        for site, crit in (data.get("criteria") or {}).items():
            if not isinstance(crit, dict):
                continue
            for c, st in crit.items():
                try:
                    out.criteria.setdefault(str(site), {})[str(c)] = CriterionState(
                        verdict=None if st.get("verdict") is None else bool(st["verdict"]),
                        streak=int(st.get("streak", 0)),
                        streak_good=None if st.get("streak_good") is None else bool(st["streak_good"]),
                        last_measured_at=None
                        if st.get("last_measured_at") is None
                        else float(st["last_measured_at"]),
                    )
                except (AttributeError, TypeError, ValueError):
                    log.warning("ignoring unreadable stored standards state for %s/%s", site, c)
        return out


KV_KEY = "standards.state"
# The link collector records whether each burst got any reply under this task name; availability
# is computed from its history.
REACHABILITY_TASK = "reachability"

# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@dataclass
class CriterionReport:
    criterion: str
    threshold: float
    value: float | None
    measured_at: float | None
    verdict: bool | None  # with hysteresis; None = not yet known
    instant: bool | None  # what the last value alone says
    streak: int
    streak_good: bool | None
    hysteresis: int

    @property
    def spec(self) -> Criterion:
        return CRITERIA[self.criterion]


@dataclass
class SiteReport:
    site: str
    site_class: str
    in_service_hours: bool
    criteria: list[CriterionReport]
    link_target: str | None = None
    availability: dict[str, float] = field(default_factory=dict)  # window -> ratio (known windows only)
    contracted: dict[str, float] = field(default_factory=dict)  # direction -> bytes/s
    utilisation: dict[str, float] = field(default_factory=dict)  # direction -> ratio
    negotiated: float | None = None  # bytes/s
    notes: list[str] = field(default_factory=list)

    @property
    def met_all(self) -> bool | None:
        verdicts = [c.verdict for c in self.criteria]
        if any(v is False for v in verdicts):
            return False
        if verdicts and all(v is True for v in verdicts):
            return True
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "class": self.site_class,
            "in_service_hours": self.in_service_hours,
            "link_target": self.link_target,
            "met_all": self.met_all,
            "availability": self.availability,
            "contracted_bytes_per_second": self.contracted,
            "utilisation_ratio": self.utilisation,
            "negotiated_bytes_per_second": self.negotiated,
            "notes": self.notes,
            "criteria": [
                {
                    "criterion": c.criterion,
                    "comparison": c.spec.comparison,
                    "threshold": c.threshold,
                    "unit": c.spec.unit,
                    "value": c.value,
                    "measured_at": c.measured_at,
                    "verdict": _verdict_word(c.verdict),
                    "instant": _verdict_word(c.instant),
                    "streak": c.streak,
                    "streak_good": c.streak_good,
                    "hysteresis": c.hysteresis,
                }
                for c in self.criteria
            ],
        }


def _verdict_word(v: bool | None) -> str:
    return "unknown" if v is None else ("met" if v else "failed")


def _sample_value(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


class Evaluator:
    """Evaluates every site of a config against its class. ``evaluate(advance=False)`` reports
    without moving the hysteresis (the ``sites`` command)."""

    def __init__(
        self,
        config: AgentConfig,
        store: StoreView | None,
        *,
        clock: Callable[[], float] = time.time,
        state: EvaluatorState | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.state = state if state is not None else EvaluatorState()
        if self.state.availability is None:
            self.state.availability = AvailabilityCalc()

    def _history(self, target: str, since: float, until: float) -> list[Row]:
        return (
            self.store.history(target, since, until, task=REACHABILITY_TASK) if self.store is not None else []
        )

    def sites(self) -> list[Site]:
        cfg = self.config
        if cfg.sites:
            return list(cfg.sites)
        return [Site(name=cfg.agent.site)] if "default" in cfg.site_classes else []

    def link_target(self, site: str) -> Any:
        for t in self.config.targets:
            if t.kind == "link" and getattr(t, "standards", True) and self.config.site_of(t) == site:
                return t
        return None

    def evaluate(self, *, advance: bool = True) -> list[SiteReport]:
        now = self.clock()
        snap = self.store.snapshot() if self.store is not None else None
        reports = []
        for site in self.sites():
            cls = self.config.site_classes.get(site.class_)
            if cls is None:
                continue
            reports.append(self._site(site, cls, now, snap, advance))
        if advance:
            keep = {r.site: {c.criterion for c in r.criteria} for r in reports}
            for s in list(self.state.criteria):
                if s not in keep:
                    del self.state.criteria[s]
                    continue
                for c in list(self.state.criteria[s]):
                    if c not in keep[s]:
                        del self.state.criteria[s][c]
        return reports

    def _site(self, site: Site, cls: SiteClass, now: float, snap: Any, advance: bool) -> SiteReport:
        rep = SiteReport(site.name, site.class_, in_service(cls.service_hours, now), [])
        obs: dict[str, tuple[float, float]] = {}  # criterion -> (value, measured_at)
        link = self.link_target(site.name)
        if site.contracted_download is not None:
            rep.contracted["download"] = site.contracted_download
        if site.contracted_upload is not None:
            rep.contracted["upload"] = site.contracted_upload
        if link is None:
            rep.notes.append("no link target measures this site")
        elif snap is not None:
            rep.link_target = link.name
            main = snap.latest.get((link.name, ""))
            if main is not None and main.ok:
                for crit, name, labels in (
                    ("rtt", "continuity_link_rtt_seconds", {"stat": "avg"}),
                    ("jitter", "continuity_link_jitter_seconds", {}),
                    ("loss", "continuity_link_loss_ratio", {}),
                ):
                    v = _sample_value(main.samples, name, **labels)
                    if v is not None:
                        obs[crit] = (v, main.started)
            elif main is not None:
                rep.notes.append(f"last burst failed: {main.message}")
            tp = snap.last_success.get((link.name, "throughput"))
            if tp is not None:
                for direction in ("download", "upload"):
                    v = _sample_value(
                        tp.samples, "continuity_link_throughput_bytes_per_second", direction=direction
                    )
                    if v is not None:
                        obs[direction] = (v, tp.started)
            reach = snap.latest.get((link.name, REACHABILITY_TASK))
            if reach is not None:
                if not reach.ok:
                    rep.notes.append(reach.message or "far end not answering")
                self._availability(site, cls, link, now, reach.started, rep, obs)
        if site.wan_interface is not None and snap is not None:
            self._snmp(site, snap, rep, obs, advance)
        states = (
            self.state.criteria.setdefault(site.name, {})
            if advance
            else self.state.criteria.get(site.name, {})
        )
        for crit, threshold in thresholds(site, cls).items():
            spec = CRITERIA[crit]
            st = states.get(crit) or CriterionState()
            value, measured_at = obs.get(crit, (None, None))
            instant = None if value is None else spec.passes(value, threshold)
            if advance:
                states[crit] = st
                if (
                    instant is not None
                    and measured_at is not None
                    and (st.last_measured_at is None or measured_at > st.last_measured_at)
                ):
                    st.observe(instant, cls.hysteresis)
                    st.last_measured_at = measured_at
            rep.criteria.append(
                CriterionReport(
                    crit,
                    threshold,
                    value,
                    measured_at,
                    st.verdict,
                    instant,
                    st.streak,
                    st.streak_good,
                    cls.hysteresis,
                )
            )
        return rep

    def _availability(
        self,
        site: Site,
        cls: SiteClass,
        link: Any,
        now: float,
        last_run: float,
        rep: SiteReport,
        obs: dict[str, Any],
    ) -> None:
        assert self.state.availability is not None
        max_gap = 2.0 * self.config.interval_of(link)
        since = now - AVAILABILITY_WINDOW
        for window, hours, crit in (
            ("service_hours_30d", cls.service_hours, "availability"),
            ("24x7_30d", None, "availability_24x7"),
        ):
            up, known = self.state.availability.compute(
                self._history, link.name, hours, max_gap, since, now, now
            )
            if known > 0:
                rep.availability[window] = up / known
                obs[crit] = (up / known, last_run)

    def _snmp(self, site: Site, snap: Any, rep: SiteReport, obs: dict[str, Any], advance: bool) -> None:
        wan = site.wan_interface
        assert wan is not None
        res = snap.latest.get((wan.snmp_target, ""))
        if res is None or not res.ok:
            rep.notes.append(f"no current SNMP result from {wan.snmp_target}")
            rep.utilisation = dict(self.state.utilisation.get(site.name, {}))
            return
        speed = _sample_value(
            res.samples, "continuity_interface_speed_bytes_per_second", interface=wan.interface
        )
        rx = _sample_value(res.samples, "continuity_interface_receive_bytes_total", interface=wan.interface)
        tx = _sample_value(res.samples, "continuity_interface_transmit_bytes_total", interface=wan.interface)
        if speed is None:
            rep.notes.append(f"{wan.snmp_target} reports no interface {wan.interface!r}")
        else:
            rep.negotiated = speed
            obs["negotiated_speed"] = (speed, res.started)
        if advance and rx is not None and tx is not None:
            prev = self.state.counters.get(site.name)
            t = res.started
            if prev is None or t > prev[0]:
                self.state.counters[site.name] = (t, rx, tx)
                if prev is not None and speed and rx >= prev[1] and tx >= prev[2]:
                    dt_s = t - prev[0]
                    rx_r, tx_r = (rx - prev[1]) / dt_s / speed, (tx - prev[2]) / dt_s / speed
                    down, up = (rx_r, tx_r) if wan.receive_is == "download" else (tx_r, rx_r)
                    self.state.utilisation[site.name] = {"download": down, "upload": up}
        rep.utilisation = dict(self.state.utilisation.get(site.name, {}))


def report_samples(reports: Sequence[SiteReport]) -> list[Sample]:
    """The continuity_site_* and per-site continuity_link_* samples for a set of reports."""
    out: list[Sample] = []
    for r in reports:
        base = {"site": r.site, "class": r.site_class}
        out.append(Sample("continuity_site_in_service", 1.0 if r.in_service_hours else 0.0, base))
        for c in r.criteria:
            lab = {**base, "criterion": c.criterion}
            out.append(Sample("continuity_site_standard_threshold", c.threshold, lab))
            if c.verdict is not None:
                out.append(Sample("continuity_site_standard_met", 1.0 if c.verdict else 0.0, lab))
            if c.value is not None:
                out.append(Sample("continuity_site_standard_value", c.value, lab))
        if r.met_all is not None:
            out.append(Sample("continuity_site_standard_met_all", 1.0 if r.met_all else 0.0, base))
        for window, ratio in r.availability.items():
            out.append(Sample("continuity_site_availability_ratio", ratio, {**base, "window": window}))
        for direction, rate in r.contracted.items():
            out.append(
                Sample("continuity_link_contracted_bytes_per_second", rate, {**base, "direction": direction})
            )
        for direction, ratio in r.utilisation.items():
            out.append(Sample("continuity_link_utilisation_ratio", ratio, {**base, "direction": direction}))
    return out
