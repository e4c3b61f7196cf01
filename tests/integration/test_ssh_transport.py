"""The shared SSH transport (collectors/ssh.py) and the local runner against a real OpenSSH sshd on
127.0.0.1: host-key rejection proven on the server side, auth failures, timeouts, output caps with
bounded memory, argv quoting, connection reuse and the per-host session limit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from collectors.base import CollectorContext, CollectorError
from collectors.commands import LocalRunner, OutputLimits
from collectors.ssh import SshAuth, SshConnection, SshRunner, remote_command
from tests.helpers.common import free_port
from tests.helpers.sshd import Sshd, keygen


def make_auth(s: Sshd, **kw: Any) -> SshAuth:
    data: dict[str, Any] = {
        "type": "ssh",
        "user": s.user,
        "key_file": str(s.user_key),
        "known_hosts": str(s.known_hosts),
        "port": s.port,
        "connect_timeout": "5s",
    }
    data.update(kw)
    return SshAuth.model_validate(data)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def ctx(shared: dict[str, Any] | None = None) -> CollectorContext:
    return CollectorContext(auths={}, executor=ThreadPoolExecutor(8), state_dir=Path("."), shared=shared or {})


async def one(auth: SshAuth, argv: list[str], timeout: float = 10.0, **kw: Any) -> Any:
    async with SshRunner(ctx(), auth, "127.0.0.1") as r:
        return await r.run(argv, timeout=timeout, **kw)


def test_argv_is_quoted_no_injection(sshd: Sshd, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    nasty = [f"a b; touch {marker}", f"$(touch {marker})", f"`touch {marker}`", "'\"", "*", "\\n"]
    res = run(one(make_auth(sshd), ["printf", "%s\\n", *nasty]))
    assert res.exit_status == 0
    assert res.stdout.decode().splitlines() == nasty
    assert not marker.exists()


def test_env_and_cwd_are_passed_quoted(sshd: Sshd, tmp_path: Path) -> None:
    weird = tmp_path / "dir with 'quote' and $x"
    weird.mkdir()
    res = run(one(make_auth(sshd), ["sh", "-c", 'pwd; printf "%s" "$FOO"'], env={"FOO": "a b'c;$(id)"}, cwd=str(weird)))
    assert res.exit_status == 0
    lines = res.stdout.decode().split("\n", 1)
    assert lines[0] == str(weird)
    assert lines[1] == "a b'c;$(id)"
    line, stdin = remote_command(["x"], {"FOO": "a b'c;$(id)"})
    assert "$(id)" not in line and stdin == b"=a b'c;$(id)\n"  # the value goes on stdin (test_ssh_env.py)


def test_exit_status_and_stderr_are_returned(sshd: Sshd) -> None:
    res = run(one(make_auth(sshd), ["sh", "-c", "echo out; echo boom >&2; exit 3"]))
    assert res.exit_status == 3
    assert res.stdout == b"out\n"
    assert res.stderr_summary() == "boom"


def test_one_connection_per_run_reused_for_every_command(sshd: Sshd) -> None:
    before = sshd.accepted()

    async def three() -> list[bytes]:
        async with SshRunner(ctx(), make_auth(sshd), "127.0.0.1") as r:
            return [(await r.run(["echo", str(i)], timeout=10)).stdout for i in range(3)]

    assert run(three()) == [b"0\n", b"1\n", b"2\n"]
    time.sleep(0.2)
    assert sshd.accepted() == before + 1


def test_replaced_host_key_runs_nothing(sshd: Sshd, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key")
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line(other.with_suffix(".pub")))
    marker = tmp_path / "ran"
    before = sshd.accepted()
    with pytest.raises(CollectorError) as ei:
        run(one(make_auth(sshd, known_hosts=str(kh)), ["touch", str(marker)]))
    assert ei.value.reason == "host_key"
    assert "no command was run" in ei.value.message
    time.sleep(0.3)
    # Server side: no login was accepted and the command never ran.
    assert sshd.accepted() == before
    assert not marker.exists()


def test_unknown_host_runs_nothing(sshd: Sshd, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq9y3IuIJ8JVjyMTiA1n2Ak4V9iADpTPG7f8I6yJ9Ov\n")
    marker = tmp_path / "ran"
    before = sshd.accepted()
    with pytest.raises(CollectorError) as ei:
        run(one(make_auth(sshd, known_hosts=str(kh)), ["touch", str(marker)]))
    assert ei.value.reason == "host_key"
    assert "not in known_hosts" in ei.value.message
    assert sshd.accepted() == before
    assert not marker.exists()


def test_wrong_user_key_is_auth(sshd: Sshd, tmp_path: Path) -> None:
    wrong = keygen(tmp_path / "wrong_key")
    with pytest.raises(CollectorError) as ei:
        run(one(make_auth(sshd, key_file=str(wrong)), ["true"]))
    assert ei.value.reason == "auth"
    assert str(wrong) in ei.value.message


def test_encrypted_key_needs_its_passphrase(sshd: Sshd, tmp_path: Path) -> None:
    key = keygen(tmp_path / "enc_key", passphrase="s3cret-phrase")
    (sshd.dir / "authorized_keys").write_text(
        sshd.user_key.with_suffix(".pub").read_text() + key.with_suffix(".pub").read_text()
    )
    with pytest.raises(CollectorError) as ei:
        run(one(make_auth(sshd, key_file=str(key)), ["true"]))
    assert ei.value.reason == "auth" and "encrypted" in ei.value.message
    pw = tmp_path / "pw"
    pw.write_text("s3cret-phrase\n")
    pw.chmod(0o600)
    auth = SshAuth.model_validate(
        {
            "type": "ssh",
            "user": sshd.user,
            "key_file": str(key),
            "passphrase_file": str(pw),
            "known_hosts": str(sshd.known_hosts),
            "port": sshd.port,
        }
    )
    assert str(auth.passphrase) == "<secret>"
    assert run(one(auth, ["echo", "ok"])).stdout == b"ok\n"
    pw.write_text("wrong-phrase\n")
    auth = SshAuth.model_validate(
        {
            "type": "ssh",
            "user": sshd.user,
            "key_file": str(key),
            "passphrase_file": str(pw),
            "known_hosts": str(sshd.known_hosts),
            "port": sshd.port,
        }
    )
    with pytest.raises(CollectorError) as ei:
        run(one(auth, ["true"]))
    assert ei.value.reason == "auth"
    assert "wrong-phrase" not in ei.value.message


def test_closed_port_is_unreachable(sshd: Sshd) -> None:
    with pytest.raises(CollectorError) as ei:
        run(one(make_auth(sshd, port=free_port()), ["true"]))
    assert ei.value.reason == "unreachable"


def test_hanging_command_times_out_and_frees_the_thread(sshd: Sshd) -> None:
    auth = make_auth(sshd)
    c = ctx()

    async def hang() -> float:
        t0 = time.monotonic()
        async with SshRunner(c, auth, "127.0.0.1") as r:
            with pytest.raises(CollectorError) as ei:
                await r.run(["sleep", "20"], timeout=1.5)
            assert ei.value.reason == "timeout"
            # the connection was closed on error; the next command reconnects and works
            assert (await r.run(["echo", "again"], timeout=10)).stdout == b"again\n"
        return time.monotonic() - t0

    assert run(hang()) < 10
    # The worker thread ended by itself: the pool runs new work at once.
    assert c.executor.submit(lambda: 42).result(timeout=2) == 42


def test_cancelled_run_closes_the_connection(sshd: Sshd) -> None:
    c = ctx()

    async def cancel() -> None:
        async with SshRunner(c, make_auth(sshd), "127.0.0.1") as r:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.0):
                    await r.run(["sleep", "20"], timeout=30)

    t0 = time.monotonic()
    run(cancel())
    assert time.monotonic() - t0 < 5
    # closing the connection ended the blocked reader thread promptly
    c.executor.shutdown(wait=True, cancel_futures=False)
    assert time.monotonic() - t0 < 5


def test_100mb_output_is_refused_with_bounded_memory(sshd: Sshd) -> None:
    auth = make_auth(sshd, max_output_bytes=4 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(CollectorError) as ei:
            run(one(auth, ["head", "-c", "100000000", "/dev/zero"], timeout=60))
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ei.value.reason == "output_too_large"
    assert "4194304 bytes" in ei.value.message
    assert peak < 24 * 1024 * 1024, f"peak {peak} bytes"


def test_line_cap(sshd: Sshd) -> None:
    auth = make_auth(sshd, max_output_lines=1000)
    with pytest.raises(CollectorError) as ei:
        run(one(auth, ["seq", "1", "100000"]))
    assert ei.value.reason == "output_too_large" and "1000 lines" in ei.value.message
    assert run(one(auth, ["seq", "1", "1000"])).stdout.count(b"\n") == 1000


def test_per_host_session_limit(sshd: Sshd, tmp_path: Path) -> None:
    log = tmp_path / "sessions.log"
    auth = make_auth(sshd, max_sessions=1)
    c = ctx()
    script = f"echo start >> {shlex.quote(str(log))}; sleep 0.4; echo end >> {shlex.quote(str(log))}"

    async def session() -> None:
        async with SshRunner(c, auth, "127.0.0.1") as r:
            await r.run(["sh", "-c", script], timeout=20)

    async def many() -> None:
        await asyncio.gather(*(session() for _ in range(4)))

    run(many())
    lines = log.read_text().split()
    assert lines == ["start", "end"] * 4  # never two sessions at once


def test_local_runner_caps_timeouts_and_missing_commands(tmp_path: Path) -> None:
    async def go() -> None:
        r = LocalRunner(limits=OutputLimits(max_bytes=1024 * 1024, max_lines=10))
        res = await r.run(["sh", "-c", "echo hi; echo err >&2; exit 2"], timeout=5)
        assert (res.exit_status, res.stdout, res.stderr_summary()) == (2, b"hi\n", "err")
        with pytest.raises(CollectorError) as ei:
            await r.run(["head", "-c", "100000000", "/dev/zero"], timeout=30)
        assert ei.value.reason == "output_too_large"
        with pytest.raises(CollectorError) as ei:
            await r.run(["seq", "1", "100"], timeout=5)
        assert ei.value.reason == "output_too_large"
        marker = tmp_path / "child-survived"
        t0 = time.monotonic()
        with pytest.raises(CollectorError) as ei:
            await r.run(["sh", "-c", f"(sleep 1.5; touch {marker}) & sleep 30"], timeout=0.5)
        assert ei.value.reason == "timeout" and time.monotonic() - t0 < 3
        await asyncio.sleep(2)
        assert not marker.exists()  # the whole process group was killed
        with pytest.raises(CollectorError) as ei:
            await r.run(["/nonexistent/restic"], timeout=5)
        assert ei.value.reason == "command_failed"
        res = await r.run(["pwd"], timeout=5, cwd=str(tmp_path), env={"X": "1"})
        assert res.stdout.decode().strip() == str(tmp_path)

    run(go())


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (a container's init may not reap at once)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_timed_out_command_is_stopped_on_the_server(sshd: Sshd, tmp_path: Path) -> None:
    """The agent gives up on a command; the server stops it (and its children) by itself,
    within 5 s, whether or not the command ever writes to the closed channel again."""
    pids = tmp_path / "pids"
    script = f'echo $$ > {shlex.quote(str(pids))}; sleep 300 & echo $! >> {shlex.quote(str(pids))}; wait'
    with pytest.raises(CollectorError) as ei:
        run(one(make_auth(sshd), ["sh", "-c", script], timeout=2.0))
    assert ei.value.reason == "timeout"
    gave_up = time.monotonic()
    started = [int(x) for x in pids.read_text().split()]
    assert len(started) == 2  # the shell and its child
    deadline = gave_up + 5.0
    while time.monotonic() < deadline and any(_alive(p) for p in started):
        time.sleep(0.05)
    still = [p for p in started if _alive(p)]
    for p in still:  # never leave them behind, whatever the verdict
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    assert not still, f"remote processes {still} still running 5 s after the timeout"


def test_remote_timeout_wrapper_keeps_exit_status_and_works_without_timeout(sshd: Sshd, tmp_path: Path) -> None:
    res = run(one(make_auth(sshd), ["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=5.0))
    assert (res.exit_status, res.stdout, res.stderr) == (7, b"out\n", b"err\n")
    # A host without `timeout` on its PATH still runs the command (unwrapped).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "env", "echo", "printenv"):
        (bindir / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    line, _ = remote_command(["echo", "plain"], timeout=5.0)
    words = shlex.split(line)
    assert words[:2] == ["sh", "-c"] and words[-2:] == ["echo", "plain"]
    res = run(one(make_auth(sshd), ["env", f"PATH={bindir}", "sh", "-c", words[2], "sh", "2", "6", "echo", "plain"]))
    assert (res.exit_status, res.stdout) == (0, b"plain\n")
    # ... and gets its env: values from stdin all the same.
    auth = make_auth(sshd)
    conn = SshConnection(auth, "127.0.0.1", sshd.port, "test")
    conn.connect(time.monotonic() + 10)
    try:
        cmd = remote_command(["printenv", "A"], {"A": "v 'x'\ny"}, timeout=5.0)
        cmd = cmd._replace(line=f"env PATH={shlex.quote(str(bindir))} {cmd.line}")
        res = conn.run(cmd, ["printenv", "A"], 10.0, auth.limits())
    finally:
        conn.close()
    assert (res.exit_status, res.stdout, res.stderr) == (0, b"v 'x'\ny\n", b"")
