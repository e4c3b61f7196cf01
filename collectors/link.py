"""Link quality of a site's connection (kind ``link``).

Main task: a bounded burst of N probes to the site's far end — ICMP echo, or TCP connect or UDP
echo where ICMP is not allowed — giving RTT min/avg/max, jitter (mean absolute difference of
consecutive RTTs, RFC 3550 style) and loss ratio. A burst with no reply at all is still a
measurement (loss 1.0, no RTT) — so is one whose probes could not even be sent because the path
is down (no route, unreachable, prohibited); each burst also records whether the far end answered
at all as a result of task ``reachability`` in the state history, which availability is computed
from. RTTs come from the kernel's receive stamps (see collectors/icmp.py).

Task ``throughput`` (optional, its own schedule): iperf3 upload and download (``-R``) against a
council-owned iperf3 server, parsed from ``iperf3 -J``. Capped per site: at most
``max_tests_per_day`` tests and ``max_bytes_per_day`` bytes in any 24 hours (under a byte cap each
direction runs by ``--bytes`` within its share of what is left), never two tests on the same
site's link at once. A busy server is retried after a delay and, if still busy, the run
fails with reason ``server_busy`` — no new measurement, so no verdict changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import shutil
import socket
import struct
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, model_validator
from pydantic_core import PydanticCustomError

from agent.childenv import child_env
from agent.configtypes import Duration, StrictModel, check_cron
from agent.standards import REACHABILITY_TASK, format_bitrate
from collectors import icmp
from collectors.base import (
    BAD_REPLY,
    TIMEOUT,
    UNREACHABLE,
    Collected,
    Collector,
    CollectorError,
    MetricSpec,
    TargetBase,
    Task,
    TaskOutcome,
)

SERVER_BUSY = "server_busy"
IPERF3_MISSING = "iperf3_missing"
IPERF3_ERROR = "iperf3_error"
THROUGHPUT_CAP = "throughput_cap"
LINK_BUSY = "link_busy"

DAY = 86400.0
IPERF3_BLOCK = 131072  # iperf3 --length for TCP: what one write sends
MIN_TEST_BYTES = 64_000  # per direction under a byte cap: a smaller test measures nothing useful
MAX_BURST_SECONDS = 60.0
DIRECTION_PAUSE = 1.0

# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------

Direction = Literal["download", "upload"]
DIRECTIONS: tuple[Direction, ...] = ("download", "upload")

_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_bytes(value: object) -> int:
    """Bytes from ``500MB``, ``2GB``, ``1GiB``, ``750M`` or a plain number."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _BYTES.match(value)
        if m:
            base = 1024.0 if m.group(3) else 1000.0
            power = " kmgt".index(m.group(2).lower() or " ")
            return int(float(m.group(1)) * base**power)
    raise PydanticCustomError(
        "bytes", "invalid size {v}: write bytes like 500MB, 2GB or 1GiB", {"v": repr(value)}
    )


def _format_bytes(n: int) -> str:
    for mult, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= mult:
            return f"{n / mult:.4g}{unit}"
    return f"{n}B"


ByteSize = Annotated[int, BeforeValidator(parse_bytes), PlainSerializer(_format_bytes, return_type=str)]


