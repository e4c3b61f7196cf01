"""Agent core benchmark: idle RSS and CPU seconds per hour on the demo config, and /metrics render
time at 10,000 series, next to prometheus-node-exporter and prometheus-blackbox-exporter measured
in the same run on the same machine.

    python -m bench.core_bench [--seconds 120] [--series 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, free_port, rss_bytes, time_get, update_performance_md, wait_http

ROOT = Path(__file__).resolve().parents[1]
AGENT = Path(sys.executable).parent / "continuity-agent"


def _seed_state(state_dir: Path, series: int) -> None:
    """Store a host result with ``series`` filesystem samples, as a restart would find it."""
    from agent.plugin import Sample
    from agent.state import Result, StateStore

    store = StateStore(state_dir)
    samples = [
        Sample(
            "continuity_host_filesystem_free_bytes",
            float(i * 4096),
            {"mountpoint": f"/srv/share{i}", "fstype": "ext4", "device": f"/dev/vd{i}"},
        )
        for i in range(series - 60)
    ]
    store.put(
        Result(
            target="big",
            task="",
            kind="host",
            site="bench",
            started=time.time(),
            duration=0.1,
            ok=True,
            samples=samples,
        )
    )
    store.close()


def _start(cmd: list[str]) -> tuple[subprocess.Popen[bytes], Any]:
    log = tempfile.TemporaryFile()
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log), log


def _wait(proc: subprocess.Popen[bytes], log: Any, url: str, poll: float = 0.1) -> None:
    try:
        wait_http(url, poll=poll)
    except RuntimeError:
        log.seek(0)
        tail = log.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"{' '.join(proc.args)} not serving {url} (exit {proc.poll()}):\n{tail}") from None


def _measure_idle(cmd: list[str], url: str, seconds: float, scrape_every: float = 15.0) -> dict[str, float]:
    proc, log = _start(cmd)
    try:
        _wait(proc, log, url)
        time.sleep(3)  # warm-up: first collections, imports
        c0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        next_scrape = t0
        while time.monotonic() - t0 < seconds:
            if time.monotonic() >= next_scrape:
                time_get(url, 1)  # scraped like Prometheus would
                next_scrape += scrape_every
            time.sleep(0.5)
        cpu = cpu_seconds(proc.pid) - c0
        elapsed = time.monotonic() - t0
        return {"rss_mib": rss_bytes(proc.pid) / 2**20, "cpu_s_per_hour": cpu / elapsed * 3600}
    finally:
        proc.terminate()
        proc.wait(10)


# The floor under the agent's idle RSS: the interpreter with the libraries every demo agent loads
# (an asyncio loop with an APScheduler job, an SQLite connection, prometheus_client, PyYAML, psutil,
# the stdlib servers), without and with pydantic validating one model. Nothing of the agent's own.
_FLOOR = """
import argparse, asyncio, hashlib, http.server, json, sqlite3, ssl, sys
import prometheus_client, psutil, yaml
from apscheduler.schedulers.asyncio import AsyncIOScheduler
if sys.argv[1] == "pydantic":
    from pydantic import BaseModel, Field
    class M(BaseModel):
        name: str = Field(description="a name")
        interval: float = 15.0
    M.model_validate({"name": "x"})
async def main():
    db = sqlite3.connect(":memory:")
    s = AsyncIOScheduler()
    s.add_job(lambda: None, "interval", seconds=1)
    s.start()
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def _measure_floor(variant: str, seconds: float = 30.0) -> dict[str, float]:
    """RSS of the library floor (``_FLOOR``) ``seconds`` after it is ready."""
    proc = subprocess.Popen([sys.executable, "-c", _FLOOR, variant], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"library floor ({variant}) did not start (exit {proc.poll()})")
        time.sleep(seconds)
        return {"rss_mib": rss_bytes(proc.pid) / 2**20}
    finally:
        proc.terminate()
        proc.wait(10)


def _packaged_agent(tmp: Path) -> tuple[Path | None, str]:
    """The agent as the Debian package installs it: the package's own environment (Debian's
    python3, only the runtime closure from requirements.lock, the project installed as a wheel, no
    pip), made by deploy/tools/build_deb.py in a temporary prefix and byte-compiled as the postinst
    does. Returns the console script, or None and why it could not be made."""
    import importlib.util
    import tomllib

    python = shutil.which("python3", path="/usr/bin")
    if python is None:
        return None, "no /usr/bin/python3"
    spec = importlib.util.spec_from_file_location("build_deb", ROOT / "deploy" / "tools" / "build_deb.py")
    assert spec is not None and spec.loader is not None
    build_deb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_deb)
    roots = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    try:
        requirements = build_deb.runtime_requirements(ROOT / "requirements.lock", roots)
        venv = build_deb.make_venv(Path("/"), python, requirements, prefix=str(tmp / "pkg"))
        compile_cmd = [str(venv / "bin" / "python"), "-m", "compileall", "-q", "-j", "0", str(venv / "lib")]
        subprocess.run(compile_cmd, check=True, stdout=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError, SystemExit) as e:
        return None, f"package environment not made: {e}"
    return venv / "bin" / "continuity-agent", ""


