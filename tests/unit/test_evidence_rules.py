"""One test per verification rule: a fixture that triggers it and a near-identical one that does not."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.evidence import RULES
from tests.helpers.evidence_kit import AT, D, Kit, make, records, runbooks, ts

Mut = Callable[[dict[str, dict[str, Any]], dict[str, dict[str, Any]]], None]


def pair(tmp_path: Path, bad: Mut, good: Mut, **kw: Any) -> tuple[Kit, Kit]:
    kits = []
    for name, fn in (("bad", bad), ("good", good)):
        rbs, recs = runbooks(), records()
        fn(rbs, recs)
        kits.append(make(tmp_path / name, rbs=rbs, recs=recs, **kw))
    return kits[0], kits[1]


def nothing(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
    pass


def findings(kit: Kit, rule: str, **kw: Any) -> list[Any]:
    return [f for f in kit.verify(**kw).findings if f.rule == rule]


def test_baseline_is_clean(tmp_path: Path) -> None:
    rep = make(tmp_path).verify()
    assert rep.ok and rep.findings == []
    assert rep.chain_length == 3 and rep.chain_head is not None


def test_every_rule_has_a_severity() -> None:
    assert {r for r, s in RULES.items() if s == "warning"} == {
        "runbook_version_mismatch", "action_overdue", "evidence_expiring", "coverage_gap"}
    assert len(RULES) == 22


def test_unsealed(tmp_path: Path) -> None:
    bad = make(tmp_path / "bad", seal_records=False)
    good = make(tmp_path / "good")
    f = findings(bad, "unsealed")
    assert {x.record for x in f} == {"01-base.yml", "02-app.yml", "03-aux.yml"}
    assert any(x.message.startswith("record 01-base.yml, runbook base: ") for x in f)
    assert not findings(good, "unsealed")
    # Unsealed records do not count as evidence.
    assert "evidence_overdue" in bad.rules()


def test_unsealed_partly(tmp_path: Path) -> None:
    kit = make(tmp_path)
    p = kit.record_path("03-aux.yml")
    p.write_text("\n".join(x for x in p.read_text().splitlines() if not x.startswith("runbook_sha256")) + "\n")
    f = findings(kit, "unsealed")
    assert f and "partly sealed" in f[0].message and f[0].record == "03-aux.yml"


def test_unknown_runbook_in_record(tmp_path: Path) -> None:
    bad, good = make(tmp_path / "bad"), make(tmp_path / "good")
    (bad.runbooks / "aux.yml").unlink()  # the sealed aux record now names no runbook
    f = findings(bad, "unknown_runbook")
    assert len(f) == 1 and f[0].record == "03-aux.yml" and f[0].runbook == "aux"
    assert not findings(good, "unknown_runbook")


def test_unknown_runbook_in_depends_on(tmp_path: Path) -> None:
    def bad(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        rbs["aux"]["depends_on"] = ["base", "nosuch"]

    b, g = pair(tmp_path, bad, nothing)
    f = findings(b, "unknown_runbook")
    assert len(f) == 1 and "nosuch" in f[0].message and f[0].runbook == "aux"
    assert not findings(g, "unknown_runbook")


def test_dependency_cycle(tmp_path: Path) -> None:
    def bad(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        rbs["base"]["depends_on"] = ["app"]

    b, g = pair(tmp_path, bad, nothing)
    f = findings(b, "dependency_cycle")
    assert len(f) == 1 and "app -> base -> app" in f[0].message
    rep = b.verify()
    assert rep.critical_path.planned_seconds is None  # no longest path through a cycle
    assert not findings(g, "dependency_cycle")


@pytest.mark.parametrize(("step", "change", "needle"), [
    (0, {"ended_at": ts(0, 5)}, "is before started_at"),
    (0, {"started_at": ts(-1)}, "is before declared_at"),
    (1, {"ended_at": ts(2, 45)}, "is after service_restored_at"),
    (1, {"id": "s9"}, "is not a recovery step"),
    (1, {"started_at": ts(1, 0)}, "before step 's1'"),
])
def test_step_timestamps(tmp_path: Path, step: int, change: dict[str, Any], needle: str) -> None:
    def bad(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        recs["01-base.yml"]["steps"][step].update(change)

    b, g = pair(tmp_path, bad, nothing)
    f = findings(b, "step_timestamps")
    assert any(needle in x.message for x in f), [x.message for x in f]
    assert all("record 01-base.yml, runbook base, step s" in x.message for x in f)
    assert not findings(g, "step_timestamps")


def test_steps_incomplete(tmp_path: Path) -> None:
    def bad(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        recs["01-base.yml"]["steps"][1]["result"] = "skipped"

    b, g = pair(tmp_path, bad, nothing)
    f = findings(b, "steps_incomplete")
    assert len(f) == 1 and f[0].step == "s2" and "skipped" in f[0].message
    assert not findings(g, "steps_incomplete")


def test_steps_incomplete_missing_step_only_for_full_coverage(tmp_path: Path) -> None:
    def missing_full(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        del recs["01-base.yml"]["steps"][1]

    def missing_partial(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        missing_full(rbs, recs)
        recs["01-base.yml"]["type"] = "partial_recovery"

    b, g = pair(tmp_path, missing_full, missing_partial)
    assert [x.step for x in findings(b, "steps_incomplete")] == ["s2"]
    assert not findings(g, "steps_incomplete")


def test_retried_step_counts_when_an_attempt_is_ok(tmp_path: Path) -> None:
    def retried(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        steps = recs["01-base.yml"]["steps"]
        steps.insert(0, {"id": "s1", "started_at": ts(0, 5), "ended_at": ts(0, 10), "operator": "O. One",
                         "result": "failed"})

    rbs, recs = runbooks(), records()
    retried(rbs, recs)
    assert make(tmp_path, rbs=rbs, recs=recs).verify().findings == []


def test_validation_failed(tmp_path: Path) -> None:
    def bad(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        recs["02-app.yml"]["validations"][0]["result"] = "fail"

    b, g = pair(tmp_path, bad, nothing)
    f = findings(b, "validation_failed")
    assert len(f) == 1 and f[0].step == "v2" and f[0].record == "02-app.yml"
    assert not findings(g, "validation_failed")


def test_validation_missing(tmp_path: Path) -> None:
    def bad(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        recs["02-app.yml"]["validations"] = []

    b, g = pair(tmp_path, bad, nothing)
    assert "missing" in findings(b, "validation_failed")[0].message
    assert not findings(g, "validation_failed")


def _restore_base_at(recs: dict[str, Any], hours: float) -> None:
    r = recs["01-base.yml"]
    r["steps"][1]["ended_at"] = ts(hours - 0.25)
    r["service_restored_at"] = ts(hours)
    r["sign_off"]["at"] = ts(hours + 1)
    # app starts after base is restored
    app = recs["02-app.yml"]
    app["steps"][0]["started_at"] = ts(hours + 0.5)
    app["steps"][0]["ended_at"] = ts(hours + 1)
    app["steps"][1]["started_at"] = ts(hours + 1.25)
    app["steps"][1]["ended_at"] = ts(hours + 2)
    app["service_restored_at"] = ts(hours + 2.5)
    app["sign_off"]["at"] = ts(hours + 3)
    aux = recs["03-aux.yml"]
    aux["steps"][0]["started_at"] = ts(hours + 0.5)
    aux["steps"][0]["ended_at"] = ts(hours + 1)
    aux["service_restored_at"] = ts(hours + 1.5)


def test_rto_exceeded(tmp_path: Path) -> None:
    b, g = pair(tmp_path, lambda rbs, recs: _restore_base_at(recs, 8.5), lambda rbs, recs: _restore_base_at(recs, 7.5))
    f = findings(b, "rto_exceeded")
    assert len(f) == 1 and f[0].runbook == "base" and "8h30m" in f[0].message and "RTO 8h" in f[0].message
    assert b.verify().system("base").within_rto is False  # type: ignore[union-attr]
    assert not findings(g, "rto_exceeded")
    assert g.verify().system("base").within_rto is True  # type: ignore[union-attr]


def test_dependency_order(tmp_path: Path) -> None:
    def early(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        recs["02-app.yml"]["steps"][0]["started_at"] = ts(2, 29)  # base restored at 2:30

    def on_time(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        recs["02-app.yml"]["steps"][0]["started_at"] = ts(2, 30)

    b, g = pair(tmp_path, early, on_time)
    f = findings(b, "dependency_order")
    assert len(f) == 1 and f[0].runbook == "app" and f[0].step == "a1" and "base (record 01-base.yml)" in f[0].message
    assert not findings(g, "dependency_order")


def test_estate_objective_exceeded_planned(tmp_path: Path) -> None:
    def slow(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        rbs["app"]["recovery_steps"][0]["expected_duration"] = "70h"  # 2h base + 70h + 1h = 73h

    def fits(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        rbs["app"]["recovery_steps"][0]["expected_duration"] = "68h"  # 71h

    b, g = pair(tmp_path, slow, fits)
    f = findings(b, "estate_objective_exceeded")
    assert len(f) == 1 and "planned" in f[0].message and "73h" in f[0].message and "base -> app" in f[0].message
    assert b.verify().critical_path.planned_seconds == 73 * 3600
    assert not findings(g, "estate_objective_exceeded")


def test_estate_objective_exceeded_projected(tmp_path: Path) -> None:
    # Two separate single-system exercises (no joint exercise, so no measured basis): the evidence
    # durations add up along base -> app.
    def shape(app_hours: float) -> Mut:
        def fn(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
            rbs["app"]["objectives"] = {"rto": "72h", "rpo": "1h", "mtpd": "5d"}
            del recs["03-aux.yml"]
            app = recs["02-app.yml"]
            app["exercise"] = "ex2"
            app["steps"][0]["started_at"] = ts(3)
            app["steps"][1]["ended_at"] = ts(3 + app_hours - 0.5)
            app["service_restored_at"] = ts(3 + app_hours)
            app["sign_off"]["at"] = ts(3 + app_hours + 1)
        return fn

    # base evidence: 0:10 -> 2:30 = 2h20m; app evidence: app_hours
    b, g = pair(tmp_path, shape(70), shape(69))
    f = findings(b, "estate_objective_exceeded")
    assert [x for x in f if "projected" in x.message], [x.message for x in f]
    assert b.verify().critical_path.measured_seconds is None
    assert not findings(g, "estate_objective_exceeded")


def _restore_app_at(recs: dict[str, Any], hours: float) -> None:
    app = recs["02-app.yml"]
    app["steps"][1]["ended_at"] = ts(hours - 0.25)
    app["service_restored_at"] = ts(hours)
    app["sign_off"]["at"] = ts(hours + 1)


def test_joint_exercise_73h_fails_71h_passes(tmp_path: Path) -> None:
    late = make(tmp_path / "73h", recs=_with(lambda r: _restore_app_at(r, 73)))
    ok = make(tmp_path / "71h", recs=_with(lambda r: _restore_app_at(r, 71)))
    at = D + timedelta(days=30)
    rep = late.verify(at)
    rules = {f.rule for f in rep.errors}
    assert {"rto_exceeded", "estate_objective_exceeded"} <= rules
    measured = [f for f in rep.findings if f.rule == "estate_objective_exceeded" and "measured" in f.message]
    assert len(measured) == 1 and "exercise ex1" in measured[0].message and measured[0].record == "02-app.yml"
    assert rep.critical_path.measured_seconds == 73 * 3600
    assert rep.critical_path.paths["measured"] == ["base", "app"]
    assert not rep.ok
    rep71 = ok.verify(at)
    assert rep71.ok and rep71.findings == [], [str(f) for f in rep71.findings]
    assert rep71.critical_path.measured_seconds == 71 * 3600
    assert rep71.system("app").within_rto is True  # type: ignore[union-attr]


def _with(fn: Callable[[dict[str, Any]], None]) -> dict[str, dict[str, Any]]:
    recs = records()
    fn(recs)
    return recs


def test_sign_off_missing(tmp_path: Path) -> None:
    def unsigned(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        del recs["03-aux.yml"]["sign_off"]

    def unsigned_automated(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        unsigned(rbs, recs)
        recs["03-aux.yml"]["type"] = "automated_restore"

    b, g = pair(tmp_path, unsigned, unsigned_automated)
    f = findings(b, "sign_off_missing")
    assert len(f) == 1 and f[0].record == "03-aux.yml"
    assert not findings(g, "sign_off_missing")


def test_sign_off_segregation(tmp_path: Path) -> None:
    def self_signed(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        recs["03-aux.yml"]["sign_off"]["by"] = "o. one "  # same person, different case and spacing

    b, g = pair(tmp_path, self_signed, nothing)
    f = findings(b, "sign_off_segregation")
    assert len(f) == 1 and f[0].step == "x1" and "record 03-aux.yml, runbook aux, step x1" in f[0].message
    assert not findings(g, "sign_off_segregation")


def test_artefact_missing(tmp_path: Path) -> None:
    bad, good = make(tmp_path / "bad"), make(tmp_path / "good")
    (bad.evidence / "artefacts" / "app-log.txt").unlink()
    f = findings(bad, "artefact_missing")
    assert len(f) == 1 and "artefacts/app-log.txt" in f[0].message and f[0].record == "02-app.yml"
    assert not findings(good, "artefact_missing")
    assert "evidence_overdue" in bad.rules()  # a record with a missing artefact is not valid evidence


def test_artefact_fifo_is_not_opened(tmp_path: Path) -> None:
    kit = make(tmp_path)
    p = kit.evidence / "artefacts" / "app-log.txt"
    p.unlink()
    os.mkfifo(p)  # reading a FIFO would block forever
    f = findings(kit, "artefact_missing")
    assert len(f) == 1 and "not a regular file" in f[0].message


def test_artefact_hash_mismatch(tmp_path: Path) -> None:
    bad, good = make(tmp_path / "bad"), make(tmp_path / "good")
    (bad.evidence / "artefacts" / "base-log.txt").write_text("edited after sealing\n")
    f = findings(bad, "artefact_hash_mismatch")
    assert len(f) == 1 and f[0].record == "01-base.yml" and "artefacts/base-log.txt" in f[0].message
    assert not findings(good, "artefact_hash_mismatch")


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_path_outside_evidence(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kit = make(tmp_path / "k", recs={})
    outside = tmp_path / "secret.txt"
    outside.write_text("outside the evidence directory\n")
    rec = records()["01-base.yml"]
    if kind == "dotdot":
        rec["artefacts"] = [{"path": "../../secret.txt"}]
    elif kind == "absolute":
        rec["artefacts"] = [{"path": str(outside)}]
    else:
        (kit.evidence / "artefacts").mkdir()
        (kit.evidence / "artefacts" / "link.txt").symlink_to(outside)
        rec["artefacts"] = [{"path": "artefacts/link.txt"}]
    import hashlib

    kit.hand_seal("01-base.yml", rec, [hashlib.sha256(outside.read_bytes()).hexdigest()])
    opened: list[str] = []
    import agent.evidence.verifier as v

    real = v.sha256_file
    monkeypatch.setattr(v, "sha256_file", lambda p: opened.append(str(p)) or real(p))
    f = findings(kit, "path_outside_evidence")
    assert len(f) == 1 and f[0].record == "01-base.yml" and "not opened" in f[0].message
    assert opened == []
    # the same record with the artefact inside the directory is fine
    kit2 = make(tmp_path / "k2", recs={})
    rec2 = records()["01-base.yml"]
    (kit2.evidence / "artefacts").mkdir()
    (kit2.evidence / "artefacts" / "base-log.txt").write_text("inside\n")
    kit2.hand_seal("01-base.yml", rec2, [hashlib.sha256(b"inside\n").hexdigest()])
    assert not findings(kit2, "path_outside_evidence")


def test_symlink_inside_directory_is_fine(tmp_path: Path) -> None:
    kit = make(tmp_path, recs={})
    (kit.evidence / "artefacts").mkdir()
    (kit.evidence / "artefacts" / "real.txt").write_text("x\n")
    (kit.evidence / "artefacts" / "link.txt").symlink_to("real.txt")
    rec = records()["01-base.yml"]
    rec["artefacts"] = [{"path": "artefacts/link.txt"}]
    kit.write_record("01-base.yml", rec)
    kit.seal("01-base.yml")
    assert not {"path_outside_evidence", "artefact_missing", "artefact_hash_mismatch"} & kit.rules()


def test_chain_broken_by_editing_an_earlier_record(tmp_path: Path) -> None:
    bad, good = make(tmp_path / "bad"), make(tmp_path / "good")
    p = bad.record_path("01-base.yml")
    p.write_text(p.read_text().replace("O. One", "O. Other"))
    f = findings(bad, "chain_broken")
    assert len(f) == 1 and f[0].record == "02-app.yml" and "01-base.yml" in f[0].message
    assert "evidence_overdue" in bad.rules()  # the edited record no longer counts
    assert not findings(good, "chain_broken")


def test_chain_broken_by_removing_a_record(tmp_path: Path) -> None:
    kit = make(tmp_path)
    kit.record_path("02-app.yml").unlink()
    f = findings(kit, "chain_broken")
    assert any("no record has sequence 2" in x.message for x in f)


def test_chain_broken_by_duplicate_sequence(tmp_path: Path) -> None:
    kit = make(tmp_path)
    p = kit.record_path("03-aux.yml")
    p.write_text(p.read_text().replace("sequence: 3", "sequence: 2"))
    assert any("sequence 2 is used by more than one record" in x.message for x in findings(kit, "chain_broken"))


def test_evidence_overdue(tmp_path: Path) -> None:
    kit = make(tmp_path)
    f = findings(kit, "evidence_overdue", at=D + timedelta(days=366))
    assert {x.runbook for x in f} == {"base", "app", "aux"}
    assert "expired at 2026-01-10T08:00:00+00:00" in f[0].message
    assert not findings(kit, "evidence_overdue", at=D + timedelta(days=364))


def test_evidence_overdue_never_tested(tmp_path: Path) -> None:
    def untested(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
        del recs["03-aux.yml"]

    b, g = pair(tmp_path, untested, nothing)
    f = findings(b, "evidence_overdue")
    assert len(f) == 1 and f[0].runbook == "aux" and "never tested" in f[0].message
    assert not findings(g, "evidence_overdue")


def test_evidence_overdue_tabletop_not_accepted_by_default(tmp_path: Path) -> None:
    def tabletop(accepted: list[str] | None) -> Mut:
        def fn(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
            recs["03-aux.yml"]["type"] = "tabletop"
            if accepted:
                rbs["aux"]["test_policy"] = {"accepted_types": accepted}
        return fn

    b, g = pair(tmp_path, tabletop(None), tabletop(["tabletop", "full_recovery"]))
    assert [x.runbook for x in findings(b, "evidence_overdue")] == ["aux"]
    assert not findings(g, "evidence_overdue")


def test_runbook_version_mismatch(tmp_path: Path) -> None:
    bad, good = make(tmp_path / "bad"), make(tmp_path / "good")
    p = bad.runbooks / "app.yml"
    p.write_text(p.read_text().replace("version: 2", "version: 3"))
    f = findings(bad, "runbook_version_mismatch")
    assert len(f) == 1 and f[0].severity == "warning" and "version 2" in f[0].message and "version 3" in f[0].message
    assert bad.verify().ok  # a warning
    assert not findings(good, "runbook_version_mismatch")


def test_runbook_edited_without_version_bump(tmp_path: Path) -> None:
    kit = make(tmp_path)
    p = kit.runbooks / "app.yml"
    p.write_text(p.read_text().replace("Start application", "Start the application"))
    f = findings(kit, "runbook_version_mismatch")
    assert len(f) == 1 and "bump version" in f[0].message


def test_action_overdue(tmp_path: Path) -> None:
    def issue(due: str, status: str = "open") -> Mut:
        def fn(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
            recs["02-app.yml"]["issues"] = [{"id": "ACT-1", "description": "Fix the restore script",
                                             "owner": "App Manager", "due": due, "status": status}]
        return fn

    day_before = (AT - timedelta(days=1)).date().isoformat()
    b, g = pair(tmp_path, issue(day_before), issue(AT.date().isoformat()))
    f = findings(b, "action_overdue")
    assert len(f) == 1 and f[0].severity == "warning" and "ACT-1" in f[0].message and f[0].record == "02-app.yml"
    assert b.verify().open_actions[0].overdue is True
    assert not findings(g, "action_overdue")
    closed = make(tmp_path / "closed", recs=_with(lambda r: issue(day_before, "closed")({}, r)))
    assert not findings(closed, "action_overdue") and closed.verify().open_actions == []


def test_action_closed_by_a_later_record(tmp_path: Path) -> None:
    recs = records()
    recs["02-app.yml"]["issues"] = [{"id": "ACT-1", "description": "Fix it", "owner": "A", "due": "2025-01-20",
                                     "status": "open"}]
    later = records()["02-app.yml"]
    later["exercise"] = "ex2"
    later["type"] = "partial_recovery"
    later["issues"] = [{"id": "ACT-1", "description": "Fix it", "owner": "A", "due": "2025-01-20", "status": "closed"}]
    for key in ("declared_at",):
        later[key] = ts(24)
    later["steps"] = [dict(s, started_at=ts(25), ended_at=ts(26)) if s["id"] == "a1" else
                      dict(s, started_at=ts(26, 10), ended_at=ts(27)) for s in later["steps"]]
    later["service_restored_at"] = ts(27, 30)
    later["sign_off"]["at"] = ts(28)
    recs["04-app-again.yml"] = later
    kit = make(tmp_path, recs=recs)
    rep = kit.verify()
    assert rep.open_actions == [] and "action_overdue" not in {f.rule for f in rep.findings}


def test_evidence_expiring(tmp_path: Path) -> None:
    kit = make(tmp_path)
    f = findings(kit, "evidence_expiring", at=D + timedelta(days=340))
    assert {x.runbook for x in f} == {"base", "app", "aux"} and f[0].severity == "warning"
    assert not findings(kit, "evidence_expiring", at=D + timedelta(days=300))


def test_coverage_gap(tmp_path: Path) -> None:
    def separate_aux(tier: int) -> Mut:
        def fn(rbs: dict[str, Any], recs: dict[str, Any]) -> None:
            rbs["aux"]["tier"] = tier
            recs["03-aux.yml"]["exercise"] = "aux-alone"
            recs["03-aux.yml"]["declared_at"] = ts(-24)
            recs["03-aux.yml"]["steps"][0].update(started_at=ts(-23), ended_at=ts(-22))
            recs["03-aux.yml"]["service_restored_at"] = ts(-21)
        return fn

    b, g = pair(tmp_path, separate_aux(1), separate_aux(2))
    f = findings(b, "coverage_gap")
    assert len(f) == 1 and f[0].runbook == "aux" and "ex1" in f[0].message and f[0].severity == "warning"
    assert not findings(g, "coverage_gap")


def test_superseded_record_content_is_history(tmp_path: Path) -> None:
    """An old record's content errors do not fail today's verification once a newer test counts."""
    recs = records()
    del recs["03-aux.yml"]["sign_off"]  # sign_off_missing in the first aux test
    newer = records()["03-aux.yml"]
    newer.update(exercise="ex2", declared_at=ts(48), service_restored_at=ts(52))
    newer["steps"][0].update(started_at=ts(49), ended_at=ts(51))
    newer["sign_off"]["at"] = ts(53)
    recs["04-aux.yml"] = newer
    kit = make(tmp_path, recs=recs)
    rep = kit.verify()
    # ex1 is still the latest joint exercise, so its aux record still counts and is reported ...
    assert [f.record for f in rep.findings if f.rule == "sign_off_missing"] == ["03-aux.yml"]
    # ... but aux has valid evidence from the newer record.
    assert rep.system("aux").evidence_record == "04-aux.yml"  # type: ignore[union-attr]


def test_records_after_at_do_not_count(tmp_path: Path) -> None:
    kit = make(tmp_path)
    rep = kit.verify(D - timedelta(days=1))
    assert {f.rule for f in rep.errors} == {"evidence_overdue"}
    assert all(s.last_test is None for s in rep.systems)
