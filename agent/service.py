"""The running agent: builds collectors from config, schedules them, serves HTTP, reloads."""

from __future__ import annotations

import asyncio
import importlib
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from apscheduler.events import SchedulerEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent import __version__
from agent.access import FailureLimiter, exposure_warnings, is_loopback
from agent.catalogue import SKIP_REASONS, STILL_RUNNING
from agent.config import ConfigError, LoadedConfig, load_config, parse_listen_address
from agent.configtypes import cron_trigger
from agent.exposition import AgentStatus, make_registry, return_large_blocks
from agent.http import AuthFailureMetrics, HttpServer, WebApp, use_web_config
from agent.plugin import Collector, CollectorContext, MetricSpec, Route, Task
from agent.registry import collector
from agent.registry import routes as kind_routes
from agent.runner import run_task
from agent.schedule import EVENTS, RunLedger
from agent.state import StateStore

if TYPE_CHECKING:
    from agent.webconfig import WebConfig, WebConfigSource

log = logging.getLogger(__name__)

JobKey = tuple[str, str]  # (target, task)


class _DropCancelled(logging.Filter):
    """A run cancelled at shutdown (or a reload) is abandoned, not failed: APScheduler would log it
    as an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


# APScheduler 3.11's warning for each run it skips, by the logger that logs it: the unformatted
# format string (LogRecord.msg) of the call in schedulers/base.py ``_process_jobs`` (the previous run
# is still going: EVENT_JOB_MAX_INSTANCES) and in executors/base.py ``run_coroutine_job`` (the run
# started more than its grace time late: EVENT_JOB_MISSED). The agent's executor is the "default" one.
# tests/e2e/test_scheduling.py drives the real scheduler into both and fails if one of these lines
# gets through, so an APScheduler that words them differently is caught there, not in the field.
_SKIP_WARNINGS = {
    "apscheduler.scheduler": 'Execution of job "%s" skipped: maximum number of running instances reached (%d)',
    "apscheduler.executors.default": 'Run time of job "%s" was missed by %s',
}


class _DropSkipWarnings(logging.Filter):
    """APScheduler's own warning for every run it skips or misfires: the agent counts those runs
    (continuity_target_skipped_runs_total; the report job's continuity_report_skipped_runs_total)
    and logs them once in a while per target (each report run) instead.

    Matched on the record's structure (logger, level, unformatted format string), never on the
    formatted text, so a job's name can neither hide a warning nor fake one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and _SKIP_WARNINGS.get(record.name) == record.msg)


logging.getLogger("apscheduler.executors.default").addFilter(_DropCancelled())
for _name in _SKIP_WARNINGS:
    logging.getLogger(_name).addFilter(_DropSkipWarnings())

# Skipped runs are logged at most this often (seconds) per target whose previous run was still
# going, and for all the late ones together (an overloaded agent is late on every target); the
# counter has every one.
SKIP_LOG_EVERY = 300.0
# A target that skipped a run this recently (seconds) is behind its schedule on the status page.
BEHIND_WINDOW = 900.0

# Modules with ``install(agent)`` adding non-target jobs, metrics collectors and HTTP routes.
AGENT_EXTENSIONS: tuple[str, ...] = ("agent.reports.service", "agent.exercises.service")


def build_collectors(loaded: LoadedConfig, ctx: CollectorContext) -> dict[str, Collector]:
    cfg = loaded.config
    out: dict[str, Collector] = {}
    for t in cfg.targets:
        cls = collector(t.kind)
        out[t.name] = cls(t, ctx, interval=cfg.interval_of(t), timeout=cfg.timeout_of(t))
    return out


def job_id(key: JobKey) -> str:
    return f"{key[0]}:{key[1]}" if key[1] else key[0]


class Agent:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        listen: str | None = None,
        clock: Callable[[], float] = time.time,
        ssl_context: Any = None,
        web_config: Any = None,
    ) -> None:
        self.loaded = loaded
        self.listen = listen or loaded.config.agent.listen_address
        self.clock = clock
        # agent.webconfig.WebConfig from --web.config.file: TLS, basic auth, headers.
        self.web_config = web_config
        self.ssl_context = ssl_context if ssl_context is not None else getattr(web_config, "ssl_context", None)
        cfg = loaded.config
        return_large_blocks()  # before the state writer and the worker threads start
        self.store = StateStore(cfg.agent.state_dir, retention=cfg.agent.retention, clock=clock)
        self.executor = ThreadPoolExecutor(max_workers=cfg.agent.max_workers, thread_name_prefix="collect")
        self.shared: dict[str, Any] = {}
        self.collectors: dict[str, Collector] = {}
        self.dynamic_metrics: dict[str, MetricSpec] = {}
        self.tasks: dict[JobKey, tuple[Collector, Task]] = {}
        self.running: set[JobKey] = set()
        self.ledger = RunLedger()
        self._job_targets: dict[str, str] = {}  # job id -> target, for the target jobs scheduled now
        # Per target (still_running) or "" (late): when last logged; runs and targets since.
        self._skip_log: dict[str, tuple[float, int, set[str]]] = {}
        self._status = AgentStatus(site=cfg.agent.site, reload_ok=True, reload_success_time=clock())
        self.scheduler: AsyncIOScheduler | None = None
        self.http: HttpServer | None = None
        self.web: WebApp | None = None
        self._web_source: WebConfigSource | None = None
        self._ready = False
        self.extra_jobs: list[Callable[[Agent], None]] = []  # hooks adding non-target jobs (reports)
        self.extra_metrics: list[Any] = []  # prometheus_client collectors registered beside the state's
        self.extra_routes: list[Route] = []  # HTTP routes not owned by a collector kind
        # Job id -> what counts its scheduled runs that did not start, for non-target jobs
        # (reports) the run ledger follows: called with (reason, count).
        self.skip_handlers: dict[str, Callable[[str, int], None]] = {}
        # Key of /api/v1/status -> what it shows there (the report job's state).
        self.extra_status: dict[str, Callable[[], Any]] = {}
        for mod in AGENT_EXTENSIONS:
            importlib.import_module(mod).install(self)

    # -- context -----------------------------------------------------------------------------------
    def _context(self) -> CollectorContext:
        cfg = self.loaded.config
        return CollectorContext(
            auths=cfg.auths,
            executor=self.executor,
            state_dir=cfg.agent.state_dir,
            clock=self.clock,
            shared=self.shared,
            store=self.store,
            config=cfg,
        )

    def status(self) -> AgentStatus:
        return self._status

    def _set_targets(self) -> None:
        cfg = self.loaded.config
        st = AgentStatus(
            site=cfg.agent.site,
            start_time=self._status.start_time,
            reload_ok=self._status.reload_ok,
            reload_success_time=self._status.reload_success_time,
            targets={t.name: (t.kind, cfg.site_of(t)) for t in cfg.targets},
        )
        self._status = st

    def status_json(self) -> dict[str, Any]:
        from agent import outcomes  # loaded with the first status request, not at start

        snap = self.store.snapshot()
        st = self._status
        now = self.clock()
        targets = []
        by_target: dict[str, tuple[str, dict[str, Any]]] = {}
        for name, (kind, site) in sorted(st.targets.items()):
            latest = snap.latest.get((name, ""))
            ok = snap.last_success.get((name, ""))
            state = "pending" if latest is None else ("up" if latest.ok else "down")
            tasks = []
            for (tname, task), r in sorted(snap.latest.items()):
                if tname == name and task:
                    last = snap.last_success.get((tname, task))
                    tasks.append(
                        {
                            "task": task,
                            "ok": r.ok,
                            "result": r.info.get("result"),  # restore test: pass, fail or not_run
                            "started": r.started,
                            "last_success": last.finished if last else None,
                            "reason": r.reason,
                            "message": r.message,
                        }
                    )
            results = {task: r for (tname, task), r in snap.latest.items() if tname == name}
            by_target[name] = (kind, results)
            targets.append(
                {
                    "name": name,
                    "kind": kind,
                    "site": site,
                    "state": state,
                    "outcome": outcomes.outcome(results).as_json(),
                    # What the collector noted beside its samples (sizes, sysName, restart_detected,
                    # notes): the scalar facts; lists and tables stay in collect-once.
                    "details": {
                        k: v
                        for k, v in (latest.info.items() if latest else ())
                        if isinstance(v, str | int | float | bool) and v is not None
                    },
                    "last_run": latest.started if latest else None,
                    "last_duration_seconds": latest.duration if latest else None,
                    "last_success": ok.finished if ok else None,
                    "last_error": (
                        latest.message
                        if latest and not latest.ok
                        else "; ".join(m for _, m in latest.partial_errors)
                        if latest
                        else None
                    )
                    or None,
                    "last_error_reason": latest.reason if latest and not latest.ok else None,
                    "errors": {r: c for (t, r), c in snap.errors.items() if t == name},
                    "skipped_runs": sum(snap.skipped.get((name, r), 0) for r in SKIP_REASONS),
                    "skipped_runs_by_reason": {r: snap.skipped.get((name, r), 0) for r in SKIP_REASONS},
                    "last_skipped_run": snap.last_skipped.get(name),
                    # Runs not started in the window of the AgentCollectionSkipping alert.
                    "behind_schedule": now - snap.last_skipped.get(name, -BEHIND_WINDOW) < BEHIND_WINDOW,
                    "tasks": tasks,
                }
            )
        return {
            "version": __version__,
            "site": st.site,
            "start_time": st.start_time,
            "config": {
                "path": str(self.loaded.path),
                "sha256": self.loaded.sha256,
                "last_reload_successful": st.reload_ok,
                "last_reload_success_time": st.reload_success_time,
            },
            "state_db_healthy": snap.db_healthy,
            "summary": outcomes.summary(by_target, st.reload_ok),
            "targets": targets,
            **{key: show() for key, show in self.extra_status.items()},
        }

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.scheduler = AsyncIOScheduler(event_loop=loop, timezone="UTC")
        self.scheduler.add_listener(self._on_schedule_event, EVENTS)
        self._install(self.loaded)
        # The scheduler starts after the HTTP server, so probes of the agent itself find it up.
        registry = make_registry(self.store, self.status, lambda: self.dynamic_metrics)
        for extra in self.extra_metrics:
            registry.register(extra)
        self.web = WebApp(registry, self.status_json, lambda: self._ready)
        self.web.set_routes(self._routes())
        self.web.limiter = FailureLimiter()
        self.web.own_auth_limiter = FailureLimiter()
        registry.register(AuthFailureMetrics(self.web))
        host, port = parse_listen_address(self.listen)
        self.http = HttpServer(
            self.web,
            host,
            port,
            self.ssl_context,
            allowed_sans=getattr(self.web_config, "allowed_sans", None),
        )
        if self.web_config is not None:
            from agent.webconfig import WebConfigSource

            self._web_source = WebConfigSource(self.web_config, on_error=self._web_config_invalid)
            use_web_config(self.web, self.http, self._web_source, also=self._web_config_changed)
        self.http.start()
        self.scheduler.start()
        self._ready = True
        log.info(
            "continuity-agent %s listening on %s:%d with %d targets",
            __version__,
            host,
            self.http.port,
            len(self.collectors),
        )
        self._log_exposure(host)

    def _log_exposure(self, host: str) -> None:
        wc = self.web_config
        if wc is None:
            log.info(
                "no --web.config.file: plain HTTP without authentication%s",
                " (loopback only)" if is_loopback(host) else "",
            )
        else:
            log.info(
                "web config %s: TLS %s, basic auth %s",
                wc.path,
                "on" if wc.tls else "off",
                f"on ({len(wc.model.basic_auth_users or {})} users)" if wc.auth else "off",
            )
            for w in wc.warnings:
                log.warning("%s", w)
        for w in exposure_warnings(host, wc):
            log.warning("%s", w)

    def _routes(self) -> list[Route]:
        return [*self.extra_routes, *kind_routes(self)]

    def _install(self, loaded: LoadedConfig) -> None:
        assert self.scheduler is not None
        self.loaded = loaded
        self.collectors = build_collectors(loaded, self._context())
        # Config-defined metrics of the targets now running: rebuilt on every load, so a reload
        # leaves no stale declarations behind.
        self.dynamic_metrics = {s.name: s for c in self.collectors.values() for s in c.dynamic_metrics()}
        self.tasks = {}
        self._job_targets = {}
        now = datetime.now().astimezone()
        rng = random.Random()
        for name, col in self.collectors.items():
            for task in col.tasks():
                key = (name, task.name)
                self.tasks[key] = (col, task)
                first: dict[str, Any] = {}
                self._job_targets[job_id(key)] = name
                if task.cron:
                    trigger: Any = cron_trigger(task.cron)
                    grace = 3600
                else:
                    start = datetime.fromtimestamp(self._first_run(key, task, now.timestamp(), rng)).astimezone()
                    trigger = IntervalTrigger(seconds=task.interval, start_date=start)
                    # Explicit first run: otherwise a job added before the scheduler starts gets its
                    # first run computed at start, and a start_date already past by then is rounded
                    # up to a whole interval later (a 6-hourly task would wait 6 hours).
                    first["next_run_time"] = start
                    grace = max(1, int(task.interval))
                self.scheduler.add_job(
                    self._run_job,
                    trigger,
                    **first,
                    args=(key,),
                    id=job_id(key),
                    name=job_id(key),
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=grace,
                    replace_existing=True,
                )
                self.ledger.expect(job_id(key), trigger, first.get("next_run_time"))
        self.ledger.keep(self._job_targets)
        for hook in self.extra_jobs:
            hook(self)
        self._set_targets()
        self.store.forget(self.collectors)

    def _first_run(self, key: JobKey, task: Task, now: float, rng: random.Random) -> float:
        """When a task first runs. A result stored before a restart keeps its cadence (a daily
        integrity check does not rerun because the agent restarted); otherwise soon, spread by
        the start jitter so targets do not all fire at once."""
        last = self.store.latest(*key)
        if last is not None and now < last.started + task.interval:
            return last.started + task.interval
        spread = min(task.interval, 10.0) * self.loaded.config.defaults.start_jitter
        return now + rng.uniform(0, spread)

    def _on_schedule_event(self, event: SchedulerEvent) -> None:
        """Count each scheduled run of a target (or of a job in ``skip_handlers``) that did not
        start, once, with its reason."""
        for jid, reason, n in self.ledger.on_event(event):
            target = self._job_targets.get(jid)
            if target is None:
                handler = self.skip_handlers.get(jid)
                if handler is not None:
                    handler(reason, n)
                continue
            self.store.count_skipped(target, reason, n)
            self._log_skipped(jid, reason, n)

    def _log_skipped(self, jid: str, reason: str, n: int) -> None:
        key = jid if reason == STILL_RUNNING else ""
        now = time.monotonic()
        last, runs, jobs = self._skip_log.get(key, (now - SKIP_LOG_EVERY, 0, set()))
        runs += n
        jobs.add(jid)
        if now - last < SKIP_LOG_EVERY:
            self._skip_log[key] = (last, runs, jobs)
            return
        self._skip_log[key] = (now, 0, set())
        if reason == STILL_RUNNING:
            log.warning(
                "%s: %d scheduled run(s) not started: the previous run was still going (its collection "
                "takes as long as its interval); continuity_target_skipped_runs_total counts every one",
                jid,
                runs,
            )
        else:
            log.warning(
                "%d scheduled run(s) of %d target(s) (%s) not started within one interval of when they "
                "were due: the agent is overloaded or was paused; continuity_target_skipped_runs_total "
                "counts every one",
                runs,
                len(jobs),
                ", ".join(sorted(jobs)[:5]) + (", ..." if len(jobs) > 5 else ""),
            )

    async def _run_job(self, key: JobKey) -> None:
        entry = self.tasks.get(key)
        if entry is None:
            return
        col, task = entry
        self.running.add(key)
        try:
            result = await run_task(col, task, site=self.loaded.config.site_of(col.target), clock=self.clock)
        finally:
            self.running.discard(key)
        if self.tasks.get(key, (None,))[0] is col:  # not replaced by a reload meanwhile
            self.store.put(result)
            if not result.ok:
                log.warning("%s failed (%s): %s", job_id(key), result.reason, result.message)

    async def run_now(self, target: str) -> None:
        """Run every task of one target immediately (tests, collect-once)."""
        for key in [k for k in self.tasks if k[0] == target]:
            await self._run_job(key)

    async def reload(self, path: str | None = None) -> bool:
        """Load the config and web config again (SIGHUP). An invalid file is rejected and the old
        one keeps running; ``continuity_config_last_reload_successful`` says whether both loaded.
        Never raises: it runs as a task nobody awaits."""
        try:
            return await self._reload(path)
        except Exception:
            log.exception("config reload failed; the old config keeps running")
            self._status = AgentStatus(**{**self._status.__dict__, "reload_ok": False})
            return False

    async def _reload(self, path: str | None) -> bool:
        web_ok = self._reload_web_config()
        try:
            loaded = load_config(path or self.loaded.path)
        except ConfigError as e:
            self._status = AgentStatus(**{**self._status.__dict__, "reload_ok": False})
            for issue in e.issues:
                log.error("config reload rejected: %s", issue)
            return False
        for w in loaded.warnings:
            log.warning("%s", w)
        old = list(self.collectors.values())
        assert self.scheduler is not None
        self.scheduler.remove_all_jobs()
        self._install(loaded)
        if web_ok:
            self._status = AgentStatus(
                **{**self._status.__dict__, "reload_ok": True, "reload_success_time": self.clock()}
            )
        else:
            self._status = AgentStatus(**{**self._status.__dict__, "reload_ok": False})
        for c in old:
            try:
                await c.close()
            except Exception:
                log.exception("error closing collector %s", c.target.name)
        log.info("config reloaded from %s: %d targets", loaded.path, len(self.collectors))
        return True

    def _reload_web_config(self) -> bool:
        """SIGHUP: read --web.config.file again now (False when it is invalid: the reload metric
        says so). Changed files are also picked up without a signal, on the next connection or
        request."""
        if self._web_source is not None:
            self._web_source.get(force=True)
            return self._web_source.valid
        return True

    def _web_config_invalid(self, message: str) -> None:
        """A changed web config that does not load: the last valid one stays in force, and the
        reload metric says the files on disk are not what runs (until a reload succeeds)."""
        self._status = AgentStatus(**{**self._status.__dict__, "reload_ok": False})

    def _web_config_changed(self, wc: WebConfig) -> None:
        self.web_config = wc

    async def stop(self) -> None:
        self._ready = False
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.http is not None:
            self.http.stop()
        for c in self.collectors.values():
            try:
                await c.close()
            except Exception:
                log.exception("error closing collector %s", c.target.name)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()
