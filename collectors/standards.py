"""Connection standards evaluation (kind ``standards``): one target per agent evaluates every
site against its class (config ``site_classes:``) and exposes the ``continuity_site_*`` series.
The logic lives in :mod:`agent.standards`; this module schedules it like any other collection."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agent.standards import KV_KEY, Evaluator, EvaluatorState, report_samples
from collectors.base import INTERNAL, Collected, Collector, CollectorError, MetricSpec, TargetBase

STATE_KEY = "standards.state"

_SITE = ("class", "site")

METRICS = (
    MetricSpec(
        "continuity_site_standard_threshold",
        "gauge",
        "The site class's threshold for a criterion, in the criterion's base unit "
        "(bytes per second for download, upload, negotiated_speed; seconds for rtt, jitter; "
        "ratio for loss, availability).",
        labels=(*_SITE, "criterion"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_site_standard_met",
        "gauge",
        "1 if the site meets the criterion, 0 if not, after hysteresis (K consecutive evaluations); "
        "absent until known.",
        labels=(*_SITE, "criterion"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_site_standard_value",
        "gauge",
        "The last measured value a criterion was evaluated on, in the same unit as its threshold.",
        labels=(*_SITE, "criterion"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_site_standard_met_all",
        "gauge",
        "1 if the site meets every criterion of its class, 0 if it fails any; absent while some are unknown.",
        labels=_SITE,
        target_labels=False,
    ),
    MetricSpec(
        "continuity_site_availability_ratio",
        "gauge",
        "Share of the last 30 days the site's far end answered, over its service hours or around the clock "
        "(time with no measurements left out).",
        labels=(*_SITE, "window"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_site_in_service",
        "gauge",
        "1 while the site is inside its class's service hours (bank holidays excluded), else 0.",
        labels=_SITE,
        target_labels=False,
    ),
    MetricSpec(
        "continuity_link_contracted_bytes_per_second",
        "gauge",
        "The site's contracted connection rate (config, written in bit/s there), in bytes per second.",
        "bytes_per_second",
        labels=(*_SITE, "direction"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_link_utilisation_ratio",
        "gauge",
        "Traffic on the site's WAN interface between the last two SNMP polls against its negotiated speed (0-1).",
        labels=(*_SITE, "direction"),
        target_labels=False,
    ),
)


class StandardsTarget(TargetBase):
    kind: Literal["standards"] = Field(description="Selects this collector: `standards`.")


class StandardsCollector(Collector):
    kind = "standards"
    config_model = StandardsTarget
    METRICS = METRICS
    REASONS = ()

    def _state(self) -> EvaluatorState:
        # Lives in the agent's shared dict: survives reloads; persisted in the store for restarts.
        state = self.ctx.shared.get(STATE_KEY)
        if state is None:
            stored = self.ctx.store.get_kv(KV_KEY) if self.ctx.store is not None else None
            state = self.ctx.shared[STATE_KEY] = EvaluatorState.from_json(stored)
        assert isinstance(state, EvaluatorState)
        return state

    async def collect(self) -> Collected:
        state = await self.ctx.run_blocking(self._state)
        # agent.config loads the collector modules through the registry: import it at run time.
        from agent.config import AgentConfig

        cfg = self.ctx.config
        if not isinstance(cfg, AgentConfig):  # the agent always lends its config; a bare context does not
            raise CollectorError(INTERNAL, f"{self.target.name}: no agent config to evaluate")
        ev = Evaluator(cfg, self.ctx.store, clock=self.ctx.clock, state=state)
        reports = await self.ctx.run_blocking(ev.evaluate)
        if self.ctx.store is not None:
            self.ctx.store.set_kv(KV_KEY, state.to_json())
        out = Collected(samples=report_samples(reports))
        out.info["sites"] = [r.to_dict() for r in reports]
        return out


COLLECTORS = [StandardsCollector]
