"""SNMP agents for the tests: net-snmp snmpd, snmpsim, and a scriptable fake v2c agent.

All listen on 127.0.0.1 on free UDP ports, are waited on until they answer, and are stopped
afterwards. Nothing is shared between tests (own config, persistent dir and pid file under
``tmp_path``), so the suites run in parallel under pytest-xdist.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collectors.snmp import ber
from tests.helpers.common import ROOT, free_port, need

FIXTURES = ROOT / "tests" / "fixtures" / "snmp"
V3_USER = "alice"
V3_AUTH = "alice-auth-pass"
V3_PRIV = "alice-priv-pass"
COMMUNITY = "s3cret-community"


def udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def v2c_get(port: int, oid: str, community: str = COMMUNITY, timeout: float = 0.5) -> ber.Response | None:
    """One raw v2c GET with the test's own socket (readiness checks)."""
    req = ber.encode_request(ber.GET_REQUEST, community.encode(), 4242, [ber.parse_oid(oid)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(req, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError:
            return None
    return ber.decode_response(data)


def _wait_answer(port: int, community: str, proc: subprocess.Popen[bytes] | None, log: Path | None,
                 timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"agent exited with {proc.returncode}: "
                                 f"{log.read_text(errors='replace')[-2000:] if log else ''}")
        try:
            if v2c_get(port, "1.3.6.1.2.1.1.3.0", community) is not None:
                return
        except (OSError, ber.MalformedReply):
            pass
        time.sleep(0.1)
    raise AssertionError(f"SNMP agent on udp:{port} did not answer within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Snmpd:
    port: int
    ports: list[int]
    conf: Path
    log: Path
    community: str = COMMUNITY


def snmpd_conf(ports: list[int], persist: Path, *, community: str = COMMUNITY, extra: str = "") -> str:
    return "\n".join([
        "agentAddress " + ",".join(f"udp:127.0.0.1:{p}" for p in ports),
        f"rocommunity {community} 127.0.0.1",
        # A v3 user with SHA-256 authentication and AES-128 privacy (net-snmp's "AES").
        f"createUser {V3_USER} SHA-256 {V3_AUTH} AES {V3_PRIV}",
        f"rouser {V3_USER} priv",
        "createUser bob SHA bob-auth-pass",  # authNoPriv user
        "rouser bob auth",
        "sysName continuity-test-snmpd",
        "sysLocation loopback",
        "dontLogTCPWrappersConnects yes",
        extra,
        "",
    ])


@contextlib.contextmanager
def snmpd(tmp_path: Path, *, nports: int = 1, extra: str = "", args: list[str] | None = None,
          name: str = "snmpd") -> Iterator[Snmpd]:
    """net-snmp snmpd on free UDP ports with the v2c community and v3 users above."""
    binary = need("snmpd")
    ports = [udp_port() for _ in range(nports)]
    d = tmp_path / name
    persist = d / "persist"
    persist.mkdir(parents=True, exist_ok=True)
    conf = d / "snmpd.conf"
    conf.write_text(snmpd_conf(ports, persist, extra=extra))
    log = d / "snmpd.log"
    env = {**os.environ, "SNMP_PERSISTENT_DIR": str(persist), "MIBS": "", "MIBDIRS": str(d)}
    proc = subprocess.Popen(
        [binary, "-f", "-r", "-C", "-c", str(conf), "-Lf", str(log), "-p", str(d / "snmpd.pid"),
         "-I", "-smux", *(args or [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env,
    )
    try:
        for p in ports:
            _wait_answer(p, COMMUNITY, proc, log)
        yield Snmpd(ports[0], ports, conf, log)
    finally:
        _stop(proc)


# snmpsim's SNMPv3 user (v3=True): a recording is then also served as the v3 context named like it.
SIM_V3_USER = "corpus"
SIM_V3_AUTH = "corpus-auth-pass"
SIM_V3_PRIV = "corpus-priv-pass"


@contextlib.contextmanager
def snmpsim(tmp_path: Path, recordings: dict[str, str | Path] | Path, *, v3: bool = False) -> Iterator[int]:
    """snmpsim-command-responder serving ``{community: .snmprec file or text}`` on one port, or
    every ``*.snmprec`` of a directory read in place (peer data is never copied). snmpsim picks the
    recording by community name (the file's base name); with ``v3`` also by v3 context name, for
    the user SIM_V3_USER (SHA-256 / AES-128)."""
    port = udp_port()
    # snmpsim refuses to run as root; it then runs as nobody, which must read the data and write
    # its cache: those live in a world-readable directory of their own (tmp_path is 0700).
    root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="snmpsim-")) if root else tmp_path
    base.chmod(0o755)
    data, cache = base / "data", base / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    cache.chmod(0o777)
    if isinstance(recordings, Path):
        data = recordings
        first = min(p.stem for p in data.glob("*.snmprec"))
    else:
        data.mkdir(parents=True, exist_ok=True)
        for community, src in recordings.items():
            text = Path(src).read_text() if isinstance(src, Path) else src
            (data / f"{community}.snmprec").write_text(text)
            (data / f"{community}.snmprec").chmod(0o644)
        first = next(iter(recordings))
    log = tmp_path / "snmpsim.log"
    exe = Path(sys.executable).parent / "snmpsim-command-responder"
    if not exe.exists():
        exe = Path(need("snmpsim-command-responder"))
    user = ["--process-user=nobody", "--process-group=nogroup"] if root else []
    users = ["--v3-engine-id=auto", f"--v3-user={SIM_V3_USER}", f"--v3-auth-key={SIM_V3_AUTH}",
             "--v3-auth-proto=SHA256", f"--v3-priv-key={SIM_V3_PRIV}", "--v3-priv-proto=AES"] if v3 else []
    # After dropping to nobody, snmpsim can no longer import from a Python installed under
    # /root; load the one lazily imported module it needs (its index database) beforehand.
    boot = ("import sys, dbm, dbm.dumb, encodings.latin_1, encodings.ascii, encodings.hex_codec; "
            "dbm._defaultmod = dbm.dumb; dbm._modules = {'dbm.dumb': dbm.dumb}; "
            "from snmpsim.commands.responder import main; sys.argv[0] = 'snmpsim-command-responder'; "
            "sys.exit(main())")
    with open(log, "wb") as lf:
        proc = subprocess.Popen(
            [sys.executable, "-c", boot, *users, f"--data-dir={data}", f"--agent-udpv4-endpoint=127.0.0.1:{port}",
             f"--cache-dir={cache}", "--log-level=error", *user],
            stdout=lf, stderr=subprocess.STDOUT,
        )
    try:
        _wait_answer(port, first, proc, log, timeout=90)
        yield port
    finally:
        _stop(proc)
        if root:
            shutil.rmtree(base, ignore_errors=True)


# -- a scriptable v2c agent -----------------------------------------------------------------------

Handler = Callable[[ber.Response, bytes], bytes | None]


@dataclass
class FakeAgent:
    """A v2c agent in a background thread. ``mib`` is a sorted list of (oid, tag, value);
    ``behaviour`` may replace the reply ("silent", "slow:<s>", "loop", "garbage") or a callable."""

    mib: list[ber.VarBind] = field(default_factory=list)
    community: bytes = COMMUNITY.encode()
    behaviour: str | Handler = "normal"
    max_reply_varbinds: int = 1000
    port: int = 0
    pdus: list[int] = field(default_factory=list)  # PDU tag of every request received
    _index: tuple[Any, list[ber.OID]] = (None, [])

    def reply(self, req: ber.Response) -> bytes | None:
        if req.community != self.community:
            return None
        out: list[ber.VarBind] = []
        oids = [o for o, _t, _v in req.varbinds]
        if req.pdu_type == ber.GET_REQUEST:
            d = {o: (t, v) for o, t, v in self.mib}
            for o in oids:
                t, v = d.get(o, (ber.NO_SUCH_OBJECT, None))
                out.append((o, t, v))
        elif req.pdu_type == ber.GET_NEXT_REQUEST:
            out = [self._next(o) for o in oids]
        elif req.pdu_type == ber.GET_BULK_REQUEST:
            nr, mr = max(0, req.error_status), max(0, req.error_index)
            out = [self._next(o) for o in oids[:nr]]
            cur = list(oids[nr:])
            for _ in range(mr):
                if not cur or len(out) >= self.max_reply_varbinds:
                    break
                row = [self._next(o) for o in cur]
                out.extend(row)
                cur = [o for o, _t, _v in row]
        return ber.encode_response(self.community, req.request_id, out[: self.max_reply_varbinds])

    def _next(self, oid: ber.OID) -> ber.VarBind:
        scalar = oid[:7] == (1, 3, 6, 1, 2, 1, 1) or oid in ((1, 3, 6, 1, 2, 1, 2, 1), (1, 3, 6, 1, 2, 1, 2, 1, 0))
        if self.behaviour == "loop" and not scalar:
            # Inside a table, every GETNEXT is answered with the table's first row again.
            return ((*oid[:10], 1) if len(oid) >= 11 else (*oid, 1)), ber.INTEGER, 1
        if self._index[0] is not self.mib:
            self._index = (self.mib, [o for o, _t, _v in self.mib])
        i = bisect.bisect_right(self._index[1], oid)
        if i >= len(self.mib):
            return (oid, ber.END_OF_MIB_VIEW, None)
        return self.mib[i]


class _AgentProtocol(asyncio.DatagramProtocol):
    def __init__(self, agent: FakeAgent, loop: asyncio.AbstractEventLoop) -> None:
        self.agent = agent
        self.loop = loop
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            req = ber.decode_response(data)
        except ber.MalformedReply:
            return
        self.agent.pdus.append(req.pdu_type)
        b = self.agent.behaviour
        if callable(b):
            out = b(req, data)
        elif b == "silent":
            return
        elif b == "garbage":
            out = b"\x30\x03\x02\x01"
        else:
            out = self.agent.reply(req)
        if out is None:
            return
        if isinstance(b, str) and b.startswith("slow:"):
            self.loop.call_later(float(b[5:]), self._send, out, addr)
        else:
            self._send(out, addr)

    def _send(self, out: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.transport.sendto(out, addr)


@contextlib.contextmanager
def fake_agent(agent: FakeAgent) -> Iterator[FakeAgent]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            tr, _ = await loop.create_datagram_endpoint(lambda: _AgentProtocol(agent, loop),
                                                        local_addr=("127.0.0.1", 0))
            holder["tr"] = tr
            agent.port = tr.get_extra_info("sockname")[1]
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    assert ready.wait(10)
    try:
        yield agent
    finally:
        loop.call_soon_threadsafe(holder["tr"].close)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)


def if_mib(n: int, *, hc: bool = True, base_in: int = 10**12) -> list[ber.VarBind]:
    """A synthetic IF-MIB with ``n`` interfaces, sorted by OID."""
    rows: list[ber.VarBind] = [
        ((1, 3, 6, 1, 2, 1, 1, 3, 0), ber.TIMETICKS, 123456),
        ((1, 3, 6, 1, 2, 1, 1, 5, 0), ber.OCTET_STRING, b"fake-router"),
        ((1, 3, 6, 1, 2, 1, 2, 1, 0), ber.INTEGER, n),
    ]
    for i in range(1, n + 1):
        e = (1, 3, 6, 1, 2, 1, 2, 2, 1)
        rows += [
            ((*e, 2, i), ber.OCTET_STRING, f"port{i}".encode()),
            ((*e, 5, i), ber.GAUGE32, 1_000_000_000),
            ((*e, 7, i), ber.INTEGER, 1),
            ((*e, 8, i), ber.INTEGER, 1 if i % 2 else 2),
            ((*e, 10, i), ber.COUNTER32, (base_in + i) & 0xFFFFFFFF),
            ((*e, 14, i), ber.COUNTER32, i),
            ((*e, 16, i), ber.COUNTER32, (2 * base_in + i) & 0xFFFFFFFF),
            ((*e, 20, i), ber.COUNTER32, 2 * i),
        ]
        x = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
        rows += [((*x, 1, i), ber.OCTET_STRING, f"p{i}".encode()),
                 ((*x, 15, i), ber.GAUGE32, 1000),
                 ((*x, 18, i), ber.OCTET_STRING, f"alias {i}".encode())]
        if hc:
            rows += [((*x, 6, i), ber.COUNTER64, base_in + i), ((*x, 10, i), ber.COUNTER64, 2 * base_in + i)]
    rows.sort(key=lambda r: r[0])
    return rows
