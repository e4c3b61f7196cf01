"""Backup collector against real restic and borg repositories made in the test, locally and over
SSH (OpenSSH sshd on 127.0.0.1): values equal what the tools themselves print; integrity checks
catch a corrupted pack; restore tests write evidence the verifier accepts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.state import StateStore
from tests.helpers.backups import (
    Repos,
    borg_time,
    make_repos,
    restic_snapshots,
    restic_time,
    where,
    write_agent_config,
)
from tests.helpers.collect import assert_declared, collect, value
from tests.helpers.common import AGENT_BIN, agent_process, free_port, http_get, metric_value, need, wait_until
from tests.helpers.sshd import Sshd

MODES = ["local", "ssh"]


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Repos:
    return make_repos(tmp_path_factory.mktemp("repos"))


def restic_target(repos: Repos, mode: str, sshd: Sshd, **kw: Any) -> dict[str, Any]:
    return {
        "name": "fs1-restic",
        "type": "restic",
        "repository": str(repos.restic),
        "password_file": str(repos.password_file),
        "env": dict(repos.restic_env),
        "group": {"host": "fs1", "tags": ["nightly"]},
        **where(mode, sshd),
        **kw,
    }


def borg_target(repos: Repos, mode: str, sshd: Sshd, **kw: Any) -> dict[str, Any]:
    return {
        "name": "fs1-borg",
        "type": "borg",
        "repository": str(repos.borg),
        "password_file": str(repos.password_file),
        "env": dict(repos.borg_env),
        "archive_glob": "fs-*",
        **where(mode, sshd),
        **kw,
    }


def state_of(r: Any) -> str:
    states = [s.labels["state"] for s in r.samples if s.name == "continuity_backup_state" and s.value == 1]
    assert len(states) == 1, r.samples
    return str(states[0])


@pytest.mark.parametrize("mode", MODES)
def test_restic_values_equal_restic_snapshots(repos: Repos, sshd: Sshd, tmp_path: Path, mode: str) -> None:
    cfg = write_agent_config(tmp_path / "agent.yml", [restic_target(repos, mode, sshd)], sshd)
    r = collect(cfg, "fs1-restic")
    assert r.ok and not r.partial_errors, (r.message, r.partial_errors)
    assert_declared(r)
    snaps = restic_snapshots(repos, "--host=fs1", "--tag=nightly")
    assert len(snaps) == 2
    latest = max(snaps, key=lambda s: restic_time(s["time"]))
    size = json.loads(repos.restic_cmd("--no-lock", "stats", "--json", latest["id"]))["total_size"]
    assert value(r, "continuity_backup_snapshots") == len(snaps)
    assert value(r, "continuity_backup_last_success_timestamp_seconds") == pytest.approx(
        restic_time(latest["time"]), abs=1e-6
    )
    assert value(r, "continuity_backup_last_attempt_timestamp_seconds") == pytest.approx(
        restic_time(latest["time"]), abs=1e-6
    )
    assert value(r, "continuity_backup_size_bytes") == size
    assert value(r, "continuity_backup_size_drop") == 0
    assert value(r, "continuity_backup_rpo_seconds") == 86400
    assert state_of(r) == "fresh"
    assert {s.labels["kind"] for s in r.samples} == {"restic"}
    assert {s.labels["backup"] for s in r.samples} == {"fs1-restic"}


@pytest.mark.parametrize("mode", MODES)
def test_borg_values_equal_borg_list(repos: Repos, sshd: Sshd, tmp_path: Path, mode: str) -> None:
    cfg = write_agent_config(tmp_path / "agent.yml", [borg_target(repos, mode, sshd)], sshd)
    r = collect(cfg, "fs1-borg")
    assert r.ok and not r.partial_errors, (r.message, r.partial_errors)
    assert_declared(r)
    listing = json.loads(repos.borg_cmd("list", "--json", "--glob-archives=fs-*", str(repos.borg)))["archives"]
    assert [a["name"] for a in listing] == ["fs-1", "fs-2"]
    latest = max(listing, key=lambda a: borg_time(a["time"]))
    info = json.loads(repos.borg_cmd("info", "--json", f"{repos.borg}::{latest['name']}"))
    assert value(r, "continuity_backup_snapshots") == len(listing)
    assert value(r, "continuity_backup_last_success_timestamp_seconds") == borg_time(latest["time"])
    assert value(r, "continuity_backup_size_bytes") == info["archives"][0]["stats"]["original_size"]
    assert state_of(r) == "fresh"


def test_restic_size_drop_is_flagged(repos: Repos, sshd: Sshd, tmp_path: Path) -> None:
    repo = tmp_path / "shrinking"
    shutil.copytree(repos.restic, repo)
    repos.restic_cmd("backup", "--host=fs9", str(repos.data / "finance" / "we[ir]d *name.txt"), repo=repo)
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [restic_target(repos, "local", sshd, repository=str(repo), group={"host": "fs9"}, size_drop_fraction=0.5)],
    )
    # One snapshot only: nothing to compare with.
    assert value(collect(cfg, "fs1-restic"), "continuity_backup_size_drop") == 0
    repos.restic_cmd("backup", "--host=fs9", str(repos.data), repo=repo)
    r = collect(cfg, "fs1-restic")
    assert value(r, "continuity_backup_size_drop") == 0  # it grew
    # Ransomware-style shrinkage: the next backup holds a fraction of the data.
    repos.restic_cmd("backup", "--host=fs9", str(repos.data / "hr"), repo=repo)
    r = collect(cfg, "fs1-restic")
    assert value(r, "continuity_backup_size_drop") == 1
    assert "size_drop" in r.info
    assert state_of(r) == "fresh"  # a flag, not a state: the backup ran


@pytest.mark.parametrize("mode", MODES)
def test_wrong_password_and_missing_repository_are_unknown(repos: Repos, sshd: Sshd, tmp_path: Path, mode: str) -> None:
    bad_pw = tmp_path / "bad-pw"
    bad_pw.write_text("not the password\n")
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            restic_target(repos, mode, sshd, password_file=str(bad_pw)),
            borg_target(repos, mode, sshd, name="borg-bad-pw", password_file=str(bad_pw)),
            restic_target(repos, mode, sshd, name="restic-missing", repository=str(tmp_path / "nope")),
            borg_target(repos, mode, sshd, name="borg-missing", repository=str(tmp_path / "nope")),
        ],
        sshd,
    )
    for name, reason in (
        ("fs1-restic", "auth"),
        ("borg-bad-pw", "auth"),
        ("restic-missing", "repository_error"),
        ("borg-missing", "repository_error"),
    ):
        r = collect(cfg, name)
        assert r.ok, r.message
        assert state_of(r) == "unknown", name
        assert [p[0] for p in r.partial_errors] == [reason], (name, r.partial_errors)
        assert value(r, "continuity_backup_last_success_timestamp_seconds") is None
        assert "not the password" not in json.dumps(r.partial_errors)


def corrupt_restic(repos: Repos, tmp_path: Path) -> Path:
    repo = tmp_path / "corrupt-restic"
    shutil.copytree(repos.restic, repo)
    packs = sorted(p for p in (repo / "data").rglob("*") if p.is_file())
    assert packs
    for p in packs:  # flip bytes inside every pack file
        p.chmod(0o600)
        with open(p, "r+b") as f:
            f.seek(min(64, p.stat().st_size // 2))
            f.write(b"\xff" * 16)
    return repo


@pytest.mark.parametrize("mode", MODES)
def test_integrity_check_good_and_corrupted_restic(repos: Repos, sshd: Sshd, tmp_path: Path, mode: str) -> None:
    bad = corrupt_restic(repos, tmp_path)
    integrity = {"interval": "1d", "timeout": "2m"}
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            restic_target(repos, mode, sshd, integrity=integrity),
            restic_target(
                repos,
                mode,
                sshd,
                name="corrupt",
                repository=str(bad),
                integrity={**integrity, "read_data_subset": "100%"},
            ),
        ],
        sshd,
    )
    store = StateStore(None)
    shared: dict[str, Any] = {}
    good = collect(cfg, "fs1-restic", "integrity", store=store, shared=shared)
    assert good.ok and value(good, "continuity_backup_integrity_ok") == 1, (good.message, good.partial_errors)
    assert_declared(good)
    main = collect(cfg, "fs1-restic", store=store, shared=shared)
    ts = value(main, "continuity_backup_integrity_check_last_success_timestamp_seconds")
    assert ts is not None and abs(ts - time.time()) < 120
    store.put(good)
    r = collect(cfg, "corrupt", "integrity", store=store, shared=shared)
    # The check ran and found damage: the verdict is exposed, but the task did not succeed.
    assert not r.ok and r.reason == "integrity_failed", (r.reason, r.message)
    assert value(r, "continuity_backup_integrity_ok") == 0
    assert r.message is not None and str(bad) in r.message
    assert "Pack ID does not match" in r.message, r.message  # restic's own finding, not only "Fatal: ..."
    store.put(r)
    assert ("corrupt", "integrity") not in store.snapshot().last_success
    assert ("fs1-restic", "integrity") in store.snapshot().last_success
    main = collect(cfg, "corrupt", store=store, shared=shared)
    assert value(main, "continuity_backup_integrity_check_last_success_timestamp_seconds") is None


def test_integrity_message_names_the_deleted_pack(repos: Repos, sshd: Sshd, tmp_path: Path) -> None:
    repo = tmp_path / "missing-pack"
    shutil.copytree(repos.restic, repo)
    # The largest pack holds file data (tree packs are small; restic retries a missing tree pack
    # for a minute and a half before reporting it).
    pack = max((p for p in (repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    pack.unlink()
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [restic_target(repos, "ssh", sshd, name="gone", repository=str(repo), integrity={"timeout": "2m"})],
        sshd,
    )
    r = collect(cfg, "gone", "integrity")
    assert not r.ok and r.reason == "integrity_failed", (r.reason, r.message)
    assert r.message is not None and f"pack {pack.name}: does not exist" in r.message, r.message
    assert value(r, "continuity_backup_integrity_ok") == 0
    # What the operator sees by hand: collect-once names the pack and exits 1 (a finding).
    out = subprocess.run(
        [str(AGENT_BIN), "collect-once", "--config", str(cfg), "--task", "integrity", "gone"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert (
        f"# error (integrity_failed): gone: restic check found errors in {repo}: pack {pack.name}: does not exist"
        in (out.stdout)
    ), out.stdout
    assert 'continuity_backup_integrity_ok{backup="gone",kind="restic"} 0' in out.stdout


def test_integrity_check_corrupted_borg(repos: Repos, sshd: Sshd, tmp_path: Path) -> None:
    repo = tmp_path / "corrupt-borg"
    shutil.copytree(repos.borg, repo)
    segments = sorted(
        (p for p in (repo / "data").rglob("*") if p.is_file() and p.stat().st_size > 100),
        key=lambda p: p.stat().st_size,
    )
    with open(segments[-1], "r+b") as f:
        f.seek(segments[-1].stat().st_size // 2)
        f.write(b"\x00" * 64)
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            borg_target(repos, "ssh", sshd, integrity={"interval": "1d", "timeout": "2m"}),
            borg_target(
                repos,
                "ssh",
                sshd,
                name="corrupt",
                repository=str(repo),
                env={**repos.borg_env, "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"},
                integrity={"interval": "1d", "timeout": "2m", "verify_data": True},
            ),
        ],
        sshd,
    )
    good = collect(cfg, "fs1-borg", "integrity")
    assert value(good, "continuity_backup_integrity_ok") == 1, (good.message, good.partial_errors)
    r = collect(cfg, "corrupt", "integrity")
    assert not r.ok and r.reason == "integrity_failed", (r.reason, r.message)
    assert value(r, "continuity_backup_integrity_ok") == 0
    # borg's own finding names the damaged segment
    assert r.message is not None and f"[segment {segments[-1].name}, offset" in r.message, r.message


def write_runbook(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "file-shares.yml").write_text(
        yaml.safe_dump(
            {
                "id": "file-shares",
                "name": "File shares",
                "version": 3,
                "owner": "Infrastructure Manager",
                "tier": 2,
                "objectives": {"rto": "8h", "rpo": "24h", "mtpd": "72h"},
                "backups": ["fs1-restic", "fs1-borg"],
                "recovery_steps": [
                    {
                        "id": "restore-from-backup",
                        "title": "Restore shares from backup",
                        "role": "Engineer",
                        "expected_duration": "2h",
                    },
                    {
                        "id": "repoint-dfs",
                        "title": "Re-point DFS",
                        "role": "Engineer",
                        "after": ["restore-from-backup"],
                        "expected_duration": "1h",
                    },
                ],
                "validation": [{"id": "restore-verified", "description": "Restored files match the backup"}],
            },
            sort_keys=False,
        )
    )
    return directory


@pytest.mark.parametrize("kind,mode", [("restic", "local"), ("restic", "ssh"), ("borg", "local"), ("borg", "ssh")])
def test_restore_test_writes_evidence_the_verifier_accepts(
    repos: Repos, sshd: Sshd, tmp_path: Path, kind: str, mode: str
) -> None:
    from agent.evidence import verify

    runbooks = write_runbook(tmp_path / "runbooks")
    evidence = tmp_path / "evidence"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    budget = repos.data / "finance" / "budget.xlsx"
    digest = hashlib.sha256(budget.read_bytes()).hexdigest()
    # restic keeps absolute paths as given; borg stores them without the leading slash
    snap_path = str(budget) if kind == "restic" else str(budget).lstrip("/")
    rt = {
        "interval": "7d",
        "timeout": "3m",
        "sample_files": 3,
        "paths": [snap_path.rsplit("/", 1)[0]],
        "checksums": {snap_path: digest},
        "scratch_dir": str(scratch),
        "evidence": {
            "dir": str(evidence),
            "runbooks_dir": str(runbooks),
            "runbook": "file-shares",
            "runbook_version": 3,
            "step": "restore-from-backup",
            "validation": "restore-verified",
        },
    }
    t = (restic_target if kind == "restic" else borg_target)(repos, mode, sshd, restore_test=rt)
    cfg = write_agent_config(tmp_path / "agent.yml", [t], sshd)
    store = StateStore(None)
    shared: dict[str, Any] = {}
    r = collect(cfg, t["name"], "restore_test", store=store, shared=shared)
    assert r.ok and not r.partial_errors, (r.message, r.partial_errors)
    assert_declared(r)
    assert value(r, "continuity_backup_restore_test_ok") == 1
    assert 0 < value(r, "continuity_backup_restore_test_duration_seconds") < 180  # type: ignore[operator]
    assert r.info["files_verified"] >= 4
    assert list(scratch.iterdir()) == []  # cleaned up
    main = collect(cfg, t["name"], store=store, shared=shared)
    ts = value(main, "continuity_backup_restore_test_last_success_timestamp_seconds")
    assert ts is not None and abs(ts - time.time()) < 300
    # The record: sealed, of type automated_restore, and the verifier accepts it.
    records = sorted(evidence.glob("*.yml"))
    assert len(records) == 1
    rec = yaml.safe_load(records[0].read_text())
    assert rec["type"] == "automated_restore" and rec["result"] == "pass" and rec["sequence"] == 1
    assert rec["steps"][0]["id"] == "restore-from-backup" and rec["steps"][0]["result"] == "ok"
    art = json.loads((evidence / rec["artefacts"][0]["path"]).read_text())
    assert {f["path"] for f in art["files"] if f.get("expected_sha256") == digest} == {snap_path}
    report = verify(runbooks, evidence, at=datetime.now(UTC) + timedelta(minutes=1))
    assert report.ok, [f"{f.rule}: {f.message}" for f in report.findings]
    sysinfo = {s.runbook: s for s in report.systems}["file-shares"]
    assert sysinfo.valid and sysinfo.last_test_type == "automated_restore"
    assert sysinfo.evidence_record == records[0].name


def test_restore_test_with_wrong_checksum_fails_and_records_it(repos: Repos, sshd: Sshd, tmp_path: Path) -> None:
    from agent.evidence import verify

    runbooks = write_runbook(tmp_path / "runbooks")
    evidence = tmp_path / "evidence"
    rt = {
        "interval": "7d",
        "timeout": "3m",
        "checksums": {str(repos.data / "finance" / "budget.xlsx"): "0" * 64},
        "scratch_dir": str(tmp_path),
        "evidence": {
            "dir": str(evidence),
            "runbooks_dir": str(runbooks),
            "runbook": "file-shares",
            "runbook_version": 3,
            "step": "restore-from-backup",
            "validation": "restore-verified",
        },
    }
    cfg = write_agent_config(tmp_path / "agent.yml", [restic_target(repos, "ssh", sshd, restore_test=rt)], sshd)
    r = collect(cfg, "fs1-restic", "restore_test")
    assert not r.ok and r.reason == "restore_failed", (r.reason, r.message)
    assert value(r, "continuity_backup_restore_test_ok") == 0
    assert not r.partial_errors, r.partial_errors
    assert r.message is not None and "does not match" in r.message
    assert not list(tmp_path.glob("continuity-restore.*"))
    rec = yaml.safe_load(next(evidence.glob("*.yml")).read_text())
    assert rec["result"] == "fail" and rec["validations"][0]["result"] == "fail"
    assert rec["issues"][0]["status"] == "open"
    report = verify(runbooks, evidence, at=datetime.now(UTC))
    assert not any(f.severity == "error" and f.rule != "evidence_overdue" for f in report.findings), report.findings
    assert {s.runbook: s for s in report.systems}["file-shares"].valid is False


def test_blocked_restore_tests_are_counted_shown_and_recorded(repos: Repos, sshd: Sshd, tmp_path: Path) -> None:
    """A restore test blocked by a real borg lock, and one whose host refuses connections, in a
    running agent: each is counted by reason, shown on the status page and API as not run, and
    recorded as failed evidence with the step skipped; neither advances the task's last success."""
    from agent.evidence import verify

    runbooks = write_runbook(tmp_path / "runbooks")
    locked_repo = tmp_path / "locked-borg"
    shutil.copytree(repos.borg, locked_repo)
    env = {**repos.borg_env, "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}

    def rt(name: str) -> dict[str, Any]:
        return {
            "interval": "7d",
            "timeout": "1m",
            "sample_files": 2,
            "scratch_dir": str(tmp_path),
            "evidence": {
                "dir": str(tmp_path / f"evidence-{name}"),
                "runbooks_dir": str(runbooks),
                "runbook": "file-shares",
                "runbook_version": 3,
                "step": "restore-from-backup",
                "validation": "restore-verified",
            },
        }

    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            borg_target(repos, "ssh", sshd, repository=str(locked_repo), env=env, restore_test=rt("borg")),
            restic_target(repos, "ssh", sshd, port=free_port(), restore_test=rt("restic")),
        ],
        sshd,
    )
    holder = subprocess.Popen(
        [need("borg"), "with-lock", str(locked_repo), "sleep", "300"],
        env={**os.environ, **env, "BORG_PASSCOMMAND": f"cat {repos.password_file}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: (locked_repo / "lock.exclusive").is_dir(), timeout=30, what="borg with-lock")
        with agent_process(cfg) as agent:

            def restore_tasks() -> dict[str, dict[str, Any]]:
                doc = json.loads(http_get(agent.url + "/api/v1/status")[1])
                return {t["name"]: k for t in doc["targets"] for k in t["tasks"] if k["task"] == "restore_test"}

            wait_until(lambda: len(restore_tasks()) == 2, timeout=60, what="both restore tests ran")
            tasks = restore_tasks()
            text = agent.metrics()
            page = http_get(agent.url + "/")[1].decode()
    finally:
        holder.terminate()
        holder.wait(30)
    for name, reason in (("fs1-borg", "repository_locked"), ("fs1-restic", "unreachable")):
        k = tasks[name]
        assert k["ok"] is False and k["result"] == "not_run" and k["reason"] == reason, k
        assert k["last_success"] is None
        assert "restore test not run" in k["message"]
        assert metric_value(text, "continuity_backup_restore_test_not_run_total", backup=name, reason=reason) == 1
        other = "unreachable" if reason == "repository_locked" else "repository_locked"
        assert metric_value(text, "continuity_backup_restore_test_not_run_total", backup=name, reason=other) == 0
        assert (
            metric_value(text, "continuity_task_last_success_timestamp_seconds", target=name, task="restore_test")
            is None
        )
        assert metric_value(text, "continuity_backup_restore_test_ok", backup=name) is None  # unknown, not a pass
        assert metric_value(text, "continuity_target_errors_total", target=name, reason=reason) is not None
        assert reason in page
        # The evidence a committee reads: a failed automated restore, the restore step skipped with why.
        ev = tmp_path / f"evidence-{name.split('-')[1]}"
        records = sorted(ev.glob("*.yml"))
        assert len(records) == 1, records
        rec = yaml.safe_load(records[0].read_text())
        assert rec["type"] == "automated_restore" and rec["result"] == "fail" and rec["sequence"] == 1
        assert rec["steps"][0]["result"] == "skipped" and reason in rec["steps"][0]["notes"]
        assert "service_restored_at" not in rec and rec["validations"] == []
        assert rec["issues"][0]["status"] == "open" and "could not run" in rec["issues"][0]["description"]
        report = verify(runbooks, ev, at=datetime.now(UTC))
        assert not any(f.severity == "error" and f.rule != "evidence_overdue" for f in report.findings), [
            f"{f.rule}: {f.message}" for f in report.findings
        ]
    assert page.count("NOT RUN") == 2


def test_restic_and_borg_over_ssh_with_password_only_in_env(repos: Repos, sshd: Sshd, tmp_path: Path) -> None:
    """#19: over SSH a target's env: values reach the tool on stdin, not on a command line
    (tests/integration/test_ssh_env.py); the repository password given only that way - restic's
    RESTIC_PASSWORD from ${ENV}, borg's BORG_PASSPHRASE from env_file - opens real repositories."""
    password = repos.password_file.read_text().rstrip("\n")
    pw_file = tmp_path / "borg-passphrase"
    pw_file.write_text(password + "\n")
    pw_file.chmod(0o600)
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            {
                "name": "r",
                "type": "restic",
                "repository": str(repos.restic),
                "env": {**repos.restic_env, "RESTIC_PASSWORD": "${TEST_RESTIC_PASSWORD}"},
                "group": {"host": "fs1", "tags": ["nightly"]},
                "integrity": {"interval": "1d", "timeout": "2m"},
                **where("ssh", sshd),
            },
            {
                "name": "b",
                "type": "borg",
                "repository": str(repos.borg),
                "env": repos.borg_env,
                "env_file": {"BORG_PASSPHRASE": str(pw_file)},
                "archive_glob": "fs-*",
                **where("ssh", sshd),
            },
        ],
        sshd,
    )
    os.environ["TEST_RESTIC_PASSWORD"] = password
    try:
        r = collect(cfg, "r")
        check = collect(cfg, "r", "integrity")
        b = collect(cfg, "b")
    finally:
        del os.environ["TEST_RESTIC_PASSWORD"]
    assert r.ok and not r.partial_errors, (r.message, r.partial_errors)
    assert value(r, "continuity_backup_snapshots") == 2
    assert check.ok and value(check, "continuity_backup_integrity_ok") == 1, check.message
    assert b.ok and not b.partial_errors, (b.message, b.partial_errors)
    assert value(b, "continuity_backup_snapshots") == 2
    # Without the password in env the same repositories refuse: env: is what opened them.
    cfg_bad = write_agent_config(
        tmp_path / "bad.yml",
        [
            {"name": "r", "type": "restic", "repository": str(repos.restic), "env": {**repos.restic_env,
             "RESTIC_PASSWORD": "wrong"}, **where("ssh", sshd)},
            {"name": "b", "type": "borg", "repository": str(repos.borg), "env": {**repos.borg_env,
             "BORG_PASSPHRASE": "wrong"}, **where("ssh", sshd)},
        ],
        sshd,
    )  # fmt: skip
    for name in ("r", "b"):
        bad = collect(cfg_bad, name)
        assert [p[0] for p in bad.partial_errors] == ["auth"], (name, bad.partial_errors)
