"""Recordings of 30 real devices as a regression suite for the snmp collector.

The recordings live in ``../shared/testdata/snmp-corpus/`` beside the repository (LibreNMS test data;
PROVENANCE.md there says where each comes from) and are read in place, never copied. One snmpsim
serves them all: each as the v2c community named like the file, and the ones devices.tsv marks
``v3`` as the SNMPv3 context of that name (SHA-256/AES). The agent walks every device at once; then
net-snmp's ``snmpbulkwalk`` walks ifTable and ifXTable of every device on the same simulator, and
every interface field the agent reports (the interface list of collect-once and every
``continuity_interface_*`` sample) must equal what follows from net-snmp's answer by the rules
docs/snmp.md states: the name from ifName, ifDescr or ifIndex, de-duplicated with ``#<ifIndex>``;
labels cleaned of NUL bytes and outer whitespace; speed from ifHighSpeed or ifSpeed, in bytes/s;
HC counters, else 32-bit ones; admin-down interfaces left out.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config
from agent.runner import run_task
from agent.service import build_collectors
from agent.state import Result
from collectors.base import CollectorContext
from tests.helpers.collect import assert_declared, value, values, write_config
from tests.helpers.common import need, shared_testdata
from tests.helpers.snmp import SIM_V3_AUTH, SIM_V3_PRIV, SIM_V3_USER, snmpsim

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IF = "1.3.6.1.2.1.2.2.1"
IFX = "1.3.6.1.2.1.31.1.1.1"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
COL = {
    "descr": f"{IF}.2", "speed": f"{IF}.5", "admin": f"{IF}.7", "oper": f"{IF}.8",
    "in_octets": f"{IF}.10", "in_discards": f"{IF}.13", "in_errors": f"{IF}.14",
    "out_octets": f"{IF}.16", "out_discards": f"{IF}.19", "out_errors": f"{IF}.20",
    "name": f"{IFX}.1", "hc_in": f"{IFX}.6", "hc_out": f"{IFX}.10", "high_speed": f"{IFX}.15", "alias": f"{IFX}.18",
}  # fmt: skip
OPER = {1: "up", 2: "down", 3: "testing", 4: "unknown", 5: "dormant", 6: "notPresent", 7: "lowerLayerDown"}
NO_UPTIME = "draytek_vigor2962"  # answers every IF-MIB column, has no sysUpTime


@dataclass(frozen=True)
class Device:
    name: str
    v3: bool


def _devices(corpus: Path) -> list[Device]:
    out = []
    for line in (corpus / "devices.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, v3, _what = line.split("\t", 2)
        out.append(Device(name, v3 == "v3"))
    return out


# -- net-snmp ------------------------------------------------------------------------------------


def _net_snmp(tool: str, port: int, dev: Device, options: list[str], oid: str) -> str:
    auth = (["-v3", "-l", "authPriv", "-u", SIM_V3_USER, "-a", "SHA-256", "-A", SIM_V3_AUTH, "-x", "AES",
             "-X", SIM_V3_PRIV, "-n", dev.name] if dev.v3 else ["-v2c", "-c", dev.name])  # fmt: skip
    # -Ox: every OCTET STRING in hex, so labels are compared byte for byte.
    r = subprocess.run(
        [need(tool), *auth, "-r", "2", "-t", "20", "-On", "-Oq", "-Ot", "-Oe", "-Ox", "-m", "", *options,
         f"127.0.0.1:{port}", oid],
        capture_output=True, text=True, timeout=300, env={**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent"},
    )  # fmt: skip
    assert r.returncode == 0, f"{tool} {dev.name}: {r.stderr.strip()}"
    return r.stdout


_RECORD = re.compile(r"^\.(\d+(?:\.\d+)*) (.*?)(?=^\.\d|\Z)", re.MULTILINE | re.DOTALL)


def _parse(text: str) -> dict[str, int | bytes | None]:
    """net-snmp ``-On -Oq -Ot -Oe -Ox`` output as {oid: int | bytes}; an exception is None."""
    out: dict[str, int | bytes | None] = {}
    for m in _RECORD.finditer(text):
        oid, raw = m.group(1), m.group(2).strip()
        if raw.startswith('"'):
            out[oid] = bytes.fromhex(raw.strip('"').replace("\n", " "))
        elif re.fullmatch(r"-?\d+", raw):
            out[oid] = int(raw)
        else:  # No Such Object / No Such Instance / No more variables, or an OID/IP value
            out[oid] = None
    return out


def _walk(port: int, dev: Device) -> dict[str, int | bytes | None]:
    out: dict[str, int | bytes | None] = {}
    for root in (IF, IFX):
        out.update(_parse(_net_snmp("snmpbulkwalk", port, dev, ["-Cr50"], root)))
    return out


def _uptime(port: int, dev: Device) -> int | bytes | None:
    return _parse(_net_snmp("snmpget", port, dev, [], SYS_UPTIME)).get(SYS_UPTIME)


# -- what the agent must report, from net-snmp's answer -------------------------------------------


def _clean(v: int | bytes | None) -> str:
    """docs/snmp.md, label clean-up: UTF-8 (invalid bytes replaced), NUL bytes removed, outer
    whitespace trimmed."""
    return v.decode("utf-8", "replace").replace("\x00", "").strip() if isinstance(v, bytes) else ""


def _expected(walk: dict[str, int | bytes | None]) -> list[dict[str, Any]]:
    cols: dict[str, dict[str, int | bytes | None]] = {k: {} for k in COL}
    for oid, v in walk.items():
        for key, col in COL.items():
            if oid.startswith(col + "."):
                cols[key][oid[len(col) + 1 :]] = v
    indexes = {i for k in ("descr", "name", "oper", "admin") for i, v in cols[k].items() if v is not None}

    def num(key: str, idx: str) -> int | None:
        v = cols[key].get(idx)
        return v if isinstance(v, int) else None

    names = {i: _clean(cols["name"].get(i)) or _clean(cols["descr"].get(i)) or f"ifIndex{i}" for i in indexes}
    taken = list(names.values())
    rows = []
    for idx in sorted(indexes, key=lambda i: tuple(int(x) for x in i.split("."))):
        name = names[idx] if taken.count(names[idx]) == 1 else f"{names[idx]}#{idx}"
        admin, oper = num("admin", idx), num("oper", idx)
        high, low = num("high_speed", idx), num("speed", idx)
        if high is not None and (high >= 20 or low is None or low == 0 or low >= 2**32 - 1):
            speed: float | None = high * 1e6 / 8
        else:
            speed = low / 8 if low is not None else None
        rx = num("hc_in", idx)
        tx = num("hc_out", idx)
        rows.append({
            "index": idx, "interface": name, "alias": _clean(cols["alias"].get(idx)),
            "admin": {1: "up", 2: "down", 3: "testing"}.get(admin or 0, str(admin)),
            "oper": OPER.get(oper or 0, str(oper)), "speed_bytes_per_second": speed, "exposed": admin != 2,
            # samples
            "up": None if oper is None else float(oper == 1), "admin_up": None if admin is None else float(admin == 1),
            "rx": rx if rx is not None else num("in_octets", idx),
            "tx": tx if tx is not None else num("out_octets", idx),
            "errors_in": num("in_errors", idx), "errors_out": num("out_errors", idx),
            "discards_in": num("in_discards", idx), "discards_out": num("out_discards", idx),
        })  # fmt: skip
    return rows


LISTING = ("index", "interface", "alias", "admin", "oper", "speed_bytes_per_second", "exposed")
SAMPLES = {
    "up": ("continuity_interface_up", {}),
    "admin_up": ("continuity_interface_admin_up", {}),
    "speed_bytes_per_second": ("continuity_interface_speed_bytes_per_second", {}),
    "rx": ("continuity_interface_receive_bytes_total", {}),
    "tx": ("continuity_interface_transmit_bytes_total", {}),
    "errors_in": ("continuity_interface_errors_total", {"direction": "in"}),
    "errors_out": ("continuity_interface_errors_total", {"direction": "out"}),
    "discards_in": ("continuity_interface_discards_total", {"direction": "in"}),
    "discards_out": ("continuity_interface_discards_total", {"direction": "out"}),
}


def _compare(dev: Device, r: Result, want: list[dict[str, Any]]) -> tuple[list[str], int]:
    """Differences between the agent's interfaces and net-snmp's, and how many fields agreed."""
    diffs: list[str] = []
    agreed = 0
    got = r.info.get("interfaces", [])
    if [g["index"] for g in got] != [w["index"] for w in want]:
        return [f"{dev.name}: ifIndexes {[g['index'] for g in got]} != {[w['index'] for w in want]}"], 0
    for g, w in zip(got, want, strict=True):
        for key in LISTING:
            if g[key] != w[key]:
                diffs.append(f"{dev.name} ifIndex {w['index']} {key}: agent {g[key]!r}, net-snmp {w[key]!r}")
            else:
                agreed += 1
        lb = {"interface": w["interface"], "alias": w["alias"]}
        for key, (metric, extra) in SAMPLES.items():
            v = value(r, metric, **lb, **extra)
            expect = w[key] if w["exposed"] else None
            if v != expect:
                diffs.append(f"{dev.name} {w['interface']!r} {metric}{extra or ''}: agent {v!r}, net-snmp {expect!r}")
            else:
                agreed += 1
    # Nothing else: every interface sample belongs to an exposed interface above.
    exposed = {(w["interface"], w["alias"]) for w in want if w["exposed"]}
    for metric, _extra in SAMPLES.values():
        stray = {(lb["interface"], lb["alias"]) for lb, _v in values(r, metric)} - exposed
        if stray:
            diffs.append(f"{dev.name}: {metric} for interfaces net-snmp does not show exposed: {sorted(stray)}")
    return diffs, agreed


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Corpus:
    devices: list[Device]
    results: dict[str, Result]
    walks: dict[str, dict[str, int | bytes | None]]
    uptimes: dict[str, int | bytes | None]
    agent_seconds: float
    net_snmp_seconds: float


def _config(tmp_path: Path, port: int, devices: list[Device]) -> Path:
    lines = ["agent: {site: hq, state_dir: state}", "defaults: {interval: 10m, timeout: 200s}", "auths:",
             f"  v3: {{type: snmp_v3, username: {SIM_V3_USER}, auth_protocol: SHA256, "
             f"auth_password: '${{SIM_V3_AUTH}}', priv_protocol: AES, priv_password: '${{SIM_V3_PRIV}}'}}"]
    targets = ["targets:"]
    for d in devices:
        if d.v3:
            targets.append(f"  - {{name: {d.name}, kind: snmp, host: 127.0.0.1, port: {port}, auth: v3, "
                           f"context_name: {d.name}, request_timeout: 20s, retries: 2}}")
        else:
            secret = tmp_path / f"community-{d.name}"
            secret.write_text(d.name)
            secret.chmod(0o600)
            lines.append(f"  c-{d.name}: {{type: snmp_v2c, community_file: {secret}}}")
            targets.append(f"  - {{name: {d.name}, kind: snmp, host: 127.0.0.1, port: {port}, auth: c-{d.name}, "
                           "request_timeout: 20s, retries: 2}")
    return write_config(tmp_path, "\n".join(lines + targets) + "\n")


def _collect_all(path: Path) -> dict[str, Result]:
    loaded = load_config(path)
    cfg = loaded.config

    async def main() -> dict[str, Result]:
        with ThreadPoolExecutor(max_workers=4) as ex:
            ctx = CollectorContext(auths=cfg.auths, executor=ex, state_dir=cfg.agent.state_dir, shared={},
                                   config=cfg)
            cols = build_collectors(loaded, ctx)
            try:
                tasks = [run_task(c, next(t for t in c.tasks() if t.name == ""), site="hq") for c in cols.values()]
                return dict(zip(cols, await asyncio.gather(*tasks), strict=True))
            finally:
                for c in cols.values():
                    await c.close()

    return asyncio.run(main())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    need("snmpbulkwalk")
    data = shared_testdata("snmp-corpus")
    devices = _devices(data)
    assert len(devices) == 30 and {p.stem for p in data.glob("*.snmprec")} == {d.name for d in devices}
    tmp_path = tmp_path_factory.mktemp("snmp-corpus")
    mp = pytest.MonkeyPatch()
    mp.setenv("SIM_V3_AUTH", SIM_V3_AUTH)
    mp.setenv("SIM_V3_PRIV", SIM_V3_PRIV)
    try:
        with snmpsim(tmp_path, data, v3=True) as port:
            t0 = time.monotonic()
            results = _collect_all(_config(tmp_path, port, devices))
            t1 = time.monotonic()
            with ThreadPoolExecutor(max_workers=6) as pool:
                walks = dict(zip([d.name for d in devices], pool.map(lambda d: _walk(port, d), devices), strict=True))
                uptimes = dict(zip([d.name for d in devices], pool.map(lambda d: _uptime(port, d), devices),
                                   strict=True))
            t2 = time.monotonic()
    finally:
        mp.undo()
    yield Corpus(devices, results, walks, uptimes, t1 - t0, t2 - t1)


def test_every_interface_field_agrees_with_net_snmp(corpus: Corpus) -> None:
    diffs: list[str] = []
    agreed = interfaces = 0
    for dev in corpus.devices:
        r = corpus.results[dev.name]
        assert r.ok, (dev.name, r.message)
        assert value(r, "continuity_device_up") == 1, (dev.name, r.partial_errors)
        assert not r.partial_errors, (dev.name, r.partial_errors)
        assert_declared(r)
        want = _expected(corpus.walks[dev.name])
        assert want, f"{dev.name}: net-snmp walked no interfaces"
        d, n = _compare(dev, r, want)
        diffs += d
        agreed += n
        interfaces += len(want)
    print(f"\n{len(corpus.devices)} devices, {interfaces} interfaces, {agreed} fields equal to net-snmp's; "
          f"agent walked all in {corpus.agent_seconds:.1f} s, snmpbulkwalk in {corpus.net_snmp_seconds:.1f} s")
    assert not diffs, f"{len(diffs)} differences:\n" + "\n".join(diffs[:50])


def test_uptime_is_sysuptime_and_absent_without_it(corpus: Corpus) -> None:
    for dev in corpus.devices:
        r = corpus.results[dev.name]
        ticks = corpus.uptimes[dev.name]
        if dev.name == NO_UPTIME:
            assert ticks is None  # net-snmp: No Such Object
            assert value(r, "continuity_device_uptime_seconds") is None
            assert r.info["uptime_seconds"] is None and "no sysUpTime" in r.info["no_uptime"]
        else:
            assert isinstance(ticks, int), (dev.name, ticks)
            assert value(r, "continuity_device_uptime_seconds") == ticks / 100, dev.name


def test_a_device_without_sysuptime_is_up_with_its_interfaces(corpus: Corpus) -> None:
    r = corpus.results[NO_UPTIME]
    assert r.ok and value(r, "continuity_device_up") == 1 and not r.partial_errors
    ups = values(r, "continuity_interface_up")
    assert len(ups) == len([w for w in _expected(corpus.walks[NO_UPTIME]) if w["exposed"]]) > 0
    assert value(r, "continuity_interface_receive_bytes_total", interface=ups[0][0]["interface"]) is not None


def test_label_clean_up_was_exercised(corpus: Corpus) -> None:
    """The corpus holds the raw strings the clean-up is for: padding with NUL bytes (dnos) and
    outer whitespace; the comparison above only proves something if such bytes were there."""
    raw = [v for w in corpus.walks.values() for o, v in w.items()
           if isinstance(v, bytes) and (o.startswith(COL["alias"] + ".") or o.startswith(COL["name"] + ".")
                                        or o.startswith(COL["descr"] + "."))]  # fmt: skip
    assert any(b"\x00" in v for v in raw)
    assert any(v.replace(b"\x00", b"") != v.replace(b"\x00", b"").strip() for v in raw)
