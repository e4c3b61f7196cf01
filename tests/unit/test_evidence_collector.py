"""The `evidence` collector against the shipped runbooks and exercise, with backup states in the
agent's own store; every sample declared in the catalogue."""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import psutil
import pytest

import collectors.evidence
from agent.catalogue import catalogue
from agent.config import load_config
from agent.runner import run_task
from agent.state import Result, StateStore
from collectors.base import CollectorContext, Sample
from collectors.evidence import METRICS, EvidenceCollector, rpo_met
from tests.helpers.collect import assert_declared, value, values

ROOT = Path(__file__).resolve().parents[2]
AT = datetime.fromisoformat("2026-07-01T09:00:00+01:00").timestamp()
STATES = ("fresh", "late", "stale", "failed", "never_ran", "unknown")


def backup_result(name: str, state: str, started: float = AT - 600) -> Result:
    samples = [Sample("continuity_backup_state", 1.0 if s == state else 0.0, {"state": s, "backup": name,
                                                                               "kind": "restic"}) for s in STATES]
    return Result(target=name, task="", kind="backup", site="town-hall", started=started, duration=1.0, ok=True,
                  samples=samples)


def collect(cfg_path: Path, store: StateStore, clock: float = AT) -> Result:
    loaded = load_config(cfg_path)
    cfg = loaded.config

    async def main() -> Result:
        with ThreadPoolExecutor(max_workers=2) as ex:
            ctx = CollectorContext(auths={}, executor=ex, state_dir=cfg.agent.state_dir, clock=lambda: clock,
                                   store=store, config=cfg)
            target = cfg.target("dr-evidence")
            col = EvidenceCollector(target, ctx, interval=cfg.interval_of(target), timeout=cfg.timeout_of(target))
            try:
                return await run_task(col, col.tasks()[0], site="town-hall")
            finally:
                await col.close()

    return asyncio.run(main())


def write_config(tmp_path: Path, runbooks: Path, evidence: Path, timeout: str = "60s") -> Path:
    p = tmp_path / "agent.yml"
    p.write_text(f"""
agent:
  site: town-hall
  state_dir: {tmp_path / 'state'}
targets:
  - name: dr-evidence
    kind: evidence
    runbooks_dir: {runbooks}
    evidence_dir: {evidence}
    timeout: {timeout}
""")
    return p


