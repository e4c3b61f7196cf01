"""A site whose route disappears is below its standard (issue 13, point 1).

The agent's own side of the veth is taken down during service hours: the route to the site goes
with it and every probe fails to send with "Network is unreachable" — the way a withdrawn VPN
route shows at HQ. Each burst must still be a measurement (loss 1.0, a reachability record), so
after K bursts the loss and availability verdicts and ``met_all`` fail, the shipped
``SiteBelowConnectionStandard`` condition holds in a real Prometheus and ``continuity-agent
sites`` exits 1; K bursts after the route returns they clear.

Time is stepped by a clock the test owns (bursts an hour apart, the standards evaluation run
after each), so availability over service hours is a figure worked out below, not a race.
The network, the probes, the state database, Prometheus and the CLI are all real."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.state import Result, StateStore
from tests.helpers.collect import write_config
from tests.helpers.common import ROOT, free_port, metric_value, need, wait_until
from tests.helpers.linkrig import Rig
from tests.helpers.netns import Peer, peer
from tests.helpers.prom import Prometheus
from tests.helpers.promql import RULES_DIR

pytestmark = [pytest.mark.netns, pytest.mark.integration]

H = 3600.0
K = 2
AGENT = Path(sys.executable).parent / "continuity-agent"

CONFIG = """
agent: {{site: hq, state_dir: {state}}}
sites: [{{name: hq, class: office}}, {{name: branch, class: branch}}]
site_classes:
  office: {{}}
  branch:
    max_loss: 10%
    min_availability: 50%
    hysteresis: {k}
    service_hours: {{timezone: UTC, days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}}
targets:
  - {{name: standards, kind: standards}}
  - {{name: branch-link, kind: link, site: branch, host: {ip}, method: {method}{port}, count: 5,
      packet_interval: 0.02s, packet_timeout: 0.5s, interval: 1h}}
"""


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@contextlib.contextmanager
def serve_metrics(rig: Rig) -> Iterator[str]:
    """The rig's /metrics on a free loopback port, for Prometheus to scrape."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = rig.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def step(rig: Rig, clock: Clock, burst_at: float, evaluate_at: float) -> tuple[Result, dict[str, Any]]:
    """One burst at ``burst_at``, then the standards evaluation at ``evaluate_at``."""
    clock.t = burst_at
    r = asyncio.run(rig.run("branch-link"))
    clock.t = evaluate_at
    return r, asyncio.run(rig.verdicts())["branch"]


def verdicts(v: dict[str, Any]) -> tuple[str, str]:
    return v["loss"]["verdict"], v["availability"]["verdict"]


