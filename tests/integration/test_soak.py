"""The short soak (about a minute; `make soak` runs ten): 200 targets of mixed kinds, half of them
blackholed in a network namespace or hanging on loopback. Every healthy target is collected
every interval, none is skipped, /metrics answers within a second throughout, RSS and fds stay
flat after warm-up, and the agent logs no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.common import need, need_root


@pytest.mark.slow
@pytest.mark.netns
def test_short_soak_200_mixed_targets_half_faulty(tmp_path: Path) -> None:
    need_root("the soak's network namespace")
    need("ip")
    need("nft")
    from bench.soak import run_soak

    res = run_soak(1.0, interval=5.0, work=tmp_path, quiet=True)
    s = res.summary()
    assert res.targets == 200 and res.faulty == 100, s
    assert {"probe", "host"} <= set(res.kinds), s
    assert res.healthy_runs_expected > 0, s
    assert res.healthy_missed == 0, s  # every healthy target, every interval
    assert res.healthy_skipped == 0, s
    assert res.healthy_failed_runs == 0, s
    assert res.healthy_max_gap_s < 1.5 * res.interval, s
    assert res.scrape_failures == 0 and res.scrape_max_s < 1.0, s
    assert res.rss_growth < 0.10, s
    assert res.fds_max_after - res.fds_min_after <= 40, s  # in-flight connections come and go; no leak
    assert res.tracebacks == 0, s
    assert res.agent_exit == 0, s
