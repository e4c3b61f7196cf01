"""A scripted DR exercise over the shipped runbooks, for the exercise console tests.

core-network -> active-directory -> sql-cluster -> payroll, plus e-mail (which needs only the first
two: it runs beside the chain). Declared at T0 = 2026-09-04T18:00Z (after the shipped example
evidence, so the chain continues it); every time is hours from T0. One step fails and is retried.
The tests play it through the CLI, the board and a spreadsheet and compare the records.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
SHIPPED_EVIDENCE = RUNBOOKS / "evidence"
NAME = "2026-09-joint-dr"
SYSTEMS = ("core-network", "active-directory", "sql-cluster", "payroll", "email")
T0 = datetime(2026, 9, 4, 18, 0, tzinfo=UTC)
VERIFY_AT = "2026-09-10T09:00:00+00:00"


def at(hours: float) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


# (runbook, step, state, hours, operator)
STEPS: list[tuple[str, str, str, float, str]] = [
    ("core-network", "dr-wan", "start", 0.5, "N. Patel"),
    ("core-network", "core-switches", "start", 0.5, "N. Patel"),
    ("core-network", "core-switches", "done", 2.0, "N. Patel"),
    ("core-network", "firewalls", "start", 2.0, "S. Okafor"),
    ("core-network", "dns-dhcp", "start", 2.0, "N. Patel"),
    ("core-network", "dr-wan", "done", 2.5, "N. Patel"),
    ("core-network", "dns-dhcp", "done", 3.0, "N. Patel"),
    ("core-network", "firewalls", "done", 4.5, "S. Okafor"),
    ("core-network", "remote-access", "start", 4.5, "N. Patel"),
    ("core-network", "remote-access", "done", 6.5, "N. Patel"),
    ("active-directory", "restore-dc", "start", 7.0, "J. Reid"),
    ("active-directory", "restore-dc", "done", 10.0, "J. Reid"),
    ("active-directory", "seize-fsmo", "start", 10.0, "J. Reid"),
    ("active-directory", "seize-fsmo", "done", 10.5, "J. Reid"),
    ("active-directory", "metadata-cleanup", "start", 10.5, "J. Reid"),
    ("active-directory", "dns-zones", "start", 10.5, "J. Reid"),
    ("active-directory", "dns-zones", "done", 11.0, "J. Reid"),
    ("active-directory", "metadata-cleanup", "done", 11.5, "J. Reid"),
    ("active-directory", "second-dc", "start", 11.5, "J. Reid"),
    ("active-directory", "second-dc", "done", 14.0, "J. Reid"),
    ("active-directory", "krbtgt-reset", "start", 14.0, "J. Reid"),
    ("active-directory", "krbtgt-reset", "done", 15.0, "J. Reid"),
    ("sql-cluster", "build-nodes", "start", 15.0, "M. Kowalski"),
    ("email", "activate-dag", "start", 16.5, "T. Lindqvist"),
    ("sql-cluster", "build-nodes", "done", 18.0, "M. Kowalski"),
    ("sql-cluster", "cluster", "start", 18.0, "M. Kowalski"),
    ("email", "activate-dag", "done", 18.5, "T. Lindqvist"),
    ("email", "mail-flow", "start", 18.5, "T. Lindqvist"),
    ("email", "owa-mobile", "start", 18.5, "T. Lindqvist"),
    ("sql-cluster", "cluster", "failed", 19.0, "M. Kowalski"),
    ("sql-cluster", "cluster", "start", 19.0, "M. Kowalski"),
    ("email", "mail-flow", "done", 19.5, "T. Lindqvist"),
    ("email", "journal", "start", 19.5, "T. Lindqvist"),
    ("email", "owa-mobile", "done", 20.5, "T. Lindqvist"),
    ("email", "journal", "done", 20.5, "T. Lindqvist"),
    ("sql-cluster", "cluster", "done", 21.0, "M. Kowalski"),
    ("sql-cluster", "restore-system-dbs", "start", 21.0, "M. Kowalski"),
    ("sql-cluster", "restore-system-dbs", "done", 22.5, "M. Kowalski"),
    ("sql-cluster", "restore-user-dbs", "start", 22.5, "M. Kowalski"),
    ("sql-cluster", "restore-user-dbs", "done", 28.5, "M. Kowalski"),
    ("sql-cluster", "ag-sync", "start", 28.5, "M. Kowalski"),
    ("sql-cluster", "ag-sync", "done", 30.0, "M. Kowalski"),
    ("payroll", "app-server", "start", 30.5, "P. Evans"),
    ("payroll", "app-server", "done", 33.5, "P. Evans"),
    ("payroll", "hr-feed", "start", 33.5, "P. Evans"),
    ("payroll", "hr-feed", "done", 35.5, "P. Evans"),
    ("payroll", "parallel-run", "start", 35.5, "R. Singh"),
    ("payroll", "parallel-run", "done", 40.0, "R. Singh"),
    ("payroll", "bacs", "start", 40.0, "R. Singh"),
    ("payroll", "rti-pensions", "start", 40.0, "P. Evans"),
    ("payroll", "rti-pensions", "done", 41.5, "P. Evans"),
    ("payroll", "bacs", "done", 42.0, "R. Singh"),
]
RESTORED = {"core-network": 7.0, "active-directory": 15.0, "email": 21.0, "sql-cluster": 30.5, "payroll": 42.5}
VALIDATIONS = {
    "core-network": ["site-connectivity", "internet-breakout"],
    "active-directory": ["user-logon", "gpo-applied", "replication-healthy"],
    "sql-cluster": ["dbcc-checkdb", "listener-connect", "agent-jobs"],
    "payroll": ["payslip-compare", "bacs-accepted"],
    "email": ["send-receive-external", "owa-login", "shared-mailboxes"],
}
SIGN_OFF = {rid: ("Z. Ahmed", "Head of ICT Service Delivery") for rid in SYSTEMS}
PARTICIPANTS = [("Z. Ahmed", "Head of ICT Service Delivery"), ("K. Moore", "Service desk")]
ACTION = ("sql-cluster", "Cluster validation fails on the DR storage firmware; upgrade it", "M. Kowalski", "2026-12-31")


def events() -> list[tuple[float, str, tuple[Any, ...]]]:
    """Every event after the start, in time order: (hours, kind, args)."""
    out: list[tuple[float, int, str, tuple[Any, ...]]] = []
    for i, (rid, sid, state, h, who) in enumerate(STEPS):
        out.append((h, i, "step", (rid, sid, state, who)))
    for rid, h in RESTORED.items():
        # Before the steps at the same moment: the next system starts once this one is restored.
        out.append((h, -3, "restored", (rid,)))
        out.extend((h, -2, "validate", (rid, v, "pass", "K. Moore")) for v in VALIDATIONS[rid])
        out.append((h, -1, "sign_off", (rid, *SIGN_OFF[rid])))
    out.sort(key=lambda e: (e[0], e[1]))
    return [(h, kind, args) for h, _, kind, args in out]


def play(cmd: Callable[..., None], until_hours: float | None = None) -> None:
    """Call ``cmd(kind, args, hours)`` for every event up to ``until_hours``."""
    for h, kind, args in events():
        if until_hours is not None and h > until_hours:
            break
        cmd(kind, args, h)


def evidence_copy(tmp_path: Path) -> Path:
    """A copy of the shipped evidence: the exercise's records continue its chain."""
    ev = tmp_path / "evidence"
    shutil.copytree(SHIPPED_EVIDENCE, ev)
    return ev


LIVE_PROJECTED = 4.5 * 3600  # see running_exercise


def running_exercise(evidence: Path, name: str = "live-1") -> datetime:
    """An exercise over core-network running now, declared an hour ago, whose projection does not
    move for the next hour: dr-wan (2h) and firewalls (2h, from 0h30m) are in progress, so
    remote-access (2h, after both) starts at 2h30m and the system is restored at 4h30m
    (:data:`LIVE_PROJECTED`). Returns T0."""
    from agent.exercises.record import Recorder

    t0 = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    rec = Recorder(RUNBOOKS, evidence, name, "live-test")
    rec.start("full_recovery", ["core-network"], t0)
    h = timedelta(hours=1)
    rec.step("core-network", "dr-wan", "start", at=t0, operator="N. Patel")
    rec.step("core-network", "core-switches", "start", at=t0, operator="N. Patel")
    rec.step("core-network", "core-switches", "done", at=t0 + 0.5 * h)
    rec.step("core-network", "firewalls", "start", at=t0 + 0.5 * h, operator="S. Okafor")
    rec.step("core-network", "dns-dhcp", "start", at=t0 + 0.5 * h)
    rec.step("core-network", "dns-dhcp", "done", at=t0 + 0.75 * h)
    return t0
