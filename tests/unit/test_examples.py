"""Every file in deploy/examples/ loads: each agent config through load_config (the same code as
`check-config`), the web config through load_web_config. ${ENV} values are stubbed; the secret
files, SSH files and directories an example names beside itself are created in a copy."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from agent.config import load_config
from agent.webconfig import load_web_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
WEB_CONFIGS = {"web-config.yml"}
AGENT_CONFIGS = sorted(p.name for p in EXAMPLES.glob("*.yml") if p.name not in WEB_CONFIGS)

# Keys whose value is a file the config loader opens or checks, and keys naming a directory.
FILE_KEYS = r"(?:\w+_file|known_hosts|key_file|cert_file)"
DIR_KEYS = r"\w+_dir"


def test_every_example_is_covered() -> None:
    assert AGENT_CONFIGS, "no example configs found"
    assert {"demo.yml", "link.yml", "snmp.yml", "reports.yml"} <= set(AGENT_CONFIGS)
    assert {p.name for p in EXAMPLES.glob("*.yml")} == set(AGENT_CONFIGS) | WEB_CONFIGS


def _copy(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """deploy/examples/ copied to the same depth below tmp_path (so ../../runbooks resolves to the
    repository's runbooks), with the example's relative files and directories created."""
    dst = tmp_path / "deploy" / "examples"
    shutil.copytree(EXAMPLES, dst)
    (tmp_path / "runbooks").symlink_to(ROOT / "runbooks")
    text = (dst / name).read_text()
    for var in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)):
        monkeypatch.setenv(var, f"stub-value-for-{var.lower()}")
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())  # values, not comments
    for rel in re.findall(rf"\b{FILE_KEYS}:\s*([^\s,{{}}]+)", body):
        p = dst / rel
        if not os.path.isabs(rel) and not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("stub-secret-value\n")
            p.chmod(0o600)
    for rel in re.findall(rf"\b{DIR_KEYS}:\s*([^\s,{{}}]+)", body):
        if not os.path.isabs(rel):
            (dst / rel).mkdir(parents=True, exist_ok=True)
    # An absolute runbooks directory (a production path such as /srv/continuity/runbooks) is the
    # repository's runbooks in the copy.
    for path in set(re.findall(r"\brunbooks_dir:\s*(/[^\s,{}]+)", body)):
        text = text.replace(path, str(tmp_path / "runbooks"))
    (dst / name).write_text(text)
    return dst / name


@pytest.mark.parametrize("name", AGENT_CONFIGS)
def test_example_agent_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    cfg = load_config(_copy(tmp_path, name, monkeypatch)).config
    assert cfg.targets or cfg.reports is not None, f"{name} configures nothing"
    assert not [w for w in load_config(tmp_path / "deploy" / "examples" / name).warnings]


@pytest.mark.parametrize("name", sorted(WEB_CONFIGS))
def test_example_web_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    path = _copy(tmp_path, name, monkeypatch)
    # The TLS pair must be a real certificate and key: make one for the names the example uses.
    from tests.helpers.tls import make_pki

    wc_text = path.read_text()
    cert = re.search(r"cert_file:\s*(\S+)", wc_text)
    key = re.search(r"key_file:\s*(\S+)", wc_text)
    assert cert and key
    pki = make_pki(tmp_path / "pki")
    shutil.copy(pki.server_cert, path.parent / cert.group(1))
    shutil.copy(pki.server_key, path.parent / key.group(1))
    wc = load_web_config(path)
    assert wc.tls
