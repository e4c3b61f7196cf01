#!/usr/bin/env python3
"""Status of one SQL Server Agent backup job, for continuity-agent's ``type: command`` backups.

Queries msdb with ``sqlcmd`` (mssql-tools18 on Linux, or sqlcmd on the Windows server reached over
OpenSSH) and prints the documented JSON object on one line::

    {"last_success": 1764036000, "last_attempt": 1764036000, "size_bytes": 52428800, "ok": true,
     "snapshots": 14, "message": "run_status 1"}

* last_attempt -- end (start + duration) of the newest job outcome row (sysjobhistory, step 0)
* ok           -- whether that run succeeded (run_status 1; 0 failed, 3 cancelled)
* last_success -- end of the newest successful run
* size_bytes   -- with --database: backup_size of that database's newest full backup (msdb.backupset)
* snapshots    -- with --database: full backups of it still recorded in msdb

SQL Agent records local server time; the query converts it with the server's current UTC offset
(exact except for runs on the other side of a daylight-saving change). Connection: --server, and
either -E (integrated auth) via --integrated or SQLCMDUSER/SQLCMDPASSWORD in the environment of a
login with read access to msdb (SQLAgentReaderRole). Exit status 2 with one line on stderr when
msdb cannot be read; the agent then reports the backup as ``unknown``.

    targets:
      - name: finance-sql-full
        kind: backup
        type: command
        command: [/usr/local/lib/continuity/sqlserver-agent-job-status.py, --server, sql01,
                  --job, "DatabaseBackup - USER_DATABASES - FULL", --database, FMIS]
        rpo: 26h
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

EPOCH = "DATEDIFF_BIG(second, '19700101', DATEADD(minute, -DATEPART(TZOFFSET, SYSDATETIMEOFFSET()), {}))"


def literal(text: str) -> str:
    """An N'...' string literal (the names come from the operator's own config)."""
    return "N'" + text.replace("'", "''") + "'"


def query(job: str, database: str | None) -> str:
    started = EPOCH.format("msdb.dbo.agent_datetime(h.run_date, h.run_time)")
    q = (
        "SET NOCOUNT ON;\n"
        f"SELECT TOP 200 'run', {started} + (h.run_duration / 10000) * 3600 + (h.run_duration / 100 % 100) * 60"
        " + h.run_duration % 100, h.run_status\n"
        "  FROM msdb.dbo.sysjobhistory h JOIN msdb.dbo.sysjobs j ON j.job_id = h.job_id\n"
        f" WHERE j.name = {literal(job)} AND h.step_id = 0 AND h.run_status IN (0, 1, 3)\n"
        " ORDER BY h.instance_id DESC;\n"
    )
    if database:
        # The database name goes in as an escaped N'...' literal.
        q += (
            f"SELECT TOP 1 'size', {EPOCH.format('b.backup_finish_date')}, CAST(b.backup_size AS bigint)\n"  # noqa: S608
            f"  FROM msdb.dbo.backupset b WHERE b.database_name = {literal(database)} AND b.type = 'D'\n"
            " ORDER BY b.backup_finish_date DESC;\n"
            f"SELECT 'count', COUNT(*), 0 FROM msdb.dbo.backupset WHERE database_name = {literal(database)}"
            " AND type = 'D';\n"
        )
    return q


def fail(msg: str) -> int:
    print(f"sqlserver-agent-job-status: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True)
    p.add_argument("--job", required=True, help="SQL Server Agent job name")
    p.add_argument("--database", help="database whose newest full backup gives size_bytes")
    p.add_argument("--integrated", action="store_true", help="integrated authentication (sqlcmd -E)")
    p.add_argument("--sqlcmd", default="sqlcmd")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    cmd = [args.sqlcmd, "-S", args.server, "-d", "msdb", "-b", "-h", "-1", "-W", "-s", "|",
           "-l", str(int(args.timeout)), "-Q", query(args.job, args.database)]
    if args.integrated:
        cmd.append("-E")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout + 5, env=os.environ)
    except FileNotFoundError:
        return fail(f"{args.sqlcmd} not found")
    except subprocess.TimeoutExpired:
        return fail(f"msdb query took longer than {args.timeout:g}s")
    if proc.returncode != 0:
        return fail(f"sqlcmd exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    runs: list[tuple[int, int]] = []
    size: int | None = None
    count: int | None = None
    try:
        for line in proc.stdout.splitlines():
            parts = [x.strip() for x in line.split("|")]
            if len(parts) != 3 or parts[0] not in ("run", "size", "count"):
                continue
            if parts[0] == "run":
                runs.append((int(parts[1]), int(parts[2])))
            elif parts[0] == "size":
                size = int(parts[2])
            else:
                count = int(parts[1])
    except ValueError:
        return fail("unexpected sqlcmd output")
    out: dict[str, object] = {"last_success": None, "last_attempt": None, "size_bytes": size, "ok": False,
                              "snapshots": count, "message": f"no finished run of job {args.job}"}
    if runs:
        end, status = runs[0]
        out.update(last_attempt=end, ok=status == 1, message=f"run_status {status}")
        good = next((r for r in runs if r[1] == 1), None)
        if good is not None:
            out["last_success"] = good[0]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
