"""The collector contract (agent/plugin.py): results for other tasks come back through collect()'s
return value and the runner stores them; config-defined metrics are declared per target and a
reload drops them."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pytest

from agent.catalogue import check_dynamic, spec_for
from agent.config import load_config
from agent.configtypes import register_secret
from agent.plugin import Collected, Collector, CollectorContext, MetricSpec, Sample, TargetBase, TaskOutcome
from agent.runner import run_task
from agent.service import Agent
from agent.state import Result, StateStore
from tests.helpers.collect import write_config


class _Target(TargetBase):
    kind: Literal["fake"]


class _Fake(Collector):
    kind = "fake"
    config_model = _Target
    fail = False

    async def collect(self) -> Collected:
        out = Collected()
        out.outcomes.append(TaskOutcome("reachability", 100.0, 0.5, False, "unreachable", "no reply; key s3cr3t-value"))
        out.outcomes.append(TaskOutcome("side", 101.0, 0.1, True))
        if self.fail:
            raise RuntimeError("broken after the outcome")
        return out


def _collector(fail: bool = False) -> _Fake:
    ctx = CollectorContext(auths={}, executor=ThreadPoolExecutor(1), state_dir=Path("."))
    col = _Fake(_Target(name="t1", kind="fake"), ctx, interval=10.0, timeout=5.0)
    col.fail = fail
    return col


def test_outcomes_become_stored_results_of_the_same_target() -> None:
    register_secret("s3cr3t-value")
    col = _collector()
    r = asyncio.run(run_task(col, col.tasks()[0], site="hq"))
    assert r.ok
    assert [(x.target, x.task, x.kind, x.site, x.ok) for x in r.extra] == [
        ("t1", "reachability", "fake", "hq", False),
        ("t1", "side", "fake", "hq", True),
    ]
    assert r.extra[0].message == "no reply; key <secret>"  # scrubbed like the run's own message
    store = StateStore(None)
    store.put(r)
    reach = store.latest("t1", "reachability")
    assert reach is not None and not reach.ok and reach.reason == "unreachable" and reach.started == 100.0
    assert store.latest("t1", "side") is not None
    assert store.latest("t1") is r
    assert store.snapshot().errors[("t1", "unreachable")] == 1
    assert "extra" not in r.to_json()
    store.close()


def test_a_failed_run_stores_no_outcomes() -> None:
    col = _collector(fail=True)
    r = asyncio.run(run_task(col, col.tasks()[0], site="hq"))
    assert not r.ok and r.reason == "internal"
    assert r.extra == []


def test_dynamic_metrics_are_checked_like_static_ones() -> None:
    ok = MetricSpec("continuity_test_mapped_value", "gauge", "A mapped OID.")
    assert check_dynamic([ok]) == []
    problems = check_dynamic(
        [
            MetricSpec("continuity_target_up", "gauge", "Shadows a static metric."),
            MetricSpec("continuity_test_things", "counter", "Counter without _total."),
        ]
    )
    assert problems == [
        "continuity_target_up: already declared by the agent",
        "continuity_test_things: counters end in _total",
    ]
    assert spec_for("continuity_test_mapped_value") is None
    assert spec_for("continuity_test_mapped_value", {ok.name: ok}) is ok


SNMP = """agent: {{site: hq, state_dir: state}}
auths:
  v2: {{type: snmp_v2c, community: "${{TEST_COMMUNITY}}"}}
targets:
  - name: ups
    kind: snmp
    host: 127.0.0.1
    port: {port}
    auth: v2
    interval: 1h
{metrics}"""
MAPPED = "    metrics:\n      - {oid: 1.3.6.1.2.1.33.1.2.4.0, name: ups_battery_charge_remaining}\n"


def test_reload_drops_the_metrics_no_target_declares_any_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_COMMUNITY", "community-for-test")
    cfg = write_config(tmp_path, SNMP.format(port=9, metrics=MAPPED))
    name = "continuity_snmp_ups_battery_charge_remaining"
    line = f'{name}{{site="hq",target="ups"}} 42.0'

    def scrape(agent: Agent) -> str:
        assert agent.http is not None
        url = f"http://127.0.0.1:{agent.http.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())

    async def main() -> tuple[set[str], set[str], str, str]:
        agent = Agent(load_config(cfg), listen="127.0.0.1:0")
        # A stored result carrying the mapped metric; being fresh, it also keeps the first real
        # run an interval away, so nothing replaces it during the test.
        agent.store.put(
            Result("ups", "", "snmp", "hq", time.time(), 0.1, True, samples=[Sample(name, 42.0, {})])
        )
        await agent.start()
        try:
            before = set(agent.dynamic_metrics)
            text_before = await asyncio.to_thread(scrape, agent)
            write_config(tmp_path, SNMP.format(port=9, metrics=""))
            assert await agent.reload()
            after = set(agent.dynamic_metrics)
            text_after = await asyncio.to_thread(scrape, agent)
            return before, after, text_before, text_after
        finally:
            await agent.stop()

    before, after, text_before, text_after = asyncio.run(main())
    assert before == {name}
    assert line in text_before.splitlines()
    assert after == set()
    # The same stored sample is now undeclared: dropped, not exposed under a stale declaration.
    assert name not in text_after
