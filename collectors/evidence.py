"""DR recovery evidence (kind ``evidence``): re-verifies runbooks and sealed recovery-test records
on the target's interval and exports whether the estate's recovery promise holds.

Verification (hashing artefacts included) runs in a worker thread; artefact digests are cached
by file identity, so only new or changed artefacts are hashed again. Rules and formats:
docs/runbooks.md.

Files are loaded leniently: a bad runbook or record is an ``invalid_runbook``/``invalid_record``
finding plus an ``invalid_input`` partial error, and the other records still give their metrics.
A directory that is missing or cannot be listed fails the run (``invalid_input``).

``continuity_runbook_rpo_met`` reads the latest state of each backup a runbook names from the
agent's own results (kind ``backup``, sample ``continuity_backup_state{state}`` with value 1):

* any named backup ``stale``, ``failed`` or ``never_ran`` -> 0 (RPO not met);
* otherwise, any named backup without a result, not configured, or ``unknown`` -> no series
  (unknown is not OK, and not a failure either);
* otherwise (every named backup ``fresh`` or ``late``, i.e. within RPO plus grace) -> 1.

A runbook that names no backups has no ``continuity_runbook_rpo_met`` series.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from agent.configtypes import resolve_path
from agent.evidence import (
    EvidenceInputError,
    HashCache,
    InputIssue,
    VerificationReport,
    findings_by_rule,
    verify,
)
from agent.evidence.backupstate import backup_states as read_backup_states
from collectors.base import Collected, Collector, CollectorError, MetricSpec, TargetBase

INVALID_INPUT = "invalid_input"
UNKNOWN_BACKUP = "unknown_backup"
RPO_NOT_MET = frozenset({"stale", "failed", "never_ran"})
RPO_MET = frozenset({"fresh", "late"})


class EvidenceTarget(TargetBase):
    kind: Literal["evidence"] = Field(description="Selects this collector: `evidence`.")
    runbooks_dir: Path = Field(description="Runbooks directory (runbooks/<id>.yml and estate.yml).")
    evidence_dir: Path = Field(description="Sealed evidence records (*.yml) and artefacts/ below it.")

    @field_validator("runbooks_dir", "evidence_dir")
    @classmethod
    def _resolve(cls, v: Path, info: ValidationInfo) -> Path:
        return resolve_path(v, info).resolve()


RB = ("runbook", "tier")
METRICS = (
    MetricSpec(
        "continuity_runbook_rto_seconds",
        "gauge",
        "Recovery time objective of the runbook's system.",
        "seconds",
        labels=RB,
    ),
    MetricSpec(
        "continuity_runbook_rpo_seconds",
        "gauge",
        "Recovery point objective of the runbook's system.",
        "seconds",
        labels=RB,
    ),
    MetricSpec(
        "continuity_runbook_rpo_met",
        "gauge",
        "1 if every backup the runbook names is fresh or late (within grace), 0 if any is stale, failed "
        "or never ran; absent when a named backup's state is unknown.",
        labels=RB,
    ),
    MetricSpec(
        "continuity_recovery_test_last_timestamp_seconds",
        "gauge",
        "When the system's latest recovery test of an accepted type was declared (Unix time).",
        "seconds",
        labels=RB,
    ),
    MetricSpec(
        "continuity_recovery_test_achieved_rto_seconds",
        "gauge",
        "Recovery time achieved in the latest test: service restored minus declared.",
        "seconds",
        labels=RB,
    ),
    MetricSpec(
        "continuity_recovery_test_within_rto",
        "gauge",
        "1 if the latest test restored service within the RTO, 0 if not.",
        labels=RB,
    ),
    MetricSpec(
        "continuity_recovery_evidence_valid",
        "gauge",
        "1 if the system has sealed, accepted, passing evidence younger than its max_evidence_age.",
        labels=RB,
    ),
    MetricSpec(
        "continuity_recovery_evidence_expiry_timestamp_seconds",
        "gauge",
        "When the system's latest valid evidence stops counting (Unix time).",
        "seconds",
        labels=RB,
    ),
    MetricSpec(
        "continuity_recovery_findings",
        "gauge",
        "Verification findings by severity and rule (every rule present, 0 when it did not fire).",
        labels=("severity", "rule"),
    ),
    MetricSpec(
        "continuity_recovery_objective_seconds",
        "gauge",
        "The estate recovery objective (runbooks/estate.yml, default 72h).",
        "seconds",
    ),
    MetricSpec(
        "continuity_recovery_critical_path_seconds",
        "gauge",
        "Estate recovery time over the dependency graph, by basis (planned, projected, measured).",
        "seconds",
        labels=("basis",),
    ),
    MetricSpec(
        "continuity_recovery_evidence_chain_head_info",
        "info",
        "sha256 of the newest sealed evidence record, so the chain head is recorded outside the directory.",
        labels=("sha256",),
    ),
)


def backup_states(store: Any) -> dict[str, str]:
    """Backup name -> current state (agent.evidence.backupstate, which the DR report reads too)."""
    return {name: b.state for name, b in read_backup_states(store).items() if b.state}


def rpo_met(backups: tuple[str, ...] | list[str], states: dict[str, str]) -> bool | None:
    """False if any backup is stale/failed/never_ran; None if any is unknown or has no state; True
    if all are fresh or late; None for no backups."""
    if not backups:
        return None
    got = [states.get(b) for b in backups]
    if any(s in RPO_NOT_MET for s in got):
        return False
    if all(s in RPO_MET for s in got):
        return True
    return None


def report_samples(rep: VerificationReport, states: dict[str, str]) -> Collected:
    out = Collected()
    for s in rep.systems:
        lb = {"runbook": s.runbook, "tier": str(s.tier)}
        out.add("continuity_runbook_rto_seconds", s.rto_seconds, **lb)
        out.add("continuity_runbook_rpo_seconds", s.rpo_seconds, **lb)
        met = rpo_met(s.backups, states)
        if met is not None:
            out.add("continuity_runbook_rpo_met", 1 if met else 0, **lb)
        if s.last_test is not None:
            out.add("continuity_recovery_test_last_timestamp_seconds", s.last_test.timestamp(), **lb)
        if s.achieved_rto_seconds is not None:
            out.add("continuity_recovery_test_achieved_rto_seconds", s.achieved_rto_seconds, **lb)
        if s.within_rto is not None:
            out.add("continuity_recovery_test_within_rto", 1 if s.within_rto else 0, **lb)
        out.add("continuity_recovery_evidence_valid", 1 if s.valid else 0, **lb)
        if s.valid_until is not None:
            out.add("continuity_recovery_evidence_expiry_timestamp_seconds", s.valid_until.timestamp(), **lb)
    for (severity, rule), n in sorted(findings_by_rule(rep.findings).items()):
        out.add("continuity_recovery_findings", n, severity=severity, rule=rule)
    cp = rep.critical_path
    out.add("continuity_recovery_objective_seconds", cp.objective_seconds)
    for basis in ("planned", "projected", "measured"):
        v = cp.seconds(basis)
        if v is not None:
            out.add("continuity_recovery_critical_path_seconds", v, basis=basis)
    if rep.chain_head:
        out.add("continuity_recovery_evidence_chain_head_info", 1, sha256=rep.chain_head)
    return out


class EvidenceCollector(Collector):
    kind = "evidence"
    config_model = EvidenceTarget
    METRICS = METRICS
    REASONS = (INVALID_INPUT, UNKNOWN_BACKUP)
    target: EvidenceTarget

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self._cache = HashCache()
        self._lock = threading.Lock()  # a timed-out run's thread may still be hashing

    def _verify(self) -> VerificationReport:
        with self._lock:
            at = datetime.fromtimestamp(self.ctx.clock(), UTC)
            return verify(self.target.runbooks_dir, self.target.evidence_dir, at, hash_cache=self._cache, lenient=True)

    def _invalid_input(self, issues: list[InputIssue]) -> str:
        first = issues[0] if issues else "invalid input"
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        return f"{self.target.name}: {first}{more}"

    async def collect(self) -> Collected:
        t = self.target
        try:
            rep = await self.ctx.run_blocking(self._verify)
        except EvidenceInputError as e:  # a directory missing, unlistable or without runbook files
            raise CollectorError(INVALID_INPUT, self._invalid_input(e.issues)) from None
        states = backup_states(self.ctx.store)
        out = report_samples(rep, states)
        if rep.bad_files:  # skipped files are findings; the rest of the run stands
            out.partial_errors.append((INVALID_INPUT, self._invalid_input(rep.bad_files)))
        if self.ctx.config is not None:
            configured: set[str] = set()
            for x in getattr(self.ctx.config, "targets", []):
                if getattr(x, "kind", "") == "backup":
                    configured.add(x.name)
                    if getattr(x, "backup", None):
                        configured.add(x.backup)
            missing = sorted({b for s in rep.systems for b in s.backups if b not in configured and b not in states})
            if missing:
                out.partial_errors.append(
                    (
                        UNKNOWN_BACKUP,
                        f"{t.name}: runbooks name backups that are not backup targets in the agent config "
                        f"(no RPO state for them): {', '.join(missing)}",
                    )
                )
        out.info.update(
            {
                "ok": rep.ok,
                "errors": len(rep.errors),
                "warnings": len(rep.warnings),
                "chain_head": rep.chain_head,
                "findings": [str(f) for f in rep.findings[:50]],
            }
        )
        return out

    @classmethod
    def validate_config(cls, target: TargetBase, config: Any) -> list[tuple[str, str]]:
        assert isinstance(target, EvidenceTarget)
        out = []
        for key in ("runbooks_dir", "evidence_dir"):
            p: Path = getattr(target, key)
            if not p.is_dir():
                out.append((key, f"{p} is not a directory"))
        return out


COLLECTORS = [EvidenceCollector]