def sites(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(AGENT), "sites", "--config", str(config), "--site", "branch"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_echo(p: Peer) -> None:
    p.spawn(sys.executable, str(ROOT / "tests" / "helpers" / "echo_server.py"), p.ns_ip, "7001", "7007")
    p.wait_listening(7001, "tcp")
    p.wait_listening(7007, "udp")


def config_for(tmp_path: Path, p: Peer, method: str) -> Path:
    port = {"icmp": "", "tcp": ", port: 7001", "udp": ", port: 7007"}[method]
    return write_config(
        tmp_path, CONFIG.format(state=tmp_path / "state", k=K, ip=p.ns_ip, method=method, port=port)
    )


def run_outage(rig: Rig, clock: Clock, p: Peer, t0: float) -> dict[str, list[Any]]:
    """Two good bursts, K with the agent's side of the link down, K after it came back.

    Availability (service hours = all day), evaluated after each burst, in hours from t0:
    good 0, 0.1 -> 1.0, 1.0; down 0.2 -> 0.2/1.2 = 0.17 at 1.2, 0.2/2.2 = 0.09 at 2.2;
    up again 2.2 -> 2.1/4.1 = 0.51 at 4.1, 2.2/4.2 = 0.52 at 4.2 (threshold 50 %)."""
    seen: dict[str, list[Any]] = {"good": [], "down": [], "back": []}
    for a, b in ((0.0, 0.1), (0.1, 0.2)):
        seen["good"].append(step(rig, clock, t0 + a * H, t0 + b * H))
    p.link_down()
    for a, b in ((0.2, 1.2), (1.2, 2.2)):
        seen["down"].append(step(rig, clock, t0 + a * H, t0 + b * H))
    p.link_up()
    for a, b in ((2.2, 4.1), (4.1, 4.2)):
        seen["back"].append(step(rig, clock, t0 + a * H, t0 + b * H))
    return seen


def test_withdrawn_route_fails_the_standard_in_prometheus_and_sites(tmp_path: Path) -> None:
    need("prometheus")
    t0 = time.time() - 6 * H  # the stepped clock ends before the real one: `sites` sees it all
    clock = Clock(t0)
    with peer("outage") as p:
        path = config_for(tmp_path, p, "icmp")
        rig = Rig(path, StateStore(tmp_path / "state"), clock=clock)
        prom = None
        try:
            with serve_metrics(rig) as instance:
                prom = Prometheus(
                    tmp_path,
                    {
                        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "rule_files": [str(f) for f in sorted(RULES_DIR.glob("*.yml"))],
                        "scrape_configs": [
                            {"job_name": "continuity-agent", "static_configs": [{"targets": [instance]}]}
                        ],
                    },
                ).start()

                def alerts() -> set[tuple[str, str]]:
                    return {
                        (a["metric"]["alertname"], a["metric"].get("criterion", ""))
                        for a in prom.query('ALERTS{site="branch"}')  # type: ignore[union-attr]
                    }

                def met_all() -> float | None:
                    r = prom.query('continuity_site_standard_met_all{site="branch"}')  # type: ignore[union-attr]
                    return float(r[0]["value"][1]) if r else None

                seen: dict[str, list[Any]] = {"good": [], "down": [], "back": []}
                for a, b in ((0.0, 0.1), (0.1, 0.2)):
                    seen["good"].append(step(rig, clock, t0 + a * H, t0 + b * H))
                wait_until(lambda: met_all() == 1.0, 30, what="met_all 1 in Prometheus before the outage")
                assert alerts() == set()

                p.link_down()
                seen["down"].append(step(rig, clock, t0 + 0.2 * H, t0 + 1.2 * H))
                rig.store.flush()
                early = sites(path)  # one bad burst: not yet K
                seen["down"].append(step(rig, clock, t0 + 1.2 * H, t0 + 2.2 * H))
                rig.store.flush()
                below = sites(path)
                wait_until(
                    lambda: {
                        ("SiteBelowConnectionStandard", "loss"),
                        ("SiteBelowConnectionStandard", "availability"),
                        ("SiteLinkDown", ""),
                    }
                    <= alerts(),
                    30,
                    what="SiteBelowConnectionStandard (loss, availability) and SiteLinkDown for branch",
                )
                assert met_all() == 0.0
                outage_metrics = rig.metrics()

                p.link_up()
                seen["back"].append(step(rig, clock, t0 + 2.2 * H, t0 + 4.1 * H))
                seen["back"].append(step(rig, clock, t0 + 4.1 * H, t0 + 4.2 * H))
                rig.store.flush()
                after = sites(path)
                wait_until(lambda: alerts() == set() and met_all() == 1.0, 30, what="alerts cleared")
                back_reach = rig.store.latest("branch-link", "reachability")
        finally:
            if prom is not None:
                prom.stop()
            rig.close()
        ip = p.ns_ip

    good = [v for _r, v in seen["good"]]
    down = [v for _r, v in seen["down"]]
    back = [v for _r, v in seen["back"]]
    assert [verdicts(v) for v in good] == [("unknown", "unknown"), ("met", "met")]
    # Loss fails after K bursts, availability with it (the first burst's hour of outage: 0.17).
    assert [verdicts(v) for v in down] == [("met", "met"), ("failed", "failed")]
    assert [v["availability"]["value"] for v in down] == pytest.approx([0.2 / 1.2, 0.2 / 2.2])
    assert [verdicts(v) for v in back] == [("failed", "failed"), ("met", "met")]
    assert [v["availability"]["value"] for v in back] == pytest.approx([2.1 / 4.1, 2.2 / 4.2])

    for r, _v in seen["down"]:
        # A measurement, not a failed collection: loss 1.0, no RTT, every probe unsent.
        assert r.ok, r.message
        assert r.info["send_errors"] == {"Network is unreachable": 5}
        assert [s.value for s in r.samples if s.name == "continuity_link_loss_ratio"] == [1.0]
        assert not [s for s in r.samples if s.name == "continuity_link_rtt_seconds"]
    assert all(r.ok and r.info["received"] == 5 for r, _v in seen["good"] + seen["back"])
    assert back_reach is not None and back_reach.ok  # the route is back

    assert metric_value(outage_metrics, "continuity_site_standard_met_all", site="branch") == 0
    assert metric_value(outage_metrics, "continuity_link_loss_ratio", target="branch-link") == 1.0
    assert metric_value(outage_metrics, "continuity_target_up", target="branch-link") == 1
    assert (
        metric_value(outage_metrics, "continuity_target_errors_total", target="branch-link", reason="unreachable")
        == K
    )
    avail = metric_value(
        outage_metrics, "continuity_site_availability_ratio", site="branch", window="service_hours_30d"
    )
    assert avail == pytest.approx(0.2 / 2.2)
    last_up = metric_value(
        outage_metrics,
        "continuity_task_last_success_timestamp_seconds",
        target="branch-link",
        task="reachability",
    )
    assert last_up == pytest.approx(t0 + 0.1 * H, abs=1.0)  # when the last good burst finished

    assert early.returncode == 0, early.stdout + early.stderr
    assert below.returncode == 1, below.stdout + below.stderr
    assert "BELOW STANDARD" in below.stdout
    row = {line.split()[0]: line for line in below.stdout.splitlines()[2:] if line.strip()}
    assert row["loss"].rstrip().endswith("FAILED") and "100%" in row["loss"]
    assert row["availability"].rstrip().endswith("FAILED")
    assert f"no reply to any of 5 icmp probes to {ip} (loss 1.0); 5 probes could not be sent" in below.stdout
    assert after.returncode == 0, after.stdout + after.stderr
    assert "meets its standard" in after.stdout


@pytest.mark.parametrize("method", ["tcp", "udp"])
def test_withdrawn_route_is_loss_for_tcp_and_udp_bursts(tmp_path: Path, method: str) -> None:
    t0 = time.time() - 6 * H
    clock = Clock(t0)
    with peer("outage") as p:
        start_echo(p)
        rig = Rig(config_for(tmp_path, p, method), StateStore(tmp_path / "state"), clock=clock)
        try:
            seen = run_outage(rig, clock, p, t0)
            reach = rig.store.latest("branch-link", "reachability")
        finally:
            rig.close()
    assert [verdicts(v) for _r, v in seen["down"]] == [("met", "met"), ("failed", "failed")]
    assert [verdicts(v) for _r, v in seen["back"]] == [("failed", "failed"), ("met", "met")]
    for r, v in seen["down"]:
        assert r.ok and r.info["send_errors"] == {"Network is unreachable": 5}
        assert v["loss"]["value"] == 1.0
    assert reach is not None and reach.ok
