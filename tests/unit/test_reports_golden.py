"""Golden test on the shipped example exercise (runbooks/) with a fixed --at: the JSON report's
figures equal those of `evidence verify --format json`; every section is in the HTML and
Markdown; the key figures match tests/golden/report-example.json (UPDATE_GOLDEN=1 rewrites it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.cli import main
from agent.reports.model import SECTIONS

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "fixtures" / "reports" / "example.yml"
GOLDEN = ROOT / "tests" / "golden" / "report-example.json"
AT = "2026-07-01T09:00:00Z"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:  # the shared config loader exits 2 itself
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fmt in ("json", "html", "md"):
        path = tmp_path / f"report.{fmt}"
        rc, _o, err = run(capsys, "report", "dr", "--config", str(CONFIG), "--at", AT, "--format", fmt,
                          "--output", str(path))
        assert rc in (0, 1), err
        out[fmt] = path.read_text()
    rc, verify_out, err = run(capsys, "evidence", "verify", "--runbooks", str(ROOT / "runbooks"), "--evidence",
                              str(ROOT / "runbooks" / "evidence"), "--at", AT, "--format", "json")
    assert rc == 0, err  # the shipped exercise passes
    out["verify"] = json.loads(verify_out)
    return out


def test_json_figures_equal_evidence_verify(reports: dict[str, Any]) -> None:
    rep, ver = json.loads(reports["json"]), reports["verify"]
    assert rep["evidence"] == ver
    cp = ver["critical_path"]
    s = rep["summary"]
    assert (s["objective_seconds"], s["planned_seconds"], s["projected_seconds"], s["measured_seconds"]) == (
        cp["objective_seconds"], cp["planned_seconds"], cp["projected_seconds"], cp["measured_seconds"])
    assert s["critical_path"] == cp["path"]
    assert s["errors"] == sum(f["severity"] == "error" for f in ver["findings"])
    assert s["warnings"] == sum(f["severity"] == "warning" for f in ver["findings"])
    mine = {x["runbook"]: x for x in rep["systems"]}
    assert set(mine) == {x["runbook"] for x in ver["systems"]}
    for v in ver["systems"]:
        m = mine[v["runbook"]]
        for key in ("last_test", "achieved_rto_seconds", "rto_seconds", "within_rto", "valid_until"):
            assert m[key] == v[key], (v["runbook"], key)
    assert rep["timeline"]["exercise"] == ver["latest_joint_exercise"]
    ex = next(e for e in ver["exercises"] if e["id"] == ver["latest_joint_exercise"])
    assert rep["timeline"]["measured_seconds"] == ex["measured_seconds"] == cp["measured_seconds"]
    assert rep["timeline"]["critical_path"] == ex["critical_path"]
    assert rep["integrity"]["evidence_chain_head_sha256"] == ver["chain"]["head_sha256"]
    assert rep["integrity"]["verifier_ok"] is ver["ok"] is True
    assert [a["id"] for a in rep["actions"]] == [a["id"] for a in sorted(
        ver["open_actions"], key=lambda a: (not a["overdue"], a["due"], a["runbook"], a["id"]))]
    schema = json.loads((ROOT / "agent" / "schemas" / "report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(rep)


def test_every_section_present(reports: dict[str, Any]) -> None:
    for key, title in SECTIONS:
        assert f'id="{key}"' in reports["html"] and f"{title}</h2>" in reports["html"]
        assert f"{title}\n" in reports["md"]
    assert "Example Borough Council" in reports["html"]
    # No state database: the gap is stated, not an exception.
    assert "No history for the period" in reports["html"] and "No history for the period" in reports["md"]
    assert not (CONFIG.parent / "state-not-created").exists()


def _key_figures(rep: dict[str, Any]) -> dict[str, Any]:
    return {
        "verdict": rep["summary"]["verdict"],
        "sentence": rep["summary"]["sentence"],
        "reasons": rep["summary"]["reasons"],
        "systems": {s["runbook"]: [s["tier"], s["in_policy"], s["policy_reasons"], s["backup_state"]]
                    for s in rep["systems"]},
        "timeline": [[t["runbook"], t["restored_seconds"], t["within_rto"], t["critical"]]
                     for t in rep["timeline"]["systems"]],
        "dependencies": [[n["runbook"], n["layer"], n["status"]] for n in rep["dependencies"]],
        "coverage": {k: v for k, v in rep["coverage"].items() if k != "unavailable_targets"},
        "gaps": rep["gaps"],
    }


def test_golden_key_figures(reports: dict[str, Any]) -> None:
    got = _key_figures(json.loads(reports["json"]))
    if os.environ.get("UPDATE_GOLDEN") or not GOLDEN.exists():
        GOLDEN.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    assert got == json.loads(GOLDEN.read_text())


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "r.html")
    for argv, msg in (
        (["--at", "2026-07-01T09:00:00"], "has no UTC offset"),
        (["--at", "yesterday"], "is not an ISO 8601 timestamp"),
        (["--period", "soon"], "--period"),
        (["--period", "0s"], "more than 0"),
    ):
        rc, _o, err = run(capsys, "report", "dr", "--config", str(CONFIG), "--format", "html", "--output", out, *argv)
        assert rc == 2 and msg in err and "Traceback" not in err, (argv, err)
    rc, _o, err = run(capsys, "report", "dr", "--config", str(tmp_path / "missing.yml"), "--format", "html",
                      "--output", out)
    assert rc == 2 and "missing.yml" in err
    rc, _o, err = run(capsys, "report", "dr", "--config", str(CONFIG), "--format", "html", "--output",
                      str(tmp_path / "no" / "such" / "dir" / "r.html"))
    assert rc == 2 and "does not exist" in err
    rc, _o, err = run(capsys, "report", "dr", "--config", str(CONFIG), "--format", "html", "--output", str(tmp_path))
    assert rc == 2 and "is a directory" in err


def test_stdout_and_red_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Five years on, every piece of evidence has expired: written, red, exit 1.
    rc, out, _e = run(capsys, "report", "dr", "--config", str(CONFIG), "--at", "2031-07-01T09:00:00+01:00",
                      "--format", "json", "--output", "-")
    doc = json.loads(out)
    assert rc == 1 and doc["summary"]["verdict"] == "red" and doc["meta"]["at"] == "2031-07-01T08:00:00Z"
    assert doc["summary"]["systems_in_policy"] == 0
