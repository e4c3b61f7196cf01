"""Negotiated speed against the contract, from a real net-snmp snmpd through the real SNMP
collector: the loopback interface made to report 10 Mbit/s (snmpd ``override``) on a site
contracted for 100 Mbit/s fails ``negotiated_speed`` after K evaluations and shows both numbers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.state import StateStore
from tests.helpers.collect import value, write_config
from tests.helpers.common import metric_value
from tests.helpers.linkrig import Rig
from tests.helpers.netns import peer
from tests.helpers.snmp import snmpd

pytestmark = pytest.mark.integration

# lo is ifIndex 1 on Linux. ifHighSpeed in Mbit/s, ifSpeed in bit/s.
OVERRIDE = "override .1.3.6.1.2.1.31.1.1.1.15.1 gauge 10\noverride .1.3.6.1.2.1.2.2.1.5.1 gauge 10000000"

CONFIG = """
agent: {{site: hq, state_dir: {state}}}
auths:
  v2: {{type: snmp_v2c, community: "${{TEST_SNMP_COMMUNITY}}"}}
sites:
  - {{name: hq, class: office}}
  - name: branch
    class: library
    contracted_download: 100Mbit/s
    contracted_upload: 20Mbit/s
    wan_interface: {{snmp_target: branch-router, interface: lo}}
site_classes:
  office: {{}}
  library: {{hysteresis: 2}}
targets:
  - {{name: standards, kind: standards}}
  - {{name: branch-router, kind: snmp, site: branch, host: 127.0.0.1, port: {port}, auth: v2,
      interfaces: {{include: [lo]}}}}
"""


def test_negotiated_speed_below_contract_from_real_snmpd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with snmpd(tmp_path, extra=OVERRIDE) as agent:
        monkeypatch.setenv("TEST_SNMP_COMMUNITY", agent.community)
        path = write_config(tmp_path, CONFIG.format(state=tmp_path / "state", port=agent.port))
        rig = Rig(path, StateStore(tmp_path / "state"))
        try:

            async def poll_and_evaluate() -> list[str]:
                # One event loop throughout, as in the agent (the SNMP transport belongs to its loop).
                out = []
                for _ in range(2):
                    r = await rig.run("branch-router")
                    assert r.ok and not r.partial_errors, (r.message, r.partial_errors)
                    out.append((await rig.verdicts())["branch"]["negotiated_speed"])
                return out

            seen = asyncio.run(poll_and_evaluate())
            verdicts = [v["verdict"] for v in seen]
            v = seen[-1]
            text = rig.metrics()
            info = rig.store.latest("standards").info["sites"]  # type: ignore[union-attr]
            rig.store.set_kv("standards.state", rig.ctx.shared["standards.state"].to_json())
        finally:
            rig.close()
    assert verdicts == ["unknown", "failed"]
    assert (v["threshold"], v["value"]) == (100e6 / 8, 10e6 / 8)  # bytes/s
    branch = next(s for s in info if s["site"] == "branch")
    assert branch["negotiated_bytes_per_second"] == 10e6 / 8
    assert branch["contracted_bytes_per_second"] == {"download": 100e6 / 8, "upload": 20e6 / 8}
    assert set(branch["utilisation_ratio"]) == {"download", "upload"}
    assert all(u >= 0 for u in branch["utilisation_ratio"].values())
    assert (
        metric_value(
            text, "continuity_interface_speed_bytes_per_second", target="branch-router", interface="lo"
        )
        == 10e6 / 8
    )
    assert (
        metric_value(text, "continuity_site_standard_met", site="branch", criterion="negotiated_speed") == 0
    )
    assert (
        metric_value(text, "continuity_site_standard_threshold", site="branch", criterion="negotiated_speed")
        == 100e6 / 8
    )
    assert (
        metric_value(text, "continuity_site_standard_value", site="branch", criterion="negotiated_speed")
        == 10e6 / 8
    )
    assert (
        metric_value(text, "continuity_link_contracted_bytes_per_second", site="branch", direction="download")
        == 100e6 / 8
    )
    assert (
        metric_value(text, "continuity_link_utilisation_ratio", site="branch", direction="download")
        is not None
    )

    assert main(["sites", "--config", str(path), "--site", "branch"]) == 1
    out = capsys.readouterr().out
    assert "contracted download 100Mbit/s, upload 20Mbit/s" in out and "WAN negotiated 10Mbit/s" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("negotiated_speed"))
    assert ">= 100Mbit/s" in row and "10Mbit/s" in row and row.rstrip().endswith("FAILED")


WAN_DOWN = """
agent: {{site: hq, state_dir: {state}}}
auths:
  v2: {{type: snmp_v2c, community: "${{TEST_SNMP_COMMUNITY}}"}}
