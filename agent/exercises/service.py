"""The agent side of exercises: a job recomputing every exercise's status (every ``refresh``,
30 s by default, and after every write from the board), the exercise metrics read from that
snapshot, and the ``/exercise/`` board. Installed into :class:`agent.service.Agent` by
:func:`install`."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector as PromCollector

from agent import escape
from agent.catalogue import running_catalogue
from agent.exercises.config import CSRF_KEY_FILE, PREFIX, ExercisesConfig, directories
from agent.exercises.journal import ExerciseInputError, Journal, list_exercises
from agent.fileio import kept_secret
from agent.plugin import HttpRequest, HttpResponse, Route

if TYPE_CHECKING:
    from agent.exercises.status import ExerciseStatus
    from agent.exercises.web import Board

log = logging.getLogger(__name__)

JOB_ID = "exercises:refresh"


class ExerciseBoard:
    """Snapshots of every exercise's status; recomputed in the agent's worker threads."""

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.lock = threading.Lock()
        self.snapshots: dict[str, ExerciseStatus] = {}
        self.errors: dict[str, str] = {}  # exercise -> why its journal cannot be read
        self._cache: dict[str, tuple[tuple[int, int], ExerciseStatus]] = {}

    def dirs(self) -> tuple[Path | None, Path | None]:
        return directories(self.agent.loaded.config)

    @property
    def refresh_seconds(self) -> float:
        cfg: ExercisesConfig | None = getattr(self.agent.loaded.config, "exercises", None)
        return cfg.refresh if cfg is not None else 30.0

    def schedule(self, agent: Any) -> None:
        """``Agent.extra_jobs`` hook: (re)add the refresh job after every config (re)load."""
        if agent.scheduler is None:
            return
        rb, ev = self.dirs()
        if rb is None or ev is None:
            if agent.scheduler.get_job(JOB_ID) is not None:
                agent.scheduler.remove_job(JOB_ID)
            with self.lock:
                self.snapshots, self.errors = {}, {}
            return
        agent.scheduler.add_job(
            self.run,
            "interval",
            seconds=self.refresh_seconds,
            id=JOB_ID,
            name=JOB_ID,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            replace_existing=True,
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.agent.executor, self.refresh)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.agent.clock(), UTC)

    def compute(self, name: str, at: datetime | None = None) -> ExerciseStatus:
        """One exercise's status now, or as at ``at`` (raises ExerciseInputError for a journal that
        does not verify)."""
        # The status code (replay, critical path, JSON fields) loads with the first exercise.
        from agent.exercises.model import load_estate
        from agent.exercises.status import status

        rb, ev = self.dirs()
        if rb is None or ev is None:
            raise ExerciseInputError("no runbooks or evidence directory configured (exercises:)")
        estate = load_estate(rb)
        j = Journal.open(ev, name)
        entries = j.read()
        t0 = datetime.fromisoformat(entries[0]["at"]) if entries else self.now()
        return status(name, entries, estate, at if at is not None else max(self.now(), t0))

    def refresh(self, only: str | None = None) -> None:
        rb, ev = self.dirs()
        if rb is None or ev is None:
            return
        names = [only] if only else list_exercises(ev)
        snaps: dict[str, ExerciseStatus] = {}
        errors: dict[str, str] = {}
        for name in names:
            try:
                st = Journal.open(ev, name).path.stat()
                key = (st.st_size, st.st_mtime_ns)
                cached = self._cache.get(name)
                if cached is not None and cached[0] == key and cached[1].finished:
                    snaps[name] = cached[1]
                    continue
                snap = self.compute(name)
                self._cache[name] = (key, snap)
                snaps[name] = snap
            except (ExerciseInputError, OSError) as e:
                errors[name] = str(e)
                log.warning("exercise %s: %s", name, e)
            except Exception:
                log.exception("exercise %s: status failed", name)
                errors[name] = "internal error (see the agent log)"
        with self.lock:
            if only:
                self.snapshots.pop(only, None)
                self.errors.pop(only, None)
                self.snapshots.update(snaps)
                self.errors.update(errors)
            else:
                self.snapshots, self.errors = snaps, errors


class ExerciseMetrics(PromCollector):
    """The exercise metrics from the board's snapshots; no I/O."""

    def __init__(self, board: ExerciseBoard) -> None:
        self.board = board

    def collect(self) -> Iterable[Metric]:
        cat = running_catalogue()
        with self.board.lock:
            snaps = dict(self.board.snapshots)
        now = self.board.agent.clock()
        ms: dict[str, Metric] = {}

        def add(name: str, labels: dict[str, str], value: float) -> None:
            if name not in ms:
                spec = cat[name]
                ms[name] = Metric(name, spec.help, spec.type, spec.unit)
            ms[name].add_sample(name, labels, value)

        if not snaps:
            return []
        from agent.exercises.status import STEP_STATES  # loaded with the snapshots' status

        for name, st in sorted(snaps.items()):
            ex = {"exercise": name}
            add("continuity_exercise_active", ex, 0.0 if st.finished else 1.0)
            if st.finished:
                continue
            add("continuity_exercise_elapsed_seconds", ex, max(0.0, now - st.declared_at.timestamp()))
            add("continuity_exercise_projected_seconds", ex, st.projected_seconds)
            add("continuity_exercise_objective_seconds", ex, st.objective_seconds)
            add("continuity_exercise_late_steps", ex, float(len(st.late_steps)))
            for sp in st.systems:
                rl = {"exercise": name, "runbook": sp.runbook}
                add("continuity_exercise_system_restored", rl, 1.0 if sp.state == "restored" else 0.0)
                for state in STEP_STATES:
                    n = sum(1 for s in sp.steps if s.state == state)
                    add("continuity_exercise_steps", {**rl, "state": state}, float(n))
        return list(ms.values())


class BoardPages:
    """The /exercise/ pages. The form (CSRF) key is kept in the state directory, so a form that was
    open across an agent restart (at 3 a.m., half typed) still goes through; without one it lives in
    memory. It is read (or made) at start; the pages' code (:mod:`agent.exercises.web`) loads on the
    first request."""

    def __init__(self, agent: Any, board: ExerciseBoard) -> None:
        self.agent = agent
        self.board = board
        state_dir = agent.loaded.config.agent.state_dir
        self.secret, where = kept_secret(Path(state_dir) / CSRF_KEY_FILE if state_dir else None)
        if where == "memory" and state_dir:
            logging.getLogger("agent.exercises.web").warning(  # the pages' logger, as ever
                "exercise board: cannot keep the form key in %s; forms open across a restart will be refused",
                escape.log(str(state_dir)),
            )
        self._lock = threading.Lock()
        self._pages: Board | None = None

    def pages(self) -> Board:
        with self._lock:
            if self._pages is None:
                from agent.exercises import web

                self._pages = web.Board(self.agent, self.board, self.secret)
            return self._pages

    def get(self, req: HttpRequest) -> HttpResponse:
        return self.pages().get(req)

    def post(self, req: HttpRequest) -> HttpResponse:
        return self.pages().post(req)


def install(agent: Any) -> None:
    """Hook the refresh job, the metrics and the /exercise/ board into an Agent."""
    board = ExerciseBoard(agent)
    agent.exercise_board = board
    agent.extra_jobs.append(board.schedule)
    agent.extra_metrics.append(ExerciseMetrics(board))
    pages = BoardPages(agent, board)
    # POSTs stream: an upload is read as it arrives, never whole into memory.
    agent.extra_routes.extend([Route("GET", PREFIX, pages.get), Route("POST", PREFIX, pages.post, stream=True)])
