"""What a target's last results *mean*, for people: the status page and ``/api/v1/status``.

"Collected" is not "healthy": a probe that ran and found the port closed was collected fine. This
module reads the samples of each target's latest results (by metric name, the collectors'
published interface) and says, in words, whether the thing measured is well: probe failed, device
down, backup stale, critical process missing, link down, site below its standard, evidence invalid.
It reads the same samples /metrics exposes and recomputes no verdict of its own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

OK, WARN, BAD, UNKNOWN = "ok", "warn", "bad", "unknown"
LEVELS = (OK, WARN, BAD, UNKNOWN)
LEGEND = {
    OK: "measured and as promised",
    WARN: "measured; needs attention soon (late backup, expiring evidence)",
    BAD: "measured and failing the promise: an outage, a stale backup, a standard not met",
    UNKNOWN: "not measured yet, or the last collection failed (see its error): unknown is not OK",
}
BACKUP_LEVEL = {"fresh": OK, "late": WARN, "stale": BAD, "failed": BAD, "never_ran": BAD, "unknown": UNKNOWN}


class SampleLike(Protocol):
    name: str
    value: float
    labels: Mapping[str, str]


class ResultLike(Protocol):
    ok: bool
    reason: str | None
    message: str | None
    samples: Sequence[Any]


@dataclass(frozen=True)
class Outcome:
    level: str
    text: str

    def as_json(self) -> dict[str, str]:
        return {"level": self.level, "text": self.text}


def _values(samples: Iterable[SampleLike], name: str) -> list[tuple[Mapping[str, str], float]]:
    return [(s.labels, s.value) for s in samples if s.name == name]


def _worst(outcomes: list[Outcome]) -> Outcome:
    order = {BAD: 0, UNKNOWN: 1, WARN: 2, OK: 3}
    return sorted(outcomes, key=lambda o: order[o.level])[0]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _probe(samples: Sequence[SampleLike]) -> Outcome | None:
    v = _values(samples, "continuity_probe_success")
    if not v:
        return None
    return Outcome(OK, "probe succeeded") if v[0][1] == 1 else Outcome(BAD, "probe failed")


def _device(samples: Sequence[SampleLike]) -> Outcome | None:
    v = _values(samples, "continuity_device_up")
    if not v:
        return None
    if v[0][1] != 1:
        return Outcome(BAD, "device down (no answer)")
    down = [lab.get("interface", "?") for lab, val in _values(samples, "continuity_interface_up") if val != 1]
    admin_up = {lab.get("interface") for lab, val in _values(samples, "continuity_interface_admin_up") if val == 1}
    down = [i for i in down if i in admin_up]
    if down:
        return Outcome(WARN, f"device up; interfaces down: {', '.join(sorted(down)[:5])}")
    return Outcome(OK, "device answered")


def _backup(samples: Sequence[SampleLike]) -> Outcome | None:
    states = [lab.get("state", "") for lab, val in _values(samples, "continuity_backup_state") if val == 1]
    if not states:
        return None
    state = states[0]
    words = state.replace("_", " ")
    return Outcome(BACKUP_LEVEL.get(state, UNKNOWN), f"backup {words}")


def _integrity(samples: Sequence[SampleLike]) -> Outcome | None:
    v = _values(samples, "continuity_backup_integrity_ok")
    if v and v[0][1] != 1:
        return Outcome(BAD, "integrity check found errors")
    v = _values(samples, "continuity_backup_restore_test_ok")
    if v and v[0][1] != 1:
        return Outcome(BAD, "restore test failed")
    return None


def _host(samples: Sequence[SampleLike]) -> Outcome | None:
    procs = _values(samples, "continuity_host_processes_running")
    if not procs and not _values(samples, "continuity_host_memory_total_bytes"):
        return None
    missing = sorted(lab.get("process", "?") for lab, val in procs if val < 1)
    if missing:
        return Outcome(BAD, f"critical process not running: {', '.join(missing)}")
    running = f"; {len(procs)} critical process{'es' if len(procs) != 1 else ''} running" if procs else ""
    return Outcome(OK, "host measured" + running)


def _link(samples: Sequence[SampleLike]) -> Outcome | None:
    loss = _values(samples, "continuity_link_loss_ratio")
    if not loss:
        return None
    if loss[0][1] >= 1:
        return Outcome(BAD, "link down: no replies")
    rtt = [val for lab, val in _values(samples, "continuity_link_rtt_seconds") if lab.get("stat") == "avg"]
    text = f"loss {loss[0][1]:.1%}" + (f", rtt {rtt[0] * 1000:.1f} ms" if rtt else "")
    return Outcome(OK, text)


def _standards(samples: Sequence[SampleLike]) -> Outcome | None:
    met = _values(samples, "continuity_site_standard_met_all")
    if not met:
        return None
    failing = sorted(lab.get("site", "?") for lab, val in met if val != 1)
    if failing:
        return Outcome(BAD, f"below their connection standard: {', '.join(failing)}")
    return Outcome(OK, f"{len(met)} site(s) meet their connection standard")


def _evidence(samples: Sequence[SampleLike]) -> Outcome | None:
    valid = _values(samples, "continuity_recovery_evidence_valid")
    if not valid:
        return None
    invalid = sorted(lab.get("runbook", "?") for lab, val in valid if val != 1)
    verdict = estate_verdict(samples)
    parts = []
    level = OK
    if invalid:
        level = BAD
        parts.append(f"{len(invalid)} of {len(valid)} systems lack valid evidence ({', '.join(invalid[:4])})")
    else:
        parts.append(f"all {len(valid)} systems have valid evidence")
    if verdict is not None:
        if not verdict["within_objective"]:
            level = BAD
        parts.append(verdict["text"])
    return Outcome(level, "; ".join(parts))


INTERPRETERS = (_probe, _device, _backup, _integrity, _host, _link, _standards, _evidence)


def estate_verdict(samples: Iterable[SampleLike]) -> dict[str, Any] | None:
    """The projected estate recovery time against the objective, from the evidence collector's samples."""
    samples = list(samples)
    objective = _values(samples, "continuity_recovery_objective_seconds")
    paths = {lab.get("basis"): val for lab, val in _values(samples, "continuity_recovery_critical_path_seconds")}
    basis = next((b for b in ("projected", "measured", "planned") if b in paths), None)
    if not objective or basis is None:
        return None
    obj, value = objective[0][1], paths[basis]
    within = value <= obj
    return {
        "basis": basis,
        "seconds": value,
        "objective_seconds": obj,
        "within_objective": within,
        "text": f"estate recovery {basis} {_hours(value)} {'within' if within else 'OVER'} the {_hours(obj)} objective",
    }


