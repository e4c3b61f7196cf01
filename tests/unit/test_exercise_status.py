"""The scripted exercise played through the CLI: ``exercise status`` at three moments equals the
projection worked out by hand below; ``exercise finish`` seals records that pass ``evidence
verify`` and ``report dr`` shows the exercise."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import yaml

from agent import cli
from tests.helpers import exercise_script as xs

H = 3600.0
CHAIN = ["core-network", "active-directory", "sql-cluster", "payroll"]


def run(ev: Path, *args: str, runbooks: Path = xs.RUNBOOKS) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main([args[0], args[1], "--runbooks", str(runbooks), "--evidence", str(ev), *args[2:]])
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


def ok(ev: Path, *args: str) -> str:
    rc, out, err = run(ev, "exercise", *args)
    assert rc == 0, (args, err)
    return out


def cli_event(ev: Path) -> Any:
    def cmd(kind: str, args: tuple[Any, ...], h: float) -> None:
        n = xs.NAME
        if kind == "step":
            rid, sid, state, who = args
            ok(ev, "step", n, rid, sid, state, "--at", xs.at(h), "--operator", who)
        elif kind == "restored":
            ok(ev, "restored", n, args[0], "--at", xs.at(h))
        elif kind == "validate":
            rid, vid, result, by = args
            ok(ev, "validate", n, rid, vid, result, "--by", by, "--at", xs.at(h))
        elif kind == "sign_off":
            rid, by, role = args
            ok(ev, "sign-off", n, rid, "--by", by, "--role", role, "--at", xs.at(h))

    return cmd


def start(ev: Path) -> None:
    ok(ev, "start", xs.NAME, "--type", "full_recovery", "--systems", ",".join(xs.SYSTEMS), "--declared-at", xs.at(0))
    for who, role in xs.PARTICIPANTS:
        ok(ev, "participant", xs.NAME, "--name", who, "--role", role)
    rid, desc, owner, due = xs.ACTION
    ok(ev, "action", xs.NAME, rid, "--description", desc, "--owner", owner, "--due", due)


def status(ev: Path, hours: float, name: str = xs.NAME) -> tuple[int, dict[str, Any]]:
    rc, out, err = run(ev, "exercise", "status", name, "--at", xs.at(hours), "--format", "json")
    assert rc in (0, 1), err
    return rc, json.loads(out)


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "elapsed": doc["elapsed_seconds"] / H,
        "projected": doc["projected_seconds"] / H,
        "path": doc["critical_path"],
        "systems": {s["runbook"]: (s["state"], s["projected_restore_offset_seconds"] / H) for s in doc["systems"]},
        "ready": doc["ready_steps"],
        "late": doc["late_steps"],
        "warnings": doc["warnings"],
    }


# Worked by hand from the runbooks' expected durations (hours from T0):
# At 4h15m core-network's firewalls (expected 2h) has run 2h15m: late, so it ends now (4.25) and
# remote-access (2h, after firewalls and dr-wan) ends 6.25. Active Directory's longest step chain
# is restore-dc 3 + seize-fsmo .5 + metadata-cleanup 1 + second-dc 2 + krbtgt-reset 1 = 7.5h ->
# 13.75; e-mail activate-dag 2 + owa-mobile 2 = 4h -> 17.75; SQL 3+2+1.5+5+1.5 = 13h -> 26.75;
# payroll app-server 3 + hr-feed 2 + parallel-run 4 + bacs 2 = 11h -> 37.75.
AT_1 = {
    "elapsed": 4.25,
    "projected": 37.75,
    "path": CHAIN,
    "systems": {
        "core-network": ("in_progress", 6.25),
        "active-directory": ("waiting", 13.75),
        "email": ("waiting", 17.75),
        "sql-cluster": ("waiting", 26.75),
        "payroll": ("waiting", 37.75),
    },
    "ready": [],
    "late": ["core-network/firewalls"],
    "warnings": [],
}
# At 16h: core-network restored at 7, AD at 15. E-mail has not started: activate-dag is ready and
# starts now -> 16+4 = 20. SQL's build-nodes started at 15 (3h) ends 18, then 2+1.5+5+1.5 -> 28;
# payroll waits for SQL: 28 + 11 = 39.
AT_2 = {
    "elapsed": 16.0,
    "projected": 39.0,
    "path": CHAIN,
    "systems": {
        "core-network": ("restored", 7.0),
        "active-directory": ("restored", 15.0),
        "email": ("ready", 20.0),
        "sql-cluster": ("in_progress", 28.0),
        "payroll": ("waiting", 39.0),
    },
    "ready": ["email/activate-dag"],
    "late": [],
    "warnings": [],
}
# At 37h everything but payroll is restored (e-mail 21, SQL 30.5 after a failed cluster attempt);
# payroll's parallel-run started at 35.5 (4h) ends 39.5, then bacs or rti-pensions (2h) -> 41.5.
AT_3 = {
    "elapsed": 37.0,
    "projected": 41.5,
    "path": CHAIN,
    "systems": {
        "core-network": ("restored", 7.0),
        "active-directory": ("restored", 15.0),
        "email": ("restored", 21.0),
        "sql-cluster": ("restored", 30.5),
        "payroll": ("in_progress", 41.5),
    },
    "ready": [],
    "late": [],
    "warnings": [],
}


def test_scripted_exercise_status_finish_verify_report(tmp_path: Path) -> None:
    ev = xs.evidence_copy(tmp_path)
    start(ev)
    cmd = cli_event(ev)
    played = 0.0
    for moment, expected in ((4.25, AT_1), (16.0, AT_2), (37.0, AT_3)):
        xs.play(lambda k, a, h, lo=played: cmd(k, a, h) if h > lo else None, until_hours=moment)
        played = moment
        rc, doc = status(ev, moment)
        assert summary(doc) == expected, moment
        assert rc == 0 and doc["on_track"] is True and doc["objective_seconds"] == 72 * H
    # Status as at an earlier moment ignores what was recorded after it.
    assert summary(status(ev, 4.25)[1]) == AT_1
    rc, text, _ = run(ev, "exercise", "status", xs.NAME, "--at", xs.at(4.25))
    assert rc == 0 and "LATE    core-network/firewalls: running 2h15m, expected 2h" in text
    assert "projected estate completion 37h45m (objective 72h): ON TRACK" in text

    xs.play(lambda k, a, h: cmd(k, a, h) if h > played else None)
    journal = ev / "exercises" / f"{xs.NAME}.journal.jsonl"
    rc, out, err = run(ev, "exercise", "finish", xs.NAME, "--at", xs.at(43))
    assert rc in (0, 1), err
    assert "the recovery promise" in out and out.count("sealed as record") == len(xs.SYSTEMS)
    closed = journal.read_bytes()
    # A finished journal accepts no more entries.
    rc, _, err = run(ev, "exercise", "participant", xs.NAME, "--name", "Late Comer", "--role", "x")
    assert rc == 2 and "finished" in err and journal.read_bytes() == closed

    # The records are in the existing format and continue the shipped chain.
    rec = yaml.safe_load((ev / f"{xs.NAME}-sql-cluster.yml").read_text())
    assert rec["sequence"] >= 16 and rec["result"] == "pass" and rec["type"] == "full_recovery"
    assert [(s["id"], s["result"]) for s in rec["steps"]][:3] == [
        ("build-nodes", "ok"),
        ("cluster", "failed"),
        ("cluster", "ok"),
    ]
    assert rec["issues"][0]["description"] == xs.ACTION[1] and rec["issues"][0]["status"] == "open"
    assert rec["sign_off"]["by"] == "Z. Ahmed"
    import hashlib

    jart = next(a for a in rec["artefacts"] if a["path"] == f"exercises/{xs.NAME}.journal.jsonl")
    assert jart["sha256"] == hashlib.sha256(closed).hexdigest()

    rc, out, err = run(ev, "evidence", "verify", "--at", xs.VERIFY_AT, "--format", "json")
    assert rc == 0, out
    rep = json.loads(out)
    ours = {f"{xs.NAME}-{r}.yml" for r in xs.SYSTEMS}
    assert [f for f in rep["findings"] if f["record"] in ours] == []
    ex = next(e for e in rep["exercises"] if e["id"] == xs.NAME)
    assert ex["measured_seconds"] == 42.5 * H and ex["critical_path"] == CHAIN
    assert rep["latest_joint_exercise"] == xs.NAME

    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "agent": {"site": "hq", "state_dir": str(tmp_path / "state")},
                "reports": {"runbooks_dir": str(xs.RUNBOOKS), "evidence_dir": str(ev)},
            }
        )
    )
    out_file = tmp_path / "report.json"
    rc = cli.main(
        ["report", "dr", "--config", str(cfg), "--at", xs.VERIFY_AT, "--format", "json", "--output", str(out_file)]
    )
    assert rc in (0, 1)
    report = json.loads(out_file.read_text())
    timeline = report["timeline"]
    assert timeline["exercise"] == xs.NAME
    assert sorted(r["runbook"] for r in timeline["systems"]) == sorted(xs.SYSTEMS)
    assert timeline["measured_seconds"] == 42.5 * H and timeline["critical_path"] == CHAIN


def test_status_exit_1_over_the_objective_and_dependency_order(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    n = "late-one"
    ok(ev, "start", n, "--type", "partial_recovery", "--systems", "sql-cluster,payroll", "--declared-at", xs.at(0))
    ok(ev, "step", n, "sql-cluster", "build-nodes", "start", "--at", xs.at(0))
    ok(ev, "step", n, "payroll", "app-server", "start", "--at", xs.at(1))
    rc, doc = status(ev, 60, n)
    # build-nodes has run 60h (planned 3h): it ends now, then 2+1.5+5+1.5 = 10h -> 70h for SQL;
    # payroll's app-server ran ahead of SQL (a dependency_order warning), still running, so its
    # remaining hr-feed 2 + parallel-run 4 + bacs 2 start when SQL is restored: 70 + 8 = 78h > 72h.
    assert rc == 1 and doc["on_track"] is False
    assert doc["projected_seconds"] == 78 * H
    assert doc["late_steps"] == ["sql-cluster/build-nodes", "payroll/app-server"]
    assert [(w["rule"], w["runbook"], w["step"]) for w in doc["warnings"]] == [
        ("dependency_order", "payroll", "app-server")
    ]
    rc, text, _ = run(ev, "exercise", "status", n, "--at", xs.at(60))
    assert rc == 1 and "OVER THE OBJECTIVE" in text and "WARNING dependency_order: payroll/app-server" in text
    rc, _, err = run(ev, "exercise", "status", n, "--at", "2000-01-01T00:00:00Z")
    assert rc == 2 and err.count("\n") == 1


def test_finish_refuses_a_running_step_and_writes_nothing(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    ev.mkdir()
    n = "running"
    ok(ev, "start", n, "--type", "partial_recovery", "--systems", "email", "--declared-at", xs.at(0))
    ok(ev, "step", n, "email", "activate-dag", "start", "--at", xs.at(1))
    journal = ev / "exercises" / f"{n}.journal.jsonl"
    before = journal.read_bytes()
    rc, _, err = run(ev, "exercise", "finish", n)
    assert rc == 2 and "activate-dag of email" in err and err.count("\n") == 1
    assert journal.read_bytes() == before and not list(ev.glob("*.yml"))


def test_finish_after_a_crash_writes_the_missing_records(tmp_path: Path) -> None:
    from agent.exercises.journal import Journal

    ev = tmp_path / "ev"
    ev.mkdir()
    n = "crashed"
    ok(ev, "start", n, "--type", "tabletop", "--systems", "email", "--declared-at", xs.at(0))
    ok(ev, "step", n, "email", "activate-dag", "start", "--at", xs.at(1))
    ok(ev, "step", n, "email", "activate-dag", "done", "--at", xs.at(2))
    # The process died right after the finish entry was on disk, before any record was written.
    Journal.open(ev, n).append("crashed-writer", "finish", {})
    rc, out, err = run(ev, "exercise", "finish", n)
    assert rc in (0, 1), err
    assert out.count("sealed as record 1") == 1
    rec = yaml.safe_load((ev / f"{n}-email.yml").read_text())
    assert rec["sequence"] == 1 and rec["result"] == "fail"  # tabletop, but three steps never ran
    assert [s["id"] for s in rec["steps"]] == ["activate-dag"]
    rc, _, err = run(ev, "exercise", "finish", n)
    assert rc == 2 and "records are written" in err
