"""What a journal says happened: its entries replayed (amends applied, voided entries dropped) in
the order the events happened, checked against the runbooks.

:func:`replay` is the one place that decides whether a journal makes sense; writers call it with
the candidate entry added (through :func:`checker`), so a journal only ever holds entries that
replay cleanly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.evidence import Estate, EvidenceInputError, Runbook, load_runbooks
from agent.exercises.journal import ExerciseInputError, parse_time

TYPES = ("full_recovery", "partial_recovery", "tabletop")
STEP_STATES = ("start", "done", "failed")
# Which fields an amend may change, per action.
AMENDABLE: dict[str, tuple[str, ...]] = {
    "start": ("at",),
    "step": ("at", "operator", "note"),
    "restored": ("at",),
    "validate": ("at", "by", "result"),
    "action": ("description", "owner", "due"),
    "participant": ("name", "role"),
    "artefact": (),
    "sign_off": ("at", "by", "role"),
}


_ESTATES: dict[tuple[Any, ...], Estate] = {}


def _fingerprint(d: Path) -> tuple[Any, ...]:
    try:
        stats = [(p.name, p.stat()) for p in sorted(d.iterdir())]
        return (str(d.resolve()), *((name, st.st_mtime_ns, st.st_size, st.st_ino) for name, st in stats))
    except OSError:
        return (str(d),)


def load_estate(runbooks_dir: str | Path) -> Estate:
    """The runbooks, loaded once per process while their files are unchanged (the board and a
    burst of CLI calls in one process read them again only after an edit)."""
    d = Path(runbooks_dir)
    key = _fingerprint(d)
    got = _ESTATES.get(key)
    if got is not None:
        return got
    try:
        estate = load_runbooks(d)
    except EvidenceInputError as e:
        raise ExerciseInputError(str(e.issues[0]) if e.issues else str(e)) from None
    if len(_ESTATES) > 16:
        _ESTATES.clear()
    _ESTATES[key] = estate
    return estate


@dataclass
class Attempt:
    step: str
    started_at: datetime
    operator: str
    note: str
    ended_at: datetime | None = None
    result: str | None = None  # ok | failed; None while in progress


@dataclass
class SystemLog:
    runbook: Runbook
    attempts: list[Attempt] = field(default_factory=list)
    restored_at: datetime | None = None
    validations: dict[str, tuple[str, str, datetime]] = field(default_factory=dict)  # id -> result, by, at
    sign_off: tuple[str, str, datetime] | None = None  # by, role, at
    artefacts: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def latest(self, step: str) -> Attempt | None:
        mine = [a for a in self.attempts if a.step == step]
        return mine[-1] if mine else None

    def done(self, step: str) -> datetime | None:
        """When the step last finished ok, if its latest attempt did."""
        a = self.latest(step)
        return a.ended_at if a is not None and a.result == "ok" else None


@dataclass
class ExerciseLog:
    name: str
    type: str
    declared_at: datetime
    systems: dict[str, SystemLog]
    participants: list[tuple[str, str]] = field(default_factory=list)
    finished: bool = False
    entries: list[dict[str, Any]] = field(default_factory=list)


def _bad(e: dict[str, Any], msg: str) -> ExerciseInputError:
    return ExerciseInputError(f"entry {e['seq']} ({e['action']}): {msg}")


def effective(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries as corrected: amends applied, voided entries and the corrections themselves
    dropped; sorted by when the event happened (then seq)."""
    by_seq = {e["seq"]: dict(e) for e in entries}
    voided: set[int] = set()
    for e in entries:
        if e["action"] not in ("amend", "void"):
            continue
        target = by_seq.get(e.get("target"))  # type: ignore[arg-type]
        if target is None or target["seq"] >= e["seq"] or target["action"] in ("amend", "void", "finish"):
            raise _bad(e, f"seq {e.get('target')!r} is not an earlier entry that can be corrected")
        if e["action"] == "void":
            if target["action"] == "start":
                raise _bad(e, "the start of an exercise cannot be voided")
            voided.add(target["seq"])
        else:
            changes = e.get("changes") or {}
            allowed = AMENDABLE.get(target["action"], ())
            for k, v in changes.items():
                if k not in allowed:
                    raise _bad(
                        e,
                        f"a {target['action']} entry's {k!r} cannot be amended "
                        f"(amendable: {', '.join(allowed) or 'none'})",
                    )
                target[k] = v
    out = [e for s, e in by_seq.items() if s not in voided and e["action"] not in ("amend", "void")]
    out.sort(key=lambda e: (parse_time(e["at"]), e["seq"]))
    return out


