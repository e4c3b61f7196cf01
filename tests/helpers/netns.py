"""Network namespaces for link tests: a namespace joined to the root namespace by a veth pair,
on a private 10.x /30 chosen so that parallel test workers never collide.

Every namespace, veth and process is removed in teardown, even when the test fails. Traffic
stays on the veth: the tests only ever address the namespace's own IP.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.common import need, need_root

LOCK = Path("/tmp/continuity-netns.lock")


def require_root() -> None:
    need_root("network namespace tests")


def run(*argv: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}"
        )
    return r


def tbf_burst(rate_bits: float) -> str:
    # 32 kbit as the example; faster rates need a bucket of at least one timer tick's worth.
    return f"{max(32, int(rate_bits * 0.004 / 1000))}kbit"


@dataclass
class Peer:
    """A namespace ``ns`` whose interface ``ns_if`` (``ns_ip``) is wired to ``host_if`` (``host_ip``)."""

    ns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    rule_prefs: list[int] = field(default_factory=list)

    def exec(self, *argv: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.ns, *argv, check=check, timeout=timeout)

    def spawn(self, *argv: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log else subprocess.DEVNULL
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def shape(self, rate_bits: float, *, both: bool = True) -> None:
        """tbf on the namespace's egress (download) and, with ``both``, the host's (upload).

        GSO is capped at one Ethernet frame on both ends first, as on a real WAN line: with 64 KB
        GSO super-packets tbf lets bursts through above its rate and TCP then loses whole bursts,
        and throughput over an 8 s test wanders by +-8 %; with frame-sized packets it is steady
        at the 1448/1514 payload share of the rate."""
        self.exec("ip", "link", "set", "dev", self.ns_if, "gso_max_size", "1514")
        run("ip", "link", "set", "dev", self.host_if, "gso_max_size", "1514")
        rate = f"{int(rate_bits / 1000)}kbit"
        args = ["root", "tbf", "rate", rate, "burst", tbf_burst(rate_bits), "latency", "400ms"]
        self.exec("tc", "qdisc", "replace", "dev", self.ns_if, *args)
        if both:
            run("tc", "qdisc", "replace", "dev", self.host_if, *args)

    def unshape(self) -> None:
        self.exec("tc", "qdisc", "del", "dev", self.ns_if, "root", check=False)
        run("tc", "qdisc", "del", "dev", self.host_if, "root", check=False)

    def guard_route(self) -> None:
        """Policy rules so the namespace's /30 never falls through to the default route: while
        the veth's connected route exists it is used; when it is gone (link down, route deleted)
        sending fails with "Network is unreachable", as on a host whose VPN route was withdrawn,
        and no packet leaves the machine."""
        if self.rule_prefs:
            return
        net = self.host_ip.rsplit(".", 1)[0] + "." + str(int(self.host_ip.rsplit(".", 1)[1]) - 1) + "/30"
        pref = 10000 + random.randrange(0, 20000, 2)
        self.rule_prefs += [pref, pref + 1]
        run("ip", "rule", "add", "pref", str(pref), "to", net, "lookup", "main", "suppress_prefixlength", "0")
        run("ip", "rule", "add", "pref", str(pref + 1), "to", net, "unreachable")

    def link_down(self) -> None:
        """Take the root namespace's (the agent's) side of the veth down: its route goes with it."""
        self.guard_route()
        run("ip", "link", "set", "dev", self.host_if, "down")

    def link_up(self) -> None:
        run("ip", "link", "set", "dev", self.host_if, "up")
        _wait_reachable(self)

    def iptables(self, *rule: str) -> None:
        self.exec("iptables", "-w", "5", *rule)

    def wait_listening(self, port: int, proto: str = "tcp", timeout: float = 10.0) -> None:
        flag = "-ltnH" if proto == "tcp" else "-lunH"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.exec("ss", flag, check=False).stdout
            if any(
                line.split()[3].endswith(f":{port}") for line in out.splitlines() if len(line.split()) > 3
            ):
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise AssertionError(f"{p.args} exited with {p.returncode}")
            time.sleep(0.05)
        raise AssertionError(f"nothing listening on {proto}/{port} in {self.ns} after {timeout}s")

    def iperf3_server(
        self, port: int = 5201, log: Path | None = None, *, json: bool = False
    ) -> subprocess.Popen[bytes]:
        """iperf3 -s in the namespace; with ``json`` its log holds one JSON report per test."""
        extra = ["--json"] if json else []
        p = self.spawn(need("iperf3"), "--server", "--bind", self.ns_ip, "--port", str(port), *extra, log=log)
        self.wait_listening(port)
        return p


async def fping(host: str, count: int, period_ms: int) -> list[float | None]:
    """``fping -C COUNT -p PERIOD`` to ``host``: RTT in seconds per probe, None when lost.

    fping shortens its timeout to the period in count mode; replies get the same 1 s the link
    collector's default packet_timeout gives them, or a queue's delay would show up as loss."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        need("fping"),
        "-C",
        str(count),
        "-p",
        str(period_ms),
        "-t",
        "1000",
        "-q",
        host,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await proc.communicate()
    line = next((ln for ln in err.decode().splitlines() if ":" in ln), "")
    values = line.split(":", 1)[1].split() if line else []
    return [None if v == "-" else float(v) / 1000.0 for v in values]


