"""A target's ``env:`` over SSH (issue #19) travels on the channel's stdin, never on a command line,
against a real OpenSSH sshd on 127.0.0.1: hostile values arrive byte for byte in the remote
command's environment; while a remote command runs no process on the machine has the secret in
``/proc/<pid>/cmdline``, and the agent's log, /metrics, /api/v1/status, status page and sshd's own
log hold no trace of it; real restic and borg repositories reached over SSH open with their
password given only through ``env:`` (in tests/integration/test_backup_repos.py, beside its
repositories)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from collectors.base import CollectorContext
from collectors.ssh import ENV_FAILED, SshAuth, SshRunner, env_stdin, remote_command
from tests.helpers.backups import where, write_agent_config
from tests.helpers.common import agent_process, http_get, metric_value, need, wait_until
from tests.helpers.sshd import Sshd

# Every kind of byte a shell or a line protocol could trip over.
HOSTILE = "q'uo\"te $(touch /tmp/x) `id` $HOME ${PATH} \\n\\\n  two  spaces\ttab\r\n\nnon-ASCII é€😀 ;|&<>*?[]#~"
EDGES = {
    "EMPTY": "",
    "ONLY_NEWLINE": "\n",
    "TRAILING_NEWLINES": "value\n\n",
    "LEADING_MARKS": "+=\n=\n+\n-- x",
    "DASHES": "--",
    "NOT_UTF8": "raw \udcff\udcfe bytes",  # os.fsencode: b"\xff\xfe", as a local child gets them
    "BIG": ("line with spaces and 'quotes' " + "x" * 70 + "\n") * 1000,  # ~100 kB: several channel writes
}


def _auth(s: Sshd) -> SshAuth:
    return SshAuth.model_validate(
        {"type": "ssh", "user": s.user, "key_file": str(s.user_key), "known_hosts": str(s.known_hosts), "port": s.port}
    )


def _run(s: Sshd, argv: list[str], env: dict[str, str], **kw: Any) -> Any:
    async def main() -> Any:
        with ThreadPoolExecutor(4) as ex:
            ctx = CollectorContext(auths={}, executor=ex, state_dir=Path("."), shared={})
            async with SshRunner(ctx, _auth(s), "127.0.0.1") as r:
                return await r.run(argv, timeout=20.0, env=env, **kw)

    return asyncio.run(main())


def test_hostile_values_arrive_byte_exact(sshd: Sshd, tmp_path: Path) -> None:
    env = {"HOSTILE": HOSTILE, **EDGES}
    line, stdin = remote_command(["printenv", "-0", *env], env, cwd=str(tmp_path), timeout=20.0)
    for v in env.values():
        if len(v) > 3:
            assert v not in line
    assert stdin  # the values go this way
    res = _run(sshd, ["printenv", "-0", *env], env, cwd=str(tmp_path))
    assert res.exit_status == 0, res.stderr
    assert res.stdout.split(b"\0")[:-1] == [os.fsencode(v) for v in env.values()]
    assert not (Path("/tmp/x").exists() and Path("/tmp/x").stat().st_mtime > time.time() - 60)
    # The command's stdin is /dev/null, as for a local command (not the rest of the channel).
    res = _run(sshd, ["sh", "-c", 'readlink /proc/$$/fd/0; cat; printf "%s" "$A"'], {"A": "x"})
    assert (res.exit_status, res.stdout) == (0, b"/dev/null\nx")


@pytest.mark.parametrize("shell", [["dash"], ["bash"], ["busybox", "sh"]], ids=" ".join)
def test_prologue_in_each_shell(shell: list[str]) -> None:
    """The same script under the shells a host's ``sh`` is (Debian: dash; RHEL: bash; a NAS or an
    appliance: BusyBox ash), in the C and a UTF-8 locale; an environment cut short stops everything
    before the command runs."""
    sh = [need(shell[0]), *shell[1:]]
    env = {"HOSTILE": HOSTILE, **EDGES}
    line, stdin = remote_command(["printenv", "-0", *env], env)
    words = shlex.split(line)
    assert words[:2] == ["sh", "-c"]
    for locale in ("C", "C.UTF-8"):
        out = subprocess.run(
            [*sh, *words[1:]], input=stdin, capture_output=True, timeout=30,
            env={"PATH": os.environ["PATH"], "LC_ALL": locale},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.split(b"\0")[:-1] == [os.fsencode(v) for v in env.values()]
    marker = Path(f"/tmp/ssh-env-ran-{secrets.token_hex(4)}")
    _, stdin = remote_command(["true"], {"A": "one\ntwo", "B": "x"})
    for cut in (b"", stdin[:4], stdin[: stdin.index(b"=two\n")]):
        out = subprocess.run(
            [*sh, *shlex.split(remote_command(["touch", str(marker)], {"A": "", "B": ""}).line)[1:]],
            input=cut, capture_output=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == ENV_FAILED, (cut, out)
        assert b"did not arrive" in out.stderr
        assert not marker.exists()


def test_names_are_checked_and_nul_refused() -> None:
    with pytest.raises(ValueError):
        remote_command(["true"], {"A=B": "x"})
    with pytest.raises(ValueError):
        remote_command(["true"], {"1A": "x"})
    with pytest.raises(ValueError):
        env_stdin(["a\0b"])


def _cmdlines(limit: int = 20_000) -> Iterator[tuple[int, bytes]]:
    """Every process's command line (bounded)."""
    for n, name in enumerate(os.listdir("/proc")):
        if n >= limit:
            return
        if name.isdigit():
            try:
                yield int(name), Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue


