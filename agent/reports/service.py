"""The agent side of reports: a cron job writing dated reports, its metrics, and the
read-only ``/reports/`` pages. Installed into :class:`agent.service.Agent` by :func:`install`."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client.core import Metric
from prometheus_client.registry import Collector as PromCollector

from agent import escape
from agent.catalogue import SKIP_REASONS, STILL_RUNNING, running_catalogue
from agent.configtypes import cron_trigger
from agent.plugin import HttpRequest, HttpResponse, Route
from agent.reports.config import EXTENSIONS, REPORT_PREFIX, ReportsConfig
from agent.schedule import LastDue

log = logging.getLogger(__name__)

JOB_ID = "reports:dr"
# A report run may start this long (seconds) after it was due (APScheduler's misfire_grace_time).
MISFIRE_GRACE = 3600
# A report not written this long (seconds) after it was due is overdue: the DRReportOverdue alert's
# grace (deploy/prometheus/rules/continuity-dr.yml) and the status page's.
OVERDUE_AFTER = 3600.0
KV_KEY = "reports.dr.last"
REPORT = "dr"


class ReportJob:
    """Runs the DR report on the configured cron schedule, in the agent's worker threads, and keeps
    what shows whether the report is being written: when it was last due by its schedule, how its
    last run ended, and the scheduled runs that did not start (counted by the agent's run ledger)."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._lock = threading.Lock()
        self.last_success: float | None = None
        self.last_duration: float | None = None
        self.last_error: str | None = None
        self.last_run: float | None = None  # when the last run started (agent clock)
        self.last_run_ok: bool | None = None
        self.running = False
        # When this state directory first had a report schedule: fire times before it are not due
        # (a new agent is not late with a report it was never asked for).
        self.scheduled_since: float | None = None
        self.skipped: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        self.last_skipped: float | None = None
        self._due: LastDue | None = None
        prev = agent.store.get_kv(KV_KEY)
        if isinstance(prev, dict):
            self.last_success = _number(prev.get("last_success"))
            self.last_duration = _number(prev.get("last_duration"))
            self.last_run = _number(prev.get("last_run"))
            self.scheduled_since = _number(prev.get("scheduled_since"))
            ok = prev.get("last_run_ok")
            self.last_run_ok = ok if isinstance(ok, bool) else (True if self.last_success is not None else None)

    @property
    def config(self) -> ReportsConfig | None:
        cfg: ReportsConfig | None = self.agent.loaded.config.reports
        return cfg

    def schedule(self, agent: Any) -> None:
        """``Agent.extra_jobs`` hook: (re)add the cron job after every config (re)load. A report
        that was due and not written (the agent was down, or its run failed or did not start) is
        made now, once, then the schedule goes on."""
        cfg = self.config
        if agent.scheduler is None:
            return
        if cfg is None or cfg.schedule is None:
            if agent.scheduler.get_job(JOB_ID) is not None:
                agent.scheduler.remove_job(JOB_ID)
            with self._lock:
                self._due = None
                changed = self.scheduled_since is not None
                self.scheduled_since = None
            if changed:
                self._save()
            return
        trigger = cron_trigger(cfg.schedule, cfg.timezone)
        now = self.agent.clock()
        with self._lock:
            first_schedule = self.scheduled_since is None
            if first_schedule:
                # A report written before (by an agent that did not record this) proves the schedule older.
                self.scheduled_since = min(now, self.last_success) if self.last_success is not None else now
            self._due = LastDue(trigger, datetime.fromtimestamp(self.scheduled_since or now, UTC))
            # Not when it is due this very moment (the scheduler runs it) or its run is going.
            missed = self._missed(now)
            catch_up = missed if missed is not None and missed < now and not self.running else None
        if first_schedule:
            self._save()
        first: dict[str, Any] = {}
        if catch_up:
            first["next_run_time"] = datetime.fromtimestamp(now, UTC)
            log.warning("DR report due %s was not written; making it now", _stamp(catch_up))
        agent.scheduler.add_job(
            self.run,
            trigger,
            **first,
            id=JOB_ID,
            name=JOB_ID,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=MISFIRE_GRACE,
            replace_existing=True,
        )
        agent.ledger.expect(JOB_ID, trigger, first.get("next_run_time"))
        agent.skip_handlers[JOB_ID] = self.count_skipped

    def last_due(self, now: float | None = None) -> float | None:
        """When the report was last due by its schedule (Unix time), None without a schedule or
        before its first fire time. Call with ``_lock`` held."""
        if self._due is None:
            return None
        due = self._due.at(datetime.fromtimestamp(self.agent.clock() if now is None else now, UTC))
        return due.timestamp() if due is not None else None

    def _missed(self, now: float) -> float | None:
        """The last due time if no report was written after it (``_lock`` held)."""
        due = self.last_due(now)
        if due is None or (self.last_success is not None and self.last_success >= due):
            return None
        return due

    def count_skipped(self, reason: str, n: int) -> None:
        """``Agent.skip_handlers`` hook: ``n`` scheduled runs of the report did not start."""
        with self._lock:
            self.skipped[reason] = self.skipped.get(reason, 0) + n
            self.last_skipped = self.agent.clock()
        if reason == STILL_RUNNING:
            why = "the previous report run was still going"
        else:
            why = f"the agent could not start it within {MISFIRE_GRACE // 60} minutes of when it was due"
        log.warning(
            "%d scheduled DR report run(s) not started: %s; continuity_report_skipped_runs_total counts every one",
            n,
            why,
        )

    def _save(self) -> None:
        with self._lock:
            state = {
                "last_success": self.last_success,
                "last_duration": self.last_duration,
                "last_run": self.last_run,
                "last_run_ok": self.last_run_ok,
                "scheduled_since": self.scheduled_since,
            }
        self.agent.store.set_kv(KV_KEY, state)

    async def run(self) -> list[Path]:
        """Make one dated report in every configured format, as at the agent clock's now."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.agent.executor, self.run_blocking)

    def run_blocking(self) -> list[Path]:
        cfg = self.config
        if cfg is None:
            return []
        # The report machinery (model, renderers, Jinja2) loads when a report is made.
        from agent.reports.runner import generate, prune, write_dated

        loaded = self.agent.loaded
        t0 = time.monotonic()
        now = self.agent.clock()
        at = datetime.fromtimestamp(now, UTC)
        with self._lock:
            self.running = True
            self.last_run = now
        try:
            report = generate(
                loaded.config,
                at=at,
                store=self.agent.store,
                config_path=loaded.path,
                config_sha256=loaded.sha256,
                generated_at=at,
            )
            written = write_dated(report, cfg.output_dir, list(cfg.formats), at)
            prune(cfg.output_dir, retention=cfg.retention, keep_min=cfg.keep_min, now=now)
        except Exception as e:
            with self._lock:
                self.running = False
                self.last_duration = time.monotonic() - t0
                self.last_error = str(e)
                self.last_run_ok = False
            self._save()
            log.exception("DR report failed")
            return []
        with self._lock:
            self.running = False
            self.last_duration = time.monotonic() - t0
            self.last_success = self.agent.clock()
            self.last_error = None
            self.last_run_ok = True
        self._save()
        log.info("DR report written: %s", ", ".join(str(p) for p in written))
        return written

    def status_json(self) -> dict[str, Any]:
        """The report's state for /api/v1/status and the status page."""
        cfg = self.config
        now = self.agent.clock()
        job = self.agent.scheduler.get_job(JOB_ID) if self.agent.scheduler is not None else None
        nxt = getattr(job, "next_run_time", None) if job is not None else None
        with self._lock:
            due = self.last_due(now)
            missed = self._missed(now)
            out: dict[str, Any] = {
                "report": REPORT,
                "schedule": cfg.schedule if cfg else None,
                "timezone": cfg.timezone if cfg else None,
                "last_due": due,
                "next_due": nxt.timestamp() if nxt is not None else None,
                "last_run": self.last_run,
                "last_run_ok": self.last_run_ok,
                "last_success": self.last_success,
                "last_duration_seconds": self.last_duration,
                "last_error": self.last_error,
                "running": self.running,
                "skipped_runs_by_reason": dict(self.skipped),
                "last_skipped_run": self.last_skipped,
            }
            if out["schedule"] is None:
                state = "unscheduled"
            elif self.last_run_ok is False:
                state = "failed"
            elif missed is not None:
                state = "overdue" if now - missed > OVERDUE_AFTER else "due"
            else:
                state = "ok" if due is not None else "not_yet_due"
        out["state"] = state
        return out


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ReportMetrics(PromCollector):
    """Exposes the job's metrics; reads floats under a lock and works out the last fire time of the
    schedule (cached until the next), never does I/O."""

    def __init__(self, job: ReportJob) -> None:
        self.job = job

    def collect(self) -> Iterable[Metric]:
        cat = running_catalogue()
        job = self.job
        with job._lock:
            scheduled = job._due is not None
            # The outcome of the last run only while the report is scheduled (as its skipped runs):
            # a removed schedule ends DRReportFailed, as it ends DRReportOverdue.
            ok = job.last_run_ok if scheduled else None
            values = {
                "continuity_report_last_success_timestamp_seconds": job.last_success,
                "continuity_report_last_duration_seconds": job.last_duration,
                "continuity_report_last_due_timestamp_seconds": job.last_due(),
                "continuity_report_last_run_success": None if ok is None else float(ok),
            }
            skipped = dict(job.skipped)
        out = []
        for name, value in values.items():
            if value is None:
                continue
            spec = cat[name]
            m = Metric(name, spec.help, "gauge", spec.unit)
            m.add_sample(name, {"report": REPORT}, value)
            out.append(m)
        if scheduled:
            name = "continuity_report_skipped_runs_total"
            spec = cat[name]
            m = Metric(name[: -len("_total")], spec.help, "counter")
            for reason in SKIP_REASONS:
                m.add_sample(name, {"report": REPORT, "reason": reason}, float(skipped.get(reason, 0)))
            out.append(m)
        return out


# -- /reports/ -----------------------------------------------------------------------------------

PREFIX = "/reports"
_TYPES = {".html": "text/html; charset=utf-8", ".md": "text/markdown; charset=utf-8", ".json": "application/json"}


# What the report job writes (runner.write_dated): nothing else in output_dir is ever served, so
# a misplaced state database, token file or config next to the reports stays private.
_REPORT_NAME = re.compile(rf"{REPORT_PREFIX}[0-9A-Za-z][0-9A-Za-z_-]*\.(?:{'|'.join(EXTENSIONS.values())})")


def _safe_path(root: Path, rel: str) -> Path | None:
    """The report file under ``root`` that ``rel`` names, or None: only report file names, no
    ``..``, no absolute paths, no hidden files, no symlinks leaving the directory, no
    sub-directories."""
    if not rel or "\x00" in rel or "\\" in rel or "/" in rel or rel.startswith("."):
        return None
    if not _REPORT_NAME.fullmatch(rel):
        return None
    try:
        base = root.resolve(strict=True)
        p = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if p.parent != base or not p.is_file():
        return None
    return p


def _listing(root: Path) -> bytes:
    files = []
    if root.is_dir():
        for p in sorted(root.iterdir(), key=lambda p: p.name, reverse=True):
            if p.name.startswith(".") or not p.is_file() or _safe_path(root, p.name) is None:
                continue
            st = p.stat()
            files.append((p.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC).strftime("%Y-%m-%d %H:%M UTC")))
    rows = "\n".join(
        f'<tr><th scope="row"><a href="{quote(n)}">{escape.html(n)}</a></th>'
        f"<td>{size}</td><td>{escape.html(m)}</td></tr>"
        for n, size, m in files
    )
    body = rows or '<tr><td colspan="3">No reports yet.</td></tr>'
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DR reports</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>body{{font-family:sans-serif;margin:1.5rem;color:#1a1a1a}}table{{border-collapse:collapse}}
th,td{{border:1px solid #8c8c8c;padding:.25rem .5rem;text-align:left}}thead th{{background:#e8e8e8}}
a{{color:#1d4f91}}</style></head><body>
<h1>DR reports</h1>
<p><a href="/">Agent status</a></p>
<table><caption>Reports, newest first</caption>
<thead><tr><th scope="col">File</th><th scope="col">Bytes</th><th scope="col">Written</th></tr></thead>
<tbody>
{body}
</tbody></table></body></html>
"""
    return page.encode()


def reports_handler(agent: Any) -> Any:
    def handle(req: HttpRequest) -> HttpResponse:
        cfg: ReportsConfig | None = agent.loaded.config.reports
        if cfg is None or not cfg.serve:
            return HttpResponse(404, b"reports are not configured\n")
        if req.path == PREFIX:
            return HttpResponse(301, b"", headers={"Location": PREFIX + "/"})
        if not req.path.startswith(PREFIX + "/"):
            return HttpResponse(404, b"not found\n")
        rel = req.path[len(PREFIX) + 1 :]
        if rel == "":
            return HttpResponse(200, _listing(cfg.output_dir), "text/html; charset=utf-8", _HEADERS)
        p = _safe_path(cfg.output_dir, rel)
        if p is None:
            return HttpResponse(404, b"not found\n")
        try:
            data = p.read_bytes()
        except OSError:
            return HttpResponse(404, b"not found\n")
        ctype = _TYPES.get(p.suffix) or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        return HttpResponse(200, data, ctype, _HEADERS)

    return handle


_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "Cache-Control": "no-cache",
}


def install(agent: Any) -> None:
    """Hook the report job, its metrics and the /reports/ route into an Agent."""
    job = ReportJob(agent)
    agent.report_job = job
    agent.extra_jobs.append(job.schedule)
    agent.extra_metrics.append(ReportMetrics(job))
    agent.extra_status["reports"] = lambda: [job.status_json()] if job.config is not None else []
    agent.extra_routes.append(Route("GET", PREFIX, reports_handler(agent)))
