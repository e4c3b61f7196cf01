"""A backup's state from its facts: pure logic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

FRESH, LATE, STALE, FAILED, NEVER_RAN, UNKNOWN = "fresh", "late", "stale", "failed", "never_ran", "unknown"
STATES: tuple[str, ...] = (FRESH, LATE, STALE, FAILED, NEVER_RAN, UNKNOWN)


@dataclass(frozen=True)
class Facts:
    """What a check found. Times are Unix seconds; None means "not known" or "never"."""

    last_success: float | None
    last_attempt: float | None
    last_attempt_ok: bool | None  # None when the tool records successes only (restic)
    size: int | None = None
    prev_size: int | None = None  # size of the success before the latest one
    snapshots: int | None = None
    detail: str = ""


def backup_state(facts: Facts | None, now: float, rpo: float, grace: float) -> str:
    """``unknown`` when the check could not be made (``facts is None``). Otherwise ``failed``
    if the last attempt failed after the last success; ``never_ran`` with neither; else by the
    age of the last success: within ``rpo`` fresh, within ``rpo + grace`` late, beyond stale."""
    if facts is None:
        return UNKNOWN
    ls, la = facts.last_success, facts.last_attempt
    if la is not None and facts.last_attempt_ok is False and (ls is None or la > ls):
        return FAILED
    if ls is None:
        return NEVER_RAN
    age = now - ls
    if age <= rpo:
        return FRESH
    if age <= rpo + grace:
        return LATE
    return STALE


def size_dropped(size: int | None, prev_size: int | None, fraction: float | None) -> bool:
    """True when the latest successful backup is smaller than the one before by more than
    ``fraction`` of it (ransomware-style shrinkage, or a job that silently lost a source)."""
    if fraction is None or size is None or prev_size is None or prev_size <= 0:
        return False
    return size < prev_size * (1.0 - fraction)
