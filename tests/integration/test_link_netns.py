"""Link quality and connection standards over real veth links into network namespaces the tests
create: tbf-shaped throughput against iperf3 servers, iptables-made loss, a blocked far end, a
busy iperf3 server, and the whole agent process scraping the result."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.state import StateStore
from tests.helpers.collect import assert_declared, value, write_config
from tests.helpers.common import ROOT, agent_process, metric_value, need, wait_until
from tests.helpers.linkrig import Rig
from tests.helpers.netns import Peer, peer

pytestmark = [pytest.mark.netns, pytest.mark.integration]


def burst_config(
    tmp_path: Path,
    p: Peer,
    *,
    method: str = "icmp",
    port: int | None = None,
    count: int = 20,
    k: int = 1,
    extra: str = "",
) -> Path:
    port_line = f", port: {port}" if port else ""
    return write_config(
        tmp_path,
        f"""
agent: {{site: hq, state_dir: {tmp_path / "state"}}}
sites: [{{name: hq, class: office}}, {{name: branch, class: branch}}]
site_classes:
  office: {{}}
  branch: {{max_loss: 10%, max_rtt: 200ms, min_availability: 99%, hysteresis: {k}}}
targets:
  - {{name: standards, kind: standards}}
  - {{name: branch-link, kind: link, site: branch, host: {p.ns_ip}, method: {method}{port_line},
      count: {count}, packet_interval: 0.02s, packet_timeout: 0.5s, interval: 10s}}
{extra}""",
    )


def start_echo(p: Peer, tcp_port: int = 7001, udp_port: int = 7007) -> None:
    p.spawn(
        sys.executable,
        str(ROOT / "tests" / "helpers" / "echo_server.py"),
        p.ns_ip,
        str(tcp_port),
        str(udp_port),
    )
    p.wait_listening(tcp_port, "tcp")
    p.wait_listening(udp_port, "udp")


@pytest.mark.parametrize(("method", "port"), [("icmp", None), ("tcp", 7001), ("udp", 7007)])
def test_burst_measures_rtt_jitter_and_no_loss(tmp_path: Path, method: str, port: int | None) -> None:
    with peer("burst") as p:
        start_echo(p)
        rig = Rig(burst_config(tmp_path, p, method=method, port=port))
        try:
            r = asyncio.run(rig.run("branch-link"))
        finally:
            rig.close()
    assert r.ok, r.message
    assert_declared(r)
    assert (r.info["sent"], r.info["received"]) == (20, 20)
    assert value(r, "continuity_link_loss_ratio", **{"class": "branch"}) == 0.0
    lo, avg, hi = (value(r, "continuity_link_rtt_seconds", stat=s) for s in ("min", "avg", "max"))
    assert lo is not None and avg is not None and hi is not None
    assert 0 < lo <= avg <= hi < 0.5
    jitter = value(r, "continuity_link_jitter_seconds")
    assert jitter is not None and 0 <= jitter <= hi - lo


@pytest.mark.parametrize(
    ("method", "rule"),
    [
        ("icmp", ["-p", "icmp", "--icmp-type", "echo-request"]),
        ("udp", ["-p", "udp", "--dport", "7007"]),
    ],
)
def test_every_nth_packet_dropped_gives_expected_loss(tmp_path: Path, method: str, rule: list[str]) -> None:
    need("iptables")
    count, every = 20, 5
    with peer("loss") as p:
        start_echo(p)
        p.iptables(
            "-A",
            "INPUT",
            *rule,
            "-m",
            "statistic",
            "--mode",
            "nth",
            "--every",
            str(every),
            "--packet",
            "0",
            "-j",
            "DROP",
        )
        rig = Rig(
            burst_config(tmp_path, p, method=method, port=7007 if method == "udp" else None, count=count)
        )
        try:
            results = [asyncio.run(rig.run("branch-link")) for _ in range(2)]
        finally:
            rig.close()
    for r in results:
        assert r.ok, r.message
        loss = value(r, "continuity_link_loss_ratio")
        assert loss is not None
        assert abs(loss - 1 / every) <= 1 / count + 1e-9, loss  # within one packet of the burst
        assert (
            r.info["received"] == count - count // every
            or abs(r.info["received"] - (count - count // every)) <= 1
        )


def test_blocked_far_end_is_total_loss_and_fails_availability(tmp_path: Path) -> None:
    need("iptables")
    with peer("block") as p:
        store = StateStore(tmp_path / "state")
        rig = Rig(burst_config(tmp_path, p, count=5, k=2), store)
        try:
            good = asyncio.run(rig.run("branch-link"))
            assert good.ok, good.message
            v = asyncio.run(rig.verdicts())["branch"]
            assert v["loss"]["verdict"] == "unknown" and v["loss"]["streak"] == 1
            good = asyncio.run(rig.run("branch-link"))
            assert good.ok, good.message
            v = asyncio.run(rig.verdicts())["branch"]
            assert (v["loss"]["verdict"], v["rtt"]["verdict"]) == ("met", "met")
            p.iptables("-A", "INPUT", "-j", "DROP")
            bad = []
            for _ in range(2):
                bad.append(asyncio.run(rig.run("branch-link")))
                v = asyncio.run(rig.verdicts())["branch"]
            text = rig.metrics()
            reach = rig.store.latest("branch-link", "reachability")
            ip = p.ns_ip
        finally:
            rig.close()
    for r in bad:
        # Still a measurement: loss 1.0, no RTT, the collection itself fine.
        assert r.ok, r.message
        assert value(r, "continuity_link_loss_ratio") == 1.0
        assert value(r, "continuity_link_rtt_seconds", stat="avg") is None
        assert (r.info["sent"], r.info["received"]) == (5, 0)
    assert reach is not None and not reach.ok and reach.reason == "unreachable"
    assert reach.message == f"branch-link: no reply to any of 5 icmp probes to {ip} (loss 1.0)"
    assert v["loss"]["value"] == 1.0 and v["loss"]["verdict"] == "failed"
    assert v["availability"]["value"] < 0.99 and v["availability"]["verdict"] == "failed"
    # Nothing answered, so there is no RTT: not "met" on the last good burst's figure.
    assert (v["rtt"]["value"], v["rtt"]["verdict"]) == (None, "unknown")
    assert metric_value(text, "continuity_site_standard_met", site="branch", criterion="rtt") is None
    assert metric_value(text, "continuity_site_standard_met", site="branch", criterion="availability") == 0
    assert metric_value(text, "continuity_site_standard_met", site="branch", criterion="loss") == 0
    assert metric_value(text, "continuity_site_standard_met_all", site="branch") == 0
    assert metric_value(text, "continuity_link_loss_ratio", target="branch-link") == 1.0
    assert metric_value(text, "continuity_target_up", target="branch-link") == 1
    # When the far end last answered: the good burst before the block.
    last = metric_value(
        text, "continuity_task_last_success_timestamp_seconds", target="branch-link", task="reachability"
    )
    assert last == pytest.approx(good.started, abs=2)
    assert (
        metric_value(text, "continuity_target_errors_total", target="branch-link", reason="unreachable") == 2
    )


THROUGHPUT = """
agent: {{site: hq, state_dir: {state}}}
sites:
  - {{name: hq, class: office}}
  - {{name: slow, class: needs10, contracted_download: 2Mbit/s, contracted_upload: 2Mbit/s}}
  - {{name: good, class: needs10, contracted_download: 50Mbit/s}}
