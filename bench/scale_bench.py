"""Scale: /metrics render and memory per series, SNMP CPU per device, and a curve to 2,000 targets.

Three parts, each a section of docs/PERFORMANCE.md (`make bench` runs them all; `--only` picks):

render   The agent re-exposing stored results of real devices (the SNMP recordings in
         ../shared/testdata/snmp-corpus/, walked once through snmpsim by the snmp collector and
         stored for as many targets as reach ``--series``), against node_exporter serving the same
         exposition from its textfile collector. Render time per series over HTTP (plain text, and
         as Prometheus asks: OpenMetrics + gzip), RSS per 1,000 series above the same agent with
         the same targets and no series, and, in-process on the same state, the prometheus_client
         renderer (the reference; what /metrics used before #20) against the cached one.
snmp     An SNMP device's agent CPU per minute (walk + state + /metrics scrapes every 15 s, the
         agent collecting every 15 s) against snmp_exporter's (walked on every scrape, every 15 s).
curve    N = 10, 100, 500, 2000 targets of TCP, HTTP and SNMP, each with its peer at the same N
         (blackbox_exporter, snmp_exporter, driven as Prometheus would: every target every
         interval), plus the mixed central-agent config: CPU per collection, CPU s/min, RSS, series,
         render time, skipped runs, intervals missed, SQLite growth per hour; docs/scale.png.

python -m bench.scale_bench [--only render,snmp,curve] [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import http.server
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, free_port, rss_bytes, update_performance_md, wait_http

ROOT = Path(__file__).resolve().parents[1]
AGENT = Path(sys.executable).parent / "continuity-agent"
RESULTS = ROOT / "bench" / ".scale-results.json"  # partial results survive an interrupted run
AGENT_TIMEOUT = 5.0  # the curve's targets' timeout (capped at the interval)
PROM_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROM_HEADERS = {"Accept": PROM_ACCEPT, "Accept-Encoding": "gzip"}
BLACKBOX = shutil.which("prometheus-blackbox-exporter") or "/usr/bin/prometheus-blackbox-exporter"
SNMP_EXPORTER = shutil.which("prometheus-snmp-exporter") or "/usr/bin/prometheus-snmp-exporter"
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"


# -- small helpers --------------------------------------------------------------------------------


def get(port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 60) -> tuple[float, bytes]:
    """(seconds, body as sent) of one GET on a fresh connection."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    return time.perf_counter() - t0, body


def series_of(text: str) -> int:
    return sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for ln in text.splitlines():
        if ln.startswith(name + "{") or ln.startswith(name + " "):
            total += float(ln.rsplit(" ", 1)[1])
    return total


class Proc:
    """A process under measurement: started, waited for, CPU and RSS read from /proc, stopped."""

    def __init__(self, cmd: list[str], url: str, env: dict[str, str] | None = None) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        try:
            wait_http(url, timeout=120)
        except RuntimeError:
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"{cmd[0]} not serving {url} (exit {self.proc.poll()}):\n{tail}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def agent_yaml(tmp: Path, port: int, targets: list[str], interval: str, auths: list[str] | None = None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    state = tmp / "state"
    lines = [
        f"agent: {{site: bench, state_dir: {state}, listen_address: '127.0.0.1:{port}'}}",
        f"defaults: {{interval: {interval}, timeout: {AGENT_TIMEOUT:g}s}}",
    ]
    if auths:
        lines += ["auths:", *auths]
    lines += ["targets:", *targets]
    path = tmp / "agent.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def community_auth(tmp: Path, community: str) -> list[str]:
    tmp.mkdir(parents=True, exist_ok=True)
    secret = tmp / "community"
    secret.write_text(community)
    secret.chmod(0o600)
    return [f"  v2: {{type: snmp_v2c, community_file: {secret}}}"]


def record(part: str, key: str, value: Any) -> None:
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data.setdefault(part, {})[key] = value
    RESULTS.write_text(json.dumps(data, indent=1, sort_keys=True))


def recorded() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


# -- part 1: render and memory on real-device results ---------------------------------------------


