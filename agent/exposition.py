"""prometheus_client Collector over a state snapshot: no I/O, never raises for bad data."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import Metric
from prometheus_client.registry import Collector as PromCollector
from prometheus_client.registry import CollectorRegistry

from agent import __version__
from agent.catalogue import catalogue, exposed_labels, spec_for
from agent.escape import terminal
from agent.plugin import MetricSpec
from agent.state import StateStore

log = logging.getLogger(__name__)


@dataclass
class AgentStatus:
    site: str = ""
    start_time: float = field(default_factory=time.time)
    reload_ok: bool = True
    reload_success_time: float = 0.0
    targets: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (kind, site)


def _family(spec: MetricSpec) -> Metric:
    name = spec.name
    if spec.type == "counter":
        name = name[: -len("_total")]
    elif spec.type == "info":
        name = name[: -len("_info")]
    mtype = "gauge" if spec.type == "stateset" else spec.type
    unit = spec.unit if spec.unit and name.endswith("_" + spec.unit) else ""
    return Metric(name, spec.help, mtype, unit)


def _no_dynamic() -> Mapping[str, MetricSpec]:
    return {}


class StateCollector(PromCollector):
    def __init__(
        self,
        store: StateStore,
        status: Callable[[], AgentStatus],
        dynamic: Callable[[], Mapping[str, MetricSpec]] = _no_dynamic,
    ) -> None:
        self.store = store
        self.status = status
        self.dynamic = dynamic  # the running targets' config-defined metrics (Collector.dynamic_metrics)
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        with self._warn_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.error(msg, *args)

    def collect(self) -> Iterable[Metric]:
        cat = catalogue()
        dyn = self.dynamic()
        snap = self.store.snapshot()
        st = self.status()
        fams: dict[str, Metric] = {}

        def fam(name: str) -> Metric:
            m = fams.get(name)
            if m is None:
                m = fams[name] = _family(cat.get(name) or spec_for(name, dyn))  # type: ignore[arg-type]
            return m

        fam("continuity_agent_info").add_sample("continuity_agent_info", {"version": __version__, "site": st.site}, 1.0)
        fam("continuity_agent_start_time_seconds").add_sample("continuity_agent_start_time_seconds", {}, st.start_time)
        fam("continuity_config_last_reload_successful").add_sample(
            "continuity_config_last_reload_successful", {}, 1.0 if st.reload_ok else 0.0
        )
        fam("continuity_config_last_reload_success_timestamp_seconds").add_sample(
            "continuity_config_last_reload_success_timestamp_seconds", {}, st.reload_success_time
        )
        fam("continuity_state_db_healthy").add_sample("continuity_state_db_healthy", {}, float(snap.db_healthy))
        fam("continuity_state_db_errors_total").add_sample(
            "continuity_state_db_errors_total", {}, float(snap.db_errors)
        )

        for target, (kind, site) in sorted(st.targets.items()):
            tl = {"collector": kind, "target": target, "site": site}
            main = snap.latest.get((target, ""))
            if main is not None:
                fam("continuity_target_up").add_sample("continuity_target_up", tl, 1.0 if main.ok else 0.0)
                fam("continuity_target_collection_duration_seconds").add_sample(
                    "continuity_target_collection_duration_seconds", tl, main.duration
                )
            ok = snap.last_success.get((target, ""))
            if ok is not None:
                fam("continuity_target_last_success_timestamp_seconds").add_sample(
                    "continuity_target_last_success_timestamp_seconds", tl, ok.finished
                )
            fam("continuity_target_skipped_runs_total").add_sample(
                "continuity_target_skipped_runs_total", tl, snap.skipped.get(target, 0.0)
            )

        for (target, reason), count in sorted(snap.errors.items()):
            if target not in st.targets:
                continue
            kind, site = st.targets[target]
            fam("continuity_target_errors_total").add_sample(
                "continuity_target_errors_total",
                {"collector": kind, "target": target, "site": site, "reason": reason},
                count,
            )

        for (target, task), res in sorted(snap.latest.items()):
            if target not in st.targets:
                continue
            kind, site = st.targets[target]
            if task:
                last = snap.last_success.get((target, task))
                if last is not None:
                    fam("continuity_task_last_success_timestamp_seconds").add_sample(
                        "continuity_task_last_success_timestamp_seconds",
                        {"collector": kind, "target": target, "site": site, "task": task},
                        last.finished,
                    )
            if not res.ok and not res.samples:
                continue  # stale values disappear; up/errors say why
            # A failed run with samples completed and found a failure (Collected.failure): its
            # samples are the finding and stay visible.
            for s in res.samples:
                spec = cat.get(s.name) or spec_for(s.name, dyn)
                if spec is None:
                    self._warn_once(s.name, "collector %s emitted undeclared metric %s; dropped", kind, s.name)
                    continue
                # Label values from devices are hostile: control characters become visible
                # escapes (ESC -> \x1b), so /metrics is safe to read in a terminal.
                labels = {k: terminal(v) for k, v in s.labels.items()}
                if spec.target_labels:
                    labels["target"] = target
                    labels["site"] = labels.get("site", site) if "site" in spec.labels else site
                if set(labels) != set(exposed_labels(spec)):
                    self._warn_once(
                        s.name + "/labels",
                        "metric %s from %s has labels %s, catalogue says %s; dropped",
                        s.name,
                        kind,
                        sorted(labels),
                        sorted(exposed_labels(spec)),
                    )
                    continue
                sample_name = s.name
                fam(s.name).add_sample(sample_name, labels, s.value)
        return list(fams.values())


def make_registry(
    store: StateStore,
    status: Callable[[], AgentStatus],
    dynamic: Callable[[], Mapping[str, MetricSpec]] = _no_dynamic,
) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StateCollector(store, status, dynamic))
    return reg
