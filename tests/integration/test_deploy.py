"""What ops install next to the agent: the systemd unit (checked by systemd-analyze), the
/etc/default file, the container image definition, the example configs and the Prometheus configs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.cli import build_parser
from tests.helpers.common import AGENT_BIN, ROOT, need

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "continuity-agent.service"
ICMP_DROPIN = DEPLOY / "systemd" / "icmp-capability.conf"
DEFAULTS = DEPLOY / "default" / "continuity-agent"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"


def _unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd unit -> {section: {key: [values...]}} (keys may repeat)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def _defaults() -> dict[str, str]:
    env = {}
    for line in DEFAULTS.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key] = shlex.split(value)[0] if value.strip() else ""
    return env


def _verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    # systemd-analyze verify checks that ExecStart's binary exists: point it at the venv's.
    unit = tmp_path / "continuity-agent.service"
    unit.write_text(text.replace("/usr/bin/continuity-agent", str(AGENT_BIN)))
    tool = need("systemd-analyze")
    return subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    r = _verify(tmp_path, UNIT.read_text())
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr


def test_systemd_analyze_verify_catches_a_bad_key(tmp_path: Path) -> None:
    """verify exits 0 on unknown keys but says so on stderr, which the test above requires empty."""
    r = _verify(tmp_path, UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivileges=yes\nNoNewPrivilegez=yes"))
    assert "NoNewPrivilegez" in r.stderr


def test_icmp_dropin_verifies(tmp_path: Path) -> None:
    r = _verify(tmp_path, UNIT.read_text() + "\n" + ICMP_DROPIN.read_text())
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_systemd_security_exposure_is_low(tmp_path: Path) -> None:
    tool = need("systemd-analyze")
    unit = tmp_path / "continuity-agent.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/continuity-agent", str(AGENT_BIN)))
    r = subprocess.run([tool, "security", "--offline=yes", "--threshold=25", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.5 and r.returncode == 0, m.group(0)


def test_unit_is_hardened() -> None:
    svc = _unit(UNIT.read_text())["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    assert one.get("DynamicUser") == "yes" or (one.get("User") and one["User"] != "root")
    assert one["ProtectSystem"] == "strict"
    assert one["NoNewPrivileges"] == "yes"
    assert one["StateDirectory"] == "continuity-agent"
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["EnvironmentFile"] == "-/etc/default/continuity-agent"
    assert "${CONFIG}" in one["ExecStart"] and "$ARGS" in one["ExecStart"]
    assert one["PrivateTmp"] == "yes" and one["ProtectHome"] == "yes"
    # CAP_NET_RAW only through the ICMP drop-in, and nothing else there.
    drop = _unit(ICMP_DROPIN.read_text())["Service"]
    assert drop == {"AmbientCapabilities": ["CAP_NET_RAW"], "CapabilityBoundingSet": ["CAP_NET_RAW"]}
    assert "CAP_NET_RAW" in UNIT.read_text()  # the unit documents when to add it


def test_unit_command_lines_parse_with_the_real_cli() -> None:
    """ExecStartPre/ExecStart, expanded with /etc/default's values, are valid continuity-agent
    invocations."""
    env = _defaults()
    assert env["CONFIG"].startswith("/etc/continuity-agent/")
    svc = {k: v[-1] for k, v in _unit(UNIT.read_text())["Service"].items()}
    for key in ("ExecStartPre", "ExecStart"):
        line = svc[key].replace("${CONFIG}", env["CONFIG"])
        line = line.replace("$LOG_ARGS", env["LOG_ARGS"]).replace("$ARGS", env["ARGS"])
        argv = shlex.split(line)
        assert argv[0] == "/usr/bin/continuity-agent"
        args = build_parser().parse_args(argv[1:])
        assert args.func is not None
    assert args.command == "run" and args.config == env["CONFIG"] and args.listen_address == "127.0.0.1:9072"


def test_sysusers_entry() -> None:
    (line,) = [ln for ln in (DEPLOY / "systemd" / "continuity-agent.sysusers").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")]
    fields = shlex.split(line)
    svc = {k: v[-1] for k, v in _unit(UNIT.read_text())["Service"].items()}
    assert fields[0] == "u" and fields[1] == svc["User"]


def test_containerfile_structure() -> None:
    lines = [ln for ln in CONTAINERFILE.read_text().replace("\\\n", " ").splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    instr = [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]
    froms = [a for i, a in instr if i == "FROM"]
    assert froms and all(re.search(r":[\w.-]+", f.split()[0]) for f in froms), "base images pinned to a tag"
    final = instr[max(n for n, (i, _) in enumerate(instr) if i == "FROM"):]
    users = [a for i, a in final if i == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "the final stage runs as a non-root user"
    # USER comes after every RUN of the final stage.
    last_run = max(n for n, (i, _) in enumerate(final) if i == "RUN")
    assert max(n for n, (i, _) in enumerate(final) if i == "USER") > last_run
    assert ("EXPOSE", "9072") in final
    assert any(i == "HEALTHCHECK" and "/-/healthy" in a for i, a in final)
    assert not any(i in ("COPY", "ADD") and re.search(r"secret|state|\.db|id_rsa", a) for i, a in instr)
    ep = yaml.safe_load(next(a for i, a in final if i == "ENTRYPOINT"))
    cmd = yaml.safe_load(next(a for i, a in final if i == "CMD"))
    assert isinstance(ep, list) and isinstance(cmd, list), "exec form"
    assert ep[0] == "continuity-agent"
    args = build_parser().parse_args([*ep[1:], *cmd])
    assert args.command == "run" and args.listen_address.endswith(":9072")


@pytest.mark.parametrize("name", ["central.yml", "remote-site.yml", "demo.yml"])
def test_example_config_passes_check_config(tmp_path: Path, name: str) -> None:
    """The example, unchanged, next to the secret files and directories it names."""
    src = DEPLOY / "examples" / name
    cfg = tmp_path / name
    shutil.copy(src, cfg)
    text = src.read_text()
    for secret in re.findall(r"_file:\s*(\S+)", text):
        p = tmp_path / secret
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("example-secret-value\n")
        p.chmod(0o600)
    for d in re.findall(r"_dir:\s*(\S+)", text):
        if not d.startswith(".."):
            (tmp_path / d).mkdir(parents=True, exist_ok=True)
    if name == "demo.yml":
        cfg = src  # its directories are relative to the repository
    r = subprocess.run([str(AGENT_BIN), "check-config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ": OK (" in r.stdout
    assert "warning" not in r.stderr


def test_remote_site_example_only_listens_on_loopback() -> None:
    for name in ("central.yml", "remote-site.yml"):
        cfg = yaml.safe_load((DEPLOY / "examples" / name).read_text())
        assert cfg["agent"]["listen_address"].startswith("127.0.0.1:")
        assert cfg["agent"]["state_dir"] == "/var/lib/continuity-agent"  # the unit's StateDirectory


def test_prometheus_configs(tmp_path: Path) -> None:
    promtool = need("promtool")
    # The central config, with its rule_files pointing at this repository's rules, so promtool
    # checks the rules through the config as Prometheus would load them.
    central = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    central["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "*.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(central))
    r = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") >= 5  # the config and each rule file
    r = subprocess.run([promtool, "check", "config", "--agent", str(DEPLOY / "prometheus" / "agent-mode.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # The central config is not an agent-mode config (it has rules and alerting).
    r = subprocess.run([promtool, "check", "config", "--agent", str(tmp_path / "prometheus.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


def test_agent_mode_keeps_what_alerts_need() -> None:
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "agent-mode.yml").read_text())
    keep = cfg["remote_write"][0]["write_relabel_configs"][0]
    assert keep["action"] == "keep"
    for name in ("up", "continuity_target_up", "continuity_agent_info"):
        assert re.fullmatch(keep["regex"], name), name
    assert cfg["global"]["external_labels"]["council"]
