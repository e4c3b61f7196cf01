"""Run one target of a config through the real runner, as the agent would."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent.catalogue import catalogue, exposed_labels
from agent.config import LoadedConfig, load_config
from agent.runner import run_task
from agent.service import build_collectors
from agent.state import Result, StateStore
from collectors.base import CollectorContext


def write_config(tmp_path: Path, text: str, name: str = "agent.yml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def collect(
    config: Path | LoadedConfig,
    target: str,
    task: str = "",
    store: StateStore | None = None,
    shared: dict[str, Any] | None = None,
) -> Result:
    loaded = config if isinstance(config, LoadedConfig) else load_config(config)
    cfg = loaded.config

    async def main() -> Result:
        with ThreadPoolExecutor(max_workers=8) as ex:
            ctx = CollectorContext(
                auths=cfg.auths,
                executor=ex,
                state_dir=cfg.agent.state_dir,
                shared=shared if shared is not None else {},
                store=store,
                config=cfg,
            )
            col = build_collectors(loaded, ctx)[target]
            try:
                t = next(t for t in col.tasks() if t.name == task)
                t_site = cfg.site_of(col.target)
                return await run_task(col, t, site=t_site)
            finally:
                await col.close()

    return asyncio.run(main())


def assert_declared(result: Result) -> None:
    """Every sample is in the catalogue with exactly the declared labels."""
    cat = catalogue()
    for s in result.samples:
        assert s.name in cat, f"{s.name} is not declared in the metric catalogue"
        spec = cat[s.name]
        labels = set(s.labels) | ({"target", "site"} if spec.target_labels else set())
        assert labels == set(exposed_labels(spec)), f"{s.name}: labels {sorted(labels)} != catalogue"


def values(result: Result, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), s.value) for s in result.samples if s.name == name]


def value(result: Result, name: str, **labels: str) -> float | None:
    for lb, v in values(result, name):
        if all(lb.get(k) == val for k, val in labels.items()):
            return v
    return None
