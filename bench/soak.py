"""Soak: 200 targets of mixed kinds, half of them blackholed or hanging, for N minutes.

    python -m bench.soak --minutes 10 [--interval 5] [--plot docs/soak.png] [--no-docs]

Needs root (a network namespace with a DROP rule stands in for the unreachable half of the
estate; every address used is on loopback or on the namespace's own veth, 10.231.x.x).

Healthy targets (100): HTTP/TCP probes against a server on loopback, ICMP to 127.0.0.1, host,
link bursts to loopback, SNMP against net-snmp's snmpd on loopback (when the kinds and tools are
present). Faulty targets (100): half blackholed (TCP/HTTP/ICMP/SNMP/link to the namespace, whose
firewall drops everything) and half hanging (TCP accepted and never answered, UDP read and never
answered).

Measured from outside the agent every second: /metrics latency, RSS, open fds, CPU. At the end,
from the agent's SQLite history: every healthy target's runs in the measurement window, the
longest gap between two runs and the skipped-run counter. Writes a PNG of the curves and the
numbers into docs/PERFORMANCE.md ("Soak" section).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, free_port, rss_bytes, update_performance_md

ROOT = Path(__file__).resolve().parents[1]
AGENT = Path(sys.executable).parent / "continuity-agent"
COMMUNITY = "soak-public"


def _run(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


# -- the blackhole: a namespace that drops everything ------------------------------------------------


@dataclass
class Blackhole:
    ns: str
    host_if: str
    host_ip: str
    ns_ip: str


@contextlib.contextmanager
def blackhole() -> Iterator[Blackhole]:
    if os.geteuid() != 0:
        raise RuntimeError("the soak needs root for its network namespace")
    tag = f"{os.getpid() % 100000}{random.randint(0, 99)}"
    ns, host_if, ns_if = f"casoak{tag}", f"csk{tag}h", f"csk{tag}n"
    used = _run("ip", "-4", "-o", "addr").stdout
    for _ in range(200):
        third, fourth = random.randint(0, 255), random.randrange(0, 256, 4)
        net = f"10.231.{third}."
        if not any(f"{net}{fourth + i}/" in used for i in range(4)):
            break
    host_ip, ns_ip = f"{net}{fourth + 1}", f"{net}{fourth + 2}"
    try:
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", ns)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
        _run("ip", "link", "set", host_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
        _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        rules = "table inet soak {\n chain input { type filter hook input priority 0; policy drop; }\n}\n"
        if shutil.which("nft") or Path("/usr/sbin/nft").exists():
            _run("ip", "netns", "exec", ns, "nft", "-f", "-", input=rules)
        else:
            _run("ip", "netns", "exec", ns, "iptables", "-P", "INPUT", "DROP")
        yield Blackhole(ns, host_if, host_ip, ns_ip)
    finally:
        _run("ip", "link", "del", host_if, check=False)
        _run("ip", "netns", "del", ns, check=False)


# -- healthy and hanging peers on loopback ------------------------------------------------------------


class Hanger:
    """TCP listeners that accept and never answer, and UDP sockets that read and never answer."""

    def __init__(self, tcp: int, udp: int) -> None:
        self.sel = selectors.DefaultSelector()
        self.tcp: list[socket.socket] = []
        self.udp: list[socket.socket] = []
        for _ in range(tcp):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen(256)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ, "listen")
            self.tcp.append(s)
        for _ in range(udp):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind(("127.0.0.1", 0))
            u.setblocking(False)
            self.sel.register(u, selectors.EVENT_READ, "udp")
            self.udp.append(u)
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop:
            for key, _ in self.sel.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):
                    if key.data == "listen":
                        c, _a = sock.accept()
                        c.setblocking(False)
                        self.sel.register(c, selectors.EVENT_READ, "conn")
                    elif key.data == "udp":
                        sock.recv(65536)
                    else:
                        if not sock.recv(65536):  # peer gave up: close our end too
                            self.sel.unregister(sock)
                            sock.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        for key in list(self.sel.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def snmpd(work: Path) -> Iterator[int | None]:
    binary = shutil.which("snmpd") or ("/usr/sbin/snmpd" if Path("/usr/sbin/snmpd").exists() else None)
    if binary is None:
        yield None
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = work / "snmpd"
    (d / "persist").mkdir(parents=True, exist_ok=True)
    conf = d / "snmpd.conf"
    conf.write_text(f"agentAddress udp:127.0.0.1:{port}\nrocommunity {COMMUNITY} 127.0.0.1\n")
    env = {**os.environ, "SNMP_PERSISTENT_DIR": str(d / "persist"), "MIBS": "", "MIBDIRS": str(d)}
    proc = subprocess.Popen(
        [binary, "-f", "-r", "-C", "-c", str(conf), "-Lf", str(d / "snmpd.log"), "-I", "-smux"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        time.sleep(1.0)
        yield port if proc.poll() is None else None
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


# -- config ----------------------------------------------------------------------------------------


def kinds_present() -> set[str]:
    from collectors.registry import collectors

    return set(collectors())


def build_config(
    bh: Blackhole, http_port: int, hanger: Hanger, snmp_port: int | None, interval: float, state: Path, work: Path
) -> tuple[str, list[str], list[str]]:
    """(config YAML, healthy target names, faulty target names): 100 + 100."""
    kinds = kinds_present()
    healthy: list[str] = []
    faulty: list[str] = []
    lines: list[str] = []

    def add(bucket: list[str], name: str, body: str) -> None:
        bucket.append(name)
        lines.append(f"  - {{name: {name}, {body}}}")

    # Healthy: 100.
    for i in range(30):
        add(healthy, f"ok-http-{i}", f"kind: probe, module: http, url: 'http://127.0.0.1:{http_port}/h{i}'")
    for i in range(20):
        add(healthy, f"ok-tcp-{i}", f"kind: probe, module: tcp, host: 127.0.0.1, port: {http_port}")
    for i in range(15):
        add(healthy, f"ok-icmp-{i}", "kind: probe, module: icmp, host: 127.0.0.1")
    for i in range(5):
        add(healthy, f"ok-host-{i}", "kind: host")
    n_backup = 5 if "backup" in kinds else 0
    n_snmp = 15 - n_backup if ("snmp" in kinds and snmp_port) else 0
    n_link = 15 if "link" in kinds else 0
    for i in range(n_snmp):
        add(healthy, f"ok-snmp-{i}", f"kind: snmp, host: 127.0.0.1, port: {snmp_port}, auth: soak_v2c")
    for i in range(n_link):
        add(
            healthy,
            f"ok-link-{i}",
            "kind: link, host: 127.0.0.1, method: icmp, count: 5, packet_interval: 50ms, standards: false",
        )
    if n_backup:
        backups = work / "backups"
        backups.mkdir(exist_ok=True)
        (backups / "nightly.tar").write_bytes(b"x" * 4096)
    for i in range(n_backup):
        add(healthy, f"ok-backup-{i}", f"kind: backup, type: files, rpo: 24h, directory: {work / 'backups'}")
    for i in range(100 - len(healthy)):
        add(healthy, f"ok-tcp2-{i}", f"kind: probe, module: tcp, host: 127.0.0.1, port: {http_port}")

    # Blackholed: 50, into the namespace that drops everything.
    ns = bh.ns_ip
    for i in range(15):
        add(faulty, f"bh-tcp-{i}", f"kind: probe, module: tcp, host: {ns}, port: {8000 + i}")
    for i in range(10):
        add(faulty, f"bh-http-{i}", f"kind: probe, module: http, url: 'http://{ns}:{9000 + i}/'")
    for i in range(10):
        add(faulty, f"bh-icmp-{i}", f"kind: probe, module: icmp, host: {ns}")
    bh_backup = 5 if "backup" in kinds else 0
    bh_snmp = 10 - bh_backup if "snmp" in kinds else 0
    bh_link = 5 if "link" in kinds else 0
    for i in range(bh_snmp):
        add(faulty, f"bh-snmp-{i}", f"kind: snmp, host: {ns}, port: {1161 + i}, auth: soak_v2c")
    for i in range(bh_link):
        add(faulty, f"bh-link-{i}", f"kind: link, host: {ns}, method: icmp, count: 5, standards: false")
    for i in range(bh_backup):  # restic over SSH to a host that never answers
        add(faulty, f"bh-backup-{i}", f"kind: backup, type: restic, rpo: 24h, repository: /srv/restic, host: {ns}, "
            "auth: soak_ssh, password_file: /etc/restic.pw")  # fmt: skip
    for i in range(50 - 35 - bh_snmp - bh_link - bh_backup):
        add(faulty, f"bh-tcp2-{i}", f"kind: probe, module: tcp, host: {ns}, port: {7000 + i}")

    # Hanging: 50 on loopback.
    udp_hang = hanger.udp if "snmp" in kinds else []
    for i, s in enumerate(hanger.tcp[: 50 - len(udp_hang)]):
        add(faulty, f"hang-http-{i}", f"kind: probe, module: http, url: 'http://127.0.0.1:{s.getsockname()[1]}/'")
    for i, u in enumerate(udp_hang):
        add(faulty, f"hang-snmp-{i}", f"kind: snmp, host: 127.0.0.1, port: {u.getsockname()[1]}, auth: soak_v2c")

    (work / "community").write_text(COMMUNITY)
    (work / "community").chmod(0o600)
    auths = ""
    if "snmp" in kinds:
        auths += f"  soak_v2c: {{type: snmp_v2c, community_file: {work / 'community'}}}\n"
    if "backup" in kinds:
        key = work / "soak_key"
        if not key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        (work / "known_hosts").write_text(f"{ns} " + " ".join(key.with_suffix(".pub").read_text().split()[:2]) + "\n")
        auths += (
            f"  soak_ssh: {{type: ssh, user: soak, key_file: {key}, known_hosts: {work / 'known_hosts'}, "
            "connect_timeout: 2s, auth_timeout: 2s}\n"
        )
    if auths:
        auths = "auths:\n" + auths
    text = (
        f"agent: {{site: soak, state_dir: {state}, max_workers: 32}}\n"
        f"defaults: {{interval: {interval:g}s, timeout: {interval * 0.6:g}s, start_jitter: 1.0}}\n"
        f"{auths}targets:\n" + "\n".join(lines) + "\n"
    )
    return text, healthy, faulty


# -- measuring -------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    rss: int
    fds: int
    cpu: float
    scrape: float
    ok: bool


@dataclass
class SoakResult:
    minutes: float
    interval: float
    targets: int
    healthy: int
    faulty: int
    kinds: dict[str, int]
    samples: list[Sample] = field(default_factory=list)
    warmup_s: float = 0.0
    rss_warm: int = 0
    rss_max_after: int = 0
    rss_end: int = 0
    fds_min_after: int = 0
    fds_max_after: int = 0
    scrape_max_s: float = 0.0
    scrape_p99_s: float = 0.0
    scrape_failures: int = 0
    cpu_percent: float = 0.0
    healthy_runs_expected: int = 0
    healthy_runs: int = 0
    healthy_missed: int = 0
    healthy_max_gap_s: float = 0.0
    healthy_skipped: int = 0
    faulty_skipped: int = 0
    healthy_failed_runs: int = 0
    agent_exit: int | None = None
    tracebacks: int = 0

    @property
    def rss_growth(self) -> float:
        return (self.rss_max_after - self.rss_warm) / self.rss_warm if self.rss_warm else 0.0

    def summary(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "samples"}
        d["rss_growth"] = round(self.rss_growth, 4)
        return d


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _scrape(url: str) -> tuple[float, bool, str]:
    import urllib.request

    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
            ok = r.status == 200
    except OSError:
        return time.perf_counter() - t0, False, ""
    return time.perf_counter() - t0, ok, body


def _skipped(metrics: str) -> dict[str, float]:
    """Skipped runs per target, all reasons together."""
    out: dict[str, float] = {}
    for m in re.finditer(r'^continuity_target_skipped_runs_total\{[^}]*target="([^"]+)"[^}]*\} (\S+)$', metrics, re.M):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def run_soak(minutes: float, interval: float = 5.0, work: Path | None = None, quiet: bool = False) -> SoakResult:
    own_tmp = work is None
    work = Path(tempfile.mkdtemp(prefix="continuity-soak-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    state = work / "state"
    from tests.helpers.httpserve import serve_http

    hanger = Hanger(tcp=50, udp=10)
    try:
        with blackhole() as bh, snmpd(work) as snmp_port, serve_http() as http_port:
            text, healthy, faulty = build_config(bh, http_port, hanger, snmp_port, interval, state, work)
            cfg = work / "agent.yml"
            cfg.write_text(text)
            kinds: dict[str, int] = {}
            for m in re.finditer(r"kind: (\w+)", text):
                kinds[m.group(1)] = kinds.get(m.group(1), 0) + 1
            res = SoakResult(minutes, interval, len(healthy) + len(faulty), len(healthy), len(faulty), kinds)
            port = free_port()
            url = f"http://127.0.0.1:{port}/metrics"
            log_path = work / "agent.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [str(AGENT), "run", "--config", str(cfg), "--web.listen-address", f"127.0.0.1:{port}"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                try:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and not _scrape(url)[1]:
                        if proc.poll() is not None:
                            raise RuntimeError(f"agent exited: {log_path.read_text()[-2000:]}")
                        time.sleep(0.2)
                    t_start = time.time()
                    total = minutes * 60.0
                    # Warm-up: imports, first runs of every target, SQLite pages, allocator arenas.
                    res.warmup_s = min(max(3 * interval, 0.25 * total), 120.0)
                    last_metrics = ""
                    while time.time() - t_start < total:
                        t0 = time.monotonic()
                        took, ok, body = _scrape(url)
                        if body:
                            last_metrics = body
                        now = time.time() - t_start
                        pid = proc.pid
                        res.samples.append(Sample(now, rss_bytes(pid), _fds(pid), cpu_seconds(pid), took, ok))
                        if not quiet and len(res.samples) % 30 == 0:
                            s = res.samples[-1]
                            mib = s.rss / 2**20
                            ms = s.scrape * 1000
                            print(f"  {s.t:6.0f}s rss={mib:.1f}MiB fds={s.fds} scrape={ms:.0f}ms", flush=True)
                        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
                    t_end = time.time()
                    _took, _ok, body = _scrape(url)
                    last_metrics = body or last_metrics
                finally:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        res.agent_exit = proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        res.agent_exit = proc.wait(5)
            _analyse(res, state / "state.db", healthy, faulty, t_start, t_end, last_metrics)
            res.tracebacks = log_path.read_text(errors="replace").count("Traceback")
            return res
    finally:
        hanger.close()
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)


def _analyse(
    res: SoakResult, db: Path, healthy: list[str], faulty: list[str], t_start: float, t_end: float, metrics: str
) -> None:
    after = [s for s in res.samples if s.t >= res.warmup_s]
    if after:
        res.rss_warm = after[0].rss
        res.rss_max_after = max(s.rss for s in after)
        res.rss_end = after[-1].rss
        res.fds_min_after = min(s.fds for s in after)
        res.fds_max_after = max(s.fds for s in after)
        cpu_span = after[-1].t - after[0].t
        res.cpu_percent = 100.0 * (after[-1].cpu - after[0].cpu) / cpu_span if cpu_span > 0 else 0.0
    times = sorted(s.scrape for s in res.samples)
    res.scrape_max_s = times[-1] if times else 0.0
    res.scrape_p99_s = times[int(0.99 * (len(times) - 1))] if times else 0.0
    res.scrape_failures = sum(1 for s in res.samples if not s.ok)
    skipped = _skipped(metrics)
    res.healthy_skipped = int(sum(skipped.get(n, 0) for n in healthy))
    res.faulty_skipped = int(sum(skipped.get(n, 0) for n in faulty))
    # Every healthy target, every interval, in the window after warm-up (less one interval at the end).
    w0, w1 = t_start + res.warmup_s, t_end - res.interval
    conn = sqlite3.connect(db)
    try:
        expected = int((w1 - w0) // res.interval)
        for name in healthy:
            rows = conn.execute(
                "SELECT started, ok FROM results WHERE target = ? AND task = '' AND started >= ? AND started < ?"
                " ORDER BY started",
                (name, w0 - res.interval, w1 + res.interval),
            ).fetchall()
            starts = [r[0] for r in rows]
            in_window = [s for s in starts if w0 <= s < w1]
            res.healthy_runs_expected += expected
            res.healthy_runs += len(in_window)
            res.healthy_missed += max(0, expected - len(in_window))
            res.healthy_failed_runs += sum(1 for s, ok in rows if w0 <= s < w1 and not ok)
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            if gaps:
                res.healthy_max_gap_s = max(res.healthy_max_gap_s, max(gaps))
    finally:
        conn.close()


def plot(res: SoakResult, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t / 60 for s in res.samples]
    cpu = [0.0] + [
        100.0 * (b.cpu - a.cpu) / (b.t - a.t) if b.t > a.t else 0.0
        for a, b in itertools.pairwise(res.samples)
    ]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    axes[0].plot(t, [s.rss / 2**20 for s in res.samples])
    axes[0].set_ylabel("RSS (MiB)")
    axes[0].axvline(res.warmup_s / 60, color="grey", linestyle=":", label="end of warm-up")
    axes[0].legend(loc="lower right")
    axes[1].plot(t, [s.fds for s in res.samples])
    axes[1].set_ylabel("open fds")
    axes[2].plot(t, cpu)
    axes[2].set_ylabel("CPU (% of a core)")
    axes[3].plot(t, [s.scrape * 1000 for s in res.samples])
    axes[3].set_ylabel("/metrics (ms)")
    axes[3].set_xlabel("minutes")
    fig.suptitle(
        f"continuity-agent soak: {res.targets} targets ({res.faulty} blackholed or hanging), "
        f"interval {res.interval:g}s, {res.minutes:g} min"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def markdown(res: SoakResult, png: Path | None) -> str:
    mib = 2**20
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(res.kinds.items()))
    lines = [
        f"`make soak` (`python -m bench.soak --minutes {res.minutes:g}`): {res.targets} targets ({kinds}); "
        f"{res.healthy} healthy, {res.faulty // 2} blackholed (network namespace with a DROP-all firewall) and "
        f"{res.faulty - res.faulty // 2} hanging (accept and never answer); every target every "
        f"{res.interval:g}s, timeout {res.interval * 0.6:g}s. Sampled from outside once a second; "
        f"warm-up {res.warmup_s:.0f}s. Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| healthy runs / expected after warm-up | {res.healthy_runs} / {res.healthy_runs_expected} |",
        f"| healthy intervals missed | {res.healthy_missed} |",
        f"| healthy skipped runs (counter) | {res.healthy_skipped} |",
        f"| longest gap between two runs of a healthy target | {res.healthy_max_gap_s:.2f} s |",
        f"| RSS after warm-up → max → end | {res.rss_warm / mib:.1f} → {res.rss_max_after / mib:.1f} → "
        f"{res.rss_end / mib:.1f} MiB ({100 * res.rss_growth:+.1f} %) |",
        f"| open fds after warm-up (min to max) | {res.fds_min_after} to {res.fds_max_after} |",
        f"| /metrics latency p99 / max | {res.scrape_p99_s * 1000:.0f} / {res.scrape_max_s * 1000:.0f} ms |",
        f"| /metrics failures | {res.scrape_failures} |",
        f"| agent CPU after warm-up | {res.cpu_percent:.1f} % of one core |",
        f"| faulty targets' skipped runs (expected: they time out) | {res.faulty_skipped} |",
        f"| tracebacks in the agent log | {res.tracebacks} |",
    ]
    if png is not None:
        lines += ["", f"![soak curves]({os.path.relpath(png, ROOT / 'docs')})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "soak.png")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-docs", action="store_true", help="do not write docs/PERFORMANCE.md")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON here")
    args = ap.parse_args(argv)
    print(f"soak: {args.minutes:g} minutes, 200 targets, interval {args.interval:g}s", flush=True)
    res = run_soak(args.minutes, args.interval)
    png = None
    if not args.no_plot:
        try:
            plot(res, args.plot)
            png = args.plot
        except ImportError:
            print("matplotlib is not installed (pip install -e '.[bench]'): no plot", file=sys.stderr)
    summary = res.summary()
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({**summary, "samples": [s.__dict__ for s in res.samples]}))
    if not args.no_docs:
        update_performance_md("Soak (reliability)", markdown(res, png))
    bad = (
        res.healthy_missed
        or res.healthy_skipped
        or res.rss_growth > 0.10
        or res.scrape_max_s >= 1.0
        or res.scrape_failures
        or res.tracebacks
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
