"""Children get a minimal environment (issue #19, M2). Secret values are planted in the agent's
environment (SNMP community and v3 passwords, a push token, an SSH key passphrase, all referenced
as ``${ENV}`` by the config); each kind of local child — real restic, real borg, real iperf3
against a loopback server, a ``type: command`` backup — runs behind a wrapper that copies its own
``/proc/<pid>/environ`` and then execs the tool. None of the planted values may be in it; the
variables the target configures (literal, ``${ENV}`` and ``env_file``) must be."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import yaml

from tests.helpers.backups import make_repos
from tests.helpers.common import AGENT_BIN, free_port, need, wait_until
from tests.helpers.sshd import keygen

PLANTED = {
    "SNMP_COMMUNITY": f"community-{secrets.token_hex(6)}",
    "SNMP_AUTH": f"authpass-{secrets.token_hex(6)}",
    "SNMP_PRIV": f"privpass-{secrets.token_hex(6)}",
    "PUSH_TOKEN": f"pushtoken-{secrets.token_hex(8)}",
    "SSH_KEY_PASS": f"keypass-{secrets.token_hex(6)}",
}
BACKEND_SECRET = f"backend-{secrets.token_hex(6)}"  # configured for one target via ${ENV}


def _wrapper(d: Path, name: str, body: str) -> Path:
    """A script that records its own environment (its pid is the tool's: it execs it)."""
    p = d / name
    p.write_text(f"#!/bin/sh\ncat /proc/$$/environ > {d}/{name}.$$.environ\n{body}\n")
    p.chmod(0o755)
    return p


def _environs(d: Path, name: str) -> list[dict[str, str]]:
    out = []
    for f in sorted(d.glob(f"{name}.*.environ")):
        pairs = [kv.split("=", 1) for kv in f.read_bytes().decode().split("\0") if kv]
        out.append(dict((k, v) for k, v in pairs))
    return out


def test_local_children_do_not_inherit_secrets(tmp_path: Path) -> None:
    restic, borg, iperf3 = need("restic"), need("borg"), need("iperf3")
    repos = make_repos(tmp_path / "repos")
    w = tmp_path / "wrap"
    w.mkdir()
    wrapped = {
        "restic": _wrapper(w, "restic", f'exec {restic} "$@"'),
        "borg": _wrapper(w, "borg", f'exec {borg} "$@"'),
        "iperf3": _wrapper(w, "iperf3", f'exec {iperf3} "$@"'),
        "command": _wrapper(
            w,
            "command",
            "echo '" + json.dumps({"ok": True, "last_success": int(time.time()) - 60, "size_bytes": 5}) + "'",
        ),
    }
    key_file = tmp_path / "cred"
    key_file.write_text("from-a-file-" + secrets.token_hex(4) + "\n")
    key_file.chmod(0o600)
    ssh_key = keygen(tmp_path / "id_ed25519", passphrase=PLANTED["SSH_KEY_PASS"])
    (tmp_path / "known_hosts").write_text("")
    port = free_port()
    server = subprocess.Popen(
        [iperf3, "--server", "--bind", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _listening(port), timeout=10)
        cfg = {
            "agent": {"site": "hq", "state_dir": str(tmp_path / "state")},
            "sites": [{"name": "hq"}, {"name": "branch"}],
            "auths": {
                "v2c": {"type": "snmp_v2c", "community": "${SNMP_COMMUNITY}"},
                "v3": {
                    "type": "snmp_v3",
                    "username": "u",
                    "security_level": "authPriv",
                    "auth_protocol": "SHA256",
                    "auth_password": "${SNMP_AUTH}",
                    "priv_protocol": "AES",
                    "priv_password": "${SNMP_PRIV}",
                },
                "ssh": {
                    "type": "ssh",
                    "user": "nobody",
                    "key_file": str(ssh_key),
                    "passphrase": "${SSH_KEY_PASS}",
                    "known_hosts": str(tmp_path / "known_hosts"),
                },
            },
            "targets": [
                {"name": "sw", "kind": "snmp", "host": "127.0.0.1", "auth": "v2c"},
                {"name": "sw3", "kind": "snmp", "host": "127.0.0.1", "auth": "v3"},
                {"name": "pushed", "kind": "backup", "type": "push", "token": "${PUSH_TOKEN}", "rpo": "1d"},
                {
                    "name": "r",
                    "kind": "backup",
                    "type": "restic",
                    "repository": str(repos.restic),
                    "password_file": str(repos.password_file),
                    "binary": str(wrapped["restic"]),
                    "env": {**repos.restic_env, "BACKEND_KEY": "${BACKEND_SECRET}"},
                    "env_file": {"BACKEND_KEY_FROM_FILE": str(key_file)},
                    "rpo": "1d",
                },
                {
                    "name": "b",
                    "kind": "backup",
                    "type": "borg",
                    "repository": str(repos.borg),
                    "password_file": str(repos.password_file),
                    "binary": str(wrapped["borg"]),
                    "env": repos.borg_env,
                    "rpo": "1d",
                },
                {"name": "c", "kind": "backup", "type": "command", "command": [str(wrapped["command"])], "rpo": "1d"},
                {
                    "name": "l",
                    "kind": "link",
                    "site": "branch",
                    "host": "127.0.0.1",
                    "standards": False,
                    "throughput": {
                        "iperf3": str(wrapped["iperf3"]),
                        "port": port,
                        "duration": "1s",
                        "omit": "0s",
                        "directions": ["download"],
                    },
                },
            ],
        }
        path = tmp_path / "agent.yml"
        path.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, **PLANTED, "BACKEND_SECRET": BACKEND_SECRET}
        for target, task in (("r", ""), ("b", ""), ("c", ""), ("l", "throughput")):
            out = subprocess.run(
                [str(AGENT_BIN), "collect-once", "--config", str(path), "--task", task, target],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, (target, out.stdout, out.stderr)
        dump = subprocess.run(
            [str(AGENT_BIN), "check-config", "--dump", str(path)], env=env, capture_output=True, text=True, timeout=60
        )
        assert dump.returncode == 0, dump.stderr
    finally:
        server.terminate()
        server.wait(10)

    for name in wrapped:
        seen = _environs(w, name)
        assert seen, f"{name}: the child never ran"
        for child in seen:
            blob = "\0".join(f"{k}={v}" for k, v in child.items())
            for var, value in PLANTED.items():
                assert value not in blob, f"{name}: {var}'s value is in the child's environment"
                assert var not in child
            assert child["PATH"] and "LANG" in child
            assert set(child) <= {
                "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
                "RESTIC_CACHE_DIR", "BACKEND_KEY", "BACKEND_KEY_FROM_FILE", "BORG_BASE_DIR", "BORG_PASSCOMMAND",
                "BORG_RELOCATED_REPO_ACCESS_IS_OK", "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK",
                "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING", "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING", "PWD", "SHLVL", "_",
            }, f"{name}: unexpected variables {sorted(child)}"  # fmt: skip
    # What the target configures does arrive, from ${ENV} and from env_file.
    r_env = _environs(w, "restic")[0]
    assert r_env["BACKEND_KEY"] == BACKEND_SECRET
    assert r_env["BACKEND_KEY_FROM_FILE"] == key_file.read_text().strip()
    assert r_env["RESTIC_CACHE_DIR"] == repos.restic_env["RESTIC_CACHE_DIR"]
    assert "BORG_PASSCOMMAND" in _environs(w, "borg")[0]
    # ... and prints as <secret> in check-config --dump.
    dumped = yaml.safe_load(dump.stdout)
    r_dump = next(t for t in dumped["targets"] if t["name"] == "r")
    assert r_dump["env"] == {
        "RESTIC_CACHE_DIR": "<secret>",
        "BACKEND_KEY": "<secret>",
        "BACKEND_KEY_FROM_FILE": "<secret>",
    }
    assert BACKEND_SECRET not in dump.stdout and key_file.read_text().strip() not in dump.stdout


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