def _used_networks() -> str:
    return run("ip", "-4", "route", "show", "table", "all").stdout + run("ip", "-4", "addr").stdout


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


@contextlib.contextmanager
def peer(tag: str = "t") -> Iterator[Peer]:
    """A fresh namespace on a veth to the root namespace; removed afterwards."""
    require_root()
    need("ip")
    suffix = secrets.token_hex(4)
    ns = f"cont-{tag}-{os.getpid()}-{suffix}"
    host_if, ns_if = f"ct{suffix}h", f"ct{suffix}n"
    LOCK.touch(exist_ok=True)
    p: Peer | None = None
    with open(LOCK) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            used = _used_networks()
            rng = random.Random()
            for _ in range(200):
                a, b, c = rng.randint(200, 254), rng.randint(0, 255), rng.randrange(0, 256, 4)
                if f"10.{a}.{b}." not in used:
                    break
            else:
                raise AssertionError("no free 10.x network for a test namespace")
            host_ip, ns_ip = f"10.{a}.{b}.{c + 1}", f"10.{a}.{b}.{c + 2}"
            run("ip", "netns", "add", ns)
            p = Peer(ns, host_if, ns_if, host_ip, ns_ip)
            run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            run("ip", "link", "set", ns_if, "netns", ns)
            run("ip", "addr", "add", f"{host_ip}/30", "dev", host_if)
            run("ip", "link", "set", host_if, "up")
            p.exec("ip", "addr", "add", f"{ns_ip}/30", "dev", ns_if)
            p.exec("ip", "link", "set", ns_if, "up")
            p.exec("ip", "link", "set", "lo", "up")
        except BaseException:
            _teardown(ns, host_if, p)
            raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    assert p is not None
    try:
        _wait_reachable(p)
        yield p
    finally:
        _teardown(ns, host_if, p)


def _wait_reachable(p: Peer, timeout: float = 10.0) -> None:
    """Until the veth carries traffic (link up, no DAD/ARP delay): a TCP connect gets its RST."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            try:
                s.connect((p.ns_ip, 9))
                return
            except ConnectionRefusedError:
                return
            except OSError:
                time.sleep(0.05)
    raise AssertionError(f"{p.ns_ip} in {p.ns} not reachable after {timeout}s")


def _teardown(ns: str, host_if: str, p: Peer | None) -> None:
    if p is not None:
        for proc in p.procs:
            _stop(proc)
        for pref in p.rule_prefs:
            run("ip", "rule", "del", "pref", str(pref), check=False)
    pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run("ip", "link", "del", host_if, check=False)
    run("ip", "netns", "del", ns, check=False)