site_classes:
  office: {{}}
  needs10: {{min_download: 10Mbit/s, hysteresis: {k}}}
targets:
  - {{name: standards, kind: standards}}
  - name: slow-accuracy
    kind: link
    site: slow
    host: {slow}
    standards: false
    throughput: {{duration: 8s, omit: 1s, interval: 6h, max_tests_per_day: 20, busy_retries: 2,
                 busy_retry_delay: 1s}}
  - name: slow-link
    kind: link
    site: slow
    host: {slow}
    throughput: {{duration: 2s, directions: [download], interval: 6h, max_tests_per_day: 20, busy_retries: 2, omit: 0s,
                 busy_retry_delay: 1s}}
  - name: good-link
    kind: link
    site: good
    host: {good}
    throughput: {{duration: 2s, directions: [download], interval: 6h, max_tests_per_day: 20, busy_retries: 2, omit: 0s,
                 busy_retry_delay: 1s}}
"""


@pytest.mark.slow
def test_shaped_throughput_and_standard_with_hysteresis(tmp_path: Path) -> None:
    need("tc")
    k = 2
    with peer("slow") as slow, peer("good") as good:
        slow.shape(2e6)
        good.shape(50e6)
        slow.iperf3_server()
        good.iperf3_server()
        cfg = write_config(
            tmp_path, THROUGHPUT.format(state=tmp_path / "state", slow=slow.ns_ip, good=good.ns_ip, k=k)
        )
        rig = Rig(cfg)
        try:
            acc = asyncio.run(rig.run("slow-accuracy", "throughput"))
            assert acc.ok, acc.message
            assert_declared(acc)
            for direction in ("download", "upload"):
                bps = value(acc, "continuity_link_throughput_bytes_per_second", direction=direction)
                assert bps is not None and abs(bps * 8 / 2e6 - 1) <= 0.10, (direction, bps)
            assert value(acc, "continuity_link_throughput_test_timestamp_seconds") == pytest.approx(
                time.time(), abs=60
            )

            async def round_() -> dict[str, dict[str, Any]]:
                rs = await asyncio.gather(
                    rig.run("slow-link", "throughput"), rig.run("good-link", "throughput")
                )
                assert all(r.ok for r in rs), [r.message for r in rs]
                return await rig.verdicts()

            seen = []
            for _ in range(k):
                v = asyncio.run(round_())
                seen.append((v["slow"]["download"]["verdict"], v["good"]["download"]["verdict"]))
            assert seen == [("unknown", "unknown")] * (k - 1) + [("failed", "met")]
            assert v["slow"]["download"]["value"] < 2.2e6 / 8 and v["good"]["download"]["value"] > 10e6 / 8
            text = rig.metrics()
            assert metric_value(text, "continuity_site_standard_met", site="slow", criterion="download") == 0
            assert metric_value(text, "continuity_site_standard_met", site="good", criterion="download") == 1
            assert (
                metric_value(text, "continuity_site_standard_threshold", site="slow", criterion="download")
                == 10e6 / 8
            )
            assert (
                metric_value(
                    text, "continuity_link_contracted_bytes_per_second", site="slow", direction="download"
                )
                == 2e6 / 8
            )
            assert (
                metric_value(
                    text,
                    "continuity_link_throughput_bytes_per_second",
                    target="slow-link",
                    direction="download",
                    site="slow",
                    **{"class": "needs10"},
                )
                is not None
            )

            slow.shape(50e6)  # the link is restored
            seen = []
            for _ in range(k):
                v = asyncio.run(round_())
                seen.append(v["slow"]["download"]["verdict"])
            assert seen == ["failed"] * (k - 1) + ["met"]
        finally:
            rig.close()


BUSY = """
agent: {{site: hq, state_dir: {state}}}
sites: [{{name: hq, class: c}}, {{name: branch, class: c}}]
site_classes:
  c: {{min_download: 1Mbit/s, hysteresis: 1}}
