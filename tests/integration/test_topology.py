"""The fleet topology of docs/deployment.md, for real: a site Prometheus in agent mode scrapes a
continuity-agent and remote-writes to a central Prometheus. The central one is stopped for more than
two minutes (the WAN outage) and restarted on the same port and storage; every sample scraped during
the outage must then arrive, with its original timestamp.

The site side uses the shipped deploy/prometheus/agent-mode.yml with only the addresses, credentials
and intervals changed for loopback, so its write_relabel_configs and queue settings are what is tested.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.common import ROOT, AgentProcess, free_port, http_get, metric_value, need, wait_until
from tests.helpers.prom import Prometheus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRAPE = 5.0
OUTAGE = 125.0  # "at least two minutes"
SERIES = 'continuity_agent_start_time_seconds{job="continuity-agent"}'


def _agent_config(tmp_path: Path) -> Path:
    cfg = {
        "agent": {"site": "library-north", "state_dir": str(tmp_path / "state")},
        "defaults": {"interval": "5s", "start_jitter": 0.0},
        "sites": [{"name": "library-north", "class": "branch"}],
        "targets": [{"name": "library-north-server", "kind": "host"}],
    }
    path = tmp_path / "agent.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _site_prometheus_config(agent_port: int, central_port: int) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "deploy" / "prometheus" / "agent-mode.yml").read_text())
    cfg["global"]["scrape_interval"] = f"{SCRAPE:g}s"
    cfg["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{agent_port}"]}]
    rw = cfg["remote_write"][0]
    rw["url"] = f"http://127.0.0.1:{central_port}/api/v1/write"
    rw.pop("tls_config")
    rw.pop("basic_auth")
    rw["queue_config"]["max_backoff"] = "5s"  # retry briskly once the path is back
    rw["queue_config"]["batch_send_deadline"] = "1s"
    return cfg


def _central(tmp_path: Path, port: int) -> Prometheus:
    return Prometheus(tmp_path, {"global": {"scrape_interval": "1m"}}, port=port, name="central",
                      extra_args=["--web.enable-remote-write-receiver"])


def _raw_samples(prom: Prometheus, at: float, window_s: int) -> list[float]:
    """Timestamps of the raw samples of SERIES in (at - window, at]."""
    res = prom.query(f"{SERIES}[{window_s}s]", at=at)
    assert len(res) == 1, res
    return [float(t) for t, _v in res[0]["values"]]


@pytest.mark.timeout(480)
def test_remote_write_survives_a_two_minute_outage(tmp_path: Path) -> None:
    need("prometheus")
    central_port = free_port()
    agent = AgentProcess(_agent_config(tmp_path))
    site = central = None
    try:
        agent.wait_ready()
        central = _central(tmp_path, central_port).start()
        site = Prometheus(tmp_path, _site_prometheus_config(agent.port, central_port), name="site",
                          extra_args=["--enable-feature=agent"]).start()

        # Data flows, with the council external label of the shipped config.
        wait_until(lambda: bool(central.query(SERIES)), 60, interval=0.5, what="first remote-written sample")
        (series,) = central.query(SERIES)
        assert series["metric"]["council"] == "example-council"
        assert series["metric"]["site_prometheus"] == "library-north"
        # write_relabel_configs keep continuity_* and up, drop the rest.
        assert central.query('up{job="continuity-agent"}')
        assert not central.query('{__name__=~"go_.+|process_.+|python_.+"}')

        # --- the outage --------------------------------------------------------------------------
        time.sleep(2 * SCRAPE)
        central.stop()
        stopped = time.time()
        time.sleep(OUTAGE / 2)
        # The site side knows it cannot deliver: samples pile up behind the last one sent.
        _s, body = http_get(site.url + "/metrics")
        text = body.decode()
        highest = metric_value(text, "prometheus_remote_storage_highest_timestamp_in_seconds")
        sent = metric_value(text, "prometheus_remote_storage_queue_highest_sent_timestamp_seconds")
        assert highest is not None and sent is not None
        assert highest - sent > OUTAGE / 2 - 3 * SCRAPE, (highest, sent)
        time.sleep(OUTAGE - (time.time() - stopped))
        restarted = time.time()
        assert restarted - stopped >= 120

        # --- the path is back: same port, same storage --------------------------------------------
        central = _central(tmp_path, central_port).start()
        window = int(restarted - stopped)

        def caught_up() -> bool:
            res = central.query(f"timestamp({SERIES})")
            return bool(res) and float(res[0]["value"][1]) >= restarted

        wait_until(caught_up, 90, interval=1.0, what="the backlog to arrive at the central Prometheus")

        # Raw samples scraped while the central side was down, with their scrape timestamps.
        during = [t for t in _raw_samples(central, restarted, window) if stopped + 1 < t < restarted - 1]
        expected = (restarted - stopped - 2) / SCRAPE
        print(f"outage {restarted - stopped:.0f}s: {len(during)} samples arrived afterwards, ~{expected:.0f} expected")
        assert len(during) >= expected - 2, f"{len(during)} samples during the outage, expected ~{expected:.0f}"
        gaps = [b - a for a, b in itertools.pairwise(during)]
        assert gaps and max(gaps) <= SCRAPE * 1.5 and min(gaps) >= SCRAPE * 0.5, gaps
        # They were written after the restart, yet carry timestamps from inside the outage: the
        # original scrape times, not the time of arrival.
        assert during[0] < stopped + 2 * SCRAPE and during[-1] > restarted - 2 * SCRAPE

        # query_range over the outage at the scrape step: at every step the sample in use was
        # scraped within one interval before it (lookback alone would repeat the pre-outage sample).
        rng = central.query_range(f"timestamp({SERIES})", stopped + SCRAPE, restarted - SCRAPE, SCRAPE)
        assert len(rng) == 1
        points = [(float(t), float(v)) for t, v in rng[0]["values"]]
        steps = int((restarted - stopped - 2 * SCRAPE) / SCRAPE) + 1
        assert len(points) >= steps - 1, f"{len(points)} points of {steps} steps"
        stale = [(t, v) for t, v in points if not 0 <= t - v <= SCRAPE * 1.5]
        assert not stale, f"steps answered by an old sample: {stale[:5]}"
    finally:
        for p in (site, central):
            if p is not None:
                p.stop()
        agent.stop()
