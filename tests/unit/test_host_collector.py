"""Kind `host` on this machine: critical processes counted by name (also past the kernel's 15
characters), every sample declared, and no per-process objects kept between runs."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import psutil

from tests.helpers.collect import assert_declared, collect, value, write_config

LONG = "continuity-test-long-name"  # the kernel keeps "continuity-test"


def test_critical_processes_are_counted_and_nothing_is_kept(tmp_path: Path) -> None:
    exe = tmp_path / LONG
    exe.symlink_to(sys.executable)
    children = [subprocess.Popen([str(exe), "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    try:
        cfg = write_config(
            tmp_path,
            f"agent: {{site: hq, state_dir: {tmp_path / 'state'}}}\nsites: [{{name: hq}}]\n"
            f"targets:\n  - {{name: me, kind: host, processes: [{LONG}, no-such-daemon-xyz]}}\n",
        )
        r = collect(cfg, "me")
    finally:
        for c in children:
            c.kill()
            c.wait()
    assert r.ok, r.message
    assert value(r, "continuity_host_processes_running", process=LONG) == 2
    assert value(r, "continuity_host_processes_running", process="no-such-daemon-xyz") == 0
    assert value(r, "continuity_host_memory_total_bytes") == psutil.virtual_memory().total
    assert_declared(r)
    # Counting leaves no psutil.Process behind (psutil.process_iter would keep one per process on
    # the machine until the next call: idle memory that grows with the process count).
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, psutil.Process)]
