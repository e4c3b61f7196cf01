"""`make bench`: every benchmark, each writing its section of docs/PERFORMANCE.md.

python -m bench.run [--only core,snmp,...] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import time

# (name, module, arguments for a full run, arguments for --quick)
BENCHES: list[tuple[str, str, list[str], list[str]]] = [
    ("core", "bench.core_bench", [], ["--seconds", "20", "--renders", "20"]),
    ("evidence", "bench.evidence_hash", [], []),
    ("snmp", "bench.snmp_bench", [], []),
    ("link", "bench.link_bench", [], []),
    ("scale", "bench.scale_bench", [], ["--quick"]),
    ("upload", "bench.board_upload", [], ["--repeat", "2", "--no-docs"]),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="", help="comma-separated names: " + ",".join(b[0] for b in BENCHES))
    ap.add_argument("--quick", action="store_true", help="short windows, for a smoke run")
    args = ap.parse_args()
    only = {s for s in args.only.split(",") if s}
    failed = []
    for name, module, full, quick in BENCHES:
        if only and name not in only:
            continue
        if importlib.util.find_spec(module) is None:
            print(f"== {name}: {module} not present, skipped", flush=True)
            continue
        print(f"== {name} ({module})", flush=True)
        t0 = time.monotonic()
        mod = importlib.import_module(module)
        saved = sys.argv
        sys.argv = [module, *(quick if args.quick else full)]
        try:
            mod.main()
        except SystemExit as e:
            if e.code not in (None, 0):
                failed.append(name)
        except Exception as e:
            print(f"!! {name} failed: {e!r}", flush=True)
            failed.append(name)
        finally:
            sys.argv = saved
        print(f"== {name} done in {time.monotonic() - t0:.0f}s", flush=True)
    if failed:
        print("failed: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
