"""agent.secret_file_mode: a secret file readable by group or others is warned about (default)
or refused, and the secret never appears in either message."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, load_config

SECRET = "pw-Zq81-never-printed"


def _config(tmp_path: Path, mode: str | None, file_mode: int) -> Path:
    secret = tmp_path / "probe.pw"
    secret.write_text(SECRET + "\n")
    secret.chmod(file_mode)
    policy = f", secret_file_mode: {mode}" if mode else ""
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        f"agent: {{site: hq{policy}}}\n"
        "auths:\n"
        "  web: {type: http_basic, username: u, password_file: probe.pw}\n"
        "targets:\n"
        "  - {name: w, kind: probe, module: http, url: 'http://127.0.0.1:1/', auth: web}\n"
    )
    return cfg


@pytest.mark.parametrize("mode", [None, "warn"])
def test_loose_mode_is_a_warning(tmp_path: Path, mode: str | None) -> None:
    loaded = load_config(_config(tmp_path, mode, 0o644))
    assert len(loaded.warnings) == 1
    w = loaded.warnings[0]
    assert "probe.pw" in w and "0644" in w and "chmod 600" in w
    assert SECRET not in w
    assert loaded.config.auths["web"].password.reveal() == SECRET


def test_refuse_mode_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, "refuse", 0o640)
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    (issue,) = ei.value.issues
    assert issue.key == "auths.web"
    assert "readable by group or others" in issue.message and "secret_file_mode is refuse" in issue.message
    assert main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "auths.web" in err and SECRET not in err and "Traceback" not in err


def test_refuse_mode_accepts_0600(tmp_path: Path) -> None:
    loaded = load_config(_config(tmp_path, "refuse", 0o600))
    assert loaded.warnings == ()


def test_unknown_policy_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(_config(tmp_path, "maybe", 0o600))
    assert any(i.key == "agent.secret_file_mode" for i in ei.value.issues)