sites:
  - {{name: hq, class: office}}
  - name: branch
    class: library
    contracted_download: 100Mbit/s
    wan_interface: {{snmp_target: branch-router, interface: {wan}}}
site_classes:
  office: {{}}
  library: {{hysteresis: 2}}
targets:
  - {{name: standards, kind: standards}}
  - {{name: branch-router, kind: snmp, site: branch, host: 127.0.0.1, port: {port}, auth: v2,
      interfaces: {{include: [{wan}]}}}}
"""


@pytest.mark.netns
def test_wan_interface_without_carrier_fails_negotiated_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The WAN port loses its carrier (the far end of a veth taken down): net-snmp's snmpd reports
    it oper-down (ifOperStatus 2) but still at its 10 Gbit/s (ifHighSpeed), as routers report a
    down port's configured speed. Nothing is negotiated on a port that is down: before, the site
    met ``negotiated_speed`` on the 10 Gbit/s figure; now the value is 0 and it fails after K."""
    with peer("wan") as p, snmpd(tmp_path) as agent:
        monkeypatch.setenv("TEST_SNMP_COMMUNITY", agent.community)
        path = write_config(tmp_path, WAN_DOWN.format(state=tmp_path / "state", port=agent.port, wan=p.host_if))
        rig = Rig(path, StateStore(tmp_path / "state"))
        try:

            async def poll_and_evaluate(oper: float) -> list[dict[str, Any]]:
                out = []
                for _ in range(2):
                    for _attempt in range(20):  # snmpd caches its interface table for a few seconds
                        r = await rig.run("branch-router")
                        assert r.ok, r.message
                        if value(r, "continuity_interface_up", interface=p.host_if) == oper:
                            break
                        await asyncio.sleep(0.5)
                    assert value(r, "continuity_interface_up", interface=p.host_if) == oper
                    assert value(r, "continuity_interface_speed_bytes_per_second", interface=p.host_if) == 10e9 / 8
                    out.append((await rig.verdicts())["branch"]["negotiated_speed"])
                return out

            async def outage() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
                # One event loop throughout, as in the agent (the SNMP transport belongs to its loop).
                up = await poll_and_evaluate(1.0)
                p.exec("ip", "link", "set", "dev", p.ns_if, "down")
                return up, await poll_and_evaluate(0.0)

            up, down = asyncio.run(outage())
            text = rig.metrics()
            info = rig.store.latest("standards").info["sites"]  # type: ignore[union-attr]
        finally:
            rig.close()
    assert [v["verdict"] for v in up] == ["unknown", "met"]
    assert [(v["value"], v["verdict"]) for v in down] == [(0.0, "met"), (0.0, "failed")]
    branch = next(s for s in info if s["site"] == "branch")
    assert branch["negotiated_bytes_per_second"] == 0.0
    assert f"WAN interface {p.host_if} is down" in " ".join(branch["notes"])
    assert metric_value(text, "continuity_site_standard_met", site="branch", criterion="negotiated_speed") == 0
    assert metric_value(text, "continuity_site_standard_value", site="branch", criterion="negotiated_speed") == 0
    assert metric_value(text, "continuity_site_standard_met_all", site="branch") == 0