class ThroughputConfig(StrictModel):
    """iperf3 tests against a council-owned server, on their own capped schedule."""

    server: str | None = Field(default=None, description="Default: the link's host.")
    port: int = Field(default=5201, ge=1, le=65535, description="TCP port of the iperf3 server.")
    directions: list[Direction] = Field(
        default_factory=lambda: list(DIRECTIONS),
        min_length=1,
        max_length=2,
        description="`download` (server to site, iperf3 `-R`) and/or `upload`, tested in this order.",
    )
    duration: Duration = Field(default=10.0, ge=1.0, le=60.0, description="Per direction.")
    omit: Duration = Field(default=1.0, ge=0.0, le=10.0, description="iperf3 -O: seconds of TCP ramp-up not counted.")
    parallel: int = Field(default=1, ge=1, le=16, description="iperf3 -P.")
    interval: Duration = Field(default=6 * 3600.0, ge=1.0, description="How often tests run, unless `cron` is set.")
    cron: str | None = Field(default=None, description='Instead of interval, e.g. "15 7,11,15 * * 1-5" (UTC).')
    max_tests_per_day: int = Field(default=4, ge=1, le=288, description="Per site, any 24 hours.")
    max_bytes_per_day: ByteSize | None = Field(default=None, description="Per site, any 24 hours.")
    busy_retries: int = Field(
        default=3, ge=0, le=10, description="Retries of a direction while the server is busy with another client."
    )
    busy_retry_delay: Duration = Field(
        default=60.0,
        ge=0.1,
        le=900.0,
        description="Wait before retrying a busy server; also the longest wait for the site's test lock.",
    )
    connect_timeout: Duration = Field(default=5.0, ge=0.5, le=60.0, description="iperf3 `--connect-timeout`.")
    iperf3: str = Field(default="iperf3", description="Command name or path.")

    @model_validator(mode="after")
    def _check(self) -> ThroughputConfig:
        if len(set(self.directions)) != len(self.directions):
            raise ValueError("directions lists a direction twice")
        check_cron(self.cron)
        return self

    def run_seconds(self) -> float:
        """Longest one iperf3 run may take before it is killed."""
        return self.duration + self.omit + self.connect_timeout + 10.0

    def task_timeout(self) -> float:
        per_direction = (
            self.busy_retries + 1
        ) * self.run_seconds() + self.busy_retries * self.busy_retry_delay
        # + pauses between directions + waiting for the site's lock
        return len(self.directions) * (per_direction + DIRECTION_PAUSE) + self.busy_retry_delay


class LinkTarget(TargetBase):
    """A site's far end. ``method: tcp`` connects to ``port``; ``udp`` needs an echo service there."""

    kind: Literal["link"] = Field(description="Selects this collector: `link`.")
    host: str = Field(min_length=1, description="The site's far end: name or address the bursts go to.")
    method: Literal["icmp", "tcp", "udp"] = Field(
        default="icmp",
        description="Probe protocol of the bursts; udp needs an echo service at port.",
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="Port for tcp and udp bursts.")
    count: int = Field(default=20, ge=2, le=200, description="Probes per burst.")
    packet_interval: Duration = Field(default=0.2, ge=0.01, le=5.0, description="Time between the probes of a burst.")
    packet_timeout: Duration = Field(
        default=1.0, ge=0.01, le=10.0,
        description="How long each probe waits for its reply.",
    )
    packet_size: int = Field(
        default=56, ge=16, le=1472, description="ICMP payload or UDP datagram bytes (as `ping -s`); not used by tcp."
    )
    standards: bool = Field(
        default=True,
        description="Whether this target's results feed its site's connection standards.",
    )
    throughput: ThroughputConfig | None = Field(
        default=None,
        description="iperf3 throughput tests over the link (the `throughput` task).",
    )

    @model_validator(mode="after")
    def _check(self) -> LinkTarget:
        if self.method in ("tcp", "udp") and self.port is None:
            raise ValueError(f"method {self.method} needs port")
        if self.method == "icmp" and self.port is not None:
            raise ValueError("port is only for method tcp or udp")
        if self.burst_seconds() > MAX_BURST_SECONDS:
            raise ValueError(
                f"count x packet_interval + packet_timeout is {self.burst_seconds():g}s; a burst may last "
                f"at most {MAX_BURST_SECONDS:g}s"
            )
        return self

    def burst_seconds(self) -> float:
        return (self.count - 1) * self.packet_interval + self.packet_timeout


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------

