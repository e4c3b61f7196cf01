"""Link measurements against ground truth, over a veth into a network namespace this benchmark
creates (needs root, iperf3, tc; fping for the latency comparison).

* Throughput: the link collector's iperf3 task (download and upload) against the tbf rate the
  link is shaped to, at 1, 2, 10 and 50 Mbit/s — the ratio measured / configured.
* Latency: the collector's ICMP burst next to ``fping`` on the same path in the same run, idle
  and while a download fills the 2 Mbit/s link's tbf queue; plus the TCP-connect and UDP-echo
  methods on the idle path.

python -m bench.link_bench [--duration 10] [--count 100] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import update_performance_md

ROOT = Path(__file__).resolve().parents[1]
RATES = (1e6, 2e6, 10e6, 50e6)
SECTION = "Link: throughput vs tbf rate, latency vs fping"


def _collector(tmp: Path, host: str, **link: Any) -> Any:
    """A LinkCollector from a real config file, on its own context (as the agent builds it)."""
    from agent.config import load_config
    from agent.service import build_collectors
    from agent.state import StateStore
    from collectors.base import CollectorContext

    fields = ", ".join(f"{k}: {v}" for k, v in link.items())
    cfg_path = tmp / f"link-{time.monotonic_ns()}.yml"
    cfg_path.write_text(
        "agent: {site: hq}\nsites: [{name: hq}, {name: bench}]\n"
        f"targets:\n  - {{name: bench-link, kind: link, site: bench, host: {host}, timeout: 60s, interval: 10m, "
        f"{fields}}}\n"
    )
    loaded = load_config(cfg_path)
    ctx = CollectorContext(
        auths={},
        executor=ThreadPoolExecutor(max_workers=2),
        state_dir=tmp,
        store=StateStore(None),
        config=loaded.config,
    )
    return build_collectors(loaded, ctx)["bench-link"]


def _stats(rtts: list[float | None]) -> dict[str, float]:
    got = [r for r in rtts if r is not None]
    if not got:
        return {"min": float("nan"), "avg": float("nan"), "max": float("nan"), "loss": 1.0, "n": 0}
    return {
        "min": min(got),
        "avg": statistics.fmean(got),
        "max": max(got),
        "loss": 1 - len(got) / len(rtts),
        "n": len(got),
    }


def _ms(v: float) -> str:
    return f"{v * 1000:.3f}" if v == v else "-"


async def _latency(
    tmp: Path, host: str, count: int, period: float, label: str
) -> list[tuple[str, dict[str, float]]]:
    col = _collector(tmp, host, count=count, packet_interval=f"{period:g}s", packet_timeout="1s")
    from tests.helpers.netns import fping

    ours, theirs = await asyncio.gather(col.collect(), fping(host, count, int(period * 1000)))
    return [
        (f"{label}: continuity-agent ICMP burst", _stats(ours.info["rtts"])),
        (f"{label}: fping -C", _stats(theirs)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per iperf3 direction")
    ap.add_argument("--count", type=int, default=100, help="probes per latency burst")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/PERFORMANCE.md alone")
    args = ap.parse_args()

    for tool in ("ip", "tc", "iperf3"):
        if not shutil.which(tool):
            sys.exit(f"link_bench: {tool} is not installed (make system-deps)")
    if os.geteuid() != 0:
        sys.exit("link_bench: needs root to create a network namespace")
    have_fping = shutil.which("fping") is not None

    from collectors.link import LinkCollector
    from tests.helpers.netns import peer

    rows: list[tuple[float, dict[str, float]]] = []
    lat: list[tuple[str, dict[str, float]]] = []
    tmp = Path(tempfile.mkdtemp(prefix="link-bench-"))
    with peer("bench") as p:
        p.iperf3_server()
        col: LinkCollector = _collector(
            tmp,
            p.ns_ip,
            throughput=f"{{duration: {args.duration:g}s, omit: 1s, interval: 6h, max_tests_per_day: 50, "
            "busy_retries: 3, busy_retry_delay: 2s}",
        )
        for rate in RATES:
            p.shape(rate)
            time.sleep(1.0)
            got = asyncio.run(col.throughput())
            # The metric is in bytes/s; the tbf rate and this table in bit/s.
            res = {s.labels["direction"]: s.value * 8 for s in got.samples if "direction" in s.labels}
            rows.append((rate, res))
            print(
                f"tbf {rate / 1e6:g} Mbit/s: "
                + ", ".join(f"{d} {v / 1e6:.3f} Mbit/s" for d, v in res.items())
            )

        # Latency, idle path (no qdisc), same probes, same moment.
        p.unshape()
        if have_fping:
            lat += asyncio.run(_latency(tmp, p.ns_ip, args.count, 0.02, "idle veth"))
        for method, port in (("tcp", 7001), ("udp", 7007)):
            if method == "tcp":
                p.spawn(sys.executable, str(ROOT / "tests/helpers/echo_server.py"), p.ns_ip, "7001", "7007")
                p.wait_listening(7001)
                p.wait_listening(7007, "udp")
            c = _collector(tmp, p.ns_ip, method=method, port=port, count=args.count, packet_interval="0.02s")
            r = asyncio.run(c.collect())
            lat.append((f"idle veth: continuity-agent {method.upper()} burst", _stats(r.info["rtts"])))

        # Latency under load: a download fills the 2 Mbit/s tbf queue (up to 400 ms).
        if have_fping:
            p.shape(2e6)
            load = subprocess.Popen(
                ["iperf3", "-c", p.ns_ip, "-R", "-t", str(int(args.count * 0.05) + 6)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(3)
                lat += asyncio.run(
                    _latency(tmp, p.ns_ip, args.count, 0.05, "2 Mbit/s link, download running")
                )
            finally:
                load.wait(60)
    for label, st in lat:
        print(
            f"{label}: min {_ms(st['min'])} avg {_ms(st['avg'])} max {_ms(st['max'])} ms, loss {st['loss']:.2f}"
        )

    today = dt.date.today().isoformat()
    body = [
        f"Measured {today} on {platform.machine()}, Python {platform.python_version()}, "
        f"{subprocess.run(['iperf3', '--version'], capture_output=True, text=True).stdout.split(chr(10))[0]}, "
        f"over a veth into a network namespace (`python -m bench.link_bench`). tbf on both ends "
        f"(`rate R burst max(32kbit, R x 4ms) latency 400ms`), GSO capped at one Ethernet frame on both "
        f"ends as on a real line; iperf3 {args.duration:g} s per direction after 1 s omitted (the "
        "collector's default `omit: 1s`), one TCP stream, through the link collector's throughput task.",
        "",
        "### Throughput against the shaped rate",
        "",
        "| tbf rate | download measured | ratio | upload measured | ratio |",
        "|---|---|---|---|---|",
    ]
    for rate, res in rows:
        d, u = res.get("download", float("nan")), res.get("upload", float("nan"))
        body.append(
            f"| {rate / 1e6:g} Mbit/s | {d / 1e6:.3f} Mbit/s | {d / rate:.3f} | {u / 1e6:.3f} Mbit/s | {u / rate:.3f} |"
        )
    body += [
        "",
        "Ratios are TCP goodput over the tbf rate, which counts whole Ethernet frames: 1448 bytes of "
        "payload per 1514-byte frame caps goodput at 0.956 of the rate.",
        "",
        "### Latency: the collector's burst next to fping, same path, same moment",
        "",
        f"{args.count} probes each; the agent's ICMP burst (packet_timeout 1 s) and "
        f"`fping -C {args.count} -p P -t 1000` run concurrently.",
        "",
        "| Path and tool | min ms | avg ms | max ms | loss |",
        "|---|---|---|---|---|",
    ]
    for label, st in lat:
        body.append(
            f"| {label} | {_ms(st['min'])} | {_ms(st['avg'])} | {_ms(st['max'])} | {st['loss']:.2f} |"
        )
    if not have_fping:
        body.append("\n(fping not installed: no comparison rows.)")
    pairs = {}
    for label, st in lat:
        where, _, tool = label.partition(": ")
        pairs.setdefault(where, {})[tool] = st
    for where, tools in pairs.items():
        ours, theirs = tools.get("continuity-agent ICMP burst"), tools.get("fping -C")
        if ours and theirs:
            diff = ours["avg"] - theirs["avg"]
            body.append(
                f"\n{where}: the burst's average RTT is {diff * 1000:+.3f} ms from fping's "
                f"({diff / theirs['avg'] * 100:+.1f} %)."
            )
    text = "\n".join(body) + "\n"
    print(text)
    if not args.no_write:
        update_performance_md(SECTION, text)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
