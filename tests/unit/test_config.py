from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, dump_config, load_config
from agent.configtypes import Secret, scrub
from tests.helpers.common import AGENT_BIN, ROOT

BAD = ROOT / "tests" / "fixtures" / "bad_config"
BAD_FIXTURES = sorted(BAD.glob("*.yml"))


def test_there_is_a_fixture_per_rule() -> None:
    assert len(BAD_FIXTURES) >= 15
    for f in BAD_FIXTURES:
        assert f.with_suffix(".expected").exists(), f"{f.name} has no .expected message"


@pytest.mark.parametrize("fixture", BAD_FIXTURES, ids=[f.stem for f in BAD_FIXTURES])
def test_bad_config_exits_2_with_expected_message(fixture: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = fixture.with_suffix(".expected").read_text().strip()
    rc = main(["check-config", str(fixture)])
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err, err
    assert str(fixture) in err  # every line names the file
    assert "Traceback" not in err


def test_check_config_process_exit_codes(tmp_path: Path) -> None:
    bad = subprocess.run(
        [str(AGENT_BIN), "check-config", str(BAD / "unknown_top_key.yml")], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    good = subprocess.run(
        [str(AGENT_BIN), "check-config", str(ROOT / "deploy/examples/demo.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert good.returncode == 0, good.stderr


def test_every_error_is_listed(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "agent: {site: hq}\ndefaults: {interval: soon}\ntargets:\n"
        "  - {name: a, kind: probe, module: tcp, host: h}\n"
        "  - {name: b, kind: host, bogus: 1}\n"
    )
    with pytest.raises(ConfigError) as ei:
        load_config(cfg)
    keys = [i.key for i in ei.value.issues]
    assert "defaults.interval" in keys
    assert "targets[0]" in keys
    assert "targets[1].bogus" in keys


def test_durations_and_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "agent: {site: hq, retention: P30D}\ndefaults: {interval: 5m, timeout: 30s}\ntargets:\n"
        "  - {name: a, kind: probe, module: tcp, host: 127.0.0.1, port: 1, interval: 72h}\n"
        "  - {name: b, kind: host}\n"
    )
    c = load_config(cfg).config
    assert c.agent.retention == 30 * 86400
    assert c.interval_of(c.targets[0]) == 72 * 3600
    assert c.interval_of(c.targets[1]) == 300
    assert c.timeout_of(c.targets[1]) == 30
    assert c.site_of(c.targets[0]) == "hq"
    # relative state_dir resolves against the config file's directory
    assert c.agent.state_dir == (tmp_path / "state").resolve()


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("agent: {site: hq}\n")
    c = load_config(cfg).config
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen
        c.agent.site = "x"  # type: ignore[misc]


def test_secrets_from_env_and_file_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONT_TEST_PW", "env-secret-7f3a9")
    pwfile = tmp_path / "pw"
    pwfile.write_text("file-secret-91be2\n")
    pwfile.chmod(0o600)
    cfg = tmp_path / "c.yml"
    cfg.write_text(
        "agent: {site: hq}\nauths:\n"
        "  a: {type: http_basic, username: u, password: '${CONT_TEST_PW}'}\n"
        "  b: {type: http_basic, username: u, password_file: pw}\n"
    )
    loaded = load_config(cfg)
    a, b = loaded.config.auths["a"], loaded.config.auths["b"]
    assert isinstance(a.password, Secret) and a.password.reveal() == "env-secret-7f3a9"
    assert b.password.reveal() == "file-secret-91be2"
    dumped = dump_config(loaded.config)
    assert "<secret>" in dumped
    assert "env-secret-7f3a9" not in dumped and "file-secret-91be2" not in dumped
    assert "secret" not in repr(a.password).replace("<secret>", "")
    assert "env-secret-7f3a9" not in repr(loaded.config)
    assert scrub("login failed with env-secret-7f3a9") == "login failed with <secret>"
    assert not loaded.warnings


def test_world_readable_secret_file_warns(tmp_path: Path) -> None:
    pwfile = tmp_path / "pw"
    pwfile.write_text("world-readable-secret\n")
    pwfile.chmod(0o644)
    cfg = tmp_path / "c.yml"
    cfg.write_text("agent: {site: hq}\nauths:\n  b: {type: http_basic, username: u, password_file: pw}\n")
    loaded = load_config(cfg)
    assert any("readable by group or others" in w for w in loaded.warnings)


def test_check_config_dump_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.environ["CONT_TEST_PW2"] = "dump-secret-55aa"
    try:
        cfg = tmp_path / "c.yml"
        cfg.write_text(
            "agent: {site: hq}\nauths:\n  a: {type: http_basic, username: u, password: '${CONT_TEST_PW2}'}\n"
        )
        assert main(["check-config", "--dump", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "password: <secret>" in out
        assert "dump-secret-55aa" not in out
    finally:
        del os.environ["CONT_TEST_PW2"]


def test_demo_config_is_valid() -> None:
    c = load_config(ROOT / "deploy/examples/demo.yml").config
    kinds = {t.kind for t in c.targets}
    assert {"probe", "host"} <= kinds
    for t in c.targets:  # the demo only ever talks to this machine
        for attr in ("host", "url"):
            v = getattr(t, attr, None)
            if v:
                assert "127.0.0.1" in v or "localhost" in v or "::1" in v, v
