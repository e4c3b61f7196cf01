"""Backup state for RPO, read in one place: what the backup collector last reported for each
backup. The evidence collector (``continuity_runbook_rpo_met``) and the DR report both read it
from here, so they cannot disagree about a backup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BACKUP_STATE = "continuity_backup_state"
BACKUP_LAST_SUCCESS = "continuity_backup_last_success_timestamp_seconds"
BACKUP_RPO = "continuity_backup_rpo_seconds"


@dataclass
class BackupState:
    state: str | None = None  # fresh, late, stale, failed, never_ran, unknown
    last_success: float | None = None  # Unix time
    rpo: float | None = None  # seconds


def backup_states(store: Any) -> dict[str, BackupState]:
    """Backup name -> its latest reported state, from the latest results of kind ``backup`` in the
    state store (a ``StoreView``). A result for target ``name`` counts; so does a sample labelled
    ``backup="name"`` in any backup result; the target's own name wins. Within a name the newest
    result decides. No store, or one that cannot be read, is no state."""
    if store is None:
        return {}
    try:
        snap = store.snapshot()
    except Exception:  # noqa: BLE001 - a broken store is stated as missing backup state, never raised
        return {}
    by_target: dict[str, BackupState] = {}
    by_label: dict[str, BackupState] = {}
    results = sorted((r for r in snap.latest.values() if r.kind == "backup"), key=lambda r: (r.started, r.target))
    for r in results:
        for s in r.samples:
            label = s.labels.get("backup")
            for out, key in ((by_target, r.target), (by_label, label)):
                if not key:
                    continue
                if s.name == BACKUP_STATE and s.value == 1 and s.labels.get("state"):
                    out.setdefault(key, BackupState()).state = s.labels["state"]
                elif s.name == BACKUP_LAST_SUCCESS:
                    out.setdefault(key, BackupState()).last_success = s.value
                elif s.name == BACKUP_RPO:
                    out.setdefault(key, BackupState()).rpo = s.value
    return {**by_label, **by_target}
