from __future__ import annotations

import ctypes
import sqlite3
from pathlib import Path

from prometheus_client.exposition import generate_latest

from agent.catalogue import CORE_METRICS, catalogue, check_spec
from agent.exposition import AgentStatus, make_registry
from agent.state import PAGE_CACHE_KIB, SCHEMA, Result, StateStore
from collectors.base import MetricSpec, Sample
from tests.helpers.common import metric_value


def _status() -> AgentStatus:
    return AgentStatus(
        site="hq",
        start_time=1000.0,
        reload_ok=True,
        reload_success_time=1000.0,
        targets={"web": ("probe", "depot"), "srv": ("host", "hq")},
    )


def _ok(target: str, started: float, value: float) -> Result:
    return Result(
        target=target,
        task="",
        kind="probe",
        site="depot",
        started=started,
        duration=0.5,
        ok=True,
        samples=[Sample("continuity_probe_success", value, {})],
    )


def _fail(target: str, started: float, reason: str = "timeout") -> Result:
    return Result(
        target=target,
        task="",
        kind="probe",
        site="depot",
        started=started,
        duration=2.0,
        ok=False,
        reason=reason,
        message=f"{target}: timed out",
    )


def render(store: StateStore) -> str:
    return generate_latest(make_registry(store, _status)).decode()


def test_failed_target_values_disappear_and_last_success_stays(tmp_path: Path) -> None:
    store = StateStore(None)
    store.put(_ok("web", 2000.0, 1.0))
    text = render(store)
    assert metric_value(text, "continuity_probe_success", target="web", site="depot") == 1.0
    assert metric_value(text, "continuity_target_up", target="web", collector="probe") == 1.0
    assert metric_value(text, "continuity_target_last_success_timestamp_seconds", target="web") == 2000.5

    store.put(_fail("web", 2060.0))
    text = render(store)
    assert metric_value(text, "continuity_probe_success", target="web") is None  # stale, not shown as current
    assert metric_value(text, "continuity_target_up", target="web") == 0.0
    assert metric_value(text, "continuity_target_last_success_timestamp_seconds", target="web") == 2000.5
    assert metric_value(text, "continuity_target_errors_total", target="web", reason="timeout") == 1.0
    assert metric_value(text, "continuity_target_collection_duration_seconds", target="web") == 2.0


def test_undeclared_metric_and_wrong_labels_are_dropped() -> None:
    store = StateStore(None)
    r = _ok("web", 1.0, 1.0)
    r.samples.append(Sample("continuity_made_up_metric", 3.0, {}))
    r.samples.append(Sample("continuity_probe_success", 1.0, {"extra": "x"}))
    store.put(r)
    text = render(store)
    assert "continuity_made_up_metric" not in text
    assert 'extra="x"' not in text
    assert metric_value(text, "continuity_probe_success", target="web") == 1.0


def test_skipped_runs_and_agent_metrics() -> None:
    store = StateStore(None)
    store.count_skipped("srv", "still_running")
    store.count_skipped("srv", "late", 3)
    text = render(store)
    skipped = "continuity_target_skipped_runs_total"
    assert metric_value(text, skipped, target="srv", collector="host", reason="still_running") == 1.0
    assert metric_value(text, skipped, target="srv", collector="host", reason="late") == 3.0
    # Every configured target has both reasons from the start, at 0.
    assert metric_value(text, skipped, target="web", reason="still_running") == 0.0
    assert metric_value(text, skipped, target="web", reason="late") == 0.0
    assert metric_value(text, "continuity_agent_info", site="hq") == 1.0
    assert metric_value(text, "continuity_config_last_reload_successful") == 1.0


