"""The example ``type: command`` scripts in deploy/examples/backup-scripts/: the Bacula one against a
real PostgreSQL holding a Bacula-shaped job table, the SQL Server one against a stand-in sqlcmd
(no SQL Server on Linux CI) that checks the query it is given; both feed the backup collector."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collectors.backup import parsers
from tests.helpers.backups import write_agent_config
from tests.helpers.collect import collect, value
from tests.helpers.common import ROOT, unavailable, wait_until

SCRIPTS = ROOT / "deploy" / "examples" / "backup-scripts"
BACULA = SCRIPTS / "bacula-job-status.py"
SQLSERVER = SCRIPTS / "sqlserver-agent-job-status.py"
DIRECTOR_TZ = ZoneInfo("Asia/Kolkata")  # UTC+05:30 all year: a wrong zone shows


def pg_tool(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None)
    if found is None:
        unavailable(f"{name} (PostgreSQL) is not installed (run `make system-deps`)")
    return found


@pytest.fixture(scope="module")
def catalog() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL cluster on a Unix socket only (no TCP port), run as nobody when the
    tests run as root (postgres refuses root)."""
    initdb, postgres, psql = pg_tool("initdb"), pg_tool("postgres"), pg_tool("psql")
    base = Path(tempfile.mkdtemp(prefix="continuity-pg-"))
    prefix: list[str] = []
    if os.getuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
        prefix = ["runuser", "-u", "nobody", "--"]
    proc = None
    try:
        subprocess.run([*prefix, initdb, "-D", str(base / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True, timeout=120)
        port = "5432"
        proc = subprocess.Popen(
            [*prefix, postgres, "-D", str(base / "data"), "-p", port, "-k", str(base), "-c", "listen_addresses=",
             "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        env = {"PGHOST": str(base), "PGPORT": port, "PGUSER": "postgres", "PGDATABASE": "postgres"}

        def ready() -> bool:
            return subprocess.run([psql, "-X", "-c", "select 1"], env={**os.environ, **env},
                                  capture_output=True).returncode == 0

        wait_until(ready, 30, what="postgres ready")
        subprocess.run([psql, "-X", "-q", "-c", "CREATE DATABASE bacula"], env={**os.environ, **env}, check=True)
        yield {**env, "PGDATABASE": "bacula", "PSQL": psql}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        shutil.rmtree(base, ignore_errors=True)


def sql(catalog: dict[str, str], text: str) -> None:
    env = {**os.environ, **{k: v for k, v in catalog.items() if k != "PSQL"}, "PGTZ": "Asia/Kolkata"}
    subprocess.run([catalog["PSQL"], "-X", "-q", "-v", "ON_ERROR_STOP=1"], input=text, text=True, env=env,
                   check=True, capture_output=True)


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, DIRECTOR_TZ).strftime("%Y-%m-%d %H:%M:%S")


def test_bacula_script_against_a_real_catalog(catalog: dict[str, str], tmp_path: Path) -> None:
    now = int(time.time())
    d, h = 86400, 3600
    job = "FileServer-Nightly's"
    sql(catalog, f"""
        CREATE TABLE job (jobid serial PRIMARY KEY, name text, type char(1), jobstatus char(1),
                          starttime timestamp, endtime timestamp, realendtime timestamp, jobbytes bigint);
        INSERT INTO job (name, type, jobstatus, starttime, endtime, realendtime, jobbytes) VALUES
          ($${job}$$, 'B', 'T', '{local(now - 2 * d - h)}', '{local(now - 2 * d)}', '{local(now - 2 * d)}', 1000),
          ($${job}$$, 'B', 'W', '{local(now - d - h)}', '{local(now - d)}', NULL, 1200),
          ($${job}$$, 'B', 'E', '{local(now - 2 * h)}', '{local(now - h)}', '{local(now - h)}', 0),
          ($${job}$$, 'B', 'R', '{local(now - 60)}', NULL, NULL, 0),
          ($${job}$$, 'R', 'T', '{local(now - 30 * 60)}', '{local(now - 20 * 60)}', NULL, 5),
          ('Other', 'B', 'T', '{local(now - 60)}', '{local(now - 10)}', NULL, 7);
    """)
    env = {**os.environ, **{k: v for k, v in catalog.items() if k != "PSQL"}, "PGTZ": "Asia/Kolkata"}
    out = subprocess.run([sys.executable, str(BACULA), "--job", job, "--psql", catalog["PSQL"]], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc == {"last_success": now - d, "last_attempt": now - h, "size_bytes": 1200, "ok": False,
                   "snapshots": 2, "message": "job 3 E"}
    st = parsers.parse_command_status(out.stdout.encode(), time.time())
    assert (st.last_success, st.last_attempt, st.ok) == (now - d, now - h, False)
    # Through the collector: the failed job after the last good one makes the backup failed.
    wrapper = tmp_path / "bacula.sh"
    exports = "".join(f"export {k}='{v}'\n" for k, v in catalog.items() if k != "PSQL")
    wrapper.write_text(f"#!/bin/sh\n{exports}export PGTZ=Asia/Kolkata\n"
                       f"exec {sys.executable} {BACULA} --psql {catalog['PSQL']} \"$@\"\n")
    wrapper.chmod(0o755)
    cfg = write_agent_config(tmp_path / "agent.yml", [
        {"name": "bacula-fs", "type": "command", "command": [str(wrapper), "--job", job], "rpo": "26h"},
        {"name": "bacula-none", "type": "command", "command": [str(wrapper), "--job", "never"], "rpo": "26h"},
    ])
    r = collect(cfg, "bacula-fs")
    assert value(r, "continuity_backup_state", state="failed") == 1, r.partial_errors
    assert value(r, "continuity_backup_size_bytes") == 1200
    assert value(r, "continuity_backup_snapshots") == 2
    assert value(collect(cfg, "bacula-none"), "continuity_backup_state", state="never_ran") == 1
    # An unreadable catalog is unknown, not stale.
    bad = subprocess.run([sys.executable, str(BACULA), "--job", job, "--psql", catalog["PSQL"]],
                         env={**env, "PGDATABASE": "nope"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "bacula-job-status:" in bad.stderr and bad.stdout == ""


def fake_sqlcmd(tmp_path: Path, rows: str) -> Path:
    """Prints ``rows`` like ``sqlcmd -h -1 -W -s '|'`` would, after checking its arguments."""
    p = tmp_path / "sqlcmd"
    p.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
assert args[args.index("-S") + 1] == "sql01" and args[args.index("-d") + 1] == "msdb", args
q = args[args.index("-Q") + 1]
assert "j.name = N'Nightly ''full'' backup'" in q, q
assert "database_name = N'FMIS'" in q, q
assert "-b" in args and "-W" in args
sys.stdout.write({rows!r})
""")
    p.chmod(0o755)
    return p


def test_sqlserver_script_parses_msdb_rows(tmp_path: Path) -> None:
    now = int(time.time())
    rows = (f"run|{now - 3600}|0\nrun|{now - 86400}|1\nrun|{now - 2 * 86400}|1\n\n"
            f"size|{now - 86400}|52428800\n\ncount|14|0\n")
    sqlcmd = fake_sqlcmd(tmp_path, rows)
    argv = [sys.executable, str(SQLSERVER), "--sqlcmd", str(sqlcmd), "--server", "sql01", "--job",
            "Nightly 'full' backup", "--database", "FMIS"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"last_success": now - 86400, "last_attempt": now - 3600,
                                      "size_bytes": 52428800, "ok": False, "snapshots": 14,
                                      "message": "run_status 0"}
    cfg = write_agent_config(tmp_path / "agent.yml", [{"name": "fmis", "type": "command", "command": argv,
                                                      "rpo": "26h"}])
    r = collect(cfg, "fmis")
    assert value(r, "continuity_backup_state", state="failed") == 1, r.partial_errors
    # sqlcmd failing (login refused) gives exit 2 and one line: the agent reports unknown
    failing = tmp_path / "sqlcmd-fail"
    failing.write_text("#!/bin/sh\necho \"Login failed for user 'x'.\" >&2\nexit 1\n")
    failing.chmod(0o755)
    bad = subprocess.run([*argv[:3], str(failing), *argv[4:]], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Login failed" in bad.stderr

