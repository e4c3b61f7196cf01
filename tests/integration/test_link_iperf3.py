"""The throughput task's plumbing with a stand-in iperf3 (a script replaying recorded iperf3 JSON):
missing binary, busy retries, per-site caps that survive a restart, one test per site at a time,
killing a hung client. Real iperf3 over shaped links is in test_link_netns.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent.state import StateStore
from collectors.base import CollectorError
from collectors.link import IperfBusy, parse_iperf3, run_iperf3
from tests.helpers.collect import collect, write_config
from tests.helpers.linkrig import Rig

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "link"

FAKE = """#!{python}
import os, pathlib, sys, time
d = pathlib.Path({dir!r})
with open(d / "calls.log", "a") as f:
    f.write(f"start {{time.time()}} {{os.getpid()}} {{' '.join(sys.argv[1:])}}\\n")
modes = (d / "modes").read_text().split() if (d / "modes").exists() else []
mode = modes.pop(0) if modes else "ok"
(d / "modes").write_text(" ".join(modes))
if mode == "hang":
    time.sleep(3600)
time.sleep(float((d / "sleep").read_text()) if (d / "sleep").exists() else 0)
print((pathlib.Path({fix!r}) / ("iperf3_busy.json" if mode == "busy" else "iperf3_download_ok.json")).read_text())
with open(d / "calls.log", "a") as f:
    f.write(f"end {{time.time()}} {{os.getpid()}}\\n")
"""


def fake_iperf3(tmp_path: Path, modes: str = "", sleep: float = 0.0) -> Path:
    d = tmp_path / "fake"
    d.mkdir(parents=True, exist_ok=True)
    exe = d / "iperf3"
    exe.write_text(FAKE.format(python=sys.executable, dir=str(d), fix=str(FIX)))
    exe.chmod(0o755)
    (d / "modes").write_text(modes)
    (d / "sleep").write_text(str(sleep))
    return exe


def calls(exe: Path) -> list[list[str]]:
    log = exe.parent / "calls.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _flow(v: object) -> str:
    return "[" + ", ".join(str(x) for x in v) + "]" if isinstance(v, list) else str(v)


def config(tmp_path: Path, exe: str, *, tp: str = "", targets: int = 1) -> Path:
    throughput = {"iperf3": exe, "duration": "1s", "directions": ["download"], "interval": "12h",
                  "max_tests_per_day": 2, "busy_retry_delay": "0.2s"}  # fmt: skip
    if tp:  # overrides: the config loader refuses a key given twice
        throughput.update(yaml.safe_load("{" + tp.lstrip(", ") + "}"))
    links = "".join(
        f"""  - name: link{i}
    kind: link
    site: branch
    host: 127.0.0.1
    standards: {"true" if i == 0 else "false"}
    throughput: {{{", ".join(f"{k}: {_flow(v)}" for k, v in throughput.items())}}}
