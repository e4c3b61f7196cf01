"""Whether the scheduled DR report is being written: when it was last due by its cron schedule
(in the schedule's time zone), how its last run ended, its skipped runs, and the state the status
API shows. The report job runs against a real (unstarted) APScheduler and the real run ledger;
the agent around it is reduced to what the job reads."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from agent.catalogue import catalogue
from agent.config import LoadedConfig, load_config
from agent.configtypes import cron_trigger
from agent.reports.config import ReportsConfig
from agent.reports.metrics import REPORT_METRICS
from agent.reports.service import JOB_ID, KV_KEY, ReportJob, ReportMetrics
from agent.schedule import LastDue, RunLedger, last_fire_time
from agent.state import StateStore
from tests.helpers.dr_estate import build_estate

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def _utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expr", "tz", "now", "expected"),
    [
        ("0 7 1 * *", "UTC", _utc(2026, 12, 2, 5), _utc(2026, 12, 1, 7)),
        ("0 7 1 * *", "UTC", _utc(2026, 12, 1, 7), _utc(2026, 12, 1, 7)),  # at the fire time: due
        ("0 7 1 * *", "UTC", _utc(2026, 12, 1, 6, 59, 59), _utc(2026, 11, 1, 7)),
        # 07:30 London is 06:30 UTC in summer, 07:30 UTC in winter.
        ("30 7 * * *", "Europe/London", _utc(2026, 7, 1, 7), _utc(2026, 7, 1, 6, 30)),
        ("30 7 * * *", "Europe/London", _utc(2026, 12, 1, 7), _utc(2026, 11, 30, 7, 30)),
        ("* 7 * * *", "UTC", _utc(2026, 12, 2, 5), _utc(2026, 12, 1, 7, 59)),
        ("0 0 29 2 *", "UTC", _utc(2026, 12, 2), _utc(2024, 2, 29)),
    ],
)
def test_last_fire_time_of_a_cron_schedule(expr: str, tz: str, now: datetime, expected: datetime) -> None:
    assert last_fire_time(cron_trigger(expr, tz), now, LONG_AGO) == expected


def test_fire_times_before_since_are_not_due() -> None:
    tr = cron_trigger("0 7 * * *")
    assert last_fire_time(tr, _utc(2026, 12, 1, 6), _utc(2026, 11, 30, 8)) is None
    assert last_fire_time(tr, _utc(2026, 12, 1, 7), _utc(2026, 11, 30, 8)) == _utc(2026, 12, 1, 7)


def test_last_due_follows_the_clock_and_its_cache_is_right() -> None:
    tr = cron_trigger("0 7 * * *")
    due = LastDue(tr, _utc(2026, 11, 30, 8))
    seq = [
        (_utc(2026, 11, 30, 9), None),
        (_utc(2026, 12, 1, 6, 59, 59), None),
        (_utc(2026, 12, 1, 7), _utc(2026, 12, 1, 7)),
        (_utc(2026, 12, 1, 23), _utc(2026, 12, 1, 7)),
        (_utc(2026, 12, 5, 7, 0, 1), _utc(2026, 12, 5, 7)),  # an agent paused for days
        (_utc(2026, 12, 2, 7), _utc(2026, 12, 2, 7)),  # the clock went back
    ]
    for now, expected in seq:
        assert due.at(now) == expected, now
        assert due.at(now) == last_fire_time(tr, now, _utc(2026, 11, 30, 8))


class _Counting:
    """A trigger that counts its get_next_fire_time calls (each can take a quarter of a second for
    a trigger that never fires: APScheduler searches up to the year 9999)."""

    def __init__(self, trigger: Any) -> None:
        self.trigger = trigger
        self.calls = 0

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        self.calls += 1
        nxt: datetime | None = self.trigger.get_next_fire_time(previous, now)
        return nxt


def test_last_due_of_a_trigger_that_never_fires_is_worked_out_once() -> None:
    """31 February: every scrape reran the whole backwards search (0.5 s a scrape on day one,
    5 s after a year, with the report job's lock held)."""
    tr = _Counting(CronTrigger.from_crontab("0 9 31 2 *", timezone="UTC"))
    due = LastDue(tr, _utc(2026, 1, 1))
    assert due.at(_utc(2026, 1, 1, 0, 1)) is None
    assert tr.calls > 0
    searched = tr.calls
    for now in (_utc(2026, 1, 1, 0, 1), _utc(2026, 1, 1, 1), _utc(2026, 1, 8), _utc(2026, 1, 1, 0, 0, 30)):
        assert due.at(now) is None
    assert tr.calls == searched


def test_last_due_of_a_trigger_past_its_last_fire_time_is_not_searched_again() -> None:
    tr = _Counting(CronTrigger(year=2026, month=12, day=1, hour=7, timezone="UTC"))  # fires once
    due = LastDue(tr, _utc(2026, 11, 1))
    assert due.at(_utc(2026, 11, 30)) is None
    assert due.at(_utc(2026, 12, 1, 8)) == _utc(2026, 12, 1, 7)
    searched = tr.calls
    for now in (_utc(2026, 12, 2), _utc(2027, 6, 1), _utc(2030, 1, 1)):
        assert due.at(now) == _utc(2026, 12, 1, 7)
    assert tr.calls == searched
    # The clock went back before the fire time: worked out again.
    assert due.at(_utc(2026, 11, 30)) is None
    assert due.at(_utc(2026, 12, 1, 7)) == _utc(2026, 12, 1, 7)


def _loaded(tmp_path: Path, reports: dict[str, Any]) -> LoadedConfig:
    cfg = tmp_path / "agent.yml"
    cfg.write_text(yaml.safe_dump({"agent": {"site": "hq", "state_dir": "state"}, "reports": reports}))
    return load_config(cfg)


class _Agent:
    """What ReportJob reads of an Agent: config, clock, state store, scheduler, run ledger."""

    def __init__(self, reports: ReportsConfig | LoadedConfig, now: datetime, store: StateStore | None = None) -> None:
        self.loaded = (
            reports
            if isinstance(reports, LoadedConfig)
            else SimpleNamespace(config=SimpleNamespace(reports=reports), path=Path("agent.yml"), sha256="0")
        )
        self.now = now
        self.store = store or StateStore(None)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.ledger = RunLedger()
        self.skip_handlers: dict[str, Any] = {}
        self.executor = None

    def clock(self) -> float:
        return self.now.timestamp()


def _samples(job: ReportJob) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for fam in ReportMetrics(job).collect() for s in fam.samples
    }