def test_collector_on_shipped_exercise(tmp_path: Path) -> None:
    store = StateStore(None)
    for name, state in [("sql-full-nightly", "fresh"), ("sql-log-hourly", "late"), ("payroll-bacs-archive", "stale"),
                        ("file-shares", "failed"), ("hr-documents", "never_ran"), ("fmis-interfaces", "unknown"),
                        ("ad-system-state", "fresh"), ("network-config", "fresh")]:
        store.put(backup_result(name, state))
    # An older result for the same backup does not override the latest.
    store.put(backup_result("other-target", "stale", started=AT - 10_000))
    r = collect(write_config(tmp_path, ROOT / "runbooks", ROOT / "runbooks" / "evidence"), store)
    assert r.ok, r.message
    assert_declared(r)
    names = {s.name for s in r.samples}
    assert names == {m.name for m in METRICS}  # every metric the issue names is emitted
    lb = {"runbook": "payroll", "tier": "1"}
    assert value(r, "continuity_runbook_rto_seconds", **lb) == 72 * 3600
    assert value(r, "continuity_runbook_rpo_seconds", **lb) == 24 * 3600
    assert value(r, "continuity_recovery_test_last_timestamp_seconds", **lb) == datetime.fromisoformat(
        "2026-03-13T18:00:00+00:00").timestamp()
    assert value(r, "continuity_recovery_test_achieved_rto_seconds", **lb) == (2 * 24 + 6) * 3600 + 55 * 60
    assert value(r, "continuity_recovery_test_within_rto", **lb) == 1
    assert value(r, "continuity_recovery_evidence_valid", **lb) == 1
    assert value(r, "continuity_recovery_evidence_expiry_timestamp_seconds", **lb) == datetime.fromisoformat(
        "2027-03-13T18:00:00+00:00").timestamp()
    # RPO: stale / failed / never_ran -> 0; all fresh or late -> 1; unknown or no result -> no series.
    rpo = {lbl["runbook"]: v for lbl, v in values(r, "continuity_runbook_rpo_met")}
    assert rpo["payroll"] == 0 and rpo["file-services"] == 0 and rpo["personnel"] == 0
    assert rpo["sql-cluster"] == 1 and rpo["active-directory"] == 1 and rpo["core-network"] == 1
    assert "fmis" not in rpo  # fmis-interfaces unknown
    assert "email" not in rpo  # exchange-db has no result
    assert "recovery-centre" not in rpo  # names no backups
    # estate-wide
    assert value(r, "continuity_recovery_objective_seconds") == 72 * 3600
    bases = {lbl["basis"]: v for lbl, v in values(r, "continuity_recovery_critical_path_seconds")}
    assert set(bases) == {"planned", "projected", "measured"} and bases["measured"] <= 72 * 3600
    findings = {(lbl["severity"], lbl["rule"]): v for lbl, v in values(r, "continuity_recovery_findings")}
    assert len(findings) == 22 and sum(findings.values()) == 0
    heads = values(r, "continuity_recovery_evidence_chain_head_info")
    assert len(heads) == 1 and len(heads[0][0]["sha256"]) == 64 and heads[0][1] == 1
    # backups named by runbooks but not configured are reported, the rest of the run still works
    unknown = [m for reason, m in r.partial_errors if reason == "unknown_backup"]
    assert len(unknown) == 1 and "exchange-db" in unknown[0] and "sql-full-nightly" not in unknown[0]
    store.close()


def test_collector_later_clock_reports_overdue(tmp_path: Path) -> None:
    store = StateStore(None)
    later = datetime.fromisoformat("2027-07-01T00:00:00+00:00").timestamp()
    r = collect(write_config(tmp_path, ROOT / "runbooks", ROOT / "runbooks" / "evidence"), store, clock=later)
    assert r.ok
    assert value(r, "continuity_recovery_evidence_valid", runbook="payroll", tier="1") == 0
    assert value(r, "continuity_recovery_findings", severity="error", rule="evidence_overdue") == 13
    store.close()


def test_collector_bad_runbook_is_a_finding_and_a_partial_error(tmp_path: Path) -> None:
    # Lenient loading: a bad runbook no longer fails the whole run; it is an invalid_runbook finding
    # and an invalid_input partial error naming the file and the target.
    rb = tmp_path / "rb"
    ev = tmp_path / "ev"
    rb.mkdir()
    ev.mkdir()
    (rb / "broken.yml").write_text("id: broken\nversion: one\n")
    r = collect(write_config(tmp_path, rb, ev), StateStore(None))
    assert r.ok, r.message
    # One finding per problem in the file (six schema errors), as the strict error lists them.
    assert value(r, "continuity_recovery_findings", severity="error", rule="invalid_runbook") == 6
    errs = [m for reason, m in r.partial_errors if reason == "invalid_input"]
    assert len(errs) == 1 and "broken.yml" in errs[0] and "dr-evidence" in errs[0] and "(and 5 more)" in errs[0]


def test_collector_runbooks_directory_without_runbooks_fails_with_reason(tmp_path: Path) -> None:
    rb = tmp_path / "rb"
    ev = tmp_path / "ev"
    rb.mkdir()
    ev.mkdir()
    r = collect(write_config(tmp_path, rb, ev), StateStore(None))
    assert not r.ok and r.reason == "invalid_input"
    assert "no runbooks" in (r.message or "") and "dr-evidence" in (r.message or "")


