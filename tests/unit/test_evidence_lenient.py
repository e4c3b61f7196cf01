"""Lenient loading: a bad runbook or record file is a finding naming it (as the strict error does)
and everything else is still verified; a missing directory stays an error in both modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.evidence import RULES, EvidenceInputError, load_records, load_runbooks, verify, verify_loaded
from agent.evidence.verifier import VOIDING_RULES
from tests.helpers.evidence_kit import AT, Kit, make, run_cli


def strict_issues(kit: Kit) -> list[str]:
    with pytest.raises(EvidenceInputError) as e:
        verify(kit.runbooks, kit.evidence, AT)
    return [str(i) for i in e.value.issues]


def lenient_rules(kit: Kit) -> list[tuple[str, str | None, str | None, str]]:
    rep = verify(kit.runbooks, kit.evidence, AT, lenient=True)
    return [(f.rule, f.runbook, f.record, f.message) for f in rep.findings if f.rule.startswith("invalid_")]


def test_rules_are_catalogued() -> None:
    assert RULES["invalid_runbook"] == "error" and RULES["invalid_record"] == "error"
    assert "invalid_record" in VOIDING_RULES


@pytest.mark.parametrize(
    ("name", "text", "key"),
    [
        ("04-broken.yml", "runbook: aux\nresult: [unclosed\n", ""),  # bad YAML
        ("04-schema.yml", "runbook: aux\nresult: maybe\n", "result"),  # schema error
        ("04-escape.yml", "runbook: aux\nresult: \"\\e]0;title\\a\"\n", "result"),  # hostile value
    ],
)
def test_bad_record_is_a_finding_and_the_rest_is_verified(tmp_path: Path, name: str, text: str, key: str) -> None:
    kit = make(tmp_path)
    clean = kit.verify()
    (kit.evidence / name).write_text(text)
    issues = strict_issues(kit)
    rep = verify(kit.runbooks, kit.evidence, AT, lenient=True)
    bad = [f for f in rep.findings if f.rule == "invalid_record"]
    # Every problem of the file, each message exactly the strict error's line (escaped once).
    assert sorted(f.message for f in bad) == sorted(issues) and all(f.record == name and f.runbook is None for f in bad)
    assert all(f.severity == "error" for f in bad) and not rep.ok
    assert [str(i) for i in rep.bad_files] == issues
    if key:
        assert any(m.startswith(f"{name}: {key}: ") for m in issues)
    assert "\x1b" not in "".join(issues) and "\x07" not in "".join(issues)
    # The good records are judged as before.
    assert [s.to_json() for s in rep.systems] == [s.to_json() for s in clean.systems]
    assert rep.chain_head == clean.chain_head and rep.critical_path == clean.critical_path
    assert [f for f in rep.findings if f.rule != "invalid_record"] == clean.findings


def test_symlinked_record_is_a_finding(tmp_path: Path) -> None:
    kit = make(tmp_path)
    (kit.evidence / "09-link.yml").symlink_to(kit.evidence / "01-base.yml")
    assert strict_issues(kit) == ["09-link.yml: a record must not be a symbolic link"]
    assert lenient_rules(kit) == [
        ("invalid_record", None, "09-link.yml", "09-link.yml: a record must not be a symbolic link")
    ]


def test_a_removed_sealed_record_still_breaks_the_chain(tmp_path: Path) -> None:
    # A sealed record that no longer parses is skipped: the chain notices the gap.
    kit = make(tmp_path)
    (kit.evidence / "02-app.yml").write_text("runbook: app\n: [\n")
    rep = verify(kit.runbooks, kit.evidence, AT, lenient=True)
    rules = {f.rule for f in rep.findings}
    assert {"invalid_record", "chain_broken"} <= rules
    app = rep.system("app")
    assert app is not None and app.valid is False and app.last_record is None


def test_bad_runbooks_are_findings(tmp_path: Path) -> None:
    kit = make(tmp_path)
    (kit.runbooks / "zz.yml").write_text("id: zz\nname: [\n")  # bad YAML
    (kit.runbooks / "other.yml").write_text((kit.runbooks / "aux.yml").read_text())  # id mismatch
    (kit.runbooks / "aux.yaml").write_text((kit.runbooks / "aux.yml").read_text())  # duplicate id
    (kit.runbooks / "estate.yml").write_text("objective: soon\n")  # schema error in the estate file
    issues = strict_issues(kit)
    got = lenient_rules(kit)
    assert sorted(m for _r, _rb, _rec, m in got) == sorted(issues) and len(issues) == 4
    by_file = {Path(m.split(":")[0]).name: (rule, rb, rec) for rule, rb, rec, m in got}
    assert by_file == {
        "zz.yml": ("invalid_runbook", "zz", None),
        "other.yml": ("invalid_runbook", "other", None),
        "aux.yml": ("invalid_runbook", "aux", None),  # aux.yaml sorts first: aux.yml is the duplicate
        "estate.yml": ("invalid_runbook", None, None),
    }
    rep = verify(kit.runbooks, kit.evidence, AT, lenient=True)
    assert set(rep.estate.runbooks) == {"base", "app", "aux"}
    assert rep.estate.settings.objective == 72 * 3600  # the default stands in for the bad estate file
    assert f"{kit.runbooks / 'aux.yml'}: id: runbook id 'aux' is also defined in {kit.runbooks / 'aux.yaml'}" in issues


def test_loaders_keep_bad_files_only_when_lenient(tmp_path: Path) -> None:
    kit = make(tmp_path)
    (kit.evidence / "04-broken.yml").write_text("a: [\n")
    with pytest.raises(EvidenceInputError):
        load_records(kit.evidence)
    recs = load_records(kit.evidence, lenient=True)
    assert [r.name for r in recs.records] == ["01-base.yml", "02-app.yml", "03-aux.yml"]
    assert [i.file for i in recs.bad_files] == ["04-broken.yml"]
    assert load_runbooks(kit.runbooks, lenient=True).bad_files == []


def test_verify_loaded_reports_every_file_the_loaders_skipped(tmp_path: Path) -> None:
    # The loaders hand their skipped files to verify_loaded explicitly: none may vanish on the way.
    kit = make(tmp_path)
    (kit.evidence / "04-broken.yml").write_text("a: [\n")
    (kit.runbooks / "zz.yml").write_text("id: zz\nname: [\n")
    estate = load_runbooks(kit.runbooks, lenient=True)
    evidence = load_records(kit.evidence, lenient=True)
    assert evidence.directory == kit.evidence and len(evidence.bad_files) == len(estate.bad_files) == 1
    rep = verify_loaded(estate, evidence, AT)
    assert rep.bad_files == [*estate.bad_files, *evidence.bad_files]
    assert [(f.rule, f.runbook, f.record) for f in rep.findings if f.rule.startswith("invalid_")] == [
        ("invalid_record", None, "04-broken.yml"),
        ("invalid_runbook", "zz", None),
    ]
    assert not rep.ok and [r.name for r in rep.records] == [r.name for r in evidence.records]
    # The same as loading and verifying in one call.
    whole = verify(kit.runbooks, kit.evidence, AT, lenient=True)
    assert rep.findings == whole.findings and rep.bad_files == whole.bad_files


@pytest.mark.parametrize("which", ["runbooks", "evidence"])
def test_missing_directory_is_an_error_in_both_modes(tmp_path: Path, which: str) -> None:
    kit = make(tmp_path)
    dirs = {"runbooks": kit.runbooks, "evidence": kit.evidence}
    dirs[which] = tmp_path / "nope"
    for lenient in (False, True):
        with pytest.raises(EvidenceInputError, match=f"{which} directory does not exist"):
            verify(dirs["runbooks"], dirs["evidence"], AT, lenient=lenient)


def test_empty_runbooks_directory_is_an_error_in_both_modes(tmp_path: Path) -> None:
    (tmp_path / "rb").mkdir()
    (tmp_path / "ev").mkdir()
    for lenient in (False, True):
        with pytest.raises(EvidenceInputError, match="no runbooks"):
            verify(tmp_path / "rb", tmp_path / "ev", AT, lenient=lenient)


def test_cli_stays_strict(tmp_path: Path) -> None:
    kit = make(tmp_path)
    (kit.evidence / "04-broken.yml").write_text("runbook: aux\nresult: [unclosed\n")
    rc, out, err = run_cli("evidence", "verify", "--runbooks", str(kit.runbooks), "--evidence", str(kit.evidence),
                           "--at", AT.isoformat())
    assert rc == 2 and out == "" and "04-broken.yml: invalid YAML" in err and "invalid_record" not in err
