"""Collectors of one config on one shared context and store, run through the real runner — the
way the agent runs them, but stepped by the test."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from agent.config import load_config
from agent.exposition import AgentStatus, make_registry
from agent.runner import run_task
from agent.service import build_collectors
from agent.state import Result, StateStore
from collectors.base import CollectorContext
from tests.helpers.collect import assert_declared


class Rig:
    """Collectors of one config on one shared context and store, run through the real runner."""

    def __init__(
        self, config: Path, store: StateStore | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.loaded = load_config(config)
        self.cfg = self.loaded.config
        self.store = store if store is not None else StateStore(None)
        self.executor = ThreadPoolExecutor(max_workers=4)
        self.ctx = CollectorContext(
            auths=self.cfg.auths,
            executor=self.executor,
            state_dir=self.cfg.agent.state_dir,
            clock=clock,
            shared={},
            store=self.store,
            config=self.cfg,
        )
        self.collectors = build_collectors(self.loaded, self.ctx)

    async def run(self, target: str, task: str = "") -> Result:
        col = self.collectors[target]
        t = next(t for t in col.tasks() if t.name == task)
        r = await run_task(col, t, site=self.cfg.site_of(col.target), clock=self.clock)
        self.store.put(r)
        return r

    async def verdicts(self) -> dict[str, dict[str, Any]]:
        r = await self.run("standards")
        assert r.ok, r.message
        assert_declared(r)
        return {s["site"]: {c["criterion"]: c for c in s["criteria"]} for s in r.info["sites"]}

    def metrics(self) -> str:
        status = AgentStatus(
            site=self.cfg.agent.site,
            targets={t.name: (t.kind, self.cfg.site_of(t)) for t in self.cfg.targets},
        )
        dynamic = {s.name: s for c in self.collectors.values() for s in c.dynamic_metrics()}
        return generate_latest(make_registry(self.store, lambda: status, lambda: dynamic)).decode()

    def close(self) -> None:
        self.executor.shutdown(wait=False)
        self.store.close()
