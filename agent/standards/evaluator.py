"""Connection standards, the evaluation: :class:`Evaluator` compares each site's latest measurements
(from the ``link`` and ``snmp`` collectors, via the state store) with its class, one criterion at a
time, with hysteresis: a criterion changes verdict only after ``hysteresis`` (K) consecutive
measurements say so. A criterion is evaluated only when a *new* measurement arrived, so a throughput
test run four times a day counts once per test, however often the evaluation itself runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from agent.plugin import Sample, StoreView
from agent.standards.availability import REACHABILITY_TASK, AvailabilityCalc, Row, in_service
from agent.standards.types import AVAILABILITY_WINDOW, CRITERIA, Criterion, Site, SiteClass, thresholds

if TYPE_CHECKING:
    from agent.config import AgentConfig

log = logging.getLogger("agent.standards")  # the name it has always logged under

# Criteria measured afresh by every burst or poll: a verdict holds only while the latest burst (or
# WAN poll) measured a value for it. A burst that got no reply has no RTT or jitter, and one that
# could not run measured nothing: the last verdict is not carried on as current (it is reported
# unknown; its hysteresis state is kept). Throughput tests run a few times a day, so a failed
# test leaves the last one standing; availability is computed over 30 days of history.
LIVE_CRITERIA = frozenset({"rtt", "jitter", "loss", "negotiated_speed"})

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
            if crit in LIVE_CRITERIA and value is None:
                rep.criteria.append(CriterionReport(crit, threshold, None, None, None, None, 0, None, cls.hysteresis))
                continue
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
        oper_up = _sample_value(res.samples, "continuity_interface_up", interface=wan.interface)
        if speed is None:
            rep.notes.append(f"{wan.snmp_target} reports no interface {wan.interface!r}")
        elif oper_up == 0:
            # A port that is down has negotiated nothing; devices report its configured or last
            # speed (ifHighSpeed) all the same.
            rep.notes.append(f"WAN interface {wan.interface} is down (ifOperStatus) on {wan.snmp_target}")
            rep.negotiated = 0.0
            obs["negotiated_speed"] = (0.0, res.started)
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