def test_collector_one_corrupt_record_does_not_blind_the_rest(tmp_path: Path) -> None:
    rb = tmp_path / "runbooks"
    shutil.copytree(ROOT / "runbooks", rb)
    clean = collect(write_config(tmp_path, rb, rb / "evidence"), StateStore(None))
    (rb / "evidence" / "2026-06-30-corrupt.yml").write_text("runbook: payroll\nresult: [unclosed\n")
    r = collect(write_config(tmp_path, rb, rb / "evidence"), StateStore(None))
    assert r.ok, r.message
    # The good records still give their metrics, as without the corrupt file.
    for name in ("continuity_recovery_evidence_valid", "continuity_recovery_test_achieved_rto_seconds",
                 "continuity_recovery_critical_path_seconds", "continuity_recovery_evidence_chain_head_info"):
        assert values(r, name) == values(clean, name) and values(r, name), name
    assert value(r, "continuity_recovery_evidence_valid", runbook="payroll", tier="1") == 1
    # The corrupt file is a finding, counted per rule, and a partial error naming it.
    assert value(r, "continuity_recovery_findings", severity="error", rule="invalid_record") == 1
    assert value(clean, "continuity_recovery_findings", severity="error", rule="invalid_record") == 0
    errs = [m for reason, m in r.partial_errors if reason == "invalid_input"]
    assert len(errs) == 1 and errs[0].startswith("dr-evidence: 2026-06-30-corrupt.yml: invalid YAML")
    assert not clean.partial_errors or all(reason != "invalid_input" for reason, _m in clean.partial_errors)


def test_rpo_met_rule() -> None:
    assert rpo_met([], {}) is None
    assert rpo_met(["a"], {}) is None
    assert rpo_met(["a", "b"], {"a": "fresh", "b": "late"}) is True
    assert rpo_met(["a", "b"], {"a": "fresh", "b": "unknown"}) is None
    assert rpo_met(["a", "b"], {"a": "stale", "b": "unknown"}) is False
    for bad in ("stale", "failed", "never_ran"):
        assert rpo_met(["a"], {"a": bad}) is False


def test_metrics_declared_in_catalogue() -> None:
    cat = catalogue()
    for m in METRICS:
        assert cat[m.name] == m


def test_example_config_loads() -> None:
    loaded = load_config(ROOT / "deploy" / "examples" / "evidence.yml")
    t = loaded.config.target("dr-evidence")
    assert t is not None and t.runbooks_dir == (ROOT / "runbooks").resolve()  # type: ignore[attr-defined]


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    import pytest

    from agent.config import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(write_config(tmp_path, tmp_path / "nope", tmp_path))
    assert any(i.key == "targets[0].runbooks_dir" and "not a directory" in i.message for i in e.value.issues)


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_verification_runs_in_a_child_killed_at_the_timeout(tmp_path: Path) -> None:
    """A run past its timeout is a timeout, and its child is gone (killed, not left hashing)."""
    rb = tmp_path / "runbooks"
    shutil.copytree(ROOT / "runbooks", rb)
    before = _children()
    r = collect(write_config(tmp_path, rb, rb / "evidence", timeout="50ms"), StateStore(None))
    assert not r.ok and r.reason == "timeout", (r.reason, r.message)
    assert _children() == before
    # With time enough, the same target verifies.
    assert collect(write_config(tmp_path, rb, rb / "evidence"), StateStore(None)).ok


