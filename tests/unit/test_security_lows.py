"""Issue 19, the lows on the config and state side, each reproduced as found: an SSH key_file with
mode 0644 accepted under ``secret_file_mode: refuse``; ``state_dir: .`` with ``reports.output_dir:
.`` serving state.db, tokens and the config; a 200 MB config accepted; the state dir 0755 and
state.db and reports 0644."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import MAX_CONFIG_BYTES, ConfigError, load_config
from agent.reports.runner import write_atomic
from agent.state import StateStore


def _ssh_config(tmp_path: Path, policy: str, key_mode: int) -> Path:
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(key_mode)
    (tmp_path / "known_hosts").write_text("")
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        f"agent: {{site: hq, secret_file_mode: {policy}}}\n"
        "auths:\n"
        "  ops: {type: ssh, user: monitor, key_file: id_ed25519, known_hosts: known_hosts}\n"
    )
    return cfg


def test_ssh_key_file_follows_secret_file_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _ssh_config(tmp_path, "refuse", 0o644)
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    (issue,) = ei.value.issues
    assert issue.key.startswith("auths.ops") and "key_file" in issue.message and "0644" in issue.message
    assert "secret_file_mode is refuse" in issue.message
    assert main(["check-config", str(cfg)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    warned = load_config(_ssh_config(tmp_path, "warn", 0o640))
    assert any("id_ed25519 (key_file)" in w and "chmod 600" in w for w in warned.warnings)
    assert load_config(_ssh_config(tmp_path, "refuse", 0o600)).warnings == ()


@pytest.mark.parametrize(
    ("state_dir", "output_dir", "what"),
    [
        (".", ".", "the state directory"),
        ("/nonexistent/state", ".", "the config file's directory"),
        ("state", "state", "the state directory"),
        ("/tmp/x/state", "/tmp/x", "the state directory"),  # a parent of the state dir
        ("/nonexistent/state", "..", "the config file's directory"),
    ],
)
def test_reports_output_dir_may_not_overlap_state_or_config(
    tmp_path: Path, state_dir: str, output_dir: str, what: str
) -> None:
    cfg = tmp_path / "agent.yml"
    cfg.write_text(f"agent: {{site: hq, state_dir: '{state_dir}'}}\nreports: {{output_dir: '{output_dir}'}}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    (issue,) = ei.value.issues
    assert issue.key == "reports.output_dir" and what in issue.message
    assert main(["check-config", str(cfg)]) == 2


def test_reports_in_a_sub_directory_of_state_or_config_are_fine(tmp_path: Path) -> None:
    for out in ("reports", "state/reports"):
        cfg = tmp_path / "agent.yml"
        cfg.write_text(f"agent: {{site: hq, state_dir: state}}\nreports: {{output_dir: {out}}}\n")
        assert load_config(cfg).config.reports is not None


def test_config_size_is_capped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "agent.yml"
    with cfg.open("w") as f:
        f.write("agent: {site: hq}\n")
        f.write("# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    assert cfg.stat().st_size > MAX_CONFIG_BYTES
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    assert "larger than 16 MiB" in str(ei.value)
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "agent.yml" in err and "larger than 16 MiB" in err and "Traceback" not in err


def test_state_dir_and_database_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o755)
        (loose / "state.db").touch(mode=0o644)  # as an older version left them
        for d in (tmp_path / "new" / "state", loose):
            store = StateStore(d)
            store.set_kv("k", {"v": 1})
            store.close()
            assert stat.S_IMODE(d.stat().st_mode) == 0o700
            for f in d.iterdir():
                if f.name.startswith("state.db"):
                    assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    finally:
        os.umask(old)


def test_reports_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        p = tmp_path / "out" / f"dr-{datetime(2026, 1, 1, tzinfo=UTC):%Y%m%dT%H%M%SZ}.md"
        write_atomic(p, "# report\n")
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_scrub_masks_credentials_in_every_encoding() -> None:
    import base64
    import json
    from urllib.parse import quote

    from agent.configtypes import Secret, scrub

    pw = "Zx9-scrub-me/+=pw"
    Secret(pw)  # registers it
    for user in ("a", "ab", "abc", "probe"):  # every base64 alignment
        for enc in (base64.b64encode, base64.urlsafe_b64encode):
            token = enc(f"{user}:{pw}".encode()).decode()
            out = scrub(f"reply: {token}")
            assert token not in out and "<secret>" in out, (user, out)
    for form in (quote(pw, safe=""), json.dumps(pw)[1:-1], repr(pw)[1:-1], pw):
        assert scrub(f"x {form} y") == "x <secret> y", form
    # Anybody's Basic/Bearer credentials and Authorization values, not only registered secrets.
    assert scrub("got 'Authorization: Basic dXNlcjpodW50ZXIy'") == "got 'Authorization: Basic <secret>'"
    assert scrub("Bearer tok-123456 refused") == "Bearer <secret> refused"
    assert scrub('{"authorization": "Token abc123def"}') == '{"authorization": "Token <secret>"}'
    assert scrub("GET /?auth=Basic%20dXNlcjpodW50ZXIy") == "GET /?auth=Basic%20<secret>"
    # Ordinary words stay readable.
    for text in ("missing bearer token", "Basic authentication failed.", "use basic auth", "no authorization"):
        assert scrub(text) == text


def test_web_config_tls_key_follows_secret_file_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers.tls import make_pki

    pki = make_pki(tmp_path / "pki")
    pki.server_key.chmod(0o644)
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {pki.server_key}}}\n")
    cfg = tmp_path / "agent.yml"
    cfg.write_text("agent: {site: hq, state_dir: state, secret_file_mode: refuse}\n")
    assert main(["run", "--config", str(cfg), "--web.config.file", str(web)]) == 2
    err = capsys.readouterr().err
    assert "tls_server_config.key_file" in err and "0644" in err and "secret_file_mode is refuse" in err
    assert "Traceback" not in err


def test_exercise_journal_lock_does_not_follow_a_symlink(tmp_path: Path) -> None:
    """As evidence/.seal.lock (issue 19): a planted symlink must not make a writer create or lock
    its target."""
    from agent.exercises.journal import ExerciseInputError, Journal

    j = Journal.open(tmp_path, "ex-2026-01")
    target = tmp_path / "elsewhere"
    j.path.parent.mkdir(parents=True, exist_ok=True)
    j.lock_path.symlink_to(target)
    with pytest.raises(ExerciseInputError, match=r"journal\.lock: cannot open the lock file: it is a symlink"):
        with j.locked():
            pass
    assert not target.exists()
    j.lock_path.unlink()
    with j.locked():
        assert stat.S_IMODE(j.lock_path.stat().st_mode) & 0o077 == 0
