"""Connection standards, the types: bit rates, site classes and service hours (config
``site_classes:``), sites, the criteria and their thresholds, and the config cross-checks."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
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

if TYPE_CHECKING:
    from agent.config import AgentConfig


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

    timezone: TimeZoneName = Field(default="Europe/London", description="IANA time zone the hours are in.")
    days: list[DayName] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1, description="Days in service.")
    start: ClockTime = Field(default="08:00", description="Start of service each day, HH:MM.")
    end: ClockTime = Field(default="18:00", description='Before start = runs past midnight; "24:00" = end of day.')
    bank_holidays: list[dt.date] = Field(default_factory=list, description="Dates out of service.")
    bank_holidays_file: Path | None = Field(
        default=None,
        description="File of dates out of service (one YYYY-MM-DD a line, or GOV.UK's bank-holidays.json).",
    )
    bank_holidays_division: str = Field(default="england-and-wales", description="For GOV.UK's bank-holidays.json.")
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

    description: str = Field(default="", description="Free text for the status page and reports.")
    min_download: Bitrate | None = Field(
        default=None,
        description="Minimum measured download throughput (link throughput tests).",
    )
    min_upload: Bitrate | None = Field(
        default=None,
        description="Minimum measured upload throughput (link throughput tests).",
    )
    max_rtt: Duration | None = Field(default=None, description="Maximum average round-trip time of the link bursts.")
    max_jitter: Duration | None = Field(default=None, description="Maximum jitter of the link bursts.")
    max_loss: Ratio | None = Field(default=None, description="Maximum packet loss of the link bursts (`1%` or `0.01`).")
    min_availability: Ratio | None = Field(default=None, description="Over service hours, last 30 days.")
    min_availability_24x7: Ratio | None = Field(default=None, description="Around the clock, last 30 days.")
    check_negotiated_speed: bool = Field(default=True, description="WAN interface speed >= contracted rate.")
    service_hours: ServiceHours | None = Field(default=None, description="None: always in service (24x7).")
    hysteresis: int = Field(
        default=3, ge=1, le=100,
        description="Consecutive measurements needed before a criterion changes verdict.",
    )


class WanInterface(StrictModel):
    """The site's WAN interface as the SNMP collector sees it."""

    snmp_target: str = Field(pattern=NAME_RE, description="The `snmp` target that polls the site's router.")
    interface: str = Field(min_length=1, description="The WAN interface's name (ifName) on that device.")
    receive_is: Literal["download", "upload"] = Field(
        default="download",
        description="Which way traffic the interface receives is flowing for the site.",
    )


class Site(StrictModel):
    """One site of the estate (config ``sites:``); its class says which standard applies."""

    name: str = Field(pattern=NAME_RE, description="Site name: the `site` label of its targets' metrics.")
    class_: str = Field(
        alias="class", default="default",
        description="The site class (`site_classes:`) whose standard applies.",
    )
    description: str = Field(default="", description="Free text for the status page and reports.")
    contracted_download: Bitrate | None = Field(
        default=None,
        description="The rate the provider contracted to deliver (bytes/s).",
    )
    contracted_upload: Bitrate | None = Field(
        default=None,
        description="The upload rate the provider contracted to deliver (bytes/s).",
    )
    wan_interface: WanInterface | None = Field(
        default=None,
        description="SNMP target + interface name of the site's WAN link.",
    )


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