def test_artefact_digests_are_kept_between_runs_in_the_state_directory(tmp_path: Path) -> None:
    """Each run is a process of its own: the digests it computed wait in the state directory
    (mode 0600) for the next, which reads them (a digest planted there is believed: an artefact
    with that identity is not read again)."""
    rb = tmp_path / "runbooks"
    shutil.copytree(ROOT / "runbooks", rb)
    cfg = write_config(tmp_path, rb, rb / "evidence")
    (tmp_path / "state").mkdir()  # as the agent makes it at start
    clean = collect(cfg, StateStore(None))
    assert (
        clean.ok and value(clean, "continuity_recovery_findings", severity="error", rule="artefact_hash_mismatch") == 0
    )
    kept = tmp_path / "state" / "evidence-dr-evidence.hashes.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    entries = json.loads(kept.read_text())
    assert entries and all(len(k) == 5 and len(d) == 64 for k, d in entries)
    # Unchanged artefacts: the file is not rewritten.
    mtime = kept.stat().st_mtime_ns
    collect(cfg, StateStore(None))
    assert kept.stat().st_mtime_ns == mtime
    kept.write_text(json.dumps([[k, "0" * 64] for k, _ in entries]))
    planted = collect(cfg, StateStore(None))
    assert value(planted, "continuity_recovery_findings", severity="error", rule="artefact_hash_mismatch")
    # An unreadable file is an empty cache: everything is hashed again, the verdict as before.
    kept.write_text("{not json")
    again = collect(cfg, StateStore(None))
    assert values(again, "continuity_recovery_findings") == values(clean, "continuity_recovery_findings")
    assert json.loads(kept.read_text())


@pytest.mark.parametrize(
    ("child", "reason", "says"),
    [
        (
            "import sys; sys.stderr.write('MemoryError'); sys.exit(1)",
            "internal",
            "the evidence verifier failed (exit status 1): MemoryError",
        ),
        ("import os; os.kill(os.getpid(), 9)", "internal", "the evidence verifier failed (killed by signal 9)"),
        ("print('not json')", "bad_reply", "printed no result"),
        ("print('{\"v\": 1, \"samples\": 1}')", "bad_reply", "result is malformed"),
        ("print('{\"v\": 0, \"samples\": []}')", "bad_reply", "not the running agent's version"),
        ("print('x' * 100_000_000)", "bad_reply", "printed more than a result"),
    ],
    ids=["crash", "killed", "garbage", "wrong-shape", "other-version", "too-much"],
)
def test_a_child_that_fails_is_a_reason_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: str, reason: str, says: str
) -> None:
    """What a real verifier does not do (crash, print garbage): a failed run with a reason and a
    message naming the target."""
    monkeypatch.setattr(collectors.evidence, "CHILD", child)
    r = collect(write_config(tmp_path, ROOT / "runbooks", ROOT / "runbooks" / "evidence"), StateStore(None))
    assert not r.ok and r.reason == reason, (r.reason, r.message)
    assert (r.message or "").startswith("dr-evidence: ") and says in (r.message or ""), r.message


def test_digests_that_cannot_be_kept_are_logged_once_and_the_run_stands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state directory the child cannot write (full, read-only, missing): the verdict as ever,
    one warning naming the file, not one per run."""
    cfg = write_config(tmp_path, ROOT / "runbooks", ROOT / "runbooks" / "evidence")  # no state directory
    loaded = load_config(cfg)

    async def main() -> list[Result]:
        with ThreadPoolExecutor(max_workers=2) as ex:
            c = loaded.config
            ctx = CollectorContext(auths={}, executor=ex, state_dir=c.agent.state_dir, clock=lambda: AT,
                                   store=StateStore(None), config=c)
            target = c.target("dr-evidence")
            col = EvidenceCollector(target, ctx, interval=c.interval_of(target), timeout=c.timeout_of(target))
            return [await run_task(col, col.tasks()[0], site="town-hall") for _ in range(3)]

    with caplog.at_level("WARNING", logger="collectors.evidence"):
        runs = asyncio.run(main())
    assert all(r.ok for r in runs)
    warned = [r.getMessage() for r in caplog.records if "cannot keep the artefact digests" in r.getMessage()]
    assert len(warned) == 1 and str(tmp_path / "state" / "evidence-dr-evidence.hashes.json") in warned[0], warned


def test_a_killed_runs_temporary_digest_file_is_removed(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    stale = tmp_path / "state" / ".evidence-dr-evidence.hashes.json.abc123.tmp"
    stale.write_text("[")
    other = tmp_path / "state" / ".something-else.tmp"
    other.write_text("")
    assert collect(write_config(tmp_path, ROOT / "runbooks", ROOT / "runbooks" / "evidence"), StateStore(None)).ok
    assert not stale.exists() and other.exists()
