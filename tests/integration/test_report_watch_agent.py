"""A stale DR report never reads as fine, on a real agent: its real APScheduler on a controlled
clock, its HTTP server on loopback, scraped like Prometheus scrapes it.

- a run that fails (the output directory cannot be created: a file is in the way) shows in
  ``continuity_report_last_run_success``, in ``/api/v1/status`` and on the status page, while the
  due time says when the report was due; fixed and reloaded, the missed report is made at once;
- a fire time that finds the previous report run still going (the only worker thread is busy) is
  counted in ``continuity_report_skipped_runs_total`` and logged by the agent, not by APScheduler;
  fire times passed over by a paused agent are counted late;
- an agent that was down at the scheduled time makes the report when it starts;
- a real Prometheus with the shipped rules raises DRReportFailed and DRReportOverdue from real
  agents' expositions."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import load_config
from agent.service import Agent
from tests.helpers.common import free_port, http_get, metric_value, need, wait_until
from tests.helpers.dr_estate import build_estate
from tests.helpers.prom import Prometheus, scrape_config
from tests.helpers.promql import RULES_DIR
from tests.helpers.schedclock import Clock, scheduler_clock

DUE = datetime(2025, 3, 31, 7, 30, tzinfo=UTC)


class Running:
    """A real agent on its own event loop, with its scheduler on ``clock``."""

    def __init__(self, cfg: Path, clock: Clock) -> None:
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self.agent = Agent(load_config(cfg), clock=clock.time)
        self.loop.run_until_complete(self.agent.start())
        assert self.agent.http is not None
        self.url = f"http://127.0.0.1:{self.agent.http.port}"

    def tick(self, t: datetime) -> None:
        self.clock.now = t
        assert self.agent.scheduler is not None
        self.agent.scheduler.wakeup()
        self.spin(0.2)

    def spin(self, seconds: float = 0.1) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def metrics(self) -> str:
        status, body = http_get(self.url + "/metrics")
        assert status == 200
        return body.decode()

    def report(self) -> dict[str, Any]:
        status, body = http_get(self.url + "/api/v1/status")
        assert status == 200
        reports = json.loads(body)["reports"]
        assert len(reports) == 1
        return dict(reports[0])

    def reload(self) -> None:
        assert self.loop.run_until_complete(self.agent.reload())
        self.spin(0.2)

    def stop(self) -> None:
        self.loop.run_until_complete(self.agent.stop())
        self.loop.close()


def _config(root: Path, reports: dict[str, Any], **agent: Any) -> Path:
    est = build_estate(root / "estate")
    cfg = root / "agent.yml"
    cfg.write_text(yaml.safe_dump({
        "agent": {"site": "hq", "listen_address": f"127.0.0.1:{free_port()}", "state_dir": "state", **agent},
        "reports": {"timezone": "UTC", "runbooks_dir": str(est.runbooks), "evidence_dir": str(est.evidence),
                    "formats": ["json"], **reports},
    }))
    return cfg


@pytest.fixture
def clock() -> Iterator[Clock]:
    c = Clock(datetime(2025, 3, 31, 7, 29, tzinfo=UTC))
    with scheduler_clock(c):
        yield c


def _gauge(text: str, name: str) -> float | None:
    return metric_value(text, name, report="dr")


def test_failed_run_shows_in_metrics_api_and_page_and_a_reload_makes_it(tmp_path: Path, clock: Clock) -> None:
    (tmp_path / "blocked").write_text("a file where the report directory should be\n")
    cfg = _config(tmp_path, {"schedule": "30 7 * * *", "output_dir": "blocked/out"})
    run = Running(cfg, clock)
    try:
        text = run.metrics()
        assert _gauge(text, "continuity_report_last_due_timestamp_seconds") is None  # not due yet
        assert run.report()["state"] == "not_yet_due"
        run.tick(DUE)
        wait_until(lambda: run.spin() or run.agent.report_job.last_run_ok is False, timeout=60, what="failed run")
        text = run.metrics()
        assert _gauge(text, "continuity_report_last_run_success") == 0
        assert _gauge(text, "continuity_report_last_due_timestamp_seconds") == DUE.timestamp()
        assert _gauge(text, "continuity_report_last_success_timestamp_seconds") is None
        assert (_gauge(text, "continuity_report_last_duration_seconds") or -1) >= 0
        rep = run.report()
        assert rep["state"] == "failed" and rep["last_run_ok"] is False
        assert rep["last_due"] == DUE.timestamp() and rep["last_run"] == DUE.timestamp()
        assert "blocked" in rep["last_error"]
        page = http_get(run.url + "/")[1].decode()
        assert "DR report (dr): LAST RUN FAILED 2025-03-31 07:30:00Z" in page
        # Fixed (the file moved away) and reloaded: the report due at 07:30 is made now.
        (tmp_path / "blocked").unlink()
        clock.now = datetime(2025, 3, 31, 9, 0, tzinfo=UTC)
        run.reload()
        wait_until(lambda: run.spin() or run.agent.report_job.last_run_ok is True, timeout=60, what="caught up")
        text = run.metrics()
        assert _gauge(text, "continuity_report_last_run_success") == 1
        assert _gauge(text, "continuity_report_last_success_timestamp_seconds") == clock.time()
        assert _gauge(text, "continuity_report_last_due_timestamp_seconds") == DUE.timestamp()
        assert [p.name for p in (tmp_path / "blocked" / "out").iterdir()] == ["dr-20250331T090000Z.json"]
        rep = run.report()
        assert rep["state"] == "ok" and rep["last_error"] is None
        assert rep["next_due"] == datetime(2025, 4, 1, 7, 30, tzinfo=UTC).timestamp()
    finally:
        run.stop()


def test_runs_skipped_while_the_last_is_going_or_the_agent_paused_are_counted(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(tmp_path, {"schedule": "* * * * *", "output_dir": "out"}, max_workers=1)
    caplog.set_level(logging.WARNING)
    clock.now = datetime(2025, 3, 31, 7, 29, 30, tzinfo=UTC)
    run = Running(cfg, clock)
    release = threading.Event()
    try:
        text = run.metrics()
        for reason in ("still_running", "late"):
            assert metric_value(text, "continuity_report_skipped_runs_total", report="dr", reason=reason) == 0
        # The only worker thread is busy: the 07:30 run waits for it, and 07:31 finds it still going.
        run.agent.executor.submit(release.wait, 60)
        run.tick(datetime(2025, 3, 31, 7, 30, tzinfo=UTC))
        run.tick(datetime(2025, 3, 31, 7, 31, tzinfo=UTC))
        text = run.metrics()
        assert metric_value(text, "continuity_report_skipped_runs_total", report="dr", reason="still_running") == 1
        assert _gauge(text, "continuity_report_last_due_timestamp_seconds") == datetime(
            2025, 3, 31, 7, 31, tzinfo=UTC).timestamp()
        assert _gauge(text, "continuity_report_last_success_timestamp_seconds") is None
        rep = run.report()
        assert rep["running"] is False  # queued for the worker, not started
        assert rep["skipped_runs_by_reason"] == {"still_running": 1, "late": 0}
        assert rep["state"] == "due"
        release.set()
        wait_until(lambda: run.spin() or run.agent.report_job.last_run_ok is True, timeout=60, what="report")
        # Paused for five minutes (no CPU): the fire times passed over are merged into one run.
        run.tick(datetime(2025, 3, 31, 7, 36, tzinfo=UTC))
        wait_until(lambda: run.spin() or run.agent.report_job.last_success == clock.time(), timeout=60,
                   what="report after the pause")
        text = run.metrics()
        assert metric_value(text, "continuity_report_skipped_runs_total", report="dr", reason="late") == 4
        assert metric_value(text, "continuity_report_skipped_runs_total", report="dr", reason="still_running") == 1
        page = http_get(run.url + "/")[1].decode()
        assert "scheduled runs not started: 5" in page
    finally:
        release.set()
        run.stop()
    theirs = [r.getMessage() for r in caplog.records if r.name.startswith("apscheduler")]
    assert theirs == []
    ours = [r.getMessage() for r in caplog.records if r.name == "agent.reports.service"]
    assert any(m.startswith("1 scheduled DR report run(s) not started: the previous report run was still going")
               for m in ours), ours
    assert any(m.startswith("4 scheduled DR report run(s) not started: the agent could not start it")
               for m in ours), ours


def test_agent_down_at_the_scheduled_time_makes_the_report_when_it_starts(tmp_path: Path, clock: Clock) -> None:
    cfg = _config(tmp_path, {"schedule": "30 7 * * *", "output_dir": "out"})
    run = Running(cfg, clock)  # 07:29: the schedule is known, nothing due yet
    run.stop()
    clock.now = datetime(2025, 3, 31, 12, 0, tzinfo=UTC)  # down from 07:29 to 12:00
    run = Running(cfg, clock)
    try:
        wait_until(lambda: run.spin() or run.agent.report_job.last_run_ok is True, timeout=60, what="catch-up")
        text = run.metrics()
        assert _gauge(text, "continuity_report_last_due_timestamp_seconds") == DUE.timestamp()
        assert _gauge(text, "continuity_report_last_success_timestamp_seconds") == clock.time()
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["dr-20250331T120000Z.json"]
        assert run.report()["state"] == "ok"
    finally:
        run.stop()


def test_real_prometheus_alerts_on_a_failed_and_on_a_never_started_report(tmp_path: Path, clock: Clock) -> None:
    """Prometheus with the shipped continuity-dr.yml scrapes two real agents whose clocks stand three
    hours back: one whose report run failed (DRReportFailed, not DRReportOverdue as well), and one
    whose run never started (its only worker thread is busy: no success series at all), which is
    DRReportOverdue. Both are pending (their ``for:`` runs in real time); the exposition of both is
    clean for ``promtool check metrics``."""
    promtool = need("promtool")
    start = datetime.fromtimestamp((time.time() - 3 * 3600) // 60 * 60 + 30, UTC)
    clock.now = start
    (tmp_path / "a" / "blocked").parent.mkdir()
    (tmp_path / "a" / "blocked").write_text("in the way\n")
    failing = Running(_config(tmp_path / "a", {"schedule": "* * * * *", "output_dir": "blocked/out"}), clock)
    stuck = Running(_config(tmp_path / "b", {"schedule": "* * * * *", "output_dir": "out"}, max_workers=1), clock)
    release = threading.Event()
    prom = None
    try:
        stuck.agent.executor.submit(release.wait, 120)
        due = start + timedelta(seconds=30)
        for run in (failing, stuck):
            run.tick(due)
        wait_until(lambda: failing.spin() or failing.agent.report_job.last_run_ok is False, timeout=60, what="failure")
        for run in (failing, stuck):
            text = run.metrics()
            assert _gauge(text, "continuity_report_last_due_timestamp_seconds") == due.timestamp()
            r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
        config = scrape_config("continuity-agent", [failing.url.removeprefix("http://"), stuck.url.removeprefix("http://")])
        config["rule_files"] = [str(RULES_DIR / "continuity-dr.yml")]
        prom = Prometheus(tmp_path, config).start()

        def pending() -> set[tuple[str, str]]:
            rows = prom.query('ALERTS{alertname=~"DRReport.*"}')
            return {(r["metric"]["alertname"], r["metric"]["instance"]) for r in rows}

        expected = {("DRReportFailed", failing.url.removeprefix("http://")),
                    ("DRReportOverdue", stuck.url.removeprefix("http://"))}
        wait_until(lambda: pending() == expected, timeout=40, what=f"alerts {expected}")
        rows = prom.query('ALERTS{alertname=~"DRReport.*"}')
        assert {r["metric"]["alertstate"] for r in rows} == {"pending"}
        assert {r["metric"]["report"] for r in rows} == {"dr"}
    finally:
        if prom is not None:
            prom.stop()
        release.set()
        failing.stop()
        stuck.stop()