def _measure_evidence_child(tmp: Path, runs: int = 5) -> dict[str, float]:
    """One run of the evidence collector's child as the agent starts it, on the shipped runbooks:
    wall and CPU seconds and peak RSS of the child (os.wait4's rusage). The first run hashes every
    artefact; the others find the digests the first kept (the steady state)."""
    from collectors.evidence import CHILD, CODE_ROOT

    req = {
        "target": "dr-evidence",
        "runbooks_dir": str(ROOT / "runbooks"),
        "evidence_dir": str(ROOT / "runbooks" / "evidence"),
        "at": time.time(),
        "hashes": str(tmp / "evidence-dr-evidence.hashes.json"),
    }
    argv = [sys.executable, "-I", "-c", CHILD, CODE_ROOT, json.dumps(req)]
    rows = []
    for _ in range(runs):
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        got = json.loads(out) if proc.returncode == 0 else {}
        if proc.returncode != 0 or "error" in got or not got.get("samples"):
            raise RuntimeError(f"the evidence child exited {proc.returncode}: {out[:300]!r}")
        rows.append((time.monotonic() - t0, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024))
    steady = rows[1:] or rows
    return {
        "first_wall_s": rows[0][0],
        "first_cpu_s": rows[0][1],
        "wall_s": statistics.median(r[0] for r in steady),
        "cpu_s": statistics.median(r[1] for r in steady),
        "peak_rss_mib": max(r[2] for r in rows),
    }


