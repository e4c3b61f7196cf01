#!/usr/bin/env python3
"""Status of one Bacula backup job, for continuity-agent's ``type: command`` backups.

Reads the Bacula catalog (PostgreSQL, the Debian default ``bacula-director-pgsql``) with ``psql``
and prints the documented JSON object on one line::

    {"last_success": 1764036000, "last_attempt": 1764036000, "size_bytes": 123456789,
     "ok": true, "snapshots": 30, "message": "job 4711 T"}

* last_success -- end of the newest job that terminated normally (JobStatus T, or W: with warnings)
* last_attempt -- end of the newest finished job, whatever its status (running jobs are ignored)
* ok           -- whether that newest finished job terminated normally
* size_bytes   -- JobBytes of the newest good job
* snapshots    -- good jobs of this name still in the catalog

Connection: the usual libpq environment or ~/.pgpass of the user the agent runs this as
(PGHOST, PGDATABASE=bacula, PGUSER with SELECT on the job table). The catalog keeps the director's
local time without a zone: it is read in the database server's time zone unless --timezone (or
PGTZ) names the director's. Exit status 2 with one line on stderr when the catalog cannot be read;
the agent then reports the backup as ``unknown``.

    targets:
      - name: bacula-fileserver
        kind: backup
        type: command
        command: [/usr/local/lib/continuity/bacula-job-status.py, --job, FileServer-Nightly]
        rpo: 26h
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

OK_STATUSES = ("T", "W")
FINISHED_STATUSES = ("T", "W", "E", "e", "f", "A")  # running, waiting and created jobs are not attempts

QUERY = """
SELECT extract(epoch FROM coalesce(realendtime, endtime)::timestamptz)::bigint, jobstatus, coalesce(jobbytes, 0), jobid
  FROM job
 WHERE name = :'job' AND type = 'B' AND jobstatus IN ('T', 'W', 'E', 'e', 'f', 'A')
   AND coalesce(realendtime, endtime) IS NOT NULL
 ORDER BY coalesce(realendtime, endtime) DESC
 LIMIT 200;
SELECT count(*) FROM job WHERE name = :'job' AND type = 'B' AND jobstatus IN ('T', 'W');
"""


def fail(msg: str) -> int:
    print(f"bacula-job-status: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job", required=True, help="Bacula job name (Job resource Name)")
    p.add_argument("--psql", default="psql", help="psql binary")
    p.add_argument("--timezone", help="time zone the director writes catalog times in (default: the server's)")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    try:
        # Variables are interpolated (and quoted by psql, :'job') only in input read from stdin.
        proc = subprocess.run(
            [args.psql, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-v", f"job={args.job}"],
            input=QUERY, capture_output=True, text=True, timeout=args.timeout,
            env={**os.environ, **({"PGTZ": args.timezone} if args.timezone else {})},
        )
    except FileNotFoundError:
        return fail(f"{args.psql} not found")
    except subprocess.TimeoutExpired:
        return fail(f"catalog query took longer than {args.timeout:g}s")
    if proc.returncode != 0:
        return fail(f"psql exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        return fail("no output from psql")
    try:
        good_count = int(lines[-1])
        rows = [ln.split("\t") for ln in lines[:-1]]
        jobs = [(int(end), status, int(size), jobid) for end, status, size, jobid in rows]
    except ValueError:
        return fail(f"unexpected psql output: {lines[0][:100]!r}")
    out: dict[str, object] = {"last_success": None, "last_attempt": None, "size_bytes": None, "ok": False,
                              "snapshots": good_count, "message": f"no finished job named {args.job}"}
    if jobs:
        end, status, _size, jobid = jobs[0]
        out.update(last_attempt=end, ok=status in OK_STATUSES, message=f"job {jobid} {status}")
        good = next((j for j in jobs if j[1] in OK_STATUSES), None)
        if good is not None:
            out.update(last_success=good[0], size_bytes=good[2])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
