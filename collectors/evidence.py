"""DR recovery evidence (kind ``evidence``): re-verifies runbooks and sealed recovery-test records
on the target's interval and exports whether the estate's recovery promise holds.

Verification (hashing artefacts included) runs in a child process, the agent's own Python on
:mod:`collectors.evidence_child`, which prints the run's samples as JSON and exits: the
verifier's code and what it parsed never stay in the agent (about 1.4 MiB of the idle demo
agent), a run past its timeout is killed rather than left hashing in a thread, and a hostile
runbook or record that blows up the parser takes the child down, never the agent. Artefact
digests are cached by file identity in the state directory
(``evidence-<target>.hashes.json``), so only new or changed artefacts are hashed again. Rules
and formats: docs/runbooks.md.

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

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from agent.backupstate import backup_states as read_backup_states
from agent.configtypes import resolve_path, scrub
from agent.plugin import BAD_REPLY, INTERNAL
from collectors.base import Collected, Collector, CollectorError, MetricSpec, TargetBase
from collectors.commands import COMMAND_FAILED, OUTPUT_TOO_LARGE, LocalRunner, OutputLimits
from collectors.evidence_child import INVALID_INPUT, PROTOCOL, RPO_MET, RPO_NOT_MET, rpo_met, rpo_samples

log = logging.getLogger(__name__)

__all__ = ["COLLECTORS", "INVALID_INPUT", "RPO_MET", "RPO_NOT_MET", "EvidenceCollector", "rpo_met", "rpo_samples"]

UNKNOWN_BACKUP = "unknown_backup"


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
    """Backup name -> current state (agent.backupstate, which the DR report reads too)."""
    return {name: b.state for name, b in read_backup_states(store).items() if b.state}


# The child: the agent's own interpreter, isolated from the environment (-I), on the agent's own
# code (the directory holding this package goes first on its path), running evidence_child.main.
CHILD = (
    "import sys; r = sys.argv[1]; r in sys.path or sys.path.insert(0, r); "
    "from collectors.evidence_child import main; main(sys.argv[2])"
)
CODE_ROOT = str(Path(__file__).resolve().parent.parent)
CHILD_OUTPUT = OutputLimits(max_bytes=64 * 1024 * 1024, max_lines=10)


def _strings(d: dict[Any, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in d.items()}


class EvidenceCollector(Collector):
    kind = "evidence"
    config_model = EvidenceTarget
    METRICS = METRICS
    REASONS = (INVALID_INPUT, UNKNOWN_BACKUP, COMMAND_FAILED)
    target: EvidenceTarget
    _cache_error: str | None = None  # the last run's, logged when it changes

    def _request(self) -> str:
        t = self.target
        return json.dumps({
            "target": t.name,
            "runbooks_dir": os.fspath(t.runbooks_dir),
            "evidence_dir": os.fspath(t.evidence_dir),
            "at": self.ctx.clock(),
            "hashes": os.fspath(Path(self.ctx.state_dir) / f"evidence-{t.name}.hashes.json"),
        })  # fmt: skip

    async def _verify(self) -> dict[str, Any]:
        """The child's run (:mod:`collectors.evidence_child`), killed at the task's timeout."""
        t = self.target
        argv = [sys.executable, "-I", "-c", CHILD, CODE_ROOT, self._request()]
        try:
            res = await LocalRunner(where=t.name, limits=CHILD_OUTPUT).run(argv, timeout=self.timeout)
        except CollectorError as e:
            if e.reason != OUTPUT_TOO_LARGE:
                raise
            raise CollectorError(BAD_REPLY, f"{t.name}: the evidence verifier printed more than a result") from None
        if res.exit_status != 0:
            how = f"killed by signal {-res.exit_status}" if res.exit_status < 0 else f"exit status {res.exit_status}"
            log.error("%s: the evidence verifier failed (%s); its error output:\n%s", t.name, how,
                      scrub(res.stderr.decode("utf-8", "replace"))[-8192:])  # fmt: skip
            raise CollectorError(INTERNAL, f"{t.name}: the evidence verifier failed ({how}): {res.stderr_summary()}")
        try:
            got = json.loads(res.stdout)
            if not isinstance(got, dict):
                raise ValueError("not an object")
        except ValueError as e:
            raise CollectorError(BAD_REPLY, f"{t.name}: the evidence verifier printed no result ({e})") from None
        if got.get("v") != PROTOCOL:
            raise CollectorError(
                BAD_REPLY,
                f"{t.name}: the evidence verifier on disk is not the running agent's version "
                "(upgraded without a restart?): restart the agent",
            )
        if got.get("hash_cache_error") and got["hash_cache_error"] != self._cache_error:
            log.warning("%s: %s (every run hashes every artefact again)", t.name, got["hash_cache_error"])
        self._cache_error = got.get("hash_cache_error")
        return got

    async def collect(self) -> Collected:
        t = self.target
        got = await self._verify()
        states = backup_states(self.ctx.store)
        try:
            if "error" in got:
                reason, message = got["error"]
                raise CollectorError(str(reason), str(message))
            out = Collected(partial_errors=[(str(r), str(m)) for r, m in got["partial_errors"]], info=dict(got["info"]))
            systems = [(_strings(lb), [str(b) for b in named]) for lb, named in got["systems"]]
            for name, v, labels in [*got["samples"], *rpo_samples(systems, states)]:
                out.add(str(name), float(v), **_strings(labels))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CollectorError(BAD_REPLY, f"{t.name}: the evidence verifier's result is malformed ({e!r})") from None
        if self.ctx.config is not None:
            configured: set[str] = set()
            for x in getattr(self.ctx.config, "targets", []):
                if getattr(x, "kind", "") == "backup":
                    configured.add(x.name)
                    if getattr(x, "backup", None):
                        configured.add(x.backup)
            missing = sorted({b for _, named in systems for b in named if b not in configured and b not in states})
            if missing:
                out.partial_errors.append(
                    (
                        UNKNOWN_BACKUP,
                        f"{t.name}: runbooks name backups that are not backup targets in the agent config "
                        f"(no RPO state for them): {', '.join(missing)}",
                    )
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
