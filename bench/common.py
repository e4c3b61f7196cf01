"""Shared by the benchmarks: process CPU/RSS readings, free ports, HTTP timing."""

from __future__ import annotations

import os
import socket
import statistics
import time
import urllib.request
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process itself, not of its children (the agent's evidence
    child is measured on its own: bench.core_bench)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(poll)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def time_get(url: str, n: int) -> tuple[float, float, int]:
    """(median seconds, p90 seconds, body bytes) over n GETs."""
    times = []
    size = 0
    for _ in range(n):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as r:
            size = len(r.read())
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))], size


def update_performance_md(section: str, body: str) -> None:
    """Replace (or append) one ``## section`` in docs/PERFORMANCE.md, leaving the others alone."""
    path = Path(__file__).resolve().parents[1] / "docs" / "PERFORMANCE.md"
    text = path.read_text() if path.exists() else "# Performance\n\nMeasured by `make bench`.\n"
    header = f"## {section}"
    lines = text.splitlines()
    out: list[str] = []
    skipping = False
    replaced = False
    for line in lines:
        if line.strip() == header:
            skipping = True
            replaced = True
            out.append(header)
            out.append("")
            out.extend(body.rstrip().splitlines())
            out.append("")
            continue
        if skipping and line.startswith("## "):
            skipping = False
        if not skipping:
            out.append(line)
    if not replaced:
        out += ["", header, "", *body.rstrip().splitlines(), ""]
    path.write_text("\n".join(out).rstrip() + "\n")