def test_secret_is_on_no_command_line_and_in_no_output(sshd: Sshd, tmp_path: Path) -> None:
    """A command target over SSH with three secret env values (``${ENV}``, ``env_file``, literal)
    sleeps on the server: meanwhile no process has a secret in its command line. The values did
    arrive (written by the command), and the agent's log, /metrics, /api/v1/status, the status page
    and sshd's log hold none of them."""
    marks = {name: f"{name.lower()}-{secrets.token_hex(8)}" for name in ("FROM_ENV", "FROM_FILE", "LITERAL")}
    values = {
        "FROM_ENV": f"{marks['FROM_ENV']} {HOSTILE}",
        "FROM_FILE": f"{marks['FROM_FILE']}\n$(id) 'x' é",  # a file's trailing newline is not part of it
        "LITERAL": f'{marks["LITERAL"]} "q" `id`',
    }
    secret_file = tmp_path / "secret"
    secret_file.write_text(values["FROM_FILE"] + "\n")
    secret_file.chmod(0o600)
    out = {name: tmp_path / f"{name}.out" for name in values}
    started = tmp_path / "started"
    report = json.dumps({"ok": True, "last_success": int(time.time()) - 60, "size_bytes": 5})
    script = (
        'printenv FROM_ENV > "$1"; printenv FROM_FILE > "$2"; printenv LITERAL > "$3"; : > "$4"; sleep 4; '
        'printf "%s\\n" "$5"'
    )
    cfg = write_agent_config(
        tmp_path / "agent.yml",
        [
            {
                "name": "cmd-over-ssh",
                "type": "command",
                "command": ["sh", "-c", script, "sh", *map(str, out.values()), str(started), report],
                "env": {"FROM_ENV": "${PLANTED_SECRET}", "LITERAL": values["LITERAL"]},
                "env_file": {"FROM_FILE": str(secret_file)},
                "interval": "1h",
                "timeout": "20s",
                **where("ssh", sshd),
            }
        ],
        sshd,
        extra={"defaults": {"interval": "1h", "timeout": "20s", "start_jitter": 0}},
    )
    with agent_process(cfg, env={"PLANTED_SECRET": values["FROM_ENV"]}) as agent:
        wait_until(started.exists, 30, what="the remote command to start")
        hits: list[str] = []
        scans = 0
        deadline = time.monotonic() + 2.5  # the command sleeps 4 s
        while time.monotonic() < deadline and scans < 50:
            for pid, cmdline in _cmdlines():
                hits += [f"{pid}: {cmdline!r}" for m in marks.values() if m.encode() in cmdline]
            scans += 1
            time.sleep(0.05)
        assert scans >= 3
        assert not hits, f"a secret is on a command line: {hits[:3]}"
        wait_until(
            lambda: metric_value(agent.metrics(), "continuity_backup_state", backup="cmd-over-ssh", state="fresh") == 1,
            30,
            what="the command target to report fresh",
        )
        exposed = {
            "/metrics": agent.metrics(),
            "/api/v1/status": http_get(agent.url + "/api/v1/status")[1].decode(errors="replace"),
            "/": http_get(agent.url + "/")[1].decode(errors="replace"),
        }
        exposed["log"] = agent.log()
    exposed["sshd log"] = sshd.log()
    # The values arrived whole (printenv adds the newline).
    for name, v in values.items():
        assert out[name].read_bytes() == os.fsencode(v) + b"\n", name
    for where_, text in exposed.items():
        for m in marks.values():
            assert m not in text, f"a secret is in {where_}"
    assert "cmd-over-ssh" in exposed["/api/v1/status"]  # the search looks at real output
