"""glibc's malloc settings the agent makes at start (agent.exposition.return_large_blocks): large
blocks always mapped, at most two heap arenas. Each probe runs in a fresh interpreter, once with
the settings and once without, so the test shows the difference they make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import ctypes, json, sys, threading
from agent.exposition import LARGE_BLOCK, return_large_blocks
applied = return_large_blocks() if sys.argv[1] == "on" else None
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc.mallinfo2.restype = Mallinfo2
# A large block freed, then one of the same size: glibc's default raises its mmap threshold after
# the first free and serves the second from the heap, which keeps the memory. (Any block is
# served from a free heap chunk it fits in: this one, 4 MiB, fits none in a fresh interpreter.)
size = 16 * LARGE_BLOCK + 4096
libc.free(libc.malloc(size))
before = libc.mallinfo2().hblks
block = libc.malloc(size)
mapped = libc.mallinfo2().hblks - before
libc.free(block)
# Eight threads allocating at once: by default each gets an arena of its own.
ready, go = threading.Barrier(9), threading.Event()
def work():
    libc.free(libc.malloc(4096))
    ready.wait()
    go.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
ready.wait()
sys.stderr.flush()
libc.malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
go.set()
for t in threads:
    t.join()
print(json.dumps({"applied": applied, "mapped": mapped}))
"""


def _probe(mode: str) -> tuple[dict[str, object], int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    arenas = sum(1 for line in out.stderr.splitlines() if line.startswith("Arena "))
    return json.loads(out.stdout.strip().splitlines()[-1]), arenas


def test_large_blocks_are_mapped_and_arenas_capped() -> None:
    on, on_arenas = _probe("on")
    assert on == {"applied": True, "mapped": 1}
    assert 1 <= on_arenas <= 2, on_arenas


def test_without_the_settings_glibc_keeps_large_blocks_and_makes_more_arenas() -> None:
    # The control: what the settings change is glibc's behaviour here, not the probe's.
    off, off_arenas = _probe("off")
    assert off == {"applied": None, "mapped": 0}
    assert off_arenas > 2, off_arenas


def test_the_settings_need_no_ctypes_module() -> None:
    # return_large_blocks calls mallopt through _ctypes alone: ctypes' Python classes do not load.
    code = (
        "import sys\n"
        "from agent.exposition import return_large_blocks\n"
        "print(return_large_blocks(), 'ctypes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "False"], out.stderr[-3000:]
