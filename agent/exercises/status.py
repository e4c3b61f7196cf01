"""Where a running exercise stands at a moment, and where it is heading.

For every system: waiting on dependencies / ready / in progress / restored / failed; the steps
ready now; steps running longer than their ``expected_duration``; and a projection over the
dependency graph: done steps as measured, a running step ends at its planned end (or now, if
that has passed), every other step starts when its ``after`` steps end, its system's
dependencies in the exercise are restored, and not before now. A system is restored when its
last step ends (its measured restore once recorded). The estate projection is the latest
system's, its critical path the chain of dependencies that gated it. Dependencies on systems
outside the exercise are assumed available (as ``evidence verify`` does).

Offsets are seconds from T0 (the start entry's ``at``).
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from agent.evidence import Estate
from agent.evidence.critical_path import planned_duration
from agent.evidence.verifier import fmt_hours
from agent.exercises.journal import ExerciseInputError, iso
from agent.exercises.model import ExerciseLog, SystemLog, replay
from agent.jsonfields import fields_json

SystemState = Literal["waiting", "ready", "in_progress", "restored", "failed"]
StepState = Literal["waiting", "ready", "in_progress", "done", "failed"]
SYSTEM_STATES: tuple[str, ...] = ("waiting", "ready", "in_progress", "restored", "failed")
STEP_STATES: tuple[str, ...] = ("waiting", "ready", "in_progress", "done", "failed")
SYSTEM_LABELS = {
    "waiting": "waiting on dependencies",
    "ready": "ready",
    "in_progress": "in progress",
    "restored": "restored",
    "failed": "failed",
}


def _seconds(*offsets: str) -> dict[str, str]:
    """JSON keys of offsets from T0: the field name with its unit."""
    return {f: f"{f}_seconds" for f in offsets}


@dataclass(frozen=True)
class StepStatus:
    runbook: str
    id: str
    title: str
    state: StepState
    expected_seconds: float
    operator: str | None
    started_offset: float | None  # measured, from T0
    ended_offset: float | None  # measured
    projected_start_offset: float
    projected_end_offset: float
    late: bool  # running longer than expected_duration

    def to_json(self) -> dict[str, Any]:
        offsets = _seconds("started_offset", "ended_offset", "projected_start_offset", "projected_end_offset")
        return fields_json(self, rename=offsets)


@dataclass(frozen=True)
class SystemProgress:
    runbook: str
    name: str
    tier: int
    state: SystemState
    depends_on: tuple[str, ...]  # in this exercise
    planned_seconds: float
    rto_seconds: float
    restored_offset: float | None
    projected_restore_offset: float
    steps: tuple[StepStatus, ...]
    validations: dict[str, str]  # id -> pass | fail
    signed_off_by: str | None
    validation_ids: tuple[str, ...] = ()  # every validation of the runbook
    artefacts: tuple[str, ...] = ()  # paths (relative to the evidence directory) attached so far, for the board

    def to_json(self) -> dict[str, Any]:
        offsets = _seconds("restored_offset", "projected_restore_offset")
        return {
            **fields_json(self, rename=offsets, omit=("steps", "validation_ids", "artefacts")),
            "steps": [s.to_json() for s in self.steps],
        }


@dataclass(frozen=True)
class Warning:
    rule: str
    runbook: str
    step: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "runbook": self.runbook, "step": self.step, "message": self.message}


@dataclass(frozen=True)
class ExerciseStatus:
    name: str
    type: str
    declared_at: datetime
    at: datetime
    finished: bool
    elapsed_seconds: float
    objective_seconds: float
    projected_seconds: float
    critical_path: tuple[str, ...]
    systems: tuple[SystemProgress, ...]  # in dependency order
    warnings: tuple[Warning, ...]
    open_actions: tuple[dict[str, Any], ...]
    participants: tuple[tuple[str, str], ...]

    @property
    def on_track(self) -> bool:
        return self.projected_seconds <= self.objective_seconds

    @property
    def ready_steps(self) -> list[StepStatus]:
        return [s for sp in self.systems for s in sp.steps if s.state == "ready"]

    @property
    def late_steps(self) -> list[StepStatus]:
        return [s for sp in self.systems for s in sp.steps if s.late]

    def system(self, runbook: str) -> SystemProgress | None:
        return next((s for s in self.systems if s.runbook == runbook), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "exercise": self.name,
            "type": self.type,
            "declared_at": iso(self.declared_at),
            "at": iso(self.at),
            "finished": self.finished,
            "elapsed_seconds": self.elapsed_seconds,
            "objective_seconds": self.objective_seconds,
            "projected_seconds": self.projected_seconds,
            "on_track": self.on_track,
            "critical_path": list(self.critical_path),
            "ready_steps": [f"{s.runbook}/{s.id}" for s in self.ready_steps],
            "late_steps": [f"{s.runbook}/{s.id}" for s in self.late_steps],
            "warnings": [w.to_json() for w in self.warnings],
            "open_actions": [dict(a) for a in self.open_actions],
            "participants": [{"name": n, "role": r} for n, r in self.participants],
            "systems": [s.to_json() for s in self.systems],
        }


def _order(graph: dict[str, list[str]]) -> list[str]:
    ts = graphlib.TopologicalSorter({k: [d for d in v if d in graph] for k, v in graph.items()})
    try:
        return list(ts.static_order())
    except graphlib.CycleError as e:
        raise ExerciseInputError(f"depends_on forms a cycle: {' -> '.join(e.args[1])}") from None


def _system(
    log: ExerciseLog,
    sl: SystemLog,
    deps: list[str],
    restore: dict[str, float],
    restored_by: dict[str, float | None],
    now: float,
    warnings: list[Warning],
) -> SystemProgress:
    rb = sl.runbook
    t0 = log.declared_at

    def off(t: datetime | None) -> float | None:
        return (t - t0).total_seconds() if t is not None else None

    gate = max((restore[d] for d in deps), default=0.0)
    deps_restored = all(restored_by[d] is not None for d in deps)
    steps_graph = {s.id: list(s.after) for s in rb.recovery_steps}
    order = _order(steps_graph)
    end: dict[str, float] = {}
    out: dict[str, StepStatus] = {}
    for sid in order:
        spec = rb.step(sid)
        assert spec is not None
        a = sl.latest(sid)
        after_done = all(sl.done(x) is not None for x in spec.after)
        exp = spec.expected_duration
        started, ended = (off(a.started_at), off(a.ended_at)) if a is not None else (None, None)
        state: StepState
        late = False
        if a is not None and a.result == "ok":
            state = "done"
            assert started is not None and ended is not None
            ps, pe = started, ended
        elif a is not None and a.result is None:
            state = "in_progress"
            assert started is not None
            ps, pe = started, max(started + exp, now)
            late = now - started > exp
        else:
            state = "failed" if a is not None else ("ready" if after_done and deps_restored else "waiting")
            ps = max([now, gate, *(end[x] for x in spec.after)])
            pe = ps + exp
        end[sid] = pe
        out[sid] = StepStatus(
            rb.id, sid, spec.title, state, exp, a.operator if a else None, started, ended, ps, pe, late
        )
        # dependency_order: every attempt that started before what it needs had finished.
        for att in (x for x in sl.attempts if x.step == sid):
            for x in spec.after:
                prev = [p for p in sl.attempts if p.step == x and p.result == "ok" and p.ended_at is not None]
                if not prev or min(p.ended_at for p in prev if p.ended_at) > att.started_at:
                    warnings.append(
                        Warning(
                            "dependency_order",
                            rb.id,
                            sid,
                            f"{rb.id}/{sid} started at {iso(att.started_at)} before step {x!r}, "
                            "which it comes after, had finished",
                        )
                    )
            for d in deps:
                when = log.systems[d].restored_at
                if when is None or when > att.started_at:
                    warnings.append(
                        Warning(
                            "dependency_order",
                            rb.id,
                            sid,
                            f"{rb.id}/{sid} started at {iso(att.started_at)} before {d} was restored"
                            + (f" (at {iso(when)})" if when is not None else ""),
                        )
                    )
    restored = off(sl.restored_at)
    projected = restored if restored is not None else max([now, gate, *end.values()])
    states = [s.state for s in out.values()]
    sstate: SystemState
    if restored is not None:
        sstate = "restored"
    elif "failed" in states and "in_progress" not in states:
        sstate = "failed"
    elif sl.attempts:
        sstate = "in_progress"
    else:
        sstate = "ready" if deps_restored else "waiting"
    return SystemProgress(
        runbook=rb.id,
        name=rb.name,
        tier=rb.tier,
        state=sstate,
        depends_on=tuple(deps),
        planned_seconds=planned_duration(rb)[0],
        rto_seconds=rb.objectives.rto,
        restored_offset=restored,
        projected_restore_offset=projected,
        steps=tuple(out[s.id] for s in rb.recovery_steps),
        validations={k: v[0] for k, v in sl.validations.items()},
        signed_off_by=sl.sign_off[0] if sl.sign_off else None,
        validation_ids=tuple(v.id for v in rb.validation),
        artefacts=tuple(str(a.get("path", "")) for a in sl.artefacts),
    )


def status(name: str, entries: list[dict[str, Any]], estate: Estate, at: datetime) -> ExerciseStatus:
    """The exercise as the journal stands at ``at`` (events after ``at`` are not counted)."""
    log = replay(entries, estate, until=at)
    t0 = log.declared_at
    if at < t0:
        raise ExerciseInputError(f"--at {iso(at)} is before the exercise was declared ({iso(t0)})")
    now = (at - t0).total_seconds()
    graph = {rid: [d for d in sl.runbook.depends_on if d in log.systems] for rid, sl in log.systems.items()}
    restore: dict[str, float] = {}
    restored_by = {
        rid: (sl.restored_at - t0).total_seconds() if sl.restored_at else None for rid, sl in log.systems.items()
    }
    warnings: list[Warning] = []
    systems: dict[str, SystemProgress] = {}
    for rid in _order(graph):
        sp = _system(log, log.systems[rid], graph[rid], restore, restored_by, now, warnings)
        systems[rid] = sp
        restore[rid] = sp.projected_restore_offset
    path: list[str] = []
    if restore:
        cur: str | None = max(restore, key=lambda k: (restore[k], k))
        while cur is not None:
            path.append(cur)
            cur = max(graph[cur], key=lambda k: (restore[k], k)) if graph[cur] else None
    ordered = sorted(systems.values(), key=lambda s: (_depth(s.runbook, graph), s.tier, s.runbook))
    actions = tuple(
        {
            "id": action_id(name, e["seq"]),
            "runbook": e["runbook"],
            "description": e["description"],
            "owner": e["owner"],
            "due": e["due"],
        }
        for sl in log.systems.values()
        for e in sl.actions
    )
    return ExerciseStatus(
        name=name,
        type=log.type,
        declared_at=t0,
        at=at,
        finished=log.finished,
        elapsed_seconds=now,
        objective_seconds=estate.settings.objective,
        projected_seconds=max(restore.values(), default=now),
        critical_path=tuple(reversed(path)),
        systems=tuple(ordered),
        warnings=tuple(warnings),
        open_actions=actions,
        participants=tuple(log.participants),
    )


def _depth(rid: str, graph: dict[str, list[str]], seen: frozenset[str] = frozenset()) -> int:
    if rid in seen:
        return 0
    return 1 + max((_depth(d, graph, seen | {rid}) for d in graph[rid]), default=-1)


def action_id(exercise: str, seq: int) -> str:
    """The evidence record's issue id for the action recorded at ``seq``."""
    return f"{exercise[:50]}-A{seq}"


