"""The snmp collector against real agents on loopback: net-snmp snmpd, snmpsim, and a scripted
v2c agent for the misbehaviours real kit is rarely kind enough to show on demand."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent.catalogue import exposed_labels, spec_for
from agent.config import load_config
from agent.service import build_collectors
from agent.state import Result
from collectors.base import CollectorContext, MetricSpec
from collectors.snmp import ber
from collectors.snmp.collector import SnmpCollector, mapping_spec
from collectors.snmp.config import SnmpTarget
from tests.helpers.collect import collect, value, values, write_config
from tests.helpers.common import AGENT_BIN, need
from tests.helpers.snmp import (
    COMMUNITY,
    FIXTURES,
    V3_AUTH,
    V3_PRIV,
    V3_USER,
    FakeAgent,
    fake_agent,
    if_mib,
    snmpd,
    snmpsim,
)

AUTHS = f"""
auths:
  v2: {{type: snmp_v2c, community: "${{SNMP_TEST_COMMUNITY}}"}}
  v2-wrong: {{type: snmp_v2c, community: "${{SNMP_TEST_WRONG}}"}}
  v1: {{type: snmp_v1, community: "${{SNMP_TEST_COMMUNITY}}"}}
  v3: {{type: snmp_v3, username: {V3_USER}, auth_protocol: SHA256, auth_password: "${{SNMP_TEST_AUTH}}",
        priv_protocol: AES, priv_password: "${{SNMP_TEST_PRIV}}"}}
  v3-bad-auth: {{type: snmp_v3, username: {V3_USER}, auth_protocol: SHA256, auth_password: "${{SNMP_TEST_WRONG}}",
        priv_protocol: AES, priv_password: "${{SNMP_TEST_PRIV}}"}}
  v3-bad-priv: {{type: snmp_v3, username: {V3_USER}, auth_protocol: SHA256, auth_password: "${{SNMP_TEST_AUTH}}",
        priv_protocol: AES, priv_password: "${{SNMP_TEST_WRONG}}"}}
  v3-unknown: {{type: snmp_v3, username: mallory, auth_protocol: SHA256, auth_password: "${{SNMP_TEST_AUTH}}",
        priv_protocol: AES, priv_password: "${{SNMP_TEST_PRIV}}"}}
"""


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNMP_TEST_COMMUNITY", COMMUNITY)
    monkeypatch.setenv("SNMP_TEST_WRONG", "not-the-right-one")
    monkeypatch.setenv("SNMP_TEST_AUTH", V3_AUTH)
    monkeypatch.setenv("SNMP_TEST_PRIV", V3_PRIV)


def config(tmp_path: Path, targets: str, auths: str = AUTHS, defaults: str = "{interval: 30s, timeout: 6s}") -> Path:
    return write_config(tmp_path, f"agent: {{site: hq, state_dir: state}}\ndefaults: {defaults}\n{auths}\n"
                                  f"targets:\n{targets}")


def declared_by(cfg: Path) -> dict[str, MetricSpec]:
    """The config's OID-mapped metrics, as the SNMP collectors declare them (dynamic_metrics)."""
    targets = [t for t in load_config(cfg).config.targets if isinstance(t, SnmpTarget)]
    return {s.name: s for t in targets for s in (mapping_spec(m) for m in t.metrics)}


def assert_declared(r: Result, dynamic: dict[str, MetricSpec] | None = None) -> None:
    for s in r.samples:
        spec = spec_for(s.name, dynamic)
        assert spec is not None, f"{s.name} is not declared"
        assert set(s.labels) | {"target", "site"} == set(exposed_labels(spec)), s


def errors(r: Result) -> dict[str, str]:
    return dict(r.partial_errors)


