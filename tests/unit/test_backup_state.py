"""Backup state for RPO is read in one place (agent.backupstate): the evidence collector's
continuity_runbook_rpo_met and the DR report's backup column read the same states."""

from __future__ import annotations

from agent.backupstate import BackupState, backup_states
from agent.plugin import Sample
from agent.state import Result, StateStore
from collectors.evidence import backup_states as collector_states
from collectors.evidence import rpo_met


def _result(target: str, task: str, started: float, samples: list[Sample], kind: str = "backup") -> Result:
    return Result(target, task, kind, "hq", started, 1.0, True, samples=samples)


def _state(backup: str, state: str) -> list[Sample]:
    return [
        Sample("continuity_backup_state", 1.0 if s == state else 0.0, {"backup": backup, "state": s})
        for s in ("fresh", "late", "stale")
    ]


def test_one_reading_for_the_collector_and_the_report() -> None:
    store = StateStore(None)
    store.put(
        _result(
            "fs1-restic",
            "",
            100.0,
            [
                *_state("fs1", "late"),
                Sample("continuity_backup_last_success_timestamp_seconds", 90.0, {"backup": "fs1"}),
                Sample("continuity_backup_rpo_seconds", 86400.0, {"backup": "fs1"}),
            ],
        )
    )
    store.put(_result("fs1-restic", "integrity", 200.0, _state("fs1", "stale")))  # newer: wins
    store.put(_result("gis-borg", "", 150.0, _state("gis", "fresh")))
    store.put(_result("probe-x", "", 300.0, _state("gis", "stale"), kind="probe"))  # not a backup result
    got = backup_states(store)
    assert got["fs1"] == BackupState("stale", 90.0, 86400.0)
    assert got["fs1-restic"] == BackupState("stale", 90.0, 86400.0)  # by target name too
    assert got["gis"].state == "fresh"
    assert collector_states(store) == {k: v.state for k, v in got.items()}
    assert rpo_met(["fs1"], collector_states(store)) is False
    assert rpo_met(["gis"], collector_states(store)) is True
    store.close()


def test_no_store_or_a_broken_one_is_no_state() -> None:
    class Broken:
        def snapshot(self) -> None:
            raise OSError("disk gone")

    assert backup_states(None) == {}
    assert backup_states(Broken()) == {}