def corpus_samples(tmp: Path) -> list[tuple[str, list[Any]]]:
    """(device, samples) of one walk of every recording in the SNMP corpus, through snmpsim."""
    from agent.config import load_config
    from agent.plugin import CollectorContext
    from agent.runner import run_task
    from agent.service import build_collectors
    from tests.helpers.common import shared_testdata
    from tests.helpers.snmp import snmpsim

    tmp.mkdir(parents=True, exist_ok=True)
    data = shared_testdata("snmp-corpus")
    names = sorted(p.stem for p in data.glob("*.snmprec"))
    with snmpsim(tmp, data) as port:
        auths, targets = [], []
        for name in names:
            secret = tmp / f"community-{name}"
            secret.write_text(name)
            secret.chmod(0o600)
            auths.append(f"  c-{name}: {{type: snmp_v2c, community_file: {secret}}}")
            targets.append(
                f"  - {{name: {name}, kind: snmp, host: 127.0.0.1, port: {port}, auth: c-{name}, "
                "request_timeout: 20s, retries: 2}"
            )
        cfg = agent_yaml(tmp, free_port(), targets, "10m", auths)
        cfg.write_text(cfg.read_text().replace("timeout: 5s", "timeout: 200s"))
        loaded = load_config(cfg)

        async def main() -> list[tuple[str, list[Any]]]:
            with ThreadPoolExecutor(max_workers=2) as ex:
                ctx = CollectorContext(
                    auths=loaded.config.auths, executor=ex, state_dir=tmp, shared={}, config=loaded.config
                )
                cols = build_collectors(loaded, ctx)
                try:
                    out = []
                    for name, c in cols.items():  # one at a time: snmpsim is one Python process
                        r = await run_task(c, next(t for t in c.tasks() if t.name == ""), site="bench")
                        if r.ok and r.samples:
                            out.append((name, list(r.samples)))
                    return out
                finally:
                    for c in cols.values():
                        await c.close()

        return asyncio.run(main())


def seed(state_dir: Path, walks: list[tuple[str, list[Any]]], series: int, empty: bool) -> list[str]:
    """Store one result per target, cycling through the corpus walks until ``series`` samples are
    stored (``empty``: the same targets with no samples). Returns the target names."""
    from agent.state import Result, StateStore

    store = StateStore(state_dir)
    names: list[str] = []
    total = 0
    i = 0
    while total < series:
        device, samples = walks[i % len(walks)]
        name = f"d{i:04d}-{device}"[:60]
        store.put(
            Result(
                target=name,
                task="",
                kind="snmp",
                site="bench",
                started=time.time(),
                duration=0.2,
                ok=True,
                samples=[] if empty else list(samples),
            )
        )
        names.append(name)
        total += len(samples)
        i += 1
    store.flush(60)
    store.close()
    return names


