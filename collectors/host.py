"""Host health (kind ``host``) from psutil: boot time, CPU, memory, filesystems, critical
processes. Enough for a council server's own health without node_exporter.

Filesystem calls can hang on a dead network mount; each runs in a worker thread with its own
wait, and a mount that hung is skipped (and reported) until its call returns."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, Literal

import psutil
from pydantic import Field

from collectors.base import TIMEOUT, Collected, Collector, MetricSpec, TargetBase

PSEUDO_FS = frozenset(
    {
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "proc",
        "pstore",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tracefs",
        "tmpfs",
        "ramfs",
        "overlay",
        "nfsd",
        "fuse.lxcfs",
        "fuse.gvfsd-fuse",
        "iso9660",
    }
)


COMM_LEN = 15  # TASK_COMM_LEN - 1


class HostTarget(TargetBase):
    kind: Literal["host"] = Field(description="Selects this collector: `host`.")
    processes: list[str] = Field(default_factory=list, description="process names that must be running")
    mountpoints_exclude: list[str] = Field(
        default_factory=lambda: ["/dev", "/proc", "/sys", "/run"],
        description="Mount points to skip: each entry and everything mounted below it.",
    )
    fs_types_exclude: list[str] = Field(
        default_factory=list, description="Filesystem types to skip (pseudo filesystems are always skipped)."
    )
    include_root_overlay: bool = Field(default=True, description="report / even when it is an overlay (containers)")


METRICS = (
    MetricSpec("continuity_host_boot_time_seconds", "gauge", "When the host booted (Unix time).", "seconds"),
    MetricSpec("continuity_host_cpu_seconds_total", "counter", "CPU time spent by mode.", "seconds", labels=("mode",)),
    MetricSpec(
        "continuity_host_cpu_usage_ratio", "gauge", "Share of CPU time not idle since the previous collection (0-1)."
    ),
    MetricSpec("continuity_host_cpus", "gauge", "Logical CPUs."),
    MetricSpec("continuity_host_load1", "gauge", "1-minute load average."),
    MetricSpec("continuity_host_memory_total_bytes", "gauge", "Physical memory.", "bytes"),
    MetricSpec("continuity_host_memory_available_bytes", "gauge", "Memory available without swapping.", "bytes"),
    MetricSpec(
        "continuity_host_filesystem_size_bytes",
        "gauge",
        "Filesystem size.",
        "bytes",
        labels=("mountpoint", "fstype", "device"),
    ),
    MetricSpec(
        "continuity_host_filesystem_free_bytes",
        "gauge",
        "Filesystem space available to users.",
        "bytes",
        labels=("mountpoint", "fstype", "device"),
    ),
    MetricSpec(
        "continuity_host_processes_running",
        "gauge",
        "Running processes whose name matches a configured critical process.",
        labels=("process",),
    ),
)


def _process_names() -> Iterator[str]:
    """The name of every running process. Not psutil.process_iter: it keeps a Process object for
    every process on the machine between calls (about 0.8 KiB each), which this count never reuses.
    A process that is gone, a zombie or not readable is not counted, as process_iter left its name
    None."""
    for pid in psutil.pids():
        try:
            yield psutil.Process(pid).name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # ZombieProcess is a NoSuchProcess
            continue


class HostCollector(Collector):
    kind = "host"
    config_model = HostTarget
    METRICS = METRICS
    REASONS = (TIMEOUT,)
    target: HostTarget

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._prev_cpu: Any = None
        self._stuck: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()

    def _partitions(self) -> list[Any]:
        t = self.target
        out = []
        seen: set[str] = set()
        for p in psutil.disk_partitions(all=True):
            fstype = p.fstype
            if p.mountpoint in seen:
                continue
            if fstype in t.fs_types_exclude:
                continue
            if fstype in PSEUDO_FS and not (fstype == "overlay" and p.mountpoint == "/" and t.include_root_overlay):
                continue
            if any(p.mountpoint == m or p.mountpoint.startswith(m.rstrip("/") + "/") for m in t.mountpoints_exclude):
                continue
            if p.mountpoint.startswith("/snap/") or "/docker/" in p.mountpoint:
                continue
            seen.add(p.mountpoint)
            out.append(p)
        return out

    def _basics(self) -> dict[str, Any]:
        procs: dict[str, int] = dict.fromkeys(self.target.processes, 0)
        # The kernel keeps 15 characters of a process name (comm): "continuity-agent" runs as
        # "continuity-agen". A configured name that long matches on its first 15, as pgrep does.
        by_comm = {wanted[:COMM_LEN]: wanted for wanted in procs}
        if procs:
            for name in _process_names():
                if name in procs:
                    procs[name] += 1
                elif len(name) == COMM_LEN and name in by_comm:
                    procs[by_comm[name]] += 1
        return {
            "boot": psutil.boot_time(),
            "cpu": psutil.cpu_times(),
            "count": psutil.cpu_count() or 0,
            "load": psutil.getloadavg()[0],
            "mem": psutil.virtual_memory(),
            "parts": self._partitions(),
            "procs": procs,
        }

    async def collect(self) -> Collected:
        out = Collected()
        b = await self.ctx.run_blocking(self._basics)
        out.add("continuity_host_boot_time_seconds", b["boot"])
        cpu = b["cpu"]
        for mode in ("user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice"):
            if hasattr(cpu, mode):
                out.add("continuity_host_cpu_seconds_total", getattr(cpu, mode), mode=mode)
        if self._prev_cpu is not None:
            total = sum(cpu) - sum(self._prev_cpu)
            idle = (cpu.idle + getattr(cpu, "iowait", 0)) - (self._prev_cpu.idle + getattr(self._prev_cpu, "iowait", 0))
            if total > 0:
                out.add("continuity_host_cpu_usage_ratio", min(1.0, max(0.0, 1 - idle / total)))
        self._prev_cpu = cpu
        out.add("continuity_host_cpus", b["count"])
        out.add("continuity_host_load1", b["load"])
        out.add("continuity_host_memory_total_bytes", b["mem"].total)
        out.add("continuity_host_memory_available_bytes", b["mem"].available)
        for name, n in b["procs"].items():
            out.add("continuity_host_processes_running", n, process=name)
        loop = asyncio.get_running_loop()
        per_mount = max(0.5, self.timeout / 4)
        for p in b["parts"]:
            with self._lock:
                prev = self._stuck.get(p.mountpoint)
                if prev is not None and not prev.done():
                    out.partial_errors.append(
                        (TIMEOUT, f"{self.target.name}: filesystem {p.mountpoint} still not answering")
                    )
                    continue
            fut = self.ctx.executor.submit(psutil.disk_usage, p.mountpoint)
            try:
                usage = await asyncio.wait_for(asyncio.wrap_future(fut, loop=loop), per_mount)
            except TimeoutError:
                with self._lock:
                    self._stuck[p.mountpoint] = fut
                out.partial_errors.append(
                    (TIMEOUT, f"{self.target.name}: filesystem {p.mountpoint} did not answer in {per_mount:g}s")
                )
                continue
            except OSError:
                continue  # unmounted meanwhile, or permission denied: not a fact about free space
            labels = {"mountpoint": p.mountpoint, "fstype": p.fstype, "device": p.device}
            out.add("continuity_host_filesystem_size_bytes", usage.total, **labels)
            out.add("continuity_host_filesystem_free_bytes", usage.free, **labels)
        return out


COLLECTORS = [HostCollector]
