"""Failures that must never read healthy, tried against a running agent scraped by a real
Prometheus loaded with the shipped alert rules (deploy/prometheus/rules).

Each test breaks something real under a running agent — a backup repository that vanishes (a NAS
share unmounted), the agent's state database locked by another process — and checks what
Prometheus makes of it: an alert at least pending (``ALERTS``; the ``for:`` durations are covered by
the promtool tests in deploy/prometheus/tests), not silence."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from tests.helpers.backups import make_repos, write_agent_config
from tests.helpers.common import agent_process, metric_value, wait_until
from tests.helpers.prom import Prometheus
from tests.helpers.promql import RULES_DIR

pytestmark = pytest.mark.integration


def prometheus_with_rules(tmp_path: Path, instance: str) -> Prometheus:
    return Prometheus(
        tmp_path,
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(f) for f in sorted(RULES_DIR.glob("*.yml"))],
            "scrape_configs": [{"job_name": "continuity-agent", "static_configs": [{"targets": [instance]}]}],
        },
    ).start()


def alerts(prom: Prometheus, selector: str) -> set[tuple[str, str]]:
    """(alertname, severity) of every pending or firing alert matching ``selector``."""
    return {(a["metric"]["alertname"], a["metric"]["severity"]) for a in prom.query(f"ALERTS{{{selector}}}")}


def test_vanished_backup_repository_alerts(tmp_path: Path) -> None:
    """The repository disappears under a running agent (its share unmounted): the check cannot be
    made, the state is ``unknown`` — never ``stale`` — and the target itself is up (the check ran
    and reported). Before BackupCheckFailing nothing alerted on that, however long it lasted."""
    repos = make_repos(tmp_path / "repos")
    config = write_agent_config(
        tmp_path / "agent.yml",
        [
            {
                "name": "fs1",
                "type": "restic",
                "repository": str(repos.restic),
                "password_file": str(repos.password_file),
                "interval": "5s",  # the check's timeout is at most its interval
                "timeout": "5s",
            }
        ],
    )
    with agent_process(config) as agent:
        prom = prometheus_with_rules(tmp_path, agent.url.removeprefix("http://"))
        try:

            def state() -> str | None:
                text = agent.metrics()
                on = [s for s in ("fresh", "unknown") if metric_value(text, "continuity_backup_state", state=s) == 1]
                return on[0] if on else None

            def seen(expr: str) -> bool:
                return bool(prom.query(expr))

            # The alerts about whether the backup is there (the fixture's last snapshot is a small
            # one, so BackupSizeDropped is pending throughout: not this test's business).
            about = 'target="fs1",alertname=~"BackupCheckFailing|BackupLate|BackupStale|BackupFailed|TargetDown"'
            wait_until(lambda: state() == "fresh", 30, what="backup fresh")
            wait_until(lambda: seen('continuity_backup_state{state="fresh"} == 1'), 30, what="fresh in Prometheus")
            assert alerts(prom, about) == set()
            last = metric_value(agent.metrics(), "continuity_backup_last_success_timestamp_seconds", target="fs1")
            assert last is not None

            repos.restic.rename(tmp_path / "unmounted")
            wait_until(lambda: state() == "unknown", 30, what="backup state unknown")
            text = agent.metrics()
            # Collected fine (the check ran and said it could not see the repository): TargetDown
            # cannot catch this; the error counter says why.
            assert metric_value(text, "continuity_target_up", target="fs1") == 1
            # The last success it knew is still exported (BackupCheckFailing's critical reads its age).
            assert metric_value(text, "continuity_backup_last_success_timestamp_seconds", target="fs1") == last
            # The error counter says why. Waited for: on a loaded machine the first check after the
            # move can hit its 5 s timeout (reason "timeout") before one reports the repository.
            def repository_errors() -> float:
                text = agent.metrics()
                n = metric_value(text, "continuity_target_errors_total", target="fs1", reason="repository_error")
                return n or 0

            wait_until(lambda: repository_errors() >= 1, 30, what="repository_error counted")
            wait_until(
                lambda: ("BackupCheckFailing", "warning") in alerts(prom, about),
                30,
                what="BackupCheckFailing for the vanished repository",
            )
            # Its last success was moments ago, inside the 24h RPO: a warning, not yet a page.
            assert alerts(prom, about) == {("BackupCheckFailing", "warning")}

            (tmp_path / "unmounted").rename(repos.restic)
            wait_until(lambda: state() == "fresh", 30, what="backup fresh again")
            wait_until(lambda: alerts(prom, about) == set(), 30, what="alert resolved")
        finally:
            prom.stop()


def test_locked_state_database_alerts(tmp_path: Path) -> None:
    """Another process holds the state database's write lock past the agent's busy timeout (10 s):
    the agent goes on in memory, but the history that availability is computed from stops being
    written, so downtime from then on counts for nothing. Before AgentStateDatabaseFailing,
    ``continuity_state_db_healthy 0`` was on a dashboard panel only and alerted no one; and the
    store never wrote again until a restart, however briefly the lock was held. Now it retries:
    once the lock is gone the results it kept are written and the alert clears."""
    config = tmp_path / "agent.yml"
    config.write_text(
        f"agent: {{site: hq, state_dir: {tmp_path / 'state'}}}\n"
        "targets:\n  - {name: web, kind: probe, module: tcp, host: 127.0.0.1, port: 1, interval: 1s, timeout: 500ms}\n"
    )
    with agent_process(config) as agent:
        prom = prometheus_with_rules(tmp_path, agent.url.removeprefix("http://"))
        try:
            about = 'alertname="AgentStateDatabaseFailing"'
            wait_until(lambda: bool(prom.query("continuity_state_db_healthy == 1")), 30, what="healthy in Prometheus")
            assert alerts(prom, about) == set()
            db = tmp_path / "state" / "state.db"

            def history() -> list[float]:
                with contextlib.closing(sqlite3.connect(db, timeout=5)) as c:
                    rows = c.execute("SELECT started FROM results WHERE target = 'web' AND task = ''").fetchall()
                return [r[0] for r in rows]

            lock = sqlite3.connect(db, isolation_level=None, timeout=5)
            try:
                lock.execute("BEGIN EXCLUSIVE")
                locked_at = time.time()
                wait_until(
                    lambda: metric_value(agent.metrics(), "continuity_state_db_healthy") == 0,
                    30,
                    what="the agent to give up waiting for the lock",
                )
                wait_until(
                    lambda: ("AgentStateDatabaseFailing", "warning") in alerts(prom, about),
                    30,
                    what="AgentStateDatabaseFailing while the database is locked",
                )
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            released_at = time.time()
            wait_until(
                lambda: metric_value(agent.metrics(), "continuity_state_db_healthy") == 1,
                30,
                what="the agent to write its database again",
            )
            wait_until(lambda: alerts(prom, about) == set(), 30, what="alert resolved")
            # The probe's results from while the database was locked were kept and written: the
            # history has no hole (one run a second; allow a few for the scheduler's jitter).
            during = [t for t in history() if locked_at + 1 <= t <= released_at - 1]
            assert len(during) >= (released_at - locked_at) - 6, (len(during), released_at - locked_at)
            assert "state database writable again" in agent.log()
        finally:
            prom.stop()
