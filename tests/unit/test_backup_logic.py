"""Backup state rules, config validation, the push handler's refusals and command building."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from agent.catalogue import catalogue
from agent.config import ConfigError, dump_config, load_config
from collectors.backup import tools
from collectors.backup.collector import METRICS, NOT_RUN_REASONS, REASONS
from collectors.backup.config import BackupTarget
from collectors.backup.kv import BackupKV, key
from collectors.backup.push import make_routes
from collectors.backup.status import FAILED, FRESH, LATE, NEVER_RAN, STALE, UNKNOWN, Facts, backup_state, size_dropped
from collectors.base import HttpRequest
from collectors.commands import CommandResult
from collectors.ssh import remote_command

H = 3600.0
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    "facts,expected",
    [
        (None, UNKNOWN),
        (Facts(None, None, None), NEVER_RAN),
        (Facts(NOW - H, NOW - H, True), FRESH),
        (Facts(NOW - 2 * H, NOW - 2 * H, True), FRESH),  # exactly at the RPO
        (Facts(NOW - 2.5 * H, NOW - 2.5 * H, True), LATE),
        (Facts(NOW - 3 * H, NOW - 3 * H, True), LATE),  # exactly at RPO + grace
        (Facts(NOW - 3 * H - 1, NOW - 3 * H - 1, True), STALE),
        (Facts(NOW - H, NOW - 60, False), FAILED),
        (Facts(None, NOW - 60, False), FAILED),
        (Facts(NOW - 5 * H, NOW - 60, False), FAILED),  # failing beats stale: it says more
        (Facts(NOW - 60, NOW - H, False), FRESH),  # an old failure before a newer success
        (Facts(NOW - 60, NOW - 60, None), FRESH),  # restic: successes only
    ],
)
def test_state_rules(facts: Facts | None, expected: str) -> None:
    assert backup_state(facts, NOW, 2 * H, H) == expected


def test_size_drop_rule() -> None:
    assert size_dropped(40, 100, 0.5)
    assert not size_dropped(50, 100, 0.5)
    assert not size_dropped(10, None, 0.5)
    assert not size_dropped(10, 0, 0.5)
    assert not size_dropped(10, 100, None)


def test_restore_not_run_reasons_are_the_documented_reasons_without_a_verdict() -> None:
    # The label values of continuity_backup_restore_test_not_run_total{reason}, each exported from 0.
    assert sorted(NOT_RUN_REASONS) == [
        "auth",
        "bad_output",
        "command_failed",
        "host_key",
        "output_too_large",
        "repository_busy",
        "repository_error",
        "repository_locked",
        "timeout",
        "unreachable",
    ]
    # They come from the one reason table, which docs/backups.md's "Failure reasons" lists in full;
    # the reasons left out are those that come with a verdict (or after one).
    text = (Path(__file__).resolve().parents[2] / "docs" / "backups.md").read_text()
    table = text[text.index("## Failure reasons") :].split("\n\n")[1]
    documented = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert sorted(documented) == sorted(REASONS)
    assert sorted(set(REASONS) - set(NOT_RUN_REASONS)) == ["evidence_failed", "integrity_failed", "restore_failed"]
    help_text = catalogue()["continuity_backup_restore_test_not_run_total"].help
    for example in ("repository_locked", "repository_busy", "unreachable", "timeout"):  # named in the help
        assert example in NOT_RUN_REASONS and example in help_text


def test_metrics_declared_with_issue_names() -> None:
    cat = catalogue()
    names = {m.name for m in METRICS}
    assert {
        "continuity_backup_last_success_timestamp_seconds",
        "continuity_backup_last_attempt_timestamp_seconds",
        "continuity_backup_size_bytes",
        "continuity_backup_snapshots",
        "continuity_backup_rpo_seconds",
        "continuity_backup_state",
        "continuity_backup_integrity_check_last_success_timestamp_seconds",
        "continuity_backup_integrity_ok",
        "continuity_backup_restore_test_last_success_timestamp_seconds",
        "continuity_backup_restore_test_duration_seconds",
    } <= names
    for m in METRICS:
        assert cat[m.name] == m
        assert m.labels[:2] == ("backup", "kind")
    assert cat["continuity_backup_state"].labels == ("backup", "kind", "state")


# -- config ---------------------------------------------------------------------------------------


def load(tmp_path: Path, targets: list[dict[str, Any]], auths: dict[str, Any] | None = None) -> Any:
    p = tmp_path / "agent.yml"
    p.write_text(
        yaml.safe_dump(
            {
                "agent": {"site": "hq"},
                "auths": auths or {},
                "targets": [{"kind": "backup", "rpo": "24h", **t} for t in targets],
            }
        )
    )
    return load_config(p)


def errors(tmp_path: Path, targets: list[dict[str, Any]], auths: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, targets, auths)
    return "\n".join(str(i) for i in ei.value.issues)


@pytest.mark.parametrize(
    "target,message",
    [
        ({"name": "a", "type": "restic"}, "type restic needs repository"),
        (
            {"name": "a", "type": "restic", "repository": "/r", "pattern": "*.gz"},
            "pattern does not apply to type restic",
        ),
        ({"name": "a", "type": "files", "directory": "relative"}, "directory, an absolute path"),
        ({"name": "a", "type": "files", "directory": "/d", "pattern": "a/b"}, "must not be empty or contain '/'"),
        ({"name": "a", "type": "command"}, "type command needs command"),
        ({"name": "a", "type": "push"}, "type push needs token"),
        ({"name": "a", "type": "push", "token": "literal"}, "secrets are not written in the config"),
        ({"name": "a", "type": "restic", "repository": "/r", "host": "h"}, "host and auth go together"),
        (
            {"name": "a", "type": "restic", "repository": "/r", "password_file": "pw"},
            "password_file must be an absolute",
        ),
        ({"name": "a", "type": "restic", "repository": "/r", "rpo": "0s"}, "rpo must be more than 0s"),
        ({"name": "a", "type": "restic", "repository": "/r", "env": {"A B": "1"}}, "not a valid environment variable"),
        (
            {"name": "a", "type": "restic", "repository": "/r", "integrity": {"read_data_subset": "lots"}},
            "read_data_subset 'lots'",
        ),
        (
            {"name": "a", "type": "borg", "repository": "/r", "integrity": {"read_data_subset": "5%"}},
            "applies to restic only",
        ),
        ({"name": "a", "type": "restic", "repository": "/r", "integrity": {"cron": "61 * * * *"}}, "cron '61 * * * *'"),
        ({"name": "a", "type": "restic", "repository": "/r", "restore_test": {}}, "needs paths, checksums or sample"),
        (
            {
                "name": "a",
                "type": "restic",
                "repository": "/r",
                "restore_test": {"paths": ["/x"], "scratch_dir": "tmp"},
            },
            "scratch_dir must be an absolute path",
        ),
        (
            {"name": "a", "type": "restic", "repository": "/r", "restore_test": {"checksums": {"/x": "abc"}}},
            "64 lower-case hex",
        ),
        (
            {
                "name": "a",
                "type": "restic",
                "repository": "/r",
                "restore_test": {
                    "paths": ["/x"],
                    "evidence": {
                        "dir": "/e", "runbook": "Files", "runbook_version": 1, "seal": False,
                        "step": "s", "validation": "v",
                    },
                },
            },
            "runbook",
        ),
        (
            {
                "name": "a",
                "type": "restic",
                "repository": "/r",
                "restore_test": {
                    "paths": ["/x"],
                    "evidence": {"dir": "/e", "runbook": "files", "runbook_version": 1, "step": "s", "validation": "v"},
                },
            },
            "sealing a record needs runbooks_dir",
        ),
        (
            {"name": "a", "type": "restic", "repository": "/r", "integrity": {"interval": "1h", "timeout": "2h"}},
            "integrity.timeout: must not be longer than its interval",
        ),
    ],
)
def test_bad_backup_config(tmp_path: Path, target: dict[str, Any], message: str) -> None:
    text = errors(tmp_path, [target])
    assert message in text
    assert "targets[0]" in text


def test_env_file_with_a_nul_byte_is_refused(tmp_path: Path) -> None:
    """No environment can hold a NUL byte (locally or over SSH): one error naming the key."""
    f = tmp_path / "val"
    f.write_text("abc\0def\n")
    f.chmod(0o600)
    text = errors(tmp_path, [{"name": "a", "type": "command", "command": ["x"], "env_file": {"K": str(f)}}])
    assert "env_file.K: an environment value must not contain a NUL byte" in text and "targets[0]" in text


def test_ssh_auth_config(tmp_path: Path) -> None:
    key_file = tmp_path / "id"
    key_file.write_text("x")
    t = {"name": "a", "type": "restic", "repository": "/r", "host": "nas", "auth": "site"}
    assert "known_hosts" in errors(
        tmp_path,
        [t],
        {"site": {"type": "ssh", "user": "u", "key_file": str(key_file), "known_hosts": str(tmp_path / "missing")}},
    )
    (tmp_path / "kh").write_text("")
    good = {"type": "ssh", "user": "u", "key_file": "id", "known_hosts": "kh"}  # relative to the config file
    cfg = load(tmp_path, [t], {"site": good}).config
    assert cfg.auths["site"].key_file == tmp_path / "id"
    assert "has type 'http_basic'" in errors(
        tmp_path, [t], {"site": {"type": "http_basic", "username": "u", "password": "${HOME}"}}
    )
    assert "user" in errors(tmp_path, [t], {"site": {**good, "user": "u; rm -rf /"}})


def test_secrets_are_masked_in_dumps(tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.write_text("very-secret-token\n")
    tok.chmod(0o600)
    loaded = load(tmp_path, [{"name": "p", "type": "push", "token_file": str(tok)}])
    text = dump_config(loaded.config)
    assert "very-secret-token" not in text and "<secret>" in text
    assert "very-secret-token" not in repr(loaded.config)


def test_side_tasks_only_for_restic_and_borg(tmp_path: Path) -> None:
    t = {"name": "a", "type": "command", "command": ["x"], "integrity": {}}
    assert "integrity does not apply to type command" in errors(tmp_path, [t])
    t = {"name": "a", "type": "files", "directory": "/d", "restore_test": {"paths": ["/x"]}}
    assert "restore_test does not apply to type files" in errors(tmp_path, [t])


# -- commands -------------------------------------------------------------------------------------


def test_command_lines() -> None:
    t = BackupTarget.model_validate(
        {
            "name": "a",
            "kind": "backup",
            "type": "restic",
            "repository": "sftp:nas:/srv/restic repo",
            "rpo": "1d",
            "password_file": "/etc/restic/pw",
            "group": {"host": "fs1", "paths": ["/srv/a b"], "tags": ["x", "y"]},
        }
    )
    assert tools.restic_snapshots(t) == [
        "restic",
        "--repo=sftp:nas:/srv/restic repo",
        "--password-file=/etc/restic/pw",
        "--no-lock",
        "snapshots",
        "--json",
        "--host=fs1",
        "--path=/srv/a b",
        "--tag=x,y",
    ]
    assert tools.restic_pattern("/a/we[ir]d *?\\") == "/a/we\\[ir\\]d \\*\\?\\\\"
    b = BackupTarget.model_validate(
        {
            "name": "b",
            "kind": "backup",
            "type": "borg",
            "repository": "/r",
            "rpo": "1d",
            "password_file": "/etc/borg pw",
            "env": {"TZ": "Europe/London"},
        }
    )
    env = tools.borg_env(b)
    assert shlex.split(env["BORG_PASSCOMMAND"]) == ["cat", "--", "/etc/borg pw"]
    assert env["TZ"] == "Europe/London"  # explicit env wins
    assert tools.borg_extract(b, "fs-1", ["pp:odd", "x"])[-2:] == ["pp:pp:odd", "pp:x"]
    line, stdin = remote_command(["restic", "--repo=/r; rm -rf /"], {"A": "$(x)", "B": "1\n2"}, cwd="/tmp/a b")
    words = shlex.split(line)
    assert words[:5] == ["sh", "-c", 'cd -- "$1" && shift && exec "$@"', "sh", "/tmp/a b"]
    # The environment's names are on the line, its values only on stdin.
    assert words[5:7] == ["sh", "-c"] and words[8:] == ["sh", "A", "B", "--", "restic", "--repo=/r; rm -rf /"]
    assert "$(x)" not in line and stdin == b"=$(x)\n+1\n=2\n"


def res(rc: int, err: str) -> CommandResult:
    return CommandResult(("restic", "check"), rc, b"", err.encode(), 0.1)


@pytest.mark.parametrize(
    "kind,rc,err,verdict",
    [
        ("restic", 0, "no errors were found", True),
        ("restic", 1, "error for tree 35d289d0:\nFatal: repository contains errors", False),
        ("restic", 1, "unable to create lock in backend: repository is already locked", "repository_locked"),
        ("restic", 11, "whatever", "repository_locked"),
        ("restic", 12, "whatever", "auth"),
        ("restic", 1, "Fatal: wrong password or no key found", "auth"),
        ("restic", 10, "", "repository_error"),
        (
            "restic",
            1,
            "Fatal: unable to open config file: stat /r/config: no such file or directory",
            "repository_error",
        ),
        ("restic", 3, "something else", "command_failed"),
        ("borg", 1, "Data integrity error: segment 1\nFinished full repository check, errors found.", False),
        ("borg", 2, "Failed to create/acquire the lock /r/lock.exclusive (timeout).", "repository_locked"),
        (
            "borg",
            2,
            "passphrase supplied in BORG_PASSPHRASE, by BORG_PASSCOMMAND or via BORG_PASSPHRASE_FD is incorrect.",
            "auth",
        ),
        ("borg", 2, "Repository /r does not exist.", "repository_error"),
    ],
)
def test_check_verdicts(kind: str, rc: int, err: str, verdict: Any) -> None:
    if isinstance(verdict, bool):
        assert tools.check_verdict(kind, res(rc, err), "t")[0] is verdict
    else:
        with pytest.raises(Exception) as ei:
            tools.check_verdict(kind, res(rc, err), "t")
        assert getattr(ei.value, "reason", None) == verdict


FIX = Path(__file__).resolve().parents[1] / "fixtures" / "backup"


def test_check_findings_keep_the_tools_own_lines() -> None:
    ok, detail = tools.check_verdict("restic", res(1, (FIX / "restic-check-missing-tree-pack.stderr").read_text()), "t")
    assert ok is False
    first, second = detail.split(" | ")
    assert first == "pack 78c198a18efa971eac3be1f32b426188a0bc012c8abf8a5ad3f376c528a63a33: does not exist"
    # the indented continuation joined to its line, the long line cut to the cap; no retry noise
    assert second.startswith("error for tree d301fec7: ReadFull(<data/78c198a18e>): open /srv/backup/repo/data/78/")
    assert second.endswith("...") and len(second) == tools.MAX_FINDING_LEN
    ok, detail = tools.check_verdict("borg", res(1, (FIX / "borg-check-damaged-segment.stderr").read_text()), "t")
    assert ok is False
    assert detail.startswith(
        "Data integrity error: Segment entry checksum mismatch [segment 2, offset 200092]"
        " | Index object count mismatch."
    )
    assert detail.endswith("(and 4 more finding lines)")
    ok, detail = tools.check_verdict("restic", res(1, "Fatal: repository contains errors\n"), "t")
    assert detail == "Fatal: repository contains errors"  # nothing else said: the verdict itself


def test_check_findings_are_capped_and_cleaned() -> None:
    err = "".join(f"pack {i:064x}: does not exist {'x' * 300}\x1b[31m\n" for i in range(50))
    ok, detail = tools.check_verdict("restic", res(1, err), "t")
    assert ok is False and "\x1b" not in detail
    assert len(detail) <= tools.MAX_DETAIL_LEN + 40
    assert detail.count("does not exist") == tools.MAX_FINDINGS
    assert detail.endswith(f"(and {50 - tools.MAX_FINDINGS} more finding lines)")


def test_stderr_keeps_head_and_tail() -> None:
    from collectors.commands import TailBuffer

    buf = TailBuffer(keep=100, head=20)
    buf.feed(b"first finding line\n")
    for i in range(100):
        buf.feed(f"retry {i:03d}\n".encode())
    buf.feed(b"Fatal: verdict\n")
    text = buf.value().decode()
    assert text.startswith("first finding line\n")
    assert text.endswith("Fatal: verdict\n")
    assert "bytes of stderr omitted" in text
    small = TailBuffer(keep=100, head=20)
    small.feed(b"a\nb\n")
    assert small.value() == b"a\nb\n"


# -- push handler ---------------------------------------------------------------------------------


def push_agent(tmp_path: Path) -> Any:
    tok = tmp_path / "tok"
    tok.write_text("tok-123456\n")
    tok.chmod(0o600)
    loaded = load(
        tmp_path,
        [{"name": "p", "type": "push", "token_file": str(tok)}, {"name": "c", "type": "command", "command": ["true"]}],
    )
    return SimpleNamespace(loaded=loaded, shared={}, store=None, clock=lambda: NOW)


def req(path: str, token: str | None = None, body: bytes = b"") -> HttpRequest:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return HttpRequest("POST", path, {}, headers, body, "127.0.0.1")


def test_push_handler(tmp_path: Path) -> None:
    agent = push_agent(tmp_path)
    (route,) = make_routes(agent)
    h = route.handler
    cases = [
        (req("/api/v1/backup/p/success"), 401),
        (HttpRequest("POST", "/api/v1/backup/p/success", {}, {"authorization": "Basic tok-123456"}, b"", ""), 401),
        (req("/api/v1/backup/p/success", "tok-12345"), 403),
        (req("/api/v1/backup/p/success", "tok-1234567"), 403),
        (req("/api/v1/backup/zz/success", "tok-123456"), 403),  # unknown: same answer as a wrong token
        (req("/api/v1/backup/c/success", "tok-123456"), 403),  # not a push backup: the same
        (req("/api/v1/backup/p/ok", "tok-123456"), 404),
        (req("/api/v1/backup/a/p/success", "tok-123456"), 404),
        (req("/api/v1/backup/p/success", "tok-123456", b"\xff"), 400),
        (req("/api/v1/backup/p/success", "tok-123456", b'{"size_bytes": true}'), 400),
        (req("/api/v1/backup/p/success", "tok-123456", b'{"extra": 1}'), 400),
    ]
    for r, status in cases:
        resp = h(r)
        assert resp.status == status, (r.path, r.headers, resp.body)
        assert b"tok-123456" not in resp.body
    assert BackupKV.of(agent.shared, None).get(key("p", "push")) is None  # nothing written
    ok = h(req("/api/v1/backup/p/success", "tok-123456", b'{"size_bytes": 10, "message": "done"}'))
    assert ok.status == 200 and json.loads(ok.body)["at"] == NOW
    h(req("/api/v1/backup/p/success", "tok-123456", b'{"size_bytes": 3}'))
    rec = BackupKV.of(agent.shared, None).get(key("p", "push"))
    assert rec == {
        "last_attempt": NOW,
        "last_attempt_ok": True,
        "message": "",
        "last_success": NOW,
        "size_bytes": 3,
        "prev_size_bytes": 10,
        "successes": 2,
    }
    h(req("/api/v1/backup/p/fail", "tok-123456"))
    rec = BackupKV.of(agent.shared, None).get(key("p", "push"))
    assert rec is not None and rec["last_attempt_ok"] is False and rec["last_success"] == NOW


def test_push_names_cannot_be_enumerated(tmp_path: Path) -> None:
    """Issue 19 (low): 403 for a known name and 404 for an unknown one told names apart."""
    (route,) = make_routes(push_agent(tmp_path))
    known = route.handler(req("/api/v1/backup/p/success", "guess"))
    for name in ("zz", "c"):  # unknown, and a backup that is not a push one
        other = route.handler(req(f"/api/v1/backup/{name}/success", "guess"))
        assert (other.status, other.body, dict(other.headers)) == (known.status, known.body, dict(known.headers))
    no_token = [route.handler(req(f"/api/v1/backup/{n}/success")).status for n in ("p", "zz")]
    assert no_token == [401, 401]


def test_push_route_bypasses_basic_auth_but_not_its_token(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from agent.http import WebApp
    from agent.webconfig import BasicAuth
    from tests.helpers.tls import bcrypt_hash

    agent = push_agent(tmp_path)
    app = WebApp(CollectorRegistry(), dict, lambda: True)
    app.set_routes(make_routes(agent))
    app.auth = BasicAuth({"prom": bcrypt_hash("pw")})
    assert app.dispatch(HttpRequest("GET", "/metrics", {}, {}, b"", "x")).status == 401
    assert b"Unauthorized" not in app.dispatch(req("/api/v1/backup/p/success")).body
    assert app.dispatch(req("/api/v1/backup/p/success")).status == 401
    assert app.dispatch(req("/api/v1/backup/p/success", "nope")).status == 403
    assert app.dispatch(req("/api/v1/backup/p/success", "tok-123456")).status == 200


def test_example_config_passes_check_config(tmp_path: Path) -> None:
    """deploy/examples/backup.yml, next to the key and secret files it names, with the shipped runbooks
    where it expects them on the server."""
    import re
    import shutil

    from tests.helpers.common import ROOT

    src = ROOT / "deploy" / "examples" / "backup.yml"
    text = src.read_text()
    cfg = tmp_path / "backup.yml"
    shutil.copy(src, cfg)
    assert "runbooks_dir: /srv/continuity/runbooks" in text
    cfg.write_text(text.replace("/srv/continuity/runbooks", str(ROOT / "runbooks")))
    for rel in re.findall(r"(?:_file|known_hosts):\s*(\S+)", text):
        if rel.startswith("/"):
            continue
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("example-secret-value\n")
        p.chmod(0o600)
    loaded = load_config(cfg)
    targets = {t.name: t for t in loaded.config.targets}
    assert {t.type for t in targets.values()} == {"restic", "borg", "files", "command", "push"}
    assert loaded.warnings == ()
    # names the shipped runbooks use
    assert {"file-shares", "gis-data", "sql-full-nightly", "payroll-bacs-archive", "crm-attachments"} <= set(targets)
    ev = targets["file-shares"].restore_test.evidence
    runbook = yaml.safe_load((ROOT / "runbooks" / f"{ev.runbook}.yml").read_text())
    assert ev.runbook_version == runbook["version"]
    assert ev.step in {s["id"] for s in runbook["recovery_steps"]}
    assert ev.validation in {v["id"] for v in runbook["validation"]}
