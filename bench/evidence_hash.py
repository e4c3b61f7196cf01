"""Streaming artefact hashing against `sha256sum`, in the same run, on the same file.

python -m bench.evidence_hash [--size-mb 2048] [--real] [--repeat 3] [--no-docs]

Each hasher runs in its own child process; its wall time is taken around the process (interpreter
start-up included for ours) and its peak RSS is the child's own VmHWM. Our hasher
also runs on a 16 MiB file to show that peak memory does not grow with the artefact's size.
By default the artefact is a sparse file (no disk I/O: both tools measure hashing plus copying
from the page cache); ``--real`` writes random data to disk and reads it back (page cache warm
after the first pass). Results go into docs/PERFORMANCE.md, section "Evidence: artefact hashing".
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from bench.common import update_performance_md

SECTION = "Evidence: artefact hashing"
OURS = ("import sys; from agent.evidence.hashing import sha256_file; print(sha256_file(sys.argv[1]))")


def _hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_child(argv: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, first word of stdout) of one child process. Peak RSS is the
    child's VmHWM (reset by exec, so the forking parent's memory is not counted), read every 5 ms
    while it runs; the peak comes early (buffers are allocated first), so sampling catches it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=err)
        peak = 0
        while p.poll() is None:
            peak = max(peak, _hwm(p.pid))
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text, etext = out.read().decode(), err.read().decode()
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({p.returncode}): {etext.strip()[:300]}")
    return wall, peak, text.split()[0] if text.split() else ""


def make_file(path: Path, size: int, real: bool) -> None:
    with open(path, "wb") as f:
        if real:
            block = 8 * 1024 * 1024
            left = size
            while left > 0:
                n = min(block, left)
                f.write(os.urandom(n))
                left -= n
        else:
            f.truncate(size)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=2048)
    ap.add_argument("--real", action="store_true", help="random data written to disk instead of a sparse file")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool (interleaved); best counts")
    ap.add_argument("--dir", default=None, help="where to put the artefact (default: the temp dir)")
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/PERFORMANCE.md")
    args = ap.parse_args(argv)
    size = args.size_mb * 1024 * 1024
    py = sys.executable
    sha256sum = "sha256sum"
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="evidence-hash-") as d:
        big = Path(d) / "artefact.bin"
        small = Path(d) / "small.bin"
        make_file(big, size, args.real)
        make_file(small, 16 * 1024 * 1024, args.real)
        # warm the page cache (and check both tools agree)
        _, _, h_ref = run_child([sha256sum, str(big)])
        ours_t, theirs_t, ours_rss, theirs_rss = [], [], [], []
        for _ in range(args.repeat):
            t, rss, h = run_child([py, "-c", OURS, str(big)])
            if h != h_ref:
                raise RuntimeError(f"digest mismatch: ours {h}, sha256sum {h_ref}")
            ours_t.append(t)
            ours_rss.append(rss)
            t, rss, _ = run_child([sha256sum, str(big)])
            theirs_t.append(t)
            theirs_rss.append(rss)
        _, small_rss, _ = run_child([py, "-c", OURS, str(small)])
        _, idle_rss, _ = run_child([py, "-c", "import agent.evidence.hashing; print('x')"])
    best_ours, best_theirs = min(ours_t), min(theirs_t)
    mib = size / (1024 * 1024)
    ratio = best_theirs / best_ours  # our speed as a fraction of sha256sum's
    met = ratio >= 0.8
    try:
        import shutil

        ldd = subprocess.run(["ldd", shutil.which(sha256sum) or sha256sum], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        ldd = ""
    why = ("" if "libcrypto" in ldd or not ldd else
           "\nThis sha256sum is not linked against OpenSSL (`ldd` shows no libcrypto), so it uses coreutils'\n"
           "portable sha256, while Python's hashlib uses OpenSSL's (SHA-NI/AVX2 where the CPU has them).")
    kind = "random data on disk (page cache warm)" if args.real else "sparse file (no disk I/O)"
    ours_row = f"{best_ours:.2f} | {mib / best_ours:.0f} | {max(ours_rss) / 2**20:.1f}"
    theirs_row = f"{best_theirs:.2f} | {mib / best_theirs:.0f} | {max(theirs_rss) / 2**20:.1f}"
    body = f"""Measured {date.today().isoformat()} on {platform.machine()}, Python {platform.python_version()},
{os.cpu_count()} CPUs (`python -m bench.evidence_hash{' --real' if args.real else ''}`): sha256 of a
{mib:.0f} MiB {kind}, best of {args.repeat} interleaved runs, each tool in its own process.

| Hasher | Seconds | MiB/s | Peak RSS (MiB) |
|---|---|---|---|
| `agent.evidence.hashing.sha256_file` (1 MiB `readinto`, OpenSSL sha256) | {ours_row} |
| `sha256sum` (GNU coreutils) | {theirs_row} |

Our speed is **{ratio:.2f}x** sha256sum's (target: at least 0.80x): **{'met' if met else 'NOT met'}**.
Constant memory: peak RSS hashing {mib:.0f} MiB was {max(ours_rss) / 2**20:.1f} MiB, hashing 16 MiB
{small_rss / 2**20:.1f} MiB, and the interpreter with the module imported and nothing hashed
{idle_rss / 2**20:.1f} MiB; the hasher itself holds one 1 MiB buffer.{why}
"""
    print(f"## {SECTION}\n\n{body}")
    if not args.no_docs:
        update_performance_md(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