def _value(job: ReportJob, name: str, **labels: str) -> float | None:
    return _samples(job).get((name, tuple(sorted({"report": "dr", **labels}.items()))))


def test_report_metrics_are_declared_and_exposed_with_their_labels(tmp_path: Path) -> None:
    cat = catalogue()
    for spec in REPORT_METRICS:
        assert cat[spec.name] == spec
    agent = _Agent(ReportsConfig(schedule="0 7 * * *", output_dir=tmp_path / "out"), _utc(2026, 12, 1, 6))
    job = ReportJob(agent)
    job.schedule(agent)
    names = {name for name, _ in _samples(job)}
    # Before the first fire time: only the skipped-runs counter, at 0 for each reason.
    assert names == {"continuity_report_skipped_runs_total"}
    assert _value(job, "continuity_report_skipped_runs_total", reason="still_running") == 0
    assert _value(job, "continuity_report_skipped_runs_total", reason="late") == 0
    agent.now = _utc(2026, 12, 1, 7, 10)
    job.last_success, job.last_duration, job.last_run_ok = agent.clock(), 1.5, True
    samples = _samples(job)
    assert {name for name, _ in samples} == {s.name for s in REPORT_METRICS}
    for name, labels in samples:
        base = name if name in cat else name.removesuffix("_total")
        assert set(dict(labels)) == set(cat.get(base, cat.get(name)).labels)  # type: ignore[union-attr]
    assert _value(job, "continuity_report_last_due_timestamp_seconds") == _utc(2026, 12, 1, 7).timestamp()
    assert _value(job, "continuity_report_last_run_success") == 1


def test_no_schedule_no_due_time_and_no_job(tmp_path: Path) -> None:
    agent = _Agent(ReportsConfig(schedule=None, output_dir=tmp_path / "out"), _utc(2026, 12, 1, 8))
    job = ReportJob(agent)
    job.schedule(agent)
    assert agent.scheduler.get_job(JOB_ID) is None
    assert _samples(job) == {}
    assert job.status_json()["state"] == "unscheduled"


def test_a_failed_run_reads_as_failed_never_as_fine(tmp_path: Path) -> None:
    est = build_estate(tmp_path / "estate")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output directory should be\n")
    cfg = _loaded(tmp_path, {"schedule": "0 7 * * *", "output_dir": str(blocked / "out"),
                             "runbooks_dir": str(est.runbooks), "evidence_dir": str(est.evidence)})
    store = StateStore(tmp_path / "state")
    agent = _Agent(cfg, _utc(2026, 11, 30, 8), store)
    job = ReportJob(agent)
    job.schedule(agent)
    agent.now = _utc(2026, 12, 1, 7)
    assert job.run_blocking() == []
    assert job.last_error and "blocked" in job.last_error
    assert _value(job, "continuity_report_last_run_success") == 0
    assert _value(job, "continuity_report_last_success_timestamp_seconds") is None
    assert _value(job, "continuity_report_last_due_timestamp_seconds") == agent.clock()
    st = job.status_json()
    assert st["state"] == "failed" and st["last_run_ok"] is False and st["last_run"] == agent.clock()
    # The failure outlives a restart: a new job on the same state directory still says so.
    store.flush()
    again = ReportJob(_Agent(cfg, agent.now, store))
    assert again.last_run_ok is False and again.last_success is None
    assert store.get_kv(KV_KEY)["scheduled_since"] == _utc(2026, 11, 30, 8).timestamp()
    store.close()