"""
        for i in range(targets)
    )
    return write_config(
        tmp_path,
        f"agent: {{site: hq, state_dir: {tmp_path / 'state'}}}\nsites: [{{name: hq}}, {{name: branch}}]\n"
        f"targets:\n{links}",
    )


def test_iperf3_missing_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = collect(config(tmp_path, "/nonexistent/iperf3"), "link0", "throughput")
    assert not r.ok and r.reason == "iperf3_missing"
    assert r.message is not None and "\n" not in r.message
    assert (
        "iperf3 not found ('/nonexistent/iperf3'" in r.message and "install the iperf3 package" in r.message
    )
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    r = collect(config(tmp_path, "iperf3"), "link0", "throughput")
    assert (r.reason, r.message) == (
        "iperf3_missing",
        "link0: iperf3 not found ('iperf3' is not an executable on PATH); install the iperf3 package or set "
        "throughput.iperf3 to its path",
    )


def test_recorded_outputs_parse() -> None:
    ok = parse_iperf3((FIX / "iperf3_download_ok.json").read_text(), "x")
    assert ok.bits_per_second == pytest.approx(20969695.6, rel=1e-6) and ok.bytes == 2621440
    with pytest.raises(IperfBusy):
        parse_iperf3((FIX / "iperf3_busy.json").read_text(), "x")
    with pytest.raises(CollectorError) as ei:
        parse_iperf3((FIX / "iperf3_refused.json").read_text(), "x")
    assert ei.value.reason == "unreachable" and "Connection refused" in ei.value.message
    for junk, reason in (
        ("iperf3: error - bad option", "bad_reply"),
        ("[]", "bad_reply"),
        ('{"end": {}}', "bad_reply"),
        ('{"error": "parameter error"}', "iperf3_error"),
    ):
        with pytest.raises(CollectorError) as ei:
            parse_iperf3(junk, "x")
        assert ei.value.reason == reason


def test_omitted_seconds_count_in_the_bytes_moved() -> None:
    """iperf3 leaves the --omit interval out of its end sums; those bytes crossed the link too."""
    text = (FIX / "iperf3_download_omit.json").read_text()
    data = json.loads(text)
    omitted = [iv["sum"]["bytes"] for iv in data["intervals"] if iv["sum"]["omitted"]]
    assert len(omitted) == 1
    end = max(data["end"]["sum_sent"]["bytes"], data["end"]["sum_received"]["bytes"])
    r = parse_iperf3(text, "x")
    assert r.bytes == end + omitted[0] == 7208144
    assert r.bits_per_second == data["end"]["sum_received"]["bits_per_second"]


def test_busy_server_retried_then_measured(tmp_path: Path) -> None:
    exe = fake_iperf3(tmp_path, modes="busy busy ok")
    r = collect(config(tmp_path, str(exe), tp=", busy_retries: 3"), "link0", "throughput")
    assert r.ok, r.message
    assert r.info["download_busy_attempts"] == 2 and len([c for c in calls(exe) if c[0] == "start"]) == 3
    starts = [float(c[1]) for c in calls(exe) if c[0] == "start"]
    assert starts[1] - starts[0] >= 0.2 and starts[2] - starts[1] >= 0.2  # waited busy_retry_delay
    (tmp_path / "b").mkdir()
    exe2 = fake_iperf3(tmp_path / "b", modes="busy busy busy")
    r = collect(config(tmp_path / "b", str(exe2), tp=", busy_retries: 1"), "link0", "throughput")
    assert not r.ok and r.reason == "server_busy" and "still busy after 2 attempts" in (r.message or "")


def test_caps_per_site_survive_a_restart(tmp_path: Path) -> None:
    exe = fake_iperf3(tmp_path)
    path = config(tmp_path, str(exe), tp=", max_bytes_per_day: 100MB")
    store = StateStore(tmp_path / "state")
    shared: dict[str, object] = {}
    try:
        assert collect(path, "link0", "throughput", store=store, shared=shared).ok
        assert collect(path, "link0", "throughput", store=store, shared=shared).ok
        third = collect(path, "link0", "throughput", store=store, shared=shared)
        store.flush()
    finally:
        store.close()
    assert third.reason == "throughput_cap" and "had 2 throughput tests in the last 24h" in (
        third.message or ""
    )
    assert "next allowed at" in (third.message or "")
    # The agent restarts: a new store on the same database, nothing shared in memory.
    store = StateStore(tmp_path / "state")
    try:
        again = collect(path, "link0", "throughput", store=store, shared={})
    finally:
        store.close()
    assert again.reason == "throughput_cap"
    assert len([c for c in calls(exe) if c[0] == "start"]) == 2  # no third test ran


def test_bytes_cap_uses_the_last_measurement_as_estimate(tmp_path: Path) -> None:
    exe = fake_iperf3(tmp_path)
    # 2.6 MB moved by the first test; the next would move ~2.6 MB (20.97 Mbit/s for 1 s): cap 4 MB.
    path = config(tmp_path, str(exe), tp=", max_bytes_per_day: 4MB")
    store = StateStore(None)
    shared: dict[str, object] = {}
    first = collect(path, "link0", "throughput", store=store, shared=shared)
    assert first.ok
    store.put(first)
    second = collect(path, "link0", "throughput", store=store, shared=shared)
    assert second.reason == "throughput_cap"
    assert "moved 2.621MB" in (second.message or "") and "max_bytes_per_day 4MB" in (second.message or "")


def test_never_two_tests_on_one_site_at_once(tmp_path: Path) -> None:
    exe = fake_iperf3(tmp_path, sleep=0.6)
    rig = Rig(config(tmp_path, str(exe), targets=3, tp=", max_tests_per_day: 10, busy_retry_delay: 5s"))
    try:

        async def both() -> list[object]:
            return list(await asyncio.gather(*(rig.run(f"link{i}", "throughput") for i in range(3))))

        results = asyncio.run(both())
    finally:
        rig.close()
    assert all(r.ok for r in results), [r.message for r in results]  # type: ignore[attr-defined]
    events = sorted((float(c[1]), c[0]) for c in calls(exe))
    depth = peak = 0
    for _t, kind in events:
        depth += 1 if kind == "start" else -1
        peak = max(peak, depth)
    assert peak == 1 and len(events) == 6


def test_lock_wait_is_bounded(tmp_path: Path) -> None:
    exe = fake_iperf3(tmp_path, sleep=1.0)
    rig = Rig(config(tmp_path, str(exe), targets=2, tp=", max_tests_per_day: 10"))
    try:

        async def both() -> list[object]:
            first = asyncio.ensure_future(rig.run("link0", "throughput"))
            await asyncio.sleep(0.1)
            second = await rig.run("link1", "throughput")
            return [await first, second]

        first, second = asyncio.run(both())
    finally:
        rig.close()
    assert first.ok  # type: ignore[attr-defined]
    assert second.reason == "link_busy"  # type: ignore[attr-defined]
    assert "another throughput test on site branch is still running" in second.message  # type: ignore[attr-defined]


def test_hung_iperf3_is_killed(tmp_path: Path) -> None:
    exe = fake_iperf3(tmp_path, modes="hang")

    async def go() -> None:
        with pytest.raises(CollectorError) as ei:
            await run_iperf3([str(exe)], 1.0, "t")
        assert ei.value.reason == "timeout"

    t0 = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - t0 < 5
    pid = int(next(c for c in calls(exe) if c[0] == "start")[2])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_byte_cap_sizes_a_test_by_bytes_when_no_rate_is_known(tmp_path: Path) -> None:
    """No contracted rate, no earlier test: each direction runs by --bytes within its share of the
    cap (less one block per stream), without --time or --omit, so it cannot run past the cap."""
    exe = fake_iperf3(tmp_path)
    path = config(tmp_path, str(exe), tp=", max_bytes_per_day: 2MB, parallel: 2")
    path.write_text(path.read_text().replace("directions: [download]", "directions: [download, upload]"))
    r = collect(path, "link0", "throughput", store=StateStore(None))
    assert r.ok, r.message
    argvs = [c[3:] for c in calls(exe) if c[0] == "start"]
    assert len(argvs) == 2
    for argv in argvs:
        assert "--time" not in argv and "--omit" not in argv
        n = int(argv[argv.index("--bytes") + 1])
        assert int(argv[argv.index("--length") + 1]) == 131072
        assert n + 2 * 131072 <= 1_000_000  # its half of the cap, with one block per stream to spare
    assert r.info["download_byte_limit"] == 1_000_000 - 2 * 131072


def test_without_a_byte_cap_tests_run_by_time(tmp_path: Path) -> None:
    exe = fake_iperf3(tmp_path)
    r = collect(config(tmp_path, str(exe)), "link0", "throughput")
    assert r.ok, r.message
    (argv,) = [c[3:] for c in calls(exe) if c[0] == "start"]
    assert "--bytes" not in argv and argv[argv.index("--time") + 1] == "1"