def render_text(st: ExerciseStatus) -> str:
    h = fmt_hours
    lines = [
        f"exercise {st.name} ({st.type}){' FINISHED' if st.finished else ''}: declared {iso(st.declared_at)}; "
        f"at {iso(st.at)}, {h(st.elapsed_seconds)} elapsed",
        "",
        f"{'system':22} {'state':24} {'restored':>9} {'projected':>9} {'RTO':>5}",
    ]
    for s in st.systems:
        rest = h(s.restored_offset) if s.restored_offset is not None else "-"
        lines.append(
            f"{s.runbook:22} {SYSTEM_LABELS[s.state]:24} {rest:>9} {h(s.projected_restore_offset):>9} "
            f"{h(s.rto_seconds):>5}"
        )
    lines.append("")
    ready = ", ".join(f"{s.runbook}/{s.id}" for s in st.ready_steps) or "-"
    lines.append(f"ready now: {ready}")
    for ls in st.late_steps:
        run = st.elapsed_seconds - (ls.started_offset or 0.0)
        lines.append(f"LATE    {ls.runbook}/{ls.id}: running {h(run)}, expected {h(ls.expected_seconds)}")
    for w in st.warnings:
        lines.append(f"WARNING {w.rule}: {w.message}")
    lines.append(f"open actions: {len(st.open_actions)}")
    verdict = "ON TRACK" if st.on_track else "OVER THE OBJECTIVE"
    lines.append(
        f"projected estate completion {h(st.projected_seconds)} (objective {h(st.objective_seconds)}): {verdict}; "
        f"critical path: {' -> '.join(st.critical_path) or '-'}"
    )
    return "\n".join(lines)
