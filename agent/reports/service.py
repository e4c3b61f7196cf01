"""The agent side of reports: a cron job writing dated reports, its two metrics, and the
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
from agent.catalogue import running_catalogue
from agent.plugin import HttpRequest, HttpResponse, Route
from agent.reports.config import EXTENSIONS, REPORT_PREFIX, ReportsConfig, cron_trigger

log = logging.getLogger(__name__)

JOB_ID = "reports:dr"
KV_KEY = "reports.dr.last"
REPORT = "dr"


class ReportJob:
    """Runs the DR report on the configured cron schedule, in the agent's worker threads."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._lock = threading.Lock()
        self.last_success: float | None = None
        self.last_duration: float | None = None
        self.last_error: str | None = None
        self.running = False
        prev = agent.store.get_kv(KV_KEY)
        if isinstance(prev, dict):
            ls, ld = prev.get("last_success"), prev.get("last_duration")
            self.last_success = float(ls) if isinstance(ls, int | float) else None
            self.last_duration = float(ld) if isinstance(ld, int | float) else None

    @property
    def config(self) -> ReportsConfig | None:
        cfg: ReportsConfig | None = self.agent.loaded.config.reports
        return cfg

    def schedule(self, agent: Any) -> None:
        """``Agent.extra_jobs`` hook: (re)add the cron job after every config (re)load."""
        cfg = self.config
        if agent.scheduler is None:
            return
        if cfg is None or cfg.schedule is None:
            if agent.scheduler.get_job(JOB_ID) is not None:
                agent.scheduler.remove_job(JOB_ID)
            return
        agent.scheduler.add_job(
            self.run,
            cron_trigger(cfg.schedule, cfg.timezone),
            id=JOB_ID,
            name=JOB_ID,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=3600,
            replace_existing=True,
        )

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
            log.exception("DR report failed")
            return []
        with self._lock:
            self.running = False
            self.last_duration = time.monotonic() - t0
            self.last_success = self.agent.clock()
            self.last_error = None
            state = {"last_success": self.last_success, "last_duration": self.last_duration}
        self.agent.store.set_kv(KV_KEY, state)
        log.info("DR report written: %s", ", ".join(str(p) for p in written))
        return written


class ReportMetrics(PromCollector):
    """Exposes the job's two metrics; reads two floats under a lock, never does I/O."""

    def __init__(self, job: ReportJob) -> None:
        self.job = job

    def collect(self) -> Iterable[Metric]:
        cat = running_catalogue()
        with self.job._lock:
            values = {
                "continuity_report_last_success_timestamp_seconds": self.job.last_success,
                "continuity_report_last_duration_seconds": self.job.last_duration,
            }
        out = []
        for name, value in values.items():
            if value is None:
                continue
            spec = cat[name]
            m = Metric(name, spec.help, "gauge", spec.unit)
            m.add_sample(name, {"report": REPORT}, value)
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
    agent.extra_routes.append(Route("GET", PREFIX, reports_handler(agent)))