def _measure_startup(cmd: list[str], url: str, runs: int = 5) -> dict[str, float]:
    """Seconds from process start to the first 200 from ``url`` (``/-/ready``), and the CPU seconds
    the process used until then (steadier than wall time on a shared machine); medians of ``runs``."""
    times, cpus = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        proc, log = _start(cmd)
        try:
            _wait(proc, log, url, poll=0.02)
            times.append(time.monotonic() - t0)
            cpus.append(cpu_seconds(proc.pid))
        finally:
            proc.terminate()
            proc.wait(10)
    times.sort()
    cpus.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "cpu_s": cpus[len(cpus) // 2], "runs": float(runs)}


def _measure_render(cmd: list[str], url: str, n: int) -> dict[str, float]:
    proc, log = _start(cmd)
    try:
        _wait(proc, log, url)
        time_get(url, 3)
        med, p90, size = time_get(url, n)
        body = subprocess.run(["curl", "-s", url], capture_output=True, text=True, timeout=30).stdout
        series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        return {"median_ms": med * 1000, "p90_ms": p90 * 1000, "bytes": size, "series": series}
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120.0, help="idle measurement window per process")
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--renders", type=int, default=50)
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    node = shutil.which("prometheus-node-exporter")
    blackbox = shutil.which("prometheus-blackbox-exporter")
    results: dict[str, object] = {}
    # Byte-compile the agent as the Debian package's postinst does, so the agent measured is the
    # agent installed: without .pyc files (PYTHONDONTWRITEBYTECODE, a fresh checkout) every start
    # compiles its modules from source, which costs CPU and leaves about 1.5 MiB more RSS.
    sources = [str(ROOT / "agent"), str(ROOT / "collectors")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *sources], check=True)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        # --- idle: agent on the demo config, node_exporter defaults, blackbox with a tcp module
        demo = (ROOT / "deploy/examples/demo.yml").read_text()
        port = free_port()
        demo = demo.replace("127.0.0.1:9072", f"127.0.0.1:{port}").replace("port: 9072", f"port: {port}")
        demo = demo.replace("state_dir: state", f"state_dir: {tmp}/s1")
        # The demo's relative paths (runbooks) are relative to deploy/examples/: keep the copy there.
        demo_cfg = ROOT / "deploy" / "examples" / f".bench-demo-{port}.yml"
        demo_cfg.write_text(demo)
        # The packaged agent starts on a state directory of its own, as the first did.
        packaged_cfg = demo_cfg.with_name(f".bench-demo-{port}-packaged.yml")
        packaged_cfg.write_text(demo.replace(f"state_dir: {tmp}/s1", f"state_dir: {tmp}/s1-packaged"))
        url = f"http://127.0.0.1:{port}/metrics"
        agent_cmd = [str(AGENT), "run", "--config", str(demo_cfg)]
        try:
            results["agent_idle"] = _measure_idle(agent_cmd, url, args.seconds)
            packaged, why = _packaged_agent(tmp)
            if packaged is not None:
                results["agent_packaged_idle"] = _measure_idle(
                    [str(packaged), "run", "--config", str(packaged_cfg)], url, args.seconds
                )
            else:
                print(f"core_bench: the agent as packaged not measured: {why}", file=sys.stderr)
            results["floor_libraries"] = _measure_floor("libraries", min(args.seconds, 30.0))
            results["floor_pydantic"] = _measure_floor("pydantic", min(args.seconds, 30.0))
            results["agent_startup"] = _measure_startup(agent_cmd, f"http://127.0.0.1:{port}/-/ready")
            results["evidence_child"] = _measure_evidence_child(tmp)
        finally:
            demo_cfg.unlink(missing_ok=True)
            packaged_cfg.unlink(missing_ok=True)
        if node:
            p = free_port()
            node_cmd = [node, f"--web.listen-address=127.0.0.1:{p}"]
            results["node_exporter_idle"] = _measure_idle(node_cmd, f"http://127.0.0.1:{p}/metrics", args.seconds)
            results["node_exporter_startup"] = _measure_startup(node_cmd, f"http://127.0.0.1:{p}/metrics")
        if blackbox:
            p = free_port()
            bb_cfg = tmp / "blackbox.yml"
            bb_cfg.write_text("modules:\n  tcp_connect:\n    prober: tcp\n    timeout: 5s\n")
            results["blackbox_exporter_idle"] = _measure_idle(
                [blackbox, f"--config.file={bb_cfg}", f"--web.listen-address=127.0.0.1:{p}"],
                f"http://127.0.0.1:{p}/probe?module=tcp_connect&target=127.0.0.1:{p}",
                args.seconds,
            )

        # --- render at N series: agent re-exposing a stored result; node_exporter via textfile collector
        state = tmp / "s2"
        _seed_state(state, args.series)
        port = free_port()
        (tmp / "big.yml").write_text(
            f"agent: {{site: bench, state_dir: {state}, listen_address: '127.0.0.1:{port}'}}\n"
            "targets:\n  - {name: big, kind: host, interval: 24h}\n"
        )
        results["agent_render"] = _measure_render(
            [str(AGENT), "run", "--config", str(tmp / "big.yml")], f"http://127.0.0.1:{port}/metrics", args.renders
        )
        if node:
            tf = tmp / "textfile"
            tf.mkdir()
            with open(tf / "big.prom", "w") as f:
                f.write("# HELP bench_filesystem_free_bytes Synthetic.\n# TYPE bench_filesystem_free_bytes gauge\n")
                for i in range(args.series - 60):
                    f.write(
                        f'bench_filesystem_free_bytes{{mountpoint="/srv/share{i}",fstype="ext4",'
                        f'device="/dev/vd{i}",target="big",site="bench"}} {i * 4096}\n'
                    )
            p = free_port()
            results["node_exporter_render"] = _measure_render(
                [node, f"--web.listen-address=127.0.0.1:{p}", f"--collector.textfile.directory={tf}"],
                f"http://127.0.0.1:{p}/metrics",
                args.renders,
            )
        if blackbox:
            p = free_port()
            results["blackbox_exporter_render"] = _measure_render(
                [blackbox, f"--config.file={tmp / 'blackbox.yml'}", f"--web.listen-address=127.0.0.1:{p}"],
                f"http://127.0.0.1:{p}/metrics",
                args.renders,
            )

    _write(results, args)
    print(json.dumps(results, indent=1))
    return results


def _demo_targets() -> str:
    import yaml

    cfg = yaml.safe_load((ROOT / "deploy/examples/demo.yml").read_text())
    kinds: dict[str, int] = {}
    for t in cfg.get("targets", []):
        kinds[t["kind"]] = kinds.get(t["kind"], 0) + 1
    return f"{sum(kinds.values())} targets (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"


def _evidence_rows(v: object) -> str:
    if not isinstance(v, dict):
        return "The evidence collector's child: not measured.\n"
    interval = _demo_evidence_interval()
    per_hour = v["cpu_s"] * 3600 / interval
    return f"""The evidence collector verifies in a child process (`collectors/evidence_child.py`), which is not
in the agent's idle figures above: one run on the shipped runbooks, as the agent starts it (median
of the runs after the first, which hashes every artefact and keeps the digests):

| Run | wall s | CPU s | peak RSS (MiB) |
|---|---|---|---|
| first (hashes every artefact) | {v["first_wall_s"]:.2f} | {v["first_cpu_s"]:.2f} | {v["peak_rss_mib"]:.1f} |
| later (digests kept) | {v["wall_s"]:.2f} | {v["cpu_s"]:.2f} | |

At the demo's interval ({interval / 60:g} min) that is {per_hour:.1f} CPU s/hour on top of the agent's own.
"""