METRICS = (
    MetricSpec(
        "continuity_link_rtt_seconds",
        "gauge",
        "Round-trip time to the site's far end over the last burst (min, avg, max of answered probes).",
        "seconds",
        labels=("class", "stat"),
    ),
    MetricSpec(
        "continuity_link_jitter_seconds",
        "gauge",
        "Mean absolute difference of consecutive round-trip times in the last burst (RFC 3550 style).",
        "seconds",
        labels=("class",),
    ),
    MetricSpec(
        "continuity_link_loss_ratio",
        "gauge",
        "Share of the last burst's probes that got no reply (0-1).",
        labels=("class",),
    ),
    MetricSpec(
        "continuity_link_throughput_bytes_per_second",
        "gauge",
        "Throughput of the last iperf3 test, as received: download = server to site, upload = site to server "
        "(bytes per second: iperf3's bit/s / 8).",
        "bytes_per_second",
        labels=("class", "direction"),
    ),
    MetricSpec(
        "continuity_link_throughput_test_timestamp_seconds",
        "gauge",
        "When the last successful throughput test finished (Unix time).",
        "seconds",
        labels=("class",),
    ),
)

# --------------------------------------------------------------------------------------------------
# Bursts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BurstStats:
    sent: int
    received: int
    loss: float
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None
    jitter: float | None


def summarise(rtts: list[float | None]) -> BurstStats:
    """RTT statistics, jitter and loss of one burst; ``None`` entries are lost probes."""
    got = [r for r in rtts if r is not None]
    sent = len(rtts)
    loss = (sent - len(got)) / sent if sent else 1.0
    if not got:
        return BurstStats(sent, 0, loss, None, None, None, None)
    jitter = sum(abs(b - a) for a, b in itertools.pairwise(got)) / (len(got) - 1) if len(got) > 1 else None
    return BurstStats(sent, len(got), loss, min(got), sum(got) / len(got), max(got), jitter)


_TCPI_RTT = struct.Struct("@I")
_TCPI_RTT_OFFSET = 68  # struct tcp_info: tcpi_rtt, microseconds (linux/tcp.h)


def _kernel_handshake_rtt(sock: socket.socket | None) -> float | None:
    """The kernel's RTT of the handshake just completed (``TCP_INFO`` ``tcpi_rtt``: SYN sent to
    SYN-ACK received, timed in the kernel), or None where the kernel does not give it."""
    if sock is None or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < _TCPI_RTT_OFFSET + _TCPI_RTT.size:
        return None
    (us,) = _TCPI_RTT.unpack_from(info, _TCPI_RTT_OFFSET)
    return us / 1e6 if us > 0 else None


async def tcp_burst(addr: str, port: int, count: int, interval: float, timeout: float) -> icmp.Burst:
    """Time ``count`` TCP handshakes started ``interval`` apart. A refusal (RST) is an answer."""
    burst = icmp.Burst([])

    async def one(i: int) -> float | None:
        await asyncio.sleep(i * interval)
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                _r, w = await asyncio.open_connection(addr, port)
        except ConnectionRefusedError:
            return time.perf_counter() - t0
        except TimeoutError:
            return None
        except OSError as e:
            why = icmp.path_down(e)
            if why is None:
                raise
            burst.send_errors[why] += 1
            return None
        rtt = time.perf_counter() - t0
        sock = w.get_extra_info("socket")
        kernel = _kernel_handshake_rtt(sock)
        if kernel is not None:
            rtt = kernel
        if sock is not None:  # close with RST: no TIME_WAIT pile-up at either end
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        w.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await w.wait_closed()
        return rtt

    burst.rtts = list(await asyncio.gather(*(one(i) for i in range(count))))
    return burst


UDP_MAGIC = b"CLNK"


