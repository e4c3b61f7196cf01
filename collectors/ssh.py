"""The SSH transport (paramiko) shared by collectors that run commands on a remote host.

Auth (``auths.<name>`` with ``type: ssh``): key authentication only, the key's passphrase from a
file or ``${ENV}``, no agent, no agent forwarding, a known_hosts file that must list the host,
and paramiko's ``RejectPolicy``: an unknown host or a changed host key fails the connection
before authentication, so no command ever runs, and is reported as reason ``host_key``.

paramiko blocks, so every network step runs in the agent's worker threads through
``ctx.run_blocking``, each with its own timeout (socket timeouts, channel timeouts and deadline
loops): a worker thread cannot be cancelled, so it must end by itself. If the calling task is
cancelled, closing the connection makes the thread's next read return at once.

Commands are argv lists joined with :func:`shlex.join`, so config values never reach the remote
shell unquoted; a target's ``env:`` values travel on the command's stdin, never on a command
line (:func:`remote_command`). One connection is opened per run (the first command opens it, the
commands of the run reuse it) and closed at the end of the run and on any error. An asyncio
semaphore per host bounds concurrent sessions (``max_sessions``) so a site's server is never
flooded.

Reasons: ``unreachable``, ``timeout``, ``auth``, ``host_key``, ``command_failed``,
``output_too_large``, ``bad_output`` (the last three from :mod:`collectors.commands`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import Field, ValidationInfo, field_validator

from agent.configtypes import (
    Duration,
    Secret,
    StrictModel,
    check_secret_file_mode,
    resolve_path,
    scrub,
    secret_file_strictness,
)
from collectors.base import AUTH, TIMEOUT, UNREACHABLE, CollectorContext, CollectorError
from collectors.commands import (
    BAD_OUTPUT,
    COMMAND_FAILED,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_LINES,
    ENV_NAME_RE,
    OUTPUT_TOO_LARGE,
    Capture,
    CommandResult,
    CommandRunner,
    OutputLimits,
    TailBuffer,
    describe,
    time_left,
)

if TYPE_CHECKING:
    import paramiko

HOST_KEY = "host_key"
REASONS: tuple[str, ...] = (UNREACHABLE, TIMEOUT, AUTH, HOST_KEY, COMMAND_FAILED, OUTPUT_TOO_LARGE, BAD_OUTPUT)

POLL = 0.2  # seconds a blocking read waits before re-checking the deadline


class SshAuth(StrictModel):
    """``auths.<name>`` for SSH. Paths are relative to the config file."""

    type: Literal["ssh"] = Field(description="Selects this auth type: `ssh`.")
    user: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.@-]*$",
        description="Login user on the remote host.",
    )
    key_file: Path = Field(description="Private key file (the auth user's key).")
    passphrase: Secret | None = Field(default=None, description="Passphrase of an encrypted key (secret).")
    known_hosts: Path = Field(description="known_hosts file with the host's key: unknown or changed keys are refused.")
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    connect_timeout: Duration = Field(default=10.0, description="TCP connect and SSH handshake limit.")
    auth_timeout: Duration = Field(default=10.0, description="Authentication limit.")
    max_sessions: int = Field(default=2, ge=1, le=16, description="Commands run at once on one host.")
    max_output_bytes: int = Field(
        default=DEFAULT_MAX_BYTES, ge=1024, le=1024**3,
        description="Largest command output read; more is an output_too_large failure.",
    )
    max_output_lines: int = Field(
        default=DEFAULT_MAX_LINES, ge=1, le=100_000_000,
        description="Most output lines read; more is an output_too_large failure.",
    )

    @field_validator("key_file", "known_hosts")
    @classmethod
    def _existing_file(cls, v: Path, info: ValidationInfo) -> Path:
        p = resolve_path(v, info)
        if not p.is_file():
            raise ValueError(f"{info.field_name} {p} does not exist or is not a file")
        if info.field_name == "key_file":  # a private key is a secret file like any *_file
            check_secret_file_mode(p, "key_file", p.stat().st_mode, secret_file_strictness(info))
        return p

    @field_validator("connect_timeout", "auth_timeout")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be more than 0s")
        return v

    def limits(self) -> OutputLimits:
        return OutputLimits(self.max_output_bytes, self.max_output_lines)


@cache
def host_key_policy() -> tuple[type[Exception], type[paramiko.MissingHostKeyPolicy]]:
    """(UnknownHostKey, Reject): RejectPolicy with its own exception type, so an unknown host is
    told apart from other handshake failures. paramiko (and cryptography) load here, on the first
    SSH connection, not when the agent starts."""
    import paramiko

    class UnknownHostKey(paramiko.SSHException):
        pass

    class Reject(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
            raise UnknownHostKey(f"{hostname} not found in known_hosts")

    return UnknownHostKey, Reject


def _load_key(auth: SshAuth, where: str) -> paramiko.PKey:
    import paramiko

    # PKey.from_path hands the passphrase to cryptography, which wants bytes (the stub says str).
    password: Any = auth.passphrase.reveal().encode("utf-8") if auth.passphrase is not None else None
    try:
        return paramiko.PKey.from_path(auth.key_file, password)
    except paramiko.PasswordRequiredException:
        raise CollectorError(
            AUTH, f"{where}: key file {auth.key_file} is encrypted; set passphrase_file in the auth"
        ) from None
    except (paramiko.SSHException, ValueError, TypeError) as e:
        raise CollectorError(
            AUTH, f"{where}: cannot load key file {auth.key_file}: {scrub(str(e)) or type(e).__name__}"
        ) from None
    except OSError as e:
        raise CollectorError(AUTH, f"{where}: cannot read key file {auth.key_file}: {e.strerror or e}") from None


class SshConnection:
    """One blocking SSH connection. Every method runs in a worker thread."""

    def __init__(self, auth: SshAuth, host: str, port: int, where: str) -> None:
        self.auth = auth
        self.host = host
        self.port = port
        self.where = where
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._closed = False

    def connect(self, deadline: float) -> None:
        auth = self.auth
        budget = min(auth.connect_timeout, deadline - time.monotonic())
        if budget <= 0:
            raise CollectorError(TIMEOUT, f"{self.where}: no time left to connect")
        import paramiko

        unknown_host_key, reject = host_key_policy()
        pkey = _load_key(auth, self.where)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=budget)
        except TimeoutError:
            raise CollectorError(TIMEOUT, f"{self.where}: TCP connect timed out after {budget:.1f}s") from None
        except OSError as e:
            raise CollectorError(UNREACHABLE, f"{self.where}: cannot connect: {e.strerror or e}") from None
        client = paramiko.SSHClient()
        try:
            client.get_host_keys().load(str(auth.known_hosts))
        except (OSError, paramiko.SSHException) as e:
            sock.close()
            raise CollectorError(
                HOST_KEY, f"{self.where}: cannot read known_hosts {auth.known_hosts}: {e}; no command was run"
            ) from None
        client.set_missing_host_key_policy(reject())
        with self._lock:
            if self._closed:
                sock.close()
                raise CollectorError(TIMEOUT, f"{self.where}: connection abandoned")
            self._client = client
        t0 = time.monotonic()
        remaining = max(0.1, deadline - t0)
        try:
            client.connect(
                self.host,
                port=self.port,
                username=auth.user,
                pkey=pkey,
                sock=sock,
                timeout=min(budget, remaining),
                banner_timeout=min(budget, remaining),
                auth_timeout=min(auth.auth_timeout, remaining),
                channel_timeout=min(budget, remaining),
                allow_agent=False,
                look_for_keys=False,
            )
        except paramiko.BadHostKeyException:
            self.close()
            raise CollectorError(
                HOST_KEY,
                f"{self.where}: host key does not match {auth.known_hosts} (host reinstalled, or someone "
                "in the middle); no command was run",
            ) from None
        except unknown_host_key:
            self.close()
            raise CollectorError(
                HOST_KEY, f"{self.where}: host is not in known_hosts {auth.known_hosts}; no command was run"
            ) from None
        except paramiko.AuthenticationException:
            self.close()
            raise CollectorError(
                AUTH, f"{self.where}: the server refused key {auth.key_file} for user {auth.user}"
            ) from None
        except TimeoutError:
            self.close()
            raise CollectorError(TIMEOUT, f"{self.where}: SSH handshake timed out") from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            self.close()
            text = str(e)
            if "banner" in text.lower() and time.monotonic() - t0 >= min(budget, remaining) * 0.9:
                raise CollectorError(TIMEOUT, f"{self.where}: no SSH banner within {budget:.1f}s") from None
            raise CollectorError(
                UNREACHABLE, f"{self.where}: SSH handshake failed: {scrub(text) or type(e).__name__}"
            ) from None

    def run(self, command: RemoteCommand, argv: Sequence[str], timeout: float, limits: OutputLimits) -> CommandResult:
        """Run one command line, send its stdin and close it; read stdout (capped) and stderr
        (tail) until exit or deadline."""
        import paramiko

        t0 = time.monotonic()
        deadline = t0 + timeout
        client = self._client
        transport = client.get_transport() if client is not None else None
        if transport is None or not transport.is_active():
            raise CollectorError(UNREACHABLE, f"{self.where}: connection lost")
        try:
            chan = transport.open_session(timeout=max(0.1, deadline - time.monotonic()))
        except paramiko.ChannelException as e:
            raise CollectorError(UNREACHABLE, f"{self.where}: server refused a session: {e.text}") from None
        except (paramiko.SSHException, EOFError, OSError) as e:
            if time.monotonic() >= deadline:
                raise CollectorError(TIMEOUT, f"{self.where}: opening a session timed out") from None
            raise CollectorError(UNREACHABLE, f"{self.where}: cannot open a session: {e}") from None
        out = Capture(limits, self.where, argv)
        err = TailBuffer()
        try:
            chan.settimeout(POLL)
            chan.exec_command(command.line)
            if command.stdin:
                self._send(chan, command.stdin, deadline, argv, timeout)
            chan.shutdown_write()  # stdin at EOF: nothing waits for a prompt answer
            while True:
                while chan.recv_stderr_ready():
                    err.feed(chan.recv_stderr(65536))
                if time.monotonic() >= deadline:
                    raise self._timeout(argv, timeout)
                try:
                    data = chan.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                out.feed(data)
            while not chan.exit_status_ready():
                while chan.recv_stderr_ready():
                    err.feed(chan.recv_stderr(65536))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._timeout(argv, timeout)
                chan.status_event.wait(min(POLL, left))
            while chan.recv_stderr_ready():
                err.feed(chan.recv_stderr(65536))
            status = chan.recv_exit_status()
        except (paramiko.SSHException, EOFError, OSError) as e:
            if self._closed:
                raise CollectorError(TIMEOUT, f"{self.where}: connection closed while `{describe(argv)}` ran") from None
            raise CollectorError(UNREACHABLE, f"{self.where}: connection failed during a command: {e}") from None
        finally:
            with contextlib.suppress(Exception):
                chan.close()
        return CommandResult(tuple(argv), status, out.value(), err.value(), time.monotonic() - t0)

    def _send(self, chan: paramiko.Channel, data: bytes, deadline: float, argv: Sequence[str], timeout: float) -> None:
        """Write ``data`` to the command's stdin by the deadline. A command that ended before
        reading it is not an error here: its exit status and stderr tell what happened."""
        pos = 0
        while pos < len(data):
            if time.monotonic() >= deadline:
                raise self._timeout(argv, timeout)
            try:
                sent = chan.send(data[pos : pos + 32768])
            except TimeoutError:
                continue
            except OSError:
                if chan.closed:
                    return
                raise
            if sent == 0:  # the channel is closed
                return
            pos += sent

    def _timeout(self, argv: Sequence[str], timeout: float) -> CollectorError:
        return CollectorError(TIMEOUT, f"{self.where}: `{describe(argv)}` did not finish within {timeout:.1f}s")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


# Stops the command on the server when its time is up, whether or not the connection survives:
# `timeout` (coreutils, BusyBox >= 1.30) sends TERM to the command's process group, then KILL
# KILL_AFTER seconds later. A host without `timeout` runs the command unwrapped (it then ends only
# when it next writes to the closed channel). No pty is requested: a pty merges stderr into stdout
# and makes restic and borg print progress bars.
_TIMEOUT_WRAPPER = (
    'k=$1 t=$2; shift 2; if command -v timeout >/dev/null 2>&1; then exec timeout -k "$k" "$t" "$@"; fi; exec "$@"'
)
REMOTE_GRACE = 1  # seconds the remote limit exceeds the agent's, so the agent sees its own timeout first
KILL_AFTER = 2  # seconds from TERM to KILL on the server

# A target's `env:` reaches the remote command on the channel's stdin, never on a command line
# (any user of the host can read command lines in ps and /proc/<pid>/cmdline, and audit logs keep
# them). The command line carries only the variable names, then `--`, then the argv. The values
# follow on stdin in the names' order, each as lines: every line of the value prefixed with `+`
# when another line of the value follows, with `=` for its last line (so any value arrives byte
# for byte: newlines, quotes, `$`, backslashes, spaces, non-UTF-8 bytes). Only the shell builtins
# `read`, `case` and `export` touch a value, so no process gets one in its argv. Then the
# command is exec'd with stdin from /dev/null, as a local command has it; a value that does not
# arrive whole stops everything with exit status 125 before the command runs.
ENV_FAILED = 125
_ENV_PROLOGUE = (  # one line, no literal newline: the login shell may not be sh
    "_ca_n=$(printf '\\nx'); _ca_n=${_ca_n%x}; "
    'while [ "$1" != -- ]; do '
    "_ca_v= _ca_ok=; "
    "while IFS= read -r _ca_l; do "
    "case $_ca_l in "
    "+*) _ca_v=$_ca_v${_ca_l#?}$_ca_n ;; "
    "=*) _ca_v=$_ca_v${_ca_l#?} _ca_ok=1; break ;; "
    "*) break ;; "
    "esac; "
    "done; "
    'if [ -z "$_ca_ok" ]; then echo "continuity-agent: the environment did not arrive on stdin" >&2; '
    f"exit {ENV_FAILED}; fi; "
    'export "$1=$_ca_v"; '
    "shift; "
    "done; "
    "shift; "
    "unset _ca_n _ca_v _ca_ok _ca_l; "
    'exec "$@" </dev/null'
)
_ENV_NAME = re.compile(ENV_NAME_RE)


class RemoteCommand(NamedTuple):
    line: str  # for the remote shell: holds no `env:` value
    stdin: bytes  # the `env:` values, sent on the channel before its stdin is closed


def env_stdin(values: Iterable[str]) -> bytes:
    """The values as :data:`_ENV_PROLOGUE` reads them (encoded as a local child's environment is:
    :func:`os.fsencode`)."""
    out = bytearray()
    for value in values:
        raw = os.fsencode(value)
        if b"\0" in raw:
            raise ValueError("an environment value cannot hold a NUL byte")
        *more, last = raw.split(b"\n")
        for line in more:
            out += b"+" + line + b"\n"
        out += b"=" + last + b"\n"
    return bytes(out)


def remote_command(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> RemoteCommand:
    """The command line for the remote shell and what to send on its stdin: every word quoted;
    the environment's names on the line and its values on stdin (:data:`_ENV_PROLOGUE`); a working
    directory via a fixed ``sh -c`` script taking the directory as ``$1``; with ``timeout``,
    wrapped so the server stops the command itself (TERM a second after the agent gives up, KILL
    two seconds later)."""
    words = list(argv)
    stdin = b""
    if env:
        bad = [k for k in env if not _ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"not environment variable names: {bad!r}")
        words = ["sh", "-c", _ENV_PROLOGUE, "sh", *env, "--", *words]
        stdin = env_stdin(env.values())
    if cwd is not None:
        words = ["sh", "-c", 'cd -- "$1" && shift && exec "$@"', "sh", cwd, *words]
    if timeout is not None:
        limit = math.ceil(timeout) + REMOTE_GRACE
        words = ["sh", "-c", _TIMEOUT_WRAPPER, "sh", str(KILL_AFTER), str(limit), *words]
    return RemoteCommand(shlex.join(words), stdin)


def _slots(ctx: CollectorContext, host: str, port: int, size: int) -> asyncio.Semaphore:
    table: dict[tuple[str, int], asyncio.Semaphore] = ctx.shared.setdefault("ssh.host_slots", {})
    sem = table.get((host, port))
    if sem is None:
        sem = table[(host, port)] = asyncio.Semaphore(size)
    return sem


class SshRunner(CommandRunner):
    """A :class:`collectors.commands.CommandRunner` over SSH: ``async with`` opens nothing; the
    first command connects, the next ones reuse the connection; leaving the block (or any error)
    closes it. Holds one of the host's session slots while connected."""

    def __init__(
        self,
        ctx: CollectorContext,
        auth: SshAuth,
        host: str,
        port: int | None = None,
        *,
        deadline: float | None = None,
        limits: OutputLimits | None = None,
    ) -> None:
        self.ctx = ctx
        self.auth = auth
        self.host = host
        self.port = port or auth.port
        self.deadline = deadline
        self.limits = limits or auth.limits()
        self.where = f"{auth.user}@{host}:{self.port}"
        self._conn: SshConnection | None = None
        self._slot: asyncio.Semaphore | None = None

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing only shuts sockets; do it without waiting so a cancelled run returns at once.
            # The worker thread still reading sees the closed channel and ends.
            conn.close()
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    async def _connection(self, budget: float) -> SshConnection:
        if self._conn is not None:
            return self._conn
        slot = _slots(self.ctx, self.host, self.port, self.auth.max_sessions)
        try:
            async with asyncio.timeout(budget):
                await slot.acquire()
        except TimeoutError:
            raise CollectorError(
                TIMEOUT, f"{self.where}: all {self.auth.max_sessions} SSH sessions to this host stayed busy"
            ) from None
        self._slot = slot
        conn = SshConnection(self.auth, self.host, self.port, self.where)
        self._conn = conn
        try:
            await self.ctx.run_blocking(conn.connect, time.monotonic() + budget)
        except BaseException:
            self._drop()
            raise
        return conn

    async def _run(
        self, argv: tuple[str, ...], timeout: float, env: Mapping[str, str] | None, cwd: str | None, lim: OutputLimits
    ) -> CommandResult:
        t0 = time.monotonic()
        conn = await self._connection(time_left(timeout, self.deadline, self.where))
        budget = time_left(timeout - (time.monotonic() - t0), self.deadline, self.where)
        command = remote_command(argv, env, cwd, timeout=budget)  # env: on stdin, never the line
        try:
            return await self.ctx.run_blocking(conn.run, command, argv, budget, lim)
        except BaseException:
            self._drop()  # closed on error: never reuse a connection in an unknown state
            raise


COLLECTORS: list[Any] = []
AUTH_MODELS = [SshAuth]