def _demo_evidence_interval() -> float:
    """The demo's dr-evidence interval, seconds."""
    import yaml

    from agent.durations import parse_duration

    demo = yaml.safe_load((ROOT / "deploy/examples/demo.yml").read_text())
    return parse_duration(next(t["interval"] for t in demo["targets"] if t["kind"] == "evidence"))


def _write(r: dict[str, object], args: argparse.Namespace) -> None:
    def row(name: str, key: str) -> str:
        v = r.get(key)
        if not isinstance(v, dict):
            return f"| {name} | not installed | |"
        return f"| {name} | {v['rss_mib']:.1f} | {v['cpu_s_per_hour']:.1f} |"

    def frow(name: str, key: str) -> str:
        v = r.get(key)
        return f"| {name} | {v['rss_mib']:.1f} |" if isinstance(v, dict) else f"| {name} | not measured |"

    def rrow(name: str, key: str) -> str:
        v = r.get(key)
        if not isinstance(v, dict):
            return f"| {name} | not installed | | | |"
        return f"| {name} | {v['series']} | {v['median_ms']:.1f} | {v['p90_ms']:.1f} | {v['bytes'] / 1024:.0f} |"

    def srow(name: str, key: str, what: str) -> str:
        v = r.get(key)
        if not isinstance(v, dict):
            return f"| {name} | not installed | | | |"
        return f"| {name} | {what} | {v['median_s']:.2f} | {v['min_s']:.2f} | {v['cpu_s']:.2f} |"

    packaged_row = row("continuity-agent as packaged (`make deb`'s environment)", "agent_packaged_idle")
    packaged_row = packaged_row.replace("not installed", "not measured")
    agent_r, node_r = r.get("agent_render"), r.get("node_exporter_render")
    ratio = ""
    if isinstance(agent_r, dict) and isinstance(node_r, dict):
        ratio = (
            f"\nAgent /metrics median at {agent_r['series']} series is "
            f"{agent_r['median_ms'] / node_r['median_ms']:.2f}x node_exporter's at {node_r['series']} series.\n"
        )
    body = f"""Measured {time.strftime("%Y-%m-%d")} on {platform.machine()}, {platform.python_version()},
idle window {args.seconds:g}s per process, each scraped every 15 s (`python -m bench.core_bench`).

Idle (agent on deploy/examples/demo.yml: {_demo_targets()}; exporters on their defaults):

| Process | RSS (MiB) | CPU s/hour |
|---|---|---|
{row("continuity-agent (development environment: `make venv`)", "agent_idle")}
{packaged_row}
{row("prometheus-node-exporter", "node_exporter_idle")}
{row("prometheus-blackbox-exporter (probing tcp)", "blackbox_exporter_idle")}

The two agent rows run the same code on the same config. The first runs from the development
environment (pyenv's Python, built with a shared libpython, every test and lint tool installed, the
project installed editable); the second from the environment the Debian package ships (Debian's
python3, only the runtime dependencies, the project installed as a wheel), made by
deploy/tools/build_deb.py in a temporary directory and byte-compiled as the postinst does.

The floor under the agent's figure, measured in the same run: the interpreter with only the
libraries every demo agent loads (an asyncio loop running an APScheduler job, SQLite,
prometheus_client, PyYAML, psutil, the standard library's servers), then the same with pydantic
validating one model; none of the agent's code:

| Process | RSS (MiB) |
|---|---|
{frow("Python + libraries, no pydantic", "floor_libraries")}
{frow("Python + libraries + pydantic", "floor_pydantic")}

Start-up: process start to the first 200 answer (median and best of 5 starts, demo config), and
the CPU seconds the process used until then (median):

| Process | Waited for | median s | min s | CPU s |
|---|---|---|---|---|
{srow("continuity-agent", "agent_startup", "`/-/ready`")}
{srow("prometheus-node-exporter", "node_exporter_startup", "`/metrics`")}

{_evidence_rows(r.get("evidence_child"))}
/metrics render over HTTP ({args.renders} requests; the agent re-exposing a stored result of
~{args.series} series; node_exporter serving the same series through its textfile collector):

| Process | Series | median ms | p90 ms | KiB |
|---|---|---|---|---|
{rrow("continuity-agent", "agent_render")}
{rrow("prometheus-node-exporter (+ textfile)", "node_exporter_render")}
{rrow("prometheus-blackbox-exporter (own metrics)", "blackbox_exporter_render")}
{ratio}"""
    update_performance_md("Agent core: idle cost and /metrics render", body)


if __name__ == "__main__":
    main()