def outcome(results: Mapping[str, ResultLike]) -> Outcome:
    """The outcome of one target from its latest result per task ("" is the main task)."""
    main = results.get("")
    if main is None:
        return Outcome(UNKNOWN, "not collected yet")
    if not main.ok:
        return Outcome(UNKNOWN, f"collection failed ({main.reason or 'error'}): value unknown")
    # A failed run that carries samples completed and found a failure (an integrity check that found
    # damage): its samples are the finding. A run that could not measure carries none.
    found = [
        o for r in results.values() if r.ok or r.samples for o in (f(r.samples) for f in INTERPRETERS) if o is not None
    ]
    for task, r in results.items():
        # The latest restore test could not run to a verdict (lock, host unreachable...): it carries
        # its not-run counters and no restore_test_ok.
        if (
            task
            and not r.ok
            and _values(r.samples, "continuity_backup_restore_test_not_run_total")
            and not _values(r.samples, "continuity_backup_restore_test_ok")
        ):
            found.append(Outcome(WARN, f"restore test not run ({r.reason or 'error'})"))
    if not found:
        return Outcome(OK, "collected")
    return _worst(found)


def summary(by_target: Mapping[str, tuple[str, Mapping[str, ResultLike]]], reload_ok: bool) -> dict[str, Any]:
    """The facts at the top of the status page: sites, backups, DR estate, the agent's config."""
    sites_met: dict[str, bool] = {}
    backups: dict[str, int] = defaultdict(int)
    estate: dict[str, Any] | None = None
    for kind, results in by_target.values():
        main = results.get("")
        if main is None or not main.ok:
            if kind == "backup":
                backups["unknown"] += 1
            continue
        for lab, val in _values(main.samples, "continuity_site_standard_met_all"):
            sites_met[lab.get("site", "?")] = val == 1
        states = [lab.get("state", "") for lab, val in _values(main.samples, "continuity_backup_state") if val == 1]
        if kind == "backup":
            backups[states[0] if states else "unknown"] += 1
        estate = estate_verdict(main.samples) or estate
    return {
        "sites": {"total": len(sites_met), "meeting_standard": sum(sites_met.values()),
                  "below_standard": sorted(s for s, ok in sites_met.items() if not ok)},
        "backups": {"total": sum(backups.values()), "fresh": backups.get("fresh", 0), "by_state": dict(backups)},
        "dr_estate": estate,
        "config_reload_successful": reload_ok,
    }