targets:
  - {{name: standards, kind: standards}}
  - name: once
    kind: link
    site: branch
    host: {ip}
    throughput: {{duration: 1s, directions: [download], interval: 6h, max_tests_per_day: 20, busy_retries: 0,
                 busy_retry_delay: 0.5s}}
  - name: patient
    kind: link
    site: branch
    host: {ip}
    standards: false
    throughput: {{duration: 1s, directions: [download], interval: 6h, max_tests_per_day: 20, busy_retries: 8,
                 busy_retry_delay: 0.5s}}
"""


def test_busy_iperf3_server_is_retried_not_a_verdict(tmp_path: Path) -> None:
    iperf3 = need("iperf3")
    with peer("busy") as p:
        p.iperf3_server()
        rig = Rig(write_config(tmp_path, BUSY.format(state=tmp_path / "state", ip=p.ns_ip)))
        try:
            hog = subprocess.Popen([iperf3, "-c", p.ns_ip, "-t", "3", "-b", "1M"], stdout=subprocess.DEVNULL)
            try:
                time.sleep(0.5)
                busy = asyncio.run(rig.run("once", "throughput"))
                v = asyncio.run(rig.verdicts())["branch"]["download"]
                retried = asyncio.run(rig.run("patient", "throughput"))
            finally:
                hog.wait(15)
        finally:
            rig.close()
    assert not busy.ok and busy.reason == "server_busy"
    assert "still busy after 1 attempts" in (busy.message or "")
    assert (v["value"], v["verdict"], v["streak"]) == (None, "unknown", 0)  # no false verdict
    assert retried.ok, retried.message
    assert retried.info["download_busy_attempts"] >= 1
    bps = value(retried, "continuity_link_throughput_bytes_per_second", direction="download")
    assert bps is not None and bps > 1e6 / 8


def test_whole_agent_exposes_link_and_standard(tmp_path: Path) -> None:
    need("iptables")
    with peer("agent") as p:
        cfg = burst_config(tmp_path, p, count=5, k=1).read_text()
        cfg = cfg.replace("interval: 10s}", "interval: 2s, timeout: 2s}").replace(
            "{name: standards, kind: standards}", "{name: standards, kind: standards, interval: 1s}"
        )
        path = write_config(tmp_path, cfg)
        with agent_process(path) as agent:
            wait_until(
                lambda: (
                    metric_value(
                        agent.metrics(), "continuity_site_standard_met", site="branch", criterion="loss"
                    )
                    == 1
                ),
                timeout=20,
                what="loss criterion met",
            )
            text = agent.metrics()
            assert (
                metric_value(
                    text,
                    "continuity_link_rtt_seconds",
                    target="branch-link",
                    stat="avg",
                    site="branch",
                    **{"class": "branch"},
                )
                is not None
            )
            assert (
                metric_value(text, "continuity_site_in_service", site="branch", **{"class": "branch"})
                == 1
            )
            p.iptables("-A", "INPUT", "-j", "DROP")
            wait_until(
                lambda: (
                    metric_value(
                        agent.metrics(), "continuity_site_standard_met", site="branch", criterion="loss"
                    )
                    == 0
                ),
                timeout=20,
                what="loss criterion failed",
            )
            text = agent.metrics()
            assert metric_value(text, "continuity_link_loss_ratio", target="branch-link") == 1.0
        out = subprocess.run(
            [
                str(Path(sys.executable).parent / "continuity-agent"),
                "sites",
                "--config",
                str(path),
                "--site",
                "branch",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1, out.stderr
    loss = next(line for line in out.stdout.splitlines() if line.strip().startswith("loss"))
    assert "100%" in loss and loss.rstrip().endswith("FAILED")