def test_a_failed_run_is_not_exported_once_the_schedule_is_removed(tmp_path: Path) -> None:
    """DRReportFailed (continuity_report_last_run_success == 0) resolves when the schedule goes:
    an unscheduled report exports no run outcome, as it exports no skipped runs."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the output directory should be\n")
    store = StateStore(tmp_path / "state")
    agent = _Agent(ReportsConfig(schedule="0 7 * * *", output_dir=blocked / "out"), _utc(2026, 12, 1, 7), store)
    job = ReportJob(agent)
    job.schedule(agent)
    assert job.run_blocking() == []
    assert _value(job, "continuity_report_last_run_success") == 0
    agent.loaded = SimpleNamespace(config=SimpleNamespace(reports=ReportsConfig(schedule=None, output_dir=blocked)))
    job.schedule(agent)  # the reload
    assert job.status_json()["state"] == "unscheduled"
    names = {name for name, _ in _samples(job)}
    assert "continuity_report_last_run_success" not in names
    assert not names & {"continuity_report_last_due_timestamp_seconds", "continuity_report_skipped_runs_total"}
    # Scheduled again: the failure it still remembers shows again.
    agent.loaded = SimpleNamespace(
        config=SimpleNamespace(reports=ReportsConfig(schedule="0 7 * * *", output_dir=blocked / "out"))
    )
    job.schedule(agent)
    assert _value(job, "continuity_report_last_run_success") == 0
    store.close()


def test_due_without_a_report_is_due_then_overdue_then_caught_up_on_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    est = build_estate(tmp_path / "estate")
    cfg = _loaded(tmp_path, {"schedule": "0 7 * * *", "output_dir": "out",
                             "runbooks_dir": str(est.runbooks), "evidence_dir": str(est.evidence)})
    agent = _Agent(cfg, _utc(2026, 11, 30, 8))
    job = ReportJob(agent)
    job.schedule(agent)
    assert job.status_json()["state"] == "not_yet_due"
    assert not hasattr(agent.scheduler.get_job(JOB_ID), "next_run_time")  # the cron decides
    agent.now = _utc(2026, 12, 1, 7, 30)  # due at 07:00, the run never started (agent down)
    assert job.status_json()["state"] == "due"
    agent.now = _utc(2026, 12, 1, 8, 0, 1)
    assert job.status_json()["state"] == "overdue"
    caplog.set_level(logging.WARNING)
    job.schedule(agent)  # a restart or reload: the missed report is made now
    assert "DR report due 2026-12-01 07:00:00 UTC was not written; making it now" in caplog.messages
    pending = agent.scheduler.get_jobs()[-1]  # the scheduler is not started: jobs wait, replaced at start
    assert pending.id == JOB_ID and pending.next_run_time == agent.now  # now, then the cron trigger's fire times
    assert str(pending.trigger) == str(cron_trigger("0 7 * * *"))
    assert job.run_blocking()
    assert job.status_json()["state"] == "ok"
    assert _value(job, "continuity_report_last_success_timestamp_seconds") == agent.clock()
    caplog.clear()
    job.schedule(agent)  # written: nothing to catch up
    assert not [m for m in caplog.messages if "making it now" in m]


def test_skipped_runs_are_counted_and_logged_by_the_agent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent = _Agent(ReportsConfig(schedule="0 7 * * *", output_dir=tmp_path / "out"), _utc(2026, 12, 1, 8))
    job = ReportJob(agent)
    job.schedule(agent)
    caplog.set_level(logging.WARNING)
    agent.skip_handlers[JOB_ID]("still_running", 1)
    agent.skip_handlers[JOB_ID]("late", 3)
    assert _value(job, "continuity_report_skipped_runs_total", reason="still_running") == 1
    assert _value(job, "continuity_report_skipped_runs_total", reason="late") == 3
    st = job.status_json()
    assert st["skipped_runs_by_reason"] == {"still_running": 1, "late": 3}
    assert st["last_skipped_run"] == agent.clock()
    assert any("1 scheduled DR report run(s) not started: the previous report run was still going" in m
               for m in caplog.messages)
    assert any("3 scheduled DR report run(s) not started: the agent could not start it within 60 minutes" in m
               for m in caplog.messages)


def test_an_older_state_directory_counts_its_last_report_as_proof_of_the_schedule(tmp_path: Path) -> None:
    """State written before the due time was recorded: the last success dates the schedule, so a
    report missed since then is due, not forgiven."""
    store = StateStore(tmp_path / "state")
    store.set_kv(KV_KEY, {"last_success": _utc(2026, 11, 1, 7, 1).timestamp(), "last_duration": 2.0})
    store.flush()
    agent = _Agent(ReportsConfig(schedule="0 7 1 * *", output_dir=tmp_path / "out"), _utc(2026, 12, 2), store)
    job = ReportJob(agent)
    assert job.last_run_ok is True
    job.schedule(agent)
    assert _value(job, "continuity_report_last_due_timestamp_seconds") == _utc(2026, 12, 1, 7).timestamp()
    store.close()