def snmp_cmd(tool: str, port: int, *args: str, v3: bool = False) -> dict[str, str]:
    """snmpwalk/snmpget output as {oid: value}, numeric OIDs and values."""
    binary = need(tool)
    auth = (["-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA-256", "-A", V3_AUTH, "-x", "AES", "-X", V3_PRIV]
            if v3 else ["-v2c", "-c", COMMUNITY])
    out = subprocess.run([binary, *auth, "-On", "-Oq", "-Ot", "-Oe", "-m", "", f"127.0.0.1:{port}", *args],
                         capture_output=True, text=True, timeout=30, check=True,
                         env={**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"}).stdout
    res = {}
    for line in out.splitlines():
        oid, _, val = line.partition(" ")
        res[oid.lstrip(".")] = val.strip().strip('"')
    return res


# -- net-snmp snmpd --------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", ["v2", "v3"])
def test_matches_snmpwalk_on_net_snmp(tmp_path: Path, auth: str) -> None:
    with snmpd(tmp_path) as d:
        cfg = config(tmp_path, f"  - {{name: rtr, kind: snmp, host: 127.0.0.1, port: {d.port}, auth: {auth},"
                               " interfaces: {include_admin_down: true}}\n")
        v3 = auth == "v3"
        before = snmp_cmd("snmpbulkwalk", d.port, "1.3.6.1.2.1.31.1.1.1.6", v3=v3)
        r = collect(cfg, "rtr")
        after = snmp_cmd("snmpbulkwalk", d.port, "1.3.6.1.2.1.31.1.1.1.6", v3=v3)
        names = snmp_cmd("snmpbulkwalk", d.port, "1.3.6.1.2.1.31.1.1.1.1", v3=v3)
        oper = snmp_cmd("snmpbulkwalk", d.port, "1.3.6.1.2.1.2.2.1.8", v3=v3)
        high = snmp_cmd("snmpbulkwalk", d.port, "1.3.6.1.2.1.31.1.1.1.15", v3=v3)
        low = snmp_cmd("snmpbulkwalk", d.port, "1.3.6.1.2.1.2.2.1.5", v3=v3)
        uptime = snmp_cmd("snmpget", d.port, "1.3.6.1.2.1.1.3.0", v3=v3)
    assert r.ok, r.message
    assert not r.partial_errors, r.partial_errors
    assert_declared(r)
    assert value(r, "continuity_device_up") == 1
    assert 0 < value(r, "continuity_device_uptime_seconds") <= int(uptime["1.3.6.1.2.1.1.3.0"]) / 100  # type: ignore[operator]
    assert r.info["sys_name"] == "continuity-test-snmpd"
    assert r.info["getbulk_requests"] >= 1
    got = {lb["interface"] for lb, _v in values(r, "continuity_interface_up")}
    assert got == set(names.values()) and "lo" in got
    for oid, name in names.items():
        idx = oid.rsplit(".", 1)[1]
        assert value(r, "continuity_interface_up", interface=name) == (1 if oper[f"1.3.6.1.2.1.2.2.1.8.{idx}"] == "1"
                                                                      else 0)
        hs, ls = int(high[f"1.3.6.1.2.1.31.1.1.1.15.{idx}"]), int(low[f"1.3.6.1.2.1.2.2.1.5.{idx}"])
        want = (ls if (hs < 20 and 0 < ls < 2**32 - 1) else hs * 1_000_000) / 8  # bytes/s
        assert value(r, "continuity_interface_speed_bytes_per_second", interface=name) == want
        rx = value(r, "continuity_interface_receive_bytes_total", interface=name)
        # Counters move with the test's own traffic: between the walks before and after.
        lo_, hi_ = int(before[f"1.3.6.1.2.1.31.1.1.1.6.{idx}"]), int(after[f"1.3.6.1.2.1.31.1.1.1.6.{idx}"])
        assert rx is not None and lo_ <= rx <= hi_
    listed = {i["interface"]: i for i in r.info["interfaces"]}
    assert set(listed) == got and listed["lo"]["oper"] in ("up", "down")


def test_getbulk_on_the_wire_and_v3_fast_path_matches_pysnmp(tmp_path: Path) -> None:
    """v3 walks use GETBULK (snmpd's snmpInGetNexts does not move), and the agent's codec inside
    pysnmp's engine gives exactly what pysnmp's own decoding gives for the same agent."""
    with snmpd(tmp_path) as d:
        cfg = config(tmp_path, f"  - {{name: rtr, kind: snmp, host: 127.0.0.1, port: {d.port}, auth: v3,"
                               " interfaces: {include_admin_down: true}}\n")
        loaded = load_config(cfg)
        nexts = "1.3.6.1.2.1.11.16.0"  # snmpInGetNexts
        n0 = int(snmp_cmd("snmpget", d.port, nexts)[nexts])

        async def both() -> tuple[Any, Any, int]:
            with ThreadPoolExecutor(2) as ex:
                ctx = CollectorContext(auths=loaded.config.auths, executor=ex, state_dir=tmp_path, shared={})
                col = build_collectors(loaded, ctx)["rtr"]
                assert isinstance(col, SnmpCollector)
                fast = await col.collect()
                col.session.fast_v3 = col.session.fast_encode = False  # type: ignore[attr-defined]
                plain = await col.collect()
                await col.close()
                return fast, plain, col.session.bulk_requests

        fast, plain, bulk = asyncio.run(both())
        n1 = int(snmp_cmd("snmpget", d.port, nexts)[nexts])
    assert bulk >= 2 and n1 == n0 + 0  # snmpget itself is a GET, not a GETNEXT
    strip = {"continuity_device_uptime_seconds", "continuity_interface_receive_bytes_total",
             "continuity_interface_transmit_bytes_total"}
    assert [(s.name, dict(s.labels)) for s in fast.samples] == [(s.name, dict(s.labels)) for s in plain.samples]
    assert [(s.name, s.value) for s in fast.samples if s.name not in strip] == \
        [(s.name, s.value) for s in plain.samples if s.name not in strip]
    assert fast.info["interfaces"] == plain.info["interfaces"]


@pytest.mark.parametrize(("auth", "reason"), [
    ("v2-wrong", "timeout"),
    ("v3-bad-auth", "wrong_digest"),
    ("v3-bad-priv", "decryption_error"),
    ("v3-unknown", "unknown_user_name"),
])
def test_credential_errors_are_named(tmp_path: Path, auth: str, reason: str) -> None:
    with snmpd(tmp_path) as d:
        cfg = config(tmp_path, f"  - {{name: rtr, kind: snmp, host: 127.0.0.1, port: {d.port}, auth: {auth},"
                               " retries: 0, request_timeout: 1s}\n"
                               f"  - {{name: good, kind: snmp, host: 127.0.0.1, port: {d.port}, auth: v3}}\n")
        shared: dict[str, Any] = {}
        r = collect(cfg, "rtr", shared=shared)
    assert r.ok
    assert value(r, "continuity_device_up") == 0
    assert list(errors(r)) == [reason], r.partial_errors
    assert "rtr" in errors(r)[reason]
    for secret in (V3_AUTH, V3_PRIV, "not-the-right-one", COMMUNITY):
        assert secret not in errors(r)[reason]


def test_v1_reads_32_bit_counters(tmp_path: Path) -> None:
    with snmpd(tmp_path) as d:
        cfg = config(tmp_path, f"  - {{name: rtr, kind: snmp, host: 127.0.0.1, port: {d.port}, auth: v1}}\n")
        r = collect(cfg, "rtr")
    assert r.ok and value(r, "continuity_device_up") == 1, r.partial_errors
    assert r.info["engine"] == "pysnmp-v1" and r.info["getbulk_requests"] == 0
    assert value(r, "continuity_interface_receive_bytes_total", interface="lo") is not None


# -- snmpsim recordings ----------------------------------------------------------------------------

UPS_METRICS = """
    metrics:
      - {oid: 1.3.6.1.2.1.33.1.2.1.0, name: ups_battery_status, enum: {1: unknown, 2: normal, 3: low, 4: depleted}}
      - {oid: 1.3.6.1.2.1.33.1.2.3.0, name: ups_battery_remaining_seconds, scale: 60}
      - {oid: 1.3.6.1.2.1.33.1.2.5.0, name: ups_battery_volts, scale: 0.1}
      - {oid: 1.3.6.1.2.1.33.1.3.3.1.3, name: ups_input_volts, index_label: line}
      - {oid: 1.3.6.1.4.1.9.9.109.1.1.1.1.8, name: vendor_cpu_usage_ratio, scale: 0.01, index_label: cpu}
"""


def test_snmpsim_router_switch_and_ups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = {c: FIXTURES / f"{c}.snmprec" for c in ("router", "switch32", "ups")}
    for c in recs:
        monkeypatch.setenv(f"SNMPSIM_{c.upper()}", c)
    auths = ("auths:\n" + "".join(f"  {c}: {{type: snmp_v2c, community: \"${{SNMPSIM_{c.upper()}}}\"}}\n"
                                   for c in recs))
    with snmpsim(tmp_path, recs) as port:  # type: ignore[arg-type]
        def t(name: str, extra: str = "") -> str:
            return f"  - name: {name}\n    kind: snmp\n    host: 127.0.0.1\n    port: {port}\n    auth: {name}\n{extra}"

        cfg = config(tmp_path, t("router") + t("switch32") + t("ups", UPS_METRICS), auths=auths)
        router, switch, ups = (collect(cfg, n) for n in ("router", "switch32", "ups"))
    for r in (router, switch, ups):
        assert r.ok and value(r, "continuity_device_up") == 1, (r.target, r.partial_errors)
        assert_declared(r, declared_by(cfg))
    # Router: 48 interfaces, 3 admin-down ones left out, 64-bit counters beyond 2^32.
    assert not router.partial_errors
    assert len(values(router, "continuity_interface_up")) == 45
    assert value(router, "continuity_interface_receive_bytes_total", interface="Gi1/0/9") == 5_000_000_000 * 10
    assert value(router, "continuity_interface_speed_bytes_per_second", interface="Serial0/0",
                 alias="WAN to county network") == 2_048_000 / 8
    assert value(router, "continuity_interface_up", interface="Gi1/0/4") == 0
    assert value(router, "continuity_interface_errors_total", interface="Gi1/0/1", direction="out") == 8
    # 32-bit-only switch: the fallback walk of ifInOctets/ifOutOctets; names from ifDescr.
    assert not switch.partial_errors
    assert value(switch, "continuity_interface_receive_bytes_total", interface="port 7") == 7000
    assert value(switch, "continuity_interface_transmit_bytes_total", interface="port 7") == 14000
    assert value(switch, "continuity_interface_speed_bytes_per_second", interface="port 7") == 100_000_000 / 8
    # UPS: mapped battery metrics; the vendor CPU OID it lacks is a counted partial error.
    assert value(ups, "continuity_snmp_ups_battery_status", state="normal") == 2
    assert value(ups, "continuity_snmp_ups_battery_remaining_seconds") == 42 * 60  # 42 minutes recorded
    assert value(ups, "continuity_snmp_ups_battery_volts") == pytest.approx(27.3)
    assert value(ups, "continuity_snmp_ups_input_volts", line="2") == 229
    assert value(ups, "continuity_interface_up", interface="eth0") == 1
    assert list(errors(ups)) == ["no_such_object"] and "vendor_cpu_usage_ratio" in errors(ups)["no_such_object"]


# -- the scripted agent: wire format, misbehaviour, limits ---------------------------------------------

def fake_target(name: str, port: int, extra: str = "") -> str:
    return f"  - {{name: {name}, kind: snmp, host: 127.0.0.1, port: {port}, auth: v2{extra}}}\n"


@pytest.mark.parametrize("engine", ["builtin", "pysnmp"])
def test_v2c_sends_only_getbulk(tmp_path: Path, engine: str) -> None:
    with fake_agent(FakeAgent(mib=if_mib(40), max_reply_varbinds=60)) as a:
        r = collect(config(tmp_path, fake_target("f", a.port, f", v2c_engine: {engine}")), "f")
    assert r.ok and not r.partial_errors, r.partial_errors
    assert len(values(r, "continuity_interface_up")) == 40
    assert a.pdus and set(a.pdus) == {ber.GET_BULK_REQUEST}, a.pdus
    assert value(r, "continuity_interface_receive_bytes_total", interface="p3") == 10**12 + 3


def test_looping_agent_is_cut_off(tmp_path: Path) -> None:
    with fake_agent(FakeAgent(mib=if_mib(3), behaviour="loop")) as a:
        r = collect(config(tmp_path, fake_target("f", a.port)), "f")
    assert r.ok and value(r, "continuity_device_up") == 1
    assert "oid_not_increasing" in errors(r), r.partial_errors
    assert "not increasing" in errors(r)["oid_not_increasing"]
    assert len(a.pdus) < 20


def test_ten_thousand_interfaces_are_cut_off(tmp_path: Path) -> None:
    mib = if_mib(10_000)
    with fake_agent(FakeAgent(mib=mib)) as a:
        r = collect(config(tmp_path, fake_target("f", a.port, ", max_interfaces: 500, max_repetitions: 100"),
                           defaults="{interval: 60s, timeout: 30s}"), "f")
    assert r.ok and value(r, "continuity_device_up") == 1
    assert "limit_exceeded" in errors(r) and "more than 500 rows" in errors(r)["limit_exceeded"]
    assert len(r.info["interfaces"]) == 500


def test_device_without_sysuptime_is_up_and_labels_are_cleaned(tmp_path: Path) -> None:
    """Up means the device answered: no sysUpTime gives no uptime series and no error, and the
    interfaces are all there; labels lose NUL padding and outer whitespace (docs/snmp.md).
    (The real case, a DrayTek Vigor 2962 recording, is in test_snmp_corpus.py.)"""
    mib = [vb for vb in if_mib(2) if vb[0] != (1, 3, 6, 1, 2, 1, 1, 3, 0)]
    pads = {(1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 1, 1): b" WAN1\x00\x00\x00",
            (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18, 1): b"\x00\x00",
            (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 18, 2): b"\tto the  depot \r\n"}
    mib = [(o, t, pads.get(o, v)) for o, t, v in mib]
    with fake_agent(FakeAgent(mib=mib)) as a:
        r = collect(config(tmp_path, fake_target("f", a.port)), "f")
    assert r.ok and value(r, "continuity_device_up") == 1 and not r.partial_errors, r.partial_errors
    assert value(r, "continuity_device_uptime_seconds") is None and r.info["uptime_seconds"] is None
    assert {(lb["interface"], lb["alias"]) for lb, _v in values(r, "continuity_interface_up")} == {
        ("WAN1", ""), ("p2", "to the  depot")}
    assert value(r, "continuity_interface_speed_bytes_per_second", interface="WAN1") == 1e9 / 8


def test_garbage_reply_is_malformed_not_timeout(tmp_path: Path) -> None:
    with fake_agent(FakeAgent(mib=if_mib(2), behaviour="garbage")) as a:
        r = collect(config(tmp_path, fake_target("f", a.port, ", retries: 0")), "f")
    assert value(r, "continuity_device_up") == 0
    assert list(errors(r)) == ["malformed_reply"], r.partial_errors


def test_reboot_shows_as_uptime_going_back_and_counters_as_reported(tmp_path: Path) -> None:
    agent = FakeAgent(mib=if_mib(2, base_in=10**9))
    with fake_agent(agent) as a:
        loaded = load_config(config(tmp_path, fake_target("f", a.port)))

        async def twice() -> tuple[Any, Any]:
            with ThreadPoolExecutor(2) as ex:
                ctx = CollectorContext(auths=loaded.config.auths, executor=ex, state_dir=tmp_path, shared={})
                col = build_collectors(loaded, ctx)["f"]
                first = await col.collect()
                agent.mib = if_mib(2, base_in=5)  # rebooted: counters restarted
                agent.mib = [((o, t, 300) if o == (1, 3, 6, 1, 2, 1, 1, 3, 0) else (o, t, v)) for o, t, v in agent.mib]
                second = await col.collect()
                await col.close()
                return first, second

        first, second = asyncio.run(twice())
    get = {s.name + str(sorted(s.labels.items())): s.value for s in second.samples}
    assert first.samples[1].value == 1234.56 and get["continuity_device_uptime_seconds[]"] == 3.0
    assert get["continuity_interface_receive_bytes_total[('alias', 'alias 1'), ('interface', 'p1')]"] == 6
    assert "restart_detected" in second.info and "restart_detected" not in first.info


def test_silent_and_slow_targets_do_not_delay_others(tmp_path: Path) -> None:
    """Same shape as the core's overload test: a silent port and a slow agent next to healthy
    ones, all walked at once on one event loop with the shared engine."""
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    healthy = [FakeAgent(mib=if_mib(8)) for _ in range(10)]
    slow = FakeAgent(mib=if_mib(8), behaviour="slow:3")
    from contextlib import ExitStack

    with ExitStack() as stack:
        for h in [*healthy, slow]:
            stack.enter_context(fake_agent(h))
        targets = "".join(fake_target(f"ok{i}", h.port) for i, h in enumerate(healthy))
        targets += fake_target("silent", silent.getsockname()[1], ", retries: 1, request_timeout: 1.5s")
        targets += fake_target("slow", slow.port, ", retries: 0, request_timeout: 4s")
        loaded = load_config(config(tmp_path, targets, defaults="{interval: 30s, timeout: 5s}"))

        async def run_all() -> dict[str, tuple[float, Any]]:
            with ThreadPoolExecutor(2) as ex:
                ctx = CollectorContext(auths=loaded.config.auths, executor=ex, state_dir=tmp_path, shared={})
                cols = build_collectors(loaded, ctx)

                async def timed(name: str) -> tuple[str, tuple[float, Any]]:
                    t0 = time.perf_counter()
                    out = await cols[name].collect()
                    return name, (time.perf_counter() - t0, out)

                res = dict(await asyncio.gather(*(timed(n) for n in cols)))
                for c in cols.values():
                    await c.close()
                return res

        res = asyncio.run(run_all())
    silent.close()
    slowest_healthy = max(d for n, (d, _o) in res.items() if n.startswith("ok"))
    assert res["silent"][0] >= 2.9 and res["slow"][0] >= 2.9
    # Had the healthy walks queued behind the silent or slow ones, they would take 3 s or more.
    assert slowest_healthy < 2.0, {n: round(d, 2) for n, (d, _o) in res.items()}
    for n, (_d, out) in res.items():
        up = next(s.value for s in out.samples if s.name == "continuity_device_up")
        assert up == (0 if n == "silent" else 1), (n, out.partial_errors)
    assert [r for r, _m in res["silent"][1].partial_errors] == ["timeout"]


def test_collect_once_prints_interfaces(tmp_path: Path) -> None:
    with fake_agent(FakeAgent(mib=if_mib(3))) as a:
        cfg = config(tmp_path, fake_target("edge", a.port))
        out = subprocess.run([str(AGENT_BIN), "collect-once", "--config", str(cfg), "edge"], capture_output=True,
                             text=True, timeout=60, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert "# interfaces:" in out.stdout and '"interface": "p2"' in out.stdout and '"alias": "alias 2"' in out.stdout
    assert 'continuity_interface_up{alias="alias 2",interface="p2"} 0' in out.stdout


def test_same_v3_user_with_different_credentials_share_one_engine(tmp_path: Path) -> None:
    """pysnmp's USM keeps one key set per user name: targets using the same name with different
    passwords take turns instead of corrupting each other's requests."""
    with snmpd(tmp_path) as d:
        targets = "".join(f"  - {{name: good{i}, kind: snmp, host: 127.0.0.1, port: {d.port}, auth: v3}}\n"
                          for i in range(3))
        targets += (f"  - {{name: bad, kind: snmp, host: 127.0.0.1, port: {d.port}, auth: v3-bad-auth,"
                    " retries: 0, request_timeout: 1s}\n")
        loaded = load_config(config(tmp_path, targets))

        async def run_all() -> dict[str, Any]:
            with ThreadPoolExecutor(2) as ex:
                ctx = CollectorContext(auths=loaded.config.auths, executor=ex, state_dir=tmp_path, shared={})
                cols = build_collectors(loaded, ctx)
                outs = await asyncio.gather(*(c.collect() for c in cols.values()))
                outs2 = await asyncio.gather(*(c.collect() for c in cols.values()))
                assert len(ctx.shared) == 1
                for c in cols.values():
                    await c.close()
                assert "snmp" not in ctx.shared  # the last close releases the shared engine
                return dict(zip(cols, outs2, strict=True)) | {f"first-{k}": v for k, v in zip(cols, outs, strict=True)}

        res = asyncio.run(run_all())
    for name, out in res.items():
        up = next(s.value for s in out.samples if s.name == "continuity_device_up")
        if name.endswith("bad"):
            assert up == 0 and [r for r, _m in out.partial_errors] == ["wrong_digest"], (name, out.partial_errors)
        else:
            assert up == 1 and not out.partial_errors, (name, out.partial_errors)


V3_COMBOS = [  # (net-snmp createUser auth, priv, our auth_protocol, priv_protocol)
    ("MD5", "DES", "MD5", "DES"),
    ("SHA", "AES", "SHA", "AES"),
    ("SHA-224", "AES-192", "SHA224", "AES192"),
    ("SHA-512", "AES-256", "SHA512", "AES256"),
]


def test_v3_auth_and_priv_protocols(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = "".join(f"createUser u{i} {a} auth-pass-{i} {p} priv-pass-{i}\nrouser u{i} priv\n"
                    for i, (a, p, _a, _p) in enumerate(V3_COMBOS))
    auths = "auths:\n" + "".join(
        f"  a{i}: {{type: snmp_v3, username: u{i}, auth_protocol: {a}, auth_password: \"${{V3A{i}}}\", "
        f"priv_protocol: {p}, priv_password: \"${{V3P{i}}}\"}}\n" for i, (_x, _y, a, p) in enumerate(V3_COMBOS))
    for i in range(len(V3_COMBOS)):
        monkeypatch.setenv(f"V3A{i}", f"auth-pass-{i}")
        monkeypatch.setenv(f"V3P{i}", f"priv-pass-{i}")
    with snmpd(tmp_path, extra=users) as d:
        cfg = config(tmp_path, "".join(f"  - {{name: t{i}, kind: snmp, host: 127.0.0.1, port: {d.port}, auth: a{i}}}\n"
                                       for i in range(len(V3_COMBOS))), auths=auths)
        results = [collect(cfg, f"t{i}") for i in range(len(V3_COMBOS))]
    for combo, r in zip(V3_COMBOS, results, strict=True):
        assert value(r, "continuity_device_up") == 1 and not r.partial_errors, (combo, r.partial_errors)
        assert value(r, "continuity_interface_up", interface="lo") == 1, combo