async def udp_burst(
    addr: str, family: int, port: int, count: int, interval: float, timeout: float, size: int
) -> tuple[icmp.Burst, int]:
    """Send ``count`` datagrams to an echo service (RFC 862) ``interval`` apart, each tagged with a
    random token and a sequence number; replies are timed from the kernel's receive stamp. Returns
    the burst and how many ICMP port-unreachables came back."""
    loop = asyncio.get_running_loop()
    token = os.urandom(8)
    sent: dict[int, int] = {}  # seq -> send time, ns since the epoch
    rtts: dict[int, float] = {}
    burst = icmp.Burst([])
    refused = 0
    done = asyncio.Event()
    pad = os.urandom(max(0, size - 16))
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        icmp.enable_rx_timestamps(sock)
        try:
            sock.connect((addr, port))
        except OSError as e:
            why = icmp.path_down(e)
            if why is None:
                raise
            burst.send_errors[why] += count
            burst.rtts = [None] * count
            return burst, 0

        def on_readable() -> None:
            nonlocal refused
            while True:
                try:
                    data, rx_ns = icmp.recv_timestamped(sock)
                except (BlockingIOError, InterruptedError):
                    return
                except ConnectionRefusedError:  # ICMP port unreachable: no echo service
                    refused += 1
                    continue
                except OSError:
                    return
                if len(data) < 16 or data[:4] != UDP_MAGIC or data[4:12] != token:
                    continue
                (seq,) = struct.unpack("!I", data[12:16])
                if seq in sent and seq not in rtts:
                    rtts[seq] = (rx_ns - sent[seq]) / 1e9
                    if len(rtts) == count:
                        done.set()

        loop.add_reader(sock.fileno(), on_readable)
        try:
            next_at = time.perf_counter()
            for seq in range(count):
                pkt = UDP_MAGIC + token + struct.pack("!I", seq) + pad
                for _attempt in range(2):
                    t_ns = time.time_ns()
                    try:
                        sock.send(pkt)
                    except ConnectionRefusedError:  # an earlier probe's port unreachable: send again
                        refused += 1
                        continue
                    except OSError as e:
                        why = icmp.path_down(e)
                        if why is None:
                            raise
                        burst.send_errors[why] += 1
                    else:
                        sent[seq] = t_ns
                    break
                if seq < count - 1:
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if sent and len(rtts) < len(sent):
                wait = max(0.0, max(sent.values()) / 1e9 + timeout - time.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), wait)
        finally:
            loop.remove_reader(sock.fileno())
    finally:
        sock.close()
    burst.rtts = [r if (r := rtts.get(i)) is not None and 0.0 <= r <= timeout else None for i in range(count)]
    return burst, refused


# --------------------------------------------------------------------------------------------------
# iperf3
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IperfResult:
    bits_per_second: float
    bytes: int  # on the wire, the larger of sent and received
    seconds: float
    retransmits: int | None


class IperfBusy(Exception):
    pass


