"""check-config lists the problems of every stage in one run, and checks restore-test evidence ids
against the runbooks they name (a default id no runbook defines sealed evidence that failed verify)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from tests.helpers.common import ROOT

pytestmark = pytest.mark.unit


def _check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    cfg = tmp_path / "agent.yml"
    cfg.write_text(text)
    rc = main(["check-config", str(cfg)])
    lines = [line.removeprefix(f"{cfg}: ") for line in capsys.readouterr().err.splitlines()]
    return rc, lines


def test_field_errors_and_cross_checks_in_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, lines = _check(
        tmp_path,
        """agent: {site: hq, state_dir: state}
sites: [{name: hq}]
auths:
  snmp1: {type: snmp_v2c, community_file: missing-secret}
targets:
  - {name: a, kind: probe, module: tcp, host: 127.0.0.1, port: 99999}
  - {name: b, kind: probe, module: tcp, host: 127.0.0.1, port: 80, site: nowhere}
  - {name: b, kind: probe, module: tcp, host: 127.0.0.1, port: 81}
  - {name: c, kind: snmp, host: 127.0.0.1, auth: nope}
  - {name: d, kind: probe, module: http, url: "ftp://x"}
  - {name: e, kind: snmp, host: 127.0.0.1, auth: snmp1}
""",
        capsys,
    )
    assert rc == 2
    # field-level problems ...
    assert any(line.startswith("auths.snmp1: community_file: cannot read secret file") for line in lines), lines
    assert any(line.startswith("targets[0].port:") for line in lines)
    assert any(line.startswith("targets[4]: url 'ftp://x'") for line in lines)
    # ... and the cross-checks that used to wait for them to be fixed, with the file's own indices
    assert "targets[1].site: site 'nowhere' is not in sites" in lines
    assert "targets[2].name: target name 'b' is used more than once" in lines
    assert "targets[3].auth: auth 'nope' is not in auths" in lines
    # no complaint invented about the auth whose secret file is missing
    assert not any("targets[5]" in line for line in lines), lines
    assert lines[-1] == "6 error(s)"


RESTORE = """agent: {{site: hq, state_dir: state}}
targets:
  - name: file-shares
    kind: backup
    type: restic
    repository: /srv/restic
    password_file: {pw}
    rpo: 24h
    restore_test:
      paths: [/srv/shares/a.txt]
      evidence:
        dir: ev
        runbooks_dir: {runbooks}
        runbook: {runbook}
        runbook_version: {version}
{extra}"""


@pytest.mark.parametrize(
    ("runbook", "version", "extra", "expected"),
    [
        ("file-services", 2, "        step: restore-from-backup\n        validation: sample-checksums\n",
         "restore_test.evidence.step: runbook 'file-services' has no recovery step 'restore-from-backup' (steps: "),
        ("file-services", 2, "        step: restore-volumes\n        validation: restore-verified\n",
         "restore_test.evidence.validation: runbook 'file-services' has no validation 'restore-verified'"),
        ("file-services", 1, "        step: restore-volumes\n        validation: sample-checksums\n",
         "restore_test.evidence.runbook_version: runbook 'file-services' is at version 2, not 1"),
        ("file-shares", 1, "        step: restore-volumes\n        validation: sample-checksums\n",
         "restore_test.evidence.runbook: no runbook 'file-shares' in"),
        ("file-services", 2, "", "restore_test.evidence.step: Field required"),
    ],
)
def test_restore_test_evidence_ids_are_checked_against_the_runbooks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runbook: str, version: int, extra: str, expected: str
) -> None:
    (tmp_path / "pw").write_text("x\n")
    (tmp_path / "pw").chmod(0o600)
    text = RESTORE.format(pw=tmp_path / "pw", runbooks=ROOT / "runbooks", runbook=runbook, version=version, extra=extra)
    rc, lines = _check(tmp_path, text, capsys)
    assert rc == 2
    assert any(line.startswith(f"targets[0].{expected}") for line in lines), lines


def test_restore_test_evidence_that_matches_the_runbook_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pw").write_text("x\n")
    (tmp_path / "pw").chmod(0o600)
    extra = "        step: restore-volumes\n        validation: sample-checksums\n"
    cfg = tmp_path / "agent.yml"
    runbooks = ROOT / "runbooks"
    text = RESTORE.format(pw=tmp_path / "pw", runbooks=runbooks, runbook="file-services", version=2, extra=extra)
    cfg.write_text(text)
    assert main(["check-config", str(cfg)]) == 0, capsys.readouterr().err