def replay(entries: list[dict[str, Any]], estate: Estate, until: datetime | None = None) -> ExerciseLog:
    """Raise :class:`ExerciseInputError` naming the entry for anything that does not make sense."""
    if not entries:
        raise ExerciseInputError("the journal is empty")
    first = entries[0]
    if first["action"] != "start":
        raise _bad(first, "the first entry of a journal must be the start")
    events = effective(entries)
    start = next(e for e in events if e["action"] == "start")
    t0 = parse_time(start["at"])
    systems: dict[str, SystemLog] = {}
    for rid in start["systems"]:
        rb = estate.get(rid)
        if rb is None:
            raise _bad(start, f"no runbook {rid!r} in {estate.directory}")
        systems[rid] = SystemLog(rb)
    log = ExerciseLog(name="", type=start["type"], declared_at=t0, systems=systems, entries=entries)
    for e in events:
        act = e["action"]
        at = parse_time(e["at"])
        if act == "start":
            if e is not start:
                raise _bad(e, "the exercise has already started (a second start)")
            continue
        if at < t0:
            raise _bad(e, f"time {e['at']} is before the exercise was declared ({start['at']})")
        if until is not None and at > until:
            continue
        if act == "finish":
            log.finished = True
            continue
        if act == "participant":
            log.participants.append((e["name"], e["role"]))
            continue
        rid = e.get("runbook")
        sys_ = systems.get(rid) if isinstance(rid, str) else None
        if sys_ is None:
            raise _bad(e, f"runbook {rid!r} is not part of this exercise ({', '.join(systems)})")
        rb = sys_.runbook
        if act == "step":
            sid = e["step"]
            if rb.step(sid) is None:
                raise _bad(
                    e, f"runbook {rid} has no step {sid!r} (steps: {', '.join(s.id for s in rb.recovery_steps)})"
                )
            cur = sys_.latest(sid)
            state = e["state"]
            if state == "start":
                if cur is not None and cur.result is None:
                    raise _bad(e, f"step {rid}/{sid} is already in progress (started {cur.started_at.isoformat()})")
                if cur is not None and cur.result == "ok":
                    raise _bad(e, f"step {rid}/{sid} is already done")
                sys_.attempts.append(Attempt(sid, at, e["operator"], e.get("note", "")))
            else:
                if cur is None or cur.result is not None:
                    raise _bad(e, f"step {rid}/{sid} is {state} before it was started")
                cur.ended_at = at
                cur.result = "ok" if state == "done" else "failed"
                if e.get("note"):
                    cur.note = f"{cur.note}; {e['note']}" if cur.note else e["note"]
        elif act == "restored":
            if sys_.restored_at is not None:
                raise _bad(e, f"{rid} was already restored at {sys_.restored_at.isoformat()} (amend that entry)")
            sys_.restored_at = at
        elif act == "validate":
            vid = e["validation"]
            if vid not in {v.id for v in rb.validation}:
                known = ", ".join(v.id for v in rb.validation) or "none"
                raise _bad(e, f"runbook {rid} has no validation {vid!r} (validations: {known})")
            sys_.validations[vid] = (e["result"], e["by"], at)
        elif act == "sign_off":
            sys_.sign_off = (e["by"], e["role"], at)
        elif act == "artefact":
            sys_.artefacts.append(e)
        elif act == "action":
            sys_.actions.append(e)
        else:
            raise _bad(e, f"unknown action {act!r}")
    return log


def checker(estate: Estate) -> Callable[[list[dict[str, Any]], dict[str, Any]], None]:
    """For :meth:`Journal.append`: refuse an entry after which the journal would not replay."""

    def check(entries: list[dict[str, Any]], new: dict[str, Any]) -> None:
        replay([*entries, new], estate)

    return check