def parse_iperf3(text: str, what: str) -> IperfResult:
    """Parse ``iperf3 -J`` output. Raises IperfBusy for a busy server, CollectorError otherwise."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        first = text.strip().splitlines()[0][:120] if text.strip() else "no output"
        raise CollectorError(BAD_REPLY, f"{what}: iperf3 did not print JSON: {first!r}") from None
    if not isinstance(data, dict):
        raise CollectorError(BAD_REPLY, f"{what}: iperf3 JSON is not an object")
    err = data.get("error")
    if isinstance(err, str) and err.strip():
        err = " ".join(err.split())[:300]  # one line, bounded: it goes into the error message
        if "busy" in err.lower():
            raise IperfBusy(err)
        if (
            "unable to connect" in err.lower()
            or "connection refused" in err.lower()
            or "no route" in err.lower()
        ):
            raise CollectorError(UNREACHABLE, f"{what}: iperf3: {err}")
        raise CollectorError(IPERF3_ERROR, f"{what}: iperf3: {err}")
    try:
        end = data["end"]
        recv = end["sum_received"]
        sent = end.get("sum_sent") or {}
        bps = float(recv["bits_per_second"])
        # The end sums leave out the --omit seconds; those bytes crossed the link too.
        omitted = sum(
            int(iv["sum"].get("bytes", 0))
            for iv in data.get("intervals") or []
            if isinstance(iv, dict) and isinstance(iv.get("sum"), dict) and iv["sum"].get("omitted") is True
        )
        nbytes = max(int(recv.get("bytes", 0)), int(sent.get("bytes", 0))) + omitted
        seconds = float(recv.get("seconds", 0.0))
        retr = sent.get("retransmits")
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        raise CollectorError(
            BAD_REPLY, f"{what}: iperf3 JSON has no end.sum_received.bits_per_second"
        ) from None
    if not math.isfinite(bps) or bps < 0:
        raise CollectorError(BAD_REPLY, f"{what}: iperf3 reported throughput {bps!r}")
    retrans = int(retr) if isinstance(retr, int | float) and math.isfinite(retr) else None
    return IperfResult(bps, nbytes, seconds, retrans)


def find_iperf3(command: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise CollectorError(
            IPERF3_MISSING,
            f"iperf3 not found ({command!r} is not an executable on PATH); install the iperf3 package "
            "or set throughput.iperf3 to its path",
        )
    return path


async def run_iperf3(argv: list[str], limit: float, what: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    try:
        out, _err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        raise CollectorError(TIMEOUT, f"{what}: iperf3 gave no result within {limit:g}s") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave a test running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.shield(proc.wait())
    return out.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------------
# Collector
# --------------------------------------------------------------------------------------------------

LOCKS_KEY = "link.throughput.locks"
LEDGER_KEY = "link.throughput.ledger"


def ledger_kv_key(site: str) -> str:
    return f"link.throughput.ledger.{site}"


class LinkCollector(Collector):
    kind = "link"
    config_model = LinkTarget
    METRICS = METRICS
    REASONS = (
        TIMEOUT,
        UNREACHABLE,
        BAD_REPLY,
        icmp.ICMP_NOT_PERMITTED,
        SERVER_BUSY,
        IPERF3_MISSING,
        IPERF3_ERROR,
        THROUGHPUT_CAP,
        LINK_BUSY,
    )
    target: LinkTarget

    @property
    def site(self) -> str:
        cfg = self.ctx.config
        return cfg.site_of(self.target) if cfg is not None else (self.target.site or "")

    @property
    def site_class(self) -> str:
        cfg = self.ctx.config
        return cfg.site_class(self.site) if cfg is not None else "default"

    def tasks(self) -> list[Task]:
        out = [Task("", self.interval, self.timeout, self.collect)]
        tp = self.target.throughput
        if tp is not None:
            out.append(Task("throughput", tp.interval, tp.task_timeout(), self.throughput, cron=tp.cron))
        return out

    @classmethod
    def validate_config(cls, target: TargetBase, config: Any) -> list[tuple[str, str]]:
        assert isinstance(target, LinkTarget)
        out: list[tuple[str, str]] = []
        timeout = config.timeout_of(target)
        if target.burst_seconds() + 0.5 > timeout:
            out.append(
                (
                    "count",
                    f"a burst takes up to {target.burst_seconds():g}s (count x packet_interval + "
                    f"packet_timeout) but the target's timeout is {timeout:g}s; raise timeout or shorten the burst",
                )
            )
        tp = target.throughput
        if tp is not None and tp.cron is None and DAY / tp.interval > tp.max_tests_per_day + 1e-9:
            out.append(
                (
                    "throughput.interval",
                    f"every {tp.interval:g}s is {DAY / tp.interval:.3g} tests a day but max_tests_per_day is "
                    f"{tp.max_tests_per_day}",
                )
            )
        if tp is not None and tp.max_bytes_per_day is not None:
            site = next((s for s in config.sites if s.name == config.site_of(target)), None)
            rates = {
                d: r
                for d, r in (
                    ("download", getattr(site, "contracted_download", None)),
                    ("upload", getattr(site, "contracted_upload", None)),
                )
                if r is not None and d in tp.directions
            }
            seconds = tp.duration + tp.omit
            need = sum(rates.values()) * seconds  # rates in bytes/s
            if need > tp.max_bytes_per_day:
                at = ", ".join(f"{d} {format_bitrate(r)}" for d, r in rates.items())
                out.append(
                    (
                        "throughput.max_bytes_per_day",
                        f"one test at the contracted rate ({at} for {seconds:g}s) moves about "
                        f"{_format_bytes(int(need))}, more than max_bytes_per_day "
                        f"{_format_bytes(tp.max_bytes_per_day)}: no test could ever run; raise the cap or "
                        "shorten throughput.duration",
                    )
                )
        return out

    # -- burst ---------------------------------------------------------------------------------------
    async def collect(self) -> Collected:
        t = self.target
        out = Collected()
        started, t0 = self.ctx.clock(), time.perf_counter()
        if t.method == "icmp":
            burst = await icmp.ping(t.host, t.count, t.packet_interval, t.packet_timeout, size=t.packet_size)
        else:
            assert t.port is not None
            family, addr = await icmp.resolve(t.host)
            if t.method == "tcp":
                burst = await tcp_burst(addr, t.port, t.count, t.packet_interval, t.packet_timeout)
            else:
                burst, refused = await udp_burst(
                    addr, family, t.port, t.count, t.packet_interval, t.packet_timeout, t.packet_size
                )
                if refused:
                    out.partial_errors.append(
                        (
                            UNREACHABLE,
                            f"{t.name}: {t.host} port {t.port}/udp refused {refused} probes (no echo service)",
                        )
                    )
        st = summarise(burst.rtts)
        out.info.update(
            {"method": t.method, "sent": st.sent, "received": st.received, "rtts": list(burst.rtts)}
        )
        if burst.send_errors:
            out.info["send_errors"] = dict(burst.send_errors)
        out.outcomes.append(self._reachability(started, time.perf_counter() - t0, st, burst))
        c = self.site_class
        if st.rtt_min is not None and st.rtt_avg is not None and st.rtt_max is not None:
            out.add("continuity_link_rtt_seconds", st.rtt_min, stat="min", **{"class": c})
            out.add("continuity_link_rtt_seconds", st.rtt_avg, stat="avg", **{"class": c})
            out.add("continuity_link_rtt_seconds", st.rtt_max, stat="max", **{"class": c})
        if st.jitter is not None:
            out.add("continuity_link_jitter_seconds", st.jitter, **{"class": c})
        out.add("continuity_link_loss_ratio", st.loss, **{"class": c})
        return out

    def _reachability(self, started: float, duration: float, st: BurstStats, burst: icmp.Burst) -> TaskOutcome:
        """Whether the far end answered at all, as a result of task ``reachability`` in the state
        history: availability is computed from it. A burst with no reply — the far end silent, or
        no route to it so that no probe could even be sent — is still a measurement (loss 1.0)
        for the main task; this record is what makes it count as downtime."""
        up = st.received > 0
        return TaskOutcome(
            task=REACHABILITY_TASK,
            started=started,
            duration=duration,
            ok=up,
            reason=None if up else UNREACHABLE,
            message=None if up else self._down_message(st, burst),
        )

    def _down_message(self, st: BurstStats, burst: icmp.Burst) -> str:
        t = self.target
        msg = f"{t.name}: no reply to any of {st.sent} {t.method} probes to {t.host} (loss 1.0)"
        unsent = burst.describe_send_errors()
        return f"{msg}; {unsent}" if unsent else msg

    # -- throughput ----------------------------------------------------------------------------------
    def _ledger(self) -> list[list[float]]:
        """[(finished, bytes)] of this site's tests in the last day, shared by every link target of
        the site and persisted in the state store."""
        ledgers: dict[str, list[list[float]]] = self.ctx.shared.setdefault(LEDGER_KEY, {})
        site = self.site
        if site not in ledgers:
            stored = self.ctx.store.get_kv(ledger_kv_key(site)) if self.ctx.store is not None else None
            entries: list[list[float]] = []
            if isinstance(stored, list):
                for e in stored:
                    if isinstance(e, list) and len(e) == 2:
                        entries.append([float(e[0]), float(e[1])])
            ledgers[site] = entries
        return ledgers[site]

    def _record(self, nbytes: int) -> None:
        ledger = self._ledger()
        ledger.append([self.ctx.clock(), float(nbytes)])
        if self.ctx.store is not None:
            self.ctx.store.set_kv(ledger_kv_key(self.site), ledger)

    def _estimate(self, direction: str) -> tuple[float, str]:
        """Bytes one test in ``direction`` will likely move, and why: the faster of the contracted
        rate and the last measurement, over the test's length. (0, "") when neither is known."""
        tp = self.target.throughput
        assert tp is not None
        rates: list[tuple[float, str]] = []
        cfg = self.ctx.config
        if cfg is not None:
            for s in cfg.sites:
                if s.name == self.site:
                    r = s.contracted_download if direction == "download" else s.contracted_upload
                    if r is not None:
                        rates.append((float(r), "contracted"))
        store = self.ctx.store
        last = (
            store.snapshot().last_success.get((self.target.name, "throughput")) if store is not None else None
        )
        if last is not None:
            for smp in last.samples:
                if (
                    smp.name == "continuity_link_throughput_bytes_per_second"
                    and smp.labels.get("direction") == direction
                ):
                    rates.append((smp.value, "last measured"))
        if not rates:
            return 0.0, ""
        rate, why = max(rates)  # bytes/s
        seconds = tp.duration + tp.omit
        return rate * seconds, f"{direction} {why} {format_bitrate(rate)} for {seconds:g}s"

    def _check_caps(self) -> float | None:
        """Refuse a test the caps do not allow; the bytes left in the day's budget (None: no cap)."""
        tp = self.target.throughput
        assert tp is not None
        now = self.ctx.clock()
        ledger = self._ledger()
        ledger[:] = [e for e in ledger if e[0] > now - DAY]
        tests = len(ledger)
        if tests >= tp.max_tests_per_day:
            raise CollectorError(
                THROUGHPUT_CAP,
                f"{self.target.name}: site {self.site} had {tests} throughput tests in the last 24h "
                f"(max_tests_per_day {tp.max_tests_per_day}); next allowed at {_when(min(e[0] for e in ledger) + DAY)}",
            )
        cap = tp.max_bytes_per_day
        if cap is None:
            return None
        used = sum(e[1] for e in ledger)
        left = cap - used
        moved = (
            f"{self.target.name}: site {self.site} moved {_format_bytes(int(used))} in {tests} throughput "
            f"test{'s' if tests != 1 else ''} in the last 24h (max_bytes_per_day {_format_bytes(cap)})"
        )
        smallest = self._smallest_test() * len(tp.directions)
        if left < smallest:
            raise CollectorError(
                THROUGHPUT_CAP,
                f"{moved}; the {_format_bytes(max(0, int(left)))} left is less than the smallest test "
                f"({_format_bytes(smallest)}); next allowed at {_when(self._budget_frees(smallest - left))}",
            )
        estimates = [self._estimate(d) for d in tp.directions]
        need = sum(b for b, _why in estimates)
        if need > left:
            basis = ", ".join(why for _b, why in estimates if why)
            when = (
                f"next allowed at {_when(self._budget_frees(need - left))}"
                if need <= cap
                else "more than the whole cap: shorten throughput.duration or raise max_bytes_per_day"
            )
            raise CollectorError(
                THROUGHPUT_CAP,
                f"{moved}; another test would move about {_format_bytes(int(need))} ({basis}) but only "
                f"{_format_bytes(int(left))} is left; {when}",
            )
        return left

    def _budget_frees(self, nbytes: float) -> float:
        """When tests leaving the 24-hour window free ``nbytes`` of the byte budget."""
        freed = 0.0
        for finished, moved in sorted(self._ledger()):
            freed += moved
            if freed >= nbytes:
                return finished + DAY
        return self.ctx.clock()

    def _smallest_test(self) -> int:
        """Bytes the smallest test worth running moves in one direction, at most."""
        tp = self.target.throughput
        assert tp is not None
        return MIN_TEST_BYTES + tp.parallel * IPERF3_BLOCK

    def _byte_limit(self, direction: str, left: float, directions_left: int) -> int:
        """iperf3 ``--bytes`` for one direction under a byte cap: about ``duration + omit`` at the
        expected rate, never more than this direction's share of what is left, less one block per
        stream (iperf3 stops a stream only after the block that reaches the count). _check_caps
        made sure each share holds the smallest test."""
        tp = self.target.throughput
        assert tp is not None
        share = left / directions_left
        expected, _why = self._estimate(direction)
        size = min(share, max(expected, self._smallest_test())) if expected > 0 else share
        return max(MIN_TEST_BYTES, int(size) - tp.parallel * IPERF3_BLOCK)

    def _argv(self, exe: str, direction: str, limit: int | None = None) -> list[str]:
        tp = self.target.throughput
        assert tp is not None
        argv = [
            exe,
            "--client",
            tp.server or self.target.host,
            "--port",
            str(tp.port),
            "--json",
            "--parallel",
            str(tp.parallel),
            "--length",
            str(IPERF3_BLOCK),
            "--connect-timeout",
            str(int(tp.connect_timeout * 1000)),
        ]
        if limit is not None:
            # By bytes, without --omit: iperf3 does not count omitted bytes against --bytes.
            argv += ["--bytes", str(limit)]
        else:
            argv += ["--time", f"{tp.duration:g}"]
            if tp.omit:
                argv += ["--omit", f"{tp.omit:g}"]
        if direction == "download":
            argv.append("--reverse")
        return argv

    async def _one_direction(
        self, exe: str, direction: str, info: dict[str, Any], limit: int | None = None
    ) -> IperfResult:
        tp = self.target.throughput
        assert tp is not None
        what = f"{self.target.name} {direction}"
        busy = 0
        while True:
            text = await run_iperf3(self._argv(exe, direction, limit), tp.run_seconds(), what)
            try:
                return parse_iperf3(text, what)
            except IperfBusy as e:
                busy += 1
                info[f"{direction}_busy_attempts"] = busy
                if busy > tp.busy_retries:
                    raise CollectorError(
                        SERVER_BUSY,
                        f"{what}: iperf3 server {tp.server or self.target.host}:{tp.port} still busy after "
                        f"{busy} attempts ({e}); trying again at the next scheduled run",
                    ) from None
                await asyncio.sleep(tp.busy_retry_delay)

    async def throughput(self) -> Collected:
        tp = self.target.throughput
        assert tp is not None
        exe = find_iperf3(tp.iperf3)
        locks: dict[str, asyncio.Lock] = self.ctx.shared.setdefault(LOCKS_KEY, {})
        lock = locks.setdefault(self.site, asyncio.Lock())
        try:
            async with asyncio.timeout(tp.busy_retry_delay):
                await lock.acquire()
        except TimeoutError:
            raise CollectorError(
                LINK_BUSY,
                f"{self.target.name}: another throughput test on site {self.site} is still running; skipped",
            ) from None
        out = Collected()
        try:
            left = self._check_caps()
            results: dict[Direction, IperfResult] = {}
            moved = 0
            try:
                for i, direction in enumerate(tp.directions):
                    if i:  # iperf3 servers take a moment to accept the next test after one ends
                        await asyncio.sleep(DIRECTION_PAUSE)
                    limit = None
                    if left is not None:
                        limit = self._byte_limit(direction, left - moved, len(tp.directions) - i)
                        out.info[f"{direction}_byte_limit"] = limit
                    try:
                        results[direction] = await self._one_direction(exe, direction, out.info, limit)
                    except CollectorError as e:
                        # A run that may have moved data before it failed counts at its limit.
                        if limit is not None and e.reason in (TIMEOUT, IPERF3_ERROR, BAD_REPLY):
                            moved += limit + tp.parallel * IPERF3_BLOCK
                        raise
                    moved += results[direction].bytes
            finally:
                if moved:
                    self._record(moved)
        finally:
            lock.release()
        c = self.site_class
        for direction, r in results.items():
            out.add(
                "continuity_link_throughput_bytes_per_second",
                r.bits_per_second / 8.0,
                direction=direction,
                **{"class": c},
            )
            out.info[direction] = {
                "bytes_per_second": r.bits_per_second / 8.0,
                "bytes": r.bytes,
                "seconds": r.seconds,
                "retransmits": r.retransmits,
            }
        out.add("continuity_link_throughput_test_timestamp_seconds", self.ctx.clock(), **{"class": c})
        return out


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


COLLECTORS = [LinkCollector]