def test_results_survive_restart_with_real_times(tmp_path: Path) -> None:
    t0 = 1_790_000_000.0
    store = StateStore(tmp_path, clock=lambda: t0 + 100)
    store.put(_ok("web", t0, 1.0))
    store.put(_fail("web", t0 + 60))
    store.close()
    again = StateStore(tmp_path, clock=lambda: t0 + 200)
    text = render(again)
    assert metric_value(text, "continuity_target_last_success_timestamp_seconds", target="web") == t0 + 0.5
    assert metric_value(text, "continuity_target_up", target="web") == 0.0
    assert again.history("web", t0 - 1, t0 + 100) == [(t0, 0.5, True), (t0 + 60, 2.0, False)]
    again.close()
    conn = sqlite3.connect(tmp_path / "state.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def _sqlite_memory_used() -> int:
    """Bytes SQLite has allocated in this process (sqlite3_status64, SQLITE_STATUS_MEMORY_USED),
    from the library the sqlite3 module is linked against."""
    import _sqlite3

    lib = ctypes.CDLL(_sqlite3.__file__)
    cur, high = ctypes.c_int64(), ctypes.c_int64()
    assert lib.sqlite3_status64(0, ctypes.byref(cur), ctypes.byref(high), 0) == 0
    return cur.value


def test_page_caches_stay_small_as_the_database_grows(tmp_path: Path) -> None:
    # Two days of eight targets every 15 s (an 8 MiB database), then a batch of writes and a read of
    # all the history: SQLite's default caches (2000 KiB per connection) would keep 4 MiB.
    now = 1_790_000_000.0
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.executescript(SCHEMA)
    rows = [(f"t{i}", "", "probe", "depot", now - 2 * 86400 + k * 15, 0.5, 1) for k in range(11520) for i in range(8)]
    with conn:
        conn.executemany(
            "INSERT INTO results (target, task, kind, site, started, duration, ok) VALUES (?, ?, ?, ?, ?, ?, ?)", rows
        )
    conn.close()
    before = _sqlite_memory_used()
    store = StateStore(tmp_path, clock=lambda: now)
    for k in range(300):
        for i in range(8):
            store.put(_ok(f"t{i}", now + k * 15, 1.0))
    store.flush()
    for i in range(8):
        assert len(store.history(f"t{i}", now - 2 * 86400, now + 86400)) == 11520 + 300
    grown = _sqlite_memory_used() - before
    # Two page caches, plus each connection's schema, statements and lookaside buffers.
    assert grown < 2 * PAGE_CACHE_KIB * 1024 + 1024 * 1024, grown
    store.close()


def test_retention_prunes_old_history(tmp_path: Path) -> None:
    now = 10 * 86400.0
    store = StateStore(tmp_path, retention=86400.0, clock=lambda: now)
    store.put(_ok("web", now - 3 * 86400, 1.0))  # older than retention
    store.put(_ok("web", now - 100, 1.0))
    store.close()
    again = StateStore(tmp_path, retention=86400.0, clock=lambda: now)
    assert [h[0] for h in again.history("web", 0, now)] == [now - 100]
    again.close()


def test_unusable_state_dir_degrades_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = StateStore(blocker / "state")
    store.put(_ok("web", 1.0, 1.0))
    assert store.latest("web") is not None
    text = render(store)
    assert metric_value(text, "continuity_state_db_healthy") == 0.0
    assert (metric_value(text, "continuity_state_db_errors_total") or 0) >= 1


def test_catalogue_is_consistent() -> None:
    cat = catalogue()
    for spec in cat.values():
        assert check_spec(spec) == []
    for core in CORE_METRICS:
        assert core.name in cat
    assert check_spec(MetricSpec("continuity_bad", "counter", "x")) != []
    assert check_spec(MetricSpec("node_cpu", "gauge", "x")) != []
    assert check_spec(MetricSpec("continuity_x_seconds", "gauge", "x", "bytes")) != []


def test_docs_metrics_is_generated_from_catalogue() -> None:
    from agent.docs import render_metrics_md
    from tests.helpers.common import ROOT

    assert (ROOT / "docs" / "metrics.md").read_text() == render_metrics_md(), "run `make docs`"


def test_completed_failure_keeps_its_samples_but_not_its_last_success() -> None:
    """A check that ran and found damage (Collected.failure): the finding stays exposed, the reason
    is counted, and the task's last-success timestamp stays at the last clean run."""
    store = StateStore(None)

    def integ(started: float, ok: bool) -> Result:
        return Result(
            target="srv",
            task="integrity",
            kind="host",
            site="hq",
            started=started,
            duration=1.0,
            ok=ok,
            reason=None if ok else "integrity_failed",
            message=None if ok else "srv: restic check found errors: pack 1234: does not exist",
            samples=[Sample("continuity_probe_success", 1.0 if ok else 0.0, {})],
        )

    store.put(integ(3000.0, True))
    store.put(integ(4000.0, False))
    text = render(store)
    assert metric_value(text, "continuity_probe_success", target="srv") == 0.0
    last = metric_value(text, "continuity_task_last_success_timestamp_seconds", target="srv", task="integrity")
    assert last == 3001.0
    assert metric_value(text, "continuity_target_errors_total", target="srv", reason="integrity_failed") == 1.0


def test_outcome_reads_completed_failures_and_restore_tests_not_run() -> None:
    """The status page's outcome sees what /metrics shows: an integrity check that found damage
    (a failed run with its finding) is bad; a restore test that could not run is a warning."""
    from agent.outcomes import outcome

    lb = {"backup": "b", "kind": "restic"}
    main = Result(
        "b",
        "",
        "backup",
        "hq",
        1.0,
        1.0,
        True,
        samples=[Sample("continuity_backup_state", 1.0, {**lb, "state": "fresh"})],
    )
    damaged = Result(
        "b",
        "integrity",
        "backup",
        "hq",
        2.0,
        1.0,
        False,
        reason="integrity_failed",
        message="b: pack 12: does not exist",
        samples=[Sample("continuity_backup_integrity_ok", 0.0, lb)],
    )
    blocked = Result(
        "b",
        "restore_test",
        "backup",
        "hq",
        3.0,
        1.0,
        False,
        reason="repository_locked",
        message="b: locked",
        samples=[Sample("continuity_backup_restore_test_not_run_total", 1.0, {**lb, "reason": "repository_locked"})],
    )
    assert outcome({"": main}).level == "ok"
    o = outcome({"": main, "integrity": damaged})
    assert (o.level, o.text) == ("bad", "integrity check found errors")
    o = outcome({"": main, "restore_test": blocked})
    assert (o.level, o.text) == ("warn", "restore test not run (repository_locked)")
    could_not_check = Result("b", "integrity", "backup", "hq", 2.0, 1.0, False, reason="unreachable")
    assert outcome({"": main, "integrity": could_not_check}).level == "ok"  # no finding: the backup's own state