def inprocess_render(state_dir: Path, targets: list[str], mode: str) -> dict[str, float]:
    """Run in a child (``--inprocess``): load the stored state, render it ``mode`` = reference
    (prometheus_client, samples as lists) or cached (this agent), report times and RSS."""
    cmd = [sys.executable, "-m", "bench.scale_bench", "--inprocess", mode, str(state_dir), ",".join(targets)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _inprocess_main(mode: str, state_dir: str, targets_csv: str) -> None:
    import gc

    from prometheus_client.exposition import generate_latest

    import agent.state as st
    from agent.catalogue import catalogue
    from agent.exposition import AgentStatus, make_registry, metrics_body

    if mode == "reference":
        st.compact = lambda s: s  # type: ignore[assignment]  # the samples as collectors hand them over
    status = AgentStatus(site="bench", targets={t: ("snmp", "bench") for t in targets_csv.split(",")})
    catalogue()  # imports every collector module: the agent has them loaded before any result
    gc.collect()
    r0 = rss_bytes(os.getpid())
    store = st.StateStore(Path(state_dir))
    reg = make_registry(store, lambda: status)

    def render() -> bytes:
        if mode == "reference":
            return generate_latest(reg)
        return metrics_body(reg, "", "")[0]

    t0 = time.perf_counter()
    body = render()
    first = time.perf_counter() - t0
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        body = render()
        times.append(time.perf_counter() - t0)
    series = series_of(body.decode())
    del body
    gc.collect()
    rss = rss_bytes(os.getpid()) - r0
    store.close()
    print(json.dumps({"series": series, "first_s": first, "median_s": statistics.median(times), "rss": rss}))


def run_render(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="scale-render-") as td:
        tmp = Path(td)
        print("walking the SNMP corpus through snmpsim ...", flush=True)
        walks = corpus_samples(tmp / "corpus")
        print(f"  {len(walks)} devices, {sum(len(s) for _, s in walks)} series per round", flush=True)
        targets = seed(tmp / "full" / "state", walks, args.series, empty=False)
        seed(tmp / "idle" / "state", walks, args.series, empty=True)
        tl = [f"  - {{name: {t}, kind: snmp, host: 127.0.0.1, port: 9, auth: v2, interval: 24h}}" for t in targets]
        out: dict[str, Any] = {"targets": len(targets)}
        rss: dict[str, int] = {}
        for which in ("idle", "full"):
            port = free_port()
            cfg = agent_yaml(tmp / which, port, tl, "24h", community_auth(tmp / which, "bench"))
            p = Proc([str(AGENT), "run", "--config", str(cfg)], f"http://127.0.0.1:{port}/-/ready")
            try:
                _s, body = get(port, "/metrics")
                for _ in range(3):
                    get(port, "/metrics", PROM_HEADERS)
                if which == "full":
                    text = body.decode()
                    (tmp / "agent.prom").write_text(text)
                    out["agent_series"] = series_of(text)
                    out["agent_text_s"] = statistics.median(get(port, "/metrics")[0] for _ in range(args.renders))
                    out["agent_prom_s"] = statistics.median(
                        get(port, "/metrics", PROM_HEADERS)[0] for _ in range(args.renders)
                    )
                    out["agent_bytes"] = len(body)
                    out["agent_gzip_bytes"] = len(get(port, "/metrics", PROM_HEADERS)[1])
                time.sleep(2)
                rss[which] = p.rss()
            finally:
                p.stop()
        out["rss_idle"], out["rss_full"] = rss["idle"], rss["full"]
        tf = tmp / "textfile"
        tf.mkdir()
        shutil.copy(tmp / "agent.prom", tf / "agent.prom")
        port = free_port()
        p = Proc(
            [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", f"--collector.textfile.directory={tf}"],
            f"http://127.0.0.1:{port}/metrics",
        )
        try:
            _s, body = get(port, "/metrics")
            out["node_series"] = series_of(body.decode())
            for _ in range(3):
                get(port, "/metrics")
            out["node_text_s"] = statistics.median(get(port, "/metrics")[0] for _ in range(args.renders))
            out["node_prom_s"] = statistics.median(get(port, "/metrics", PROM_HEADERS)[0] for _ in range(args.renders))
        finally:
            p.stop()
        out.update(live_rss(tmp / "live", args.series))
        out["reference"] = inprocess_render(tmp / "full" / "state", targets, "reference")
        out["cached"] = inprocess_render(tmp / "full" / "state", targets, "cached")
    record("render", "result", out)
    print(json.dumps(out, indent=1), flush=True)


def live_rss(tmp: Path, series: int) -> dict[str, Any]:
    """RSS of the agent holding ``series`` live-collected SNMP series (snmpd devices, one walk each,
    then four scrapes as Prometheus asks), and of the same agent whose targets do not answer."""
    from bench.snmp_bench import COMMUNITY

    per_device = 173  # what one walk of the SNMP benchmark's device yields (checked below)
    n = -(-series // per_device)
    out: dict[str, Any] = {"live_devices": n}
    with snmp_devices(n) as ports:
        dead = free_port()  # nothing listens there (UDP): the walks fail at once
        for which, env in (("idle", {"snmp": [dead]}), ("full", {"snmp": ports})):
            port = free_port()
            d = tmp / which
            lines = target_lines("snmp", n, env)
            cfg = agent_yaml(d, port, lines, "10m", community_auth(d, COMMUNITY))
            p = Proc([str(AGENT), "run", "--config", str(cfg)], f"http://127.0.0.1:{port}/-/ready")
            try:
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    time.sleep(3)
                    text = get(port, "/metrics")[1].decode()
                    if len(targets_of(text)) >= n:  # every target has run once
                        break
                for _ in range(4):
                    get(port, "/metrics", PROM_HEADERS)
                time.sleep(2)
                out[f"live_rss_{which}"] = p.rss()
                out[f"live_series_{which}"] = series_of(get(port, "/metrics")[1].decode())
            finally:
                p.stop()
    return out


# -- part 2 and 3: live targets ---------------------------------------------------------------------


@contextlib.contextmanager
def tcp_server() -> Iterator[int]:
    """A loopback TCP listener that accepts and closes (the probes' target)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.5)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                c, _a = srv.accept()
                c.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        t.join(2)
        srv.close()


@contextlib.contextmanager
def snmp_devices(n: int) -> Iterator[list[int]]:
    from bench.snmp_bench import start_devices, wait_devices

    with tempfile.TemporaryDirectory(prefix="scale-snmpd-") as td:
        devs = start_devices(Path(td), n)
        try:
            wait_devices(devs.ports)
            yield devs.ports
        finally:
            devs.stop()


def target_lines(kind: str, n: int, env: dict[str, Any], offset: int = 0) -> list[str]:
    out = []
    for i in range(offset, offset + n):
        if kind == "tcp":
            out.append(f"  - {{name: tcp{i:04d}, kind: probe, module: tcp, host: 127.0.0.1, port: {env['tcp']}}}")
        elif kind == "http":
            out.append(f"  - {{name: http{i:04d}, kind: probe, module: http, url: 'http://127.0.0.1:{env['http']}/'}}")
        elif kind == "snmp":
            port = env["snmp"][i % len(env["snmp"])]
            out.append(
                f"  - {{name: snmp{i:04d}, kind: snmp, host: 127.0.0.1, port: {port}, auth: v2, retries: 1, "
                "request_timeout: 3s}"
            )
    return out


def mixed_lines(env: dict[str, Any], tmp: Path) -> list[str]:
    """The central-agent mix of #20: 300 SNMP, 150 probes, 30 backups, 1 evidence target, 20 links."""
    dumps = tmp / "dumps"
    dumps.mkdir(exist_ok=True)
    (dumps / "db-nightly.sql.gz").write_bytes(b"x" * 4096)
    out = target_lines("snmp", 300, env) + target_lines("tcp", 75, env) + target_lines("http", 75, env)
    for i in range(30):
        out.append(
            f"  - {{name: backup{i:02d}, kind: backup, type: files, directory: {dumps}, pattern: '*.sql.gz', rpo: 24h}}"
        )
    out.append(
        f"  - {{name: dr-evidence, kind: evidence, runbooks_dir: {ROOT / 'runbooks'}, "
        f"evidence_dir: {ROOT / 'runbooks' / 'evidence'}}}"
    )
    for i in range(20):
        std = "" if i == 0 else ", standards: false"  # one link feeds the site's standards
        out.append(f"  - {{name: link{i:02d}, kind: link, host: 127.0.0.1, count: 5, packet_interval: 0.1{std}}}")
    return out


def measure_agent(
    tmp: Path, targets: list[str], n: int, interval: float, window: float, auths: list[str] | None
) -> dict[str, Any]:
    port = free_port()
    cfg = agent_yaml(tmp, port, targets, f"{interval:g}s", auths)
    p = Proc([str(AGENT), "run", "--config", str(cfg)], f"http://127.0.0.1:{port}/-/ready")
    db = tmp / "state" / "state.db"
    try:
        time.sleep(interval + 3)  # first runs are spread over the start jitter
        _s, body = get(port, "/metrics")
        skipped0 = metric_sum(body.decode(), "continuity_target_skipped_runs_total")
        c0, t0 = p.cpu(), time.monotonic()
        renders: list[float] = []
        next_scrape = t0
        while time.monotonic() - t0 < window:
            if time.monotonic() >= next_scrape:
                renders.append(get(port, "/metrics", PROM_HEADERS)[0])
                next_scrape += 15.0
            time.sleep(0.2)
        cpu, wall = p.cpu() - c0, time.monotonic() - t0
        w0, w1 = time.time() - wall, time.time()
        rss = p.rss()
        _s, body = get(port, "/metrics")
        text = body.decode()
        skipped = metric_sum(text, "continuity_target_skipped_runs_total") - skipped0
        # A run is stored when it ends: let the runs started in the window end (within their
        # timeout, at most the interval) before stopping the agent, or they go uncounted.
        time.sleep(min(AGENT_TIMEOUT, interval) + 1.0)
    finally:
        p.stop()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        runs = conn.execute("SELECT COUNT(*) FROM results WHERE started >= ? AND started < ?", (w0, w1)).fetchone()[0]
        rows = conn.execute(
            "SELECT target, started FROM results WHERE task = '' AND started >= ? ORDER BY target, started",
            (w0 - interval,),
        ).fetchall()
        failed = conn.execute(
            "SELECT COUNT(*) FROM results WHERE started >= ? AND started < ? AND ok = 0", (w0, w1)
        ).fetchone()[0]
    gaps: dict[str, list[float]] = {}
    for target, started in rows:
        gaps.setdefault(target, []).append(started)
    missed = 0
    for starts in gaps.values():
        missed += sum(1 for a, b in itertools.pairwise(starts) if b - a > 1.5 * interval)
    missed += sum(1 for t in {ln.split('target="')[1].split('"')[0] for ln in targets_of(text)} if t not in gaps)
    return {
        "n": n,
        "cpu_s": cpu,
        "wall_s": wall,
        "collections": runs,
        "failed_runs": failed,
        "cpu_per_collection_ms": 1000 * cpu / max(1, runs),
        "cpu_s_per_min": cpu / wall * 60,
        "rss_mib": rss / 2**20,
        "series": series_of(text),
        "render_ms": 1000 * statistics.median(renders) if renders else float("nan"),
        "skipped": skipped,
        "missed_intervals": missed,
        "history_bytes_per_row": history_bytes_per_row(db),
        "sqlite_mib_per_hour": runs / wall * 3600 * history_bytes_per_row(db) / 2**20,
    }


def history_bytes_per_row(db: Path) -> float:
    """Bytes the results history takes per run: its table and indexes (pages, as dbstat counts
    them) over its rows. The latest/last-success tables are replaced in place and do not grow."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        used = conn.execute(
            "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('results', 'results_target_time', 'results_time')"
        ).fetchone()[0]
        rows = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    return float(used or 0) / max(1, rows)


def targets_of(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("continuity_target_up{")]


def measure_peer(
    cmd: list[str], port: int, paths: list[str], interval: float, window: float, ok: Callable[[bytes], bool]
) -> dict[str, Any]:
    """Drive a peer exporter as Prometheus would: every path every interval, spread over the
    interval, 16 requests in flight; its CPU and RSS over ``window``."""
    p = Proc(cmd, f"http://127.0.0.1:{port}/metrics")
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0, "late": 0}

    def one(path: str, due: float) -> None:
        try:
            _s, body = get(port, path, {"Accept-Encoding": "gzip"}, timeout=interval)
            good = ok(body)
        except OSError:
            good = False
        with lock:
            counts["ok" if good else "failed"] += 1
            if time.monotonic() > due + interval:
                counts["late"] += 1

    def cycle(pool: ThreadPoolExecutor) -> None:
        start = time.monotonic()
        futs = []
        for i, path in enumerate(paths):
            due = start + interval * i / len(paths)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futs.append(pool.submit(one, path, due))
        for f in futs:
            f.result()

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            cycle(pool)  # warm-up
            counts.update(ok=0, failed=0, late=0)
            c0, t0 = p.cpu(), time.monotonic()
            cycles = 0
            while time.monotonic() - t0 < window - 0.5:
                cs = time.monotonic()
                cycle(pool)
                cycles += 1
                rest = interval - (time.monotonic() - cs)
                if rest > 0:
                    time.sleep(rest)
            cpu, wall = p.cpu() - c0, time.monotonic() - t0
            rss = p.rss()
    finally:
        p.stop()
    done = counts["ok"] + counts["failed"]
    return {
        "n": len(paths),
        "cpu_s": cpu,
        "wall_s": wall,
        "collections": done,
        "failed_runs": counts["failed"],
        "cpu_per_collection_ms": 1000 * cpu / max(1, done),
        "cpu_s_per_min": cpu / wall * 60,
        "rss_mib": rss / 2**20,
        "late": counts["late"],
        "missed_intervals": max(0, cycles * len(paths) - done) + counts["late"],
    }


def blackbox(tmp: Path, kind: str, env: dict[str, Any], n: int, interval: float, window: float) -> dict[str, Any]:
    cfg = tmp / "blackbox.yml"
    cfg.write_text(
        "modules:\n  tcp_connect: {prober: tcp, timeout: 5s}\n"
        "  http_2xx: {prober: http, timeout: 5s, http: {preferred_ip_protocol: ip4}}\n"
    )
    port = free_port()
    if kind == "tcp":
        paths = [f"/probe?module=tcp_connect&target=127.0.0.1:{env['tcp']}&n={i}" for i in range(n)]
    else:
        paths = [f"/probe?module=http_2xx&target=http://127.0.0.1:{env['http']}/&n={i}" for i in range(n)]
    cmd = [BLACKBOX, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"]
    return measure_peer(cmd, port, paths, interval, window, lambda b: b"probe_success 1" in _gunzip(b))


def snmp_exporter(tmp: Path, ports: list[int], n: int, interval: float, window: float) -> dict[str, Any]:
    from bench.snmp_bench import exporter_yaml

    cfg = tmp / "snmp.yml"
    cfg.write_text(exporter_yaml())
    port = free_port()
    paths = [f"/snmp?target=127.0.0.1:{ports[i % len(ports)]}&module=if_mib_v2" for i in range(n)]
    cmd = [SNMP_EXPORTER, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"]
    return measure_peer(cmd, port, paths, interval, window, lambda b: b"ifHCInOctets{" in _gunzip(b))


def _gunzip(body: bytes) -> bytes:
    import gzip

    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def run_snmp_cpu(args: argparse.Namespace) -> None:
    """Part 2: agent CPU per device per minute against snmp_exporter's, 15 s interval and scrapes."""
    from bench.snmp_bench import COMMUNITY

    n = args.snmp_devices
    with snmp_devices(n) as ports, tempfile.TemporaryDirectory(prefix="scale-snmpcpu-") as td:
        tmp = Path(td)
        env = {"snmp": ports}
        a = measure_agent(
            tmp / "agent", target_lines("snmp", n, env), n, 15.0, args.snmp_window, community_auth(tmp, COMMUNITY)
        )
        e = snmp_exporter(tmp, ports, n, 15.0, args.snmp_window)
    out = {"devices": n, "agent": a, "exporter": e}
    record("snmp", "result", out)
    print(json.dumps(out, indent=1), flush=True)


def run_curve(args: argparse.Namespace) -> None:
    from bench.snmp_bench import COMMUNITY
    from tests.helpers.httpserve import serve_http

    ns = [int(x) for x in args.ns.split(",")]
    kinds = [k for k in args.kinds.split(",") if k]
    interval, window = args.interval, args.window
    with contextlib.ExitStack() as stack:
        env: dict[str, Any] = {"tcp": stack.enter_context(tcp_server())}
        env["http"] = stack.enter_context(serve_http(backlog=1024))
        if "snmp" in kinds or "mixed" in kinds:
            env["snmp"] = stack.enter_context(snmp_devices(min(max(ns), 2000) if "snmp" in kinds else 300))
        for kind in kinds:
            for n in [300 + 150 + 30 + 1 + 20] if kind == "mixed" else ns:
                key = f"{kind}:{n}"
                if key in recorded().get("curve", {}) and not args.again:
                    print(f"{key}: already measured", flush=True)
                    continue
                with tempfile.TemporaryDirectory(prefix=f"scale-{kind}-{n}-") as td:
                    tmp = Path(td)
                    auths = community_auth(tmp, COMMUNITY)
                    targets = mixed_lines(env, tmp) if kind == "mixed" else target_lines(kind, n, env)
                    print(f"{key}: agent ...", flush=True)
                    try:
                        a = measure_agent(tmp / "agent", targets, n, interval, window, auths)
                    except Exception as ex:  # a point that fails is recorded as failed; the curve goes on
                        a = {"n": n, "error": repr(ex)[:300]}
                    print(f"{key}: agent {json.dumps(a)}", flush=True)
                    peer: dict[str, Any] = {}
                    try:
                        if kind in ("tcp", "http"):
                            peer = {"blackbox": blackbox(tmp, kind, env, n, interval, window)}
                        elif kind == "snmp":
                            peer = {"snmp_exporter": snmp_exporter(tmp, env["snmp"], n, interval, window)}
                        else:
                            peer = {
                                "snmp_exporter": snmp_exporter(tmp, env["snmp"], 300, interval, window),
                                "blackbox": blackbox(tmp, "tcp", env, 150, interval, window),
                            }
                    except Exception as ex:
                        peer = {"error": {"n": n, "error": repr(ex)[:300]}}
                    print(f"{key}: peer {json.dumps(peer)}", flush=True)
                    record("curve", key, {"agent": a, **peer, "interval": interval, "window": window})


# -- writing ---------------------------------------------------------------------------------------


def _f(v: Any, fmt: str = ".1f") -> str:
    return "—" if v is None or (isinstance(v, float) and v != v) else format(v, fmt)


def write_render(r: dict[str, Any]) -> None:
    agent_per = r["agent_text_s"] / r["agent_series"]
    node_per = r["node_text_s"] / r["node_series"]
    agent_prom = r["agent_prom_s"] / r["agent_series"]
    node_prom = r["node_prom_s"] / r["node_series"]
    ref, cached = r["reference"], r["cached"]
    live_series = r["live_series_full"] - r["live_series_idle"]
    per1000 = (r["live_rss_full"] - r["live_rss_idle"]) / 2**20 / live_series * 1000
    per1000_loaded = (r["rss_full"] - r["rss_idle"]) / 2**20 / r["agent_series"] * 1000
    ratio = agent_per / node_per
    body = f"""Measured {time.strftime("%Y-%m-%d")} on {platform.machine()}, {os.cpu_count()} CPUs, Python \
{platform.python_version()} (`python -m bench.scale_bench --only render`).

The agent re-exposing stored results of real devices: every recording of the SNMP corpus
(`../shared/testdata/snmp-corpus/`) walked once through snmpsim by the snmp collector, stored for
{r["targets"]} targets (cycling through the devices) until {r["agent_series"]} series; node_exporter
serving the same exposition (the agent's /metrics body) from its textfile collector.

| Process | Series | text: median ms | µs per series | OpenMetrics + gzip: median ms | µs per series |
|---|---|---|---|---|---|
| continuity-agent | {r["agent_series"]} | {1000 * r["agent_text_s"]:.1f} | {1e6 * agent_per:.2f} | \
{1000 * r["agent_prom_s"]:.1f} | {1e6 * agent_prom:.2f} |
| prometheus-node-exporter (+ textfile) | {r["node_series"]} | {1000 * r["node_text_s"]:.1f} | {1e6 * node_per:.2f} | \
{1000 * r["node_prom_s"]:.1f} | {1e6 * node_prom:.2f} |

- **Render: {ratio:.2f}x node_exporter's time per series** (goal ≤ 0.5x; as Prometheus asks,
  OpenMetrics + gzip: {agent_prom / node_prom:.2f}x). Body {r["agent_bytes"] / 2**20:.1f} MiB,
  {r["agent_gzip_bytes"] / 2**20:.2f} MiB gzipped.
- **RSS: {per1000:.2f} MiB per 1,000 series** (goal ≤ 0.5): the agent walking {r["live_devices"]} snmpd
  devices once ({live_series} series, 4 scrapes after) against the same agent whose
  {r["live_devices"]} targets do not answer: {r["live_rss_idle"] / 2**20:.1f} → {r["live_rss_full"] / 2**20:.1f} MiB.
  The agent above, which read its {r["agent_series"]} series back from the state database at start,
  holds {per1000_loaded:.2f} MiB per 1,000 series over the same agent with empty results
  ({r["rss_idle"] / 2**20:.1f} → {r["rss_full"] / 2**20:.1f} MiB): reading the stored results back at
  start leaves the allocator's high-water mark behind.
- Before and after, in-process on the same stored state (`--inprocess`): the prometheus_client
  renderer over Sample lists (what /metrics did before) takes {1e6 * ref["median_s"] / ref["series"]:.2f} µs
  per series ({1000 * ref["median_s"]:.0f} ms); the cached renderer {1e6 * cached["median_s"] / cached["series"]:.3f} µs
  ({1000 * cached["median_s"]:.1f} ms; its first render after the results were stored, which builds the
  blocks, {1000 * cached["first_s"]:.0f} ms). The state plus what rendering leaves behind holds
  {ref["rss"] / 2**20 / ref["series"] * 1000:.2f} MiB per 1,000 series as Sample lists and
  {cached["rss"] / 2**20 / cached["series"] * 1000:.2f} MiB as SampleTables with cached blocks.
"""
    update_performance_md("Scale: /metrics render and memory per series", body)


def write_snmp(r: dict[str, Any]) -> None:
    a, e = r["agent"], r["exporter"]
    per_a = a["cpu_s_per_min"] / r["devices"]
    per_e = e["cpu_s_per_min"] / r["devices"]
    body = f"""Measured {time.strftime("%Y-%m-%d")} (`python -m bench.scale_bench --only snmp`):
{r["devices"]} simulated devices (net-snmp snmpd, the 250-OID IF-MIB walk of the SNMP benchmark),
every device every 15 s.
The agent collects every 15 s and is scraped every 15 s as Prometheus asks (OpenMetrics + gzip);
snmp_exporter walks the device on every scrape, 15 s apart. CPU of each process only, over
{a["wall_s"]:.0f} s.

| Process | CPU ms per device per minute | CPU per collection ms | collections | failed | RSS MiB |
|---|---|---|---|---|---|
| continuity-agent | {1000 * per_a:.1f} | {a["cpu_per_collection_ms"]:.2f} | {a["collections"]} | {a["failed_runs"]} | \
{a["rss_mib"]:.1f} |
| prometheus-snmp-exporter | {1000 * per_e:.1f} | {e["cpu_per_collection_ms"]:.2f} | {e["collections"]} | \
{e["failed_runs"]} | {e["rss_mib"]:.1f} |

**SNMP CPU per device: {per_a / per_e:.2f}x snmp_exporter's** (goal ≤ 1x).
"""
    update_performance_md("Scale: SNMP CPU per device per minute", body)


CURVE_ROWS = (
    ("tcp", "TCP probes", "blackbox"),
    ("http", "HTTP probes", "blackbox"),
    ("snmp", "SNMP devices", "snmp_exporter"),
)


def write_curve(curve: dict[str, Any], interval: float) -> None:
    lines = [
        "| workload | N | process | CPU ms per collection | CPU s/min | RSS MiB | series | render ms | runs / due | "
        "skipped | missed intervals | failed runs | SQLite MiB/hour |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    per_row = [
        pt["agent"]["history_bytes_per_row"] for pt in curve.values() if "history_bytes_per_row" in pt.get("agent", {})
    ]
    row_bytes = statistics.median(per_row) if per_row else None
    ok_n: dict[str, int] = {}
    for key in sorted(curve, key=lambda k: (k.split(":")[0], int(k.split(":")[1]))):
        kind, n = key.split(":")
        pt = curve[key]
        a = pt.get("agent", {})
        if "error" in a:
            lines.append(f"| {kind} | {n} | continuity-agent | failed: {a['error'][:80]} |||||||||")
        else:
            due = a["n"] * a["wall_s"] / interval
            if "history_bytes_per_row" in a:
                sqlite = _f(a["sqlite_mib_per_hour"])
            elif row_bytes is not None:  # measured before the per-row figure was: rows/h x the median bytes/row
                sqlite = "≈ " + _f(a["collections"] / a["wall_s"] * 3600 * row_bytes / 2**20)
            else:
                sqlite = "—"
            lines.append(
                f"| {kind} | {n} | continuity-agent | {_f(a['cpu_per_collection_ms'], '.2f')} | "
                f"{_f(a['cpu_s_per_min'], '.2f')} | {_f(a['rss_mib'])} | {a['series']} | {_f(a['render_ms'], '.1f')} | "
                f"{a['collections'] / due:.2f} | {a['skipped']:.0f} | {a['missed_intervals']} | {a['failed_runs']} | "
                f"{sqlite} |"
            )
            every = a["skipped"] == 0 and a["missed_intervals"] == 0 and a["failed_runs"] == 0
            if every and a["collections"] >= 0.97 * due and kind != "mixed":
                ok_n[kind] = max(ok_n.get(kind, 0), int(n))
        for peer in ("blackbox", "snmp_exporter"):
            p = pt.get(peer)
            if p:
                pdue = p["n"] * round(p["wall_s"] / interval)
                lines.append(
                    f"| {kind} | {p['n']} | {peer.replace('_', '-')} | {_f(p['cpu_per_collection_ms'], '.2f')} | "
                    f"{_f(p['cpu_s_per_min'], '.2f')} | {_f(p['rss_mib'])} | | | {p['collections'] / pdue:.2f} | | "
                    f"{p['missed_intervals']} | {p['failed_runs']} | |"
                )
    statement = ", ".join(f"{k}: N = {v}" for k, v in sorted(ok_n.items())) or "none measured"
    body = f"""Measured {time.strftime("%Y-%m-%d")} on {platform.machine()}, {os.cpu_count()} CPUs shared with
other work (`python -m bench.scale_bench --only curve`). Every target every {interval:g} s; the agent scraped every
15 s as Prometheus asks (OpenMetrics + gzip); each peer driven as Prometheus would drive it at the same
N (every target every {interval:g} s, spread over the interval, 16 requests in flight). CPU and RSS are
the measured process's own. TCP and HTTP targets are a loopback listener and a loopback HTTP server;
SNMP devices are net-snmp snmpd (the 250-OID IF-MIB walk of the SNMP benchmark, 50 devices per
snmpd). The mixed row is the central-agent config of #20: 300 SNMP devices, 150 probes (75 TCP, 75
HTTP), 30 backups (`type: files`), 1 evidence target, 20 link bursts; its peers are snmp_exporter
for the 300 devices and blackbox_exporter for 150 TCP probes. "missed intervals": a target whose
runs were more than 1.5 intervals apart, or which did not run in the window (agent); a probe not
answered within the interval or failed (peer). "runs / due": runs started in the window over
N x window / interval (a target runs every interval at ≈ 1.00); a run is stored when it ends, so the
agent is stopped only once the window's runs have ended. "skipped": scheduled runs that did not
start, whatever the reason (`continuity_target_skipped_runs_total`). SQLite growth: the results
history's bytes per run (dbstat: table and indexes over rows) x runs per hour; "≈": the median
bytes per run of the points that measured it, for points measured before that.

{chr(10).join(lines)}

**Largest N at which every target still ran every interval on 2 cores** (runs / due ≥ 0.97, no
skipped run, no missed interval, no failed run), per workload: {statement}.

![scale curve](scale.png)
"""
    update_performance_md("Scale: targets curve against the peers", body)
    plot(curve)


def plot(curve: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (metric, label) in zip(
        axes,
        (
            ("cpu_s_per_min", "CPU s per minute"),
            ("cpu_per_collection_ms", "CPU ms per collection"),
            ("rss_mib", "RSS MiB"),
        ),
        strict=True,
    ):
        for kind, title, peer in CURVE_ROWS:
            for who, style in (("agent", "-o"), (peer, "--s")):
                pts = sorted(
                    (int(k.split(":")[1]), v[who][metric])
                    for k, v in curve.items()
                    if k.startswith(kind + ":") and who in v and metric in v[who]
                )
                if pts:
                    name = "continuity-agent" if who == "agent" else who.replace("_", "-")
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{title}: {name}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("targets (N)")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "scale.png", dpi=90)


def main(argv: list[str] | None = None) -> None:
    argv = argv if argv is not None else sys.argv[1:]
    signal.signal(signal.SIGTERM, lambda *_a: sys.exit(143))  # stop the simulated devices and exporters too
    if argv[:1] == ["--inprocess"]:
        _inprocess_main(argv[1], argv[2], argv[3])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="render,snmp,curve")
    ap.add_argument("--series", type=int, default=52_000, help="series stored for the render part")
    ap.add_argument("--renders", type=int, default=15)
    ap.add_argument("--snmp-devices", type=int, default=100)
    ap.add_argument("--snmp-window", type=float, default=60.0)
    ap.add_argument("--ns", default="10,100,500,2000")
    ap.add_argument("--kinds", default="tcp,http,snmp,mixed")
    ap.add_argument("--interval", type=float, default=10.0, help="collection interval in the curve")
    ap.add_argument("--window", type=float, default=20.0, help="measuring window per curve point")
    ap.add_argument("--again", action="store_true", help="re-measure curve points already recorded")
    ap.add_argument("--quick", action="store_true", help="smoke run: small N, short windows")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.series, args.renders, args.snmp_devices, args.snmp_window = 5000, 5, 10, 20.0
        args.ns, args.window = "10,100", 12.0
    only = set(args.only.split(","))
    for tool in (BLACKBOX, SNMP_EXPORTER, NODE_EXPORTER):
        if not Path(tool).exists():
            print(f"scale bench needs {tool} (make system-deps)", file=sys.stderr)
            raise SystemExit(2)
    if "render" in only:
        run_render(args)
    if "snmp" in only:
        run_snmp_cpu(args)
    if "curve" in only:
        run_curve(args)
    if args.no_write:
        return
    data = recorded()
    if "render" in only and "render" in data:
        write_render(data["render"]["result"])
    if "snmp" in only and "snmp" in data:
        write_snmp(data["snmp"]["result"])
    if "curve" in only and data.get("curve"):
        write_curve(data["curve"], args.interval)


if __name__ == "__main__":
    main()
