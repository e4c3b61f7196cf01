"""Running a command for a collector: locally or over SSH (collectors/ssh.py), the same way.

Both runners take an argv list (never a shell string), stop the command at a deadline, cap its
output in bytes and lines (memory stays bounded however much it prints), close its stdin, and
return a :class:`CommandResult` with the exit status. A non-zero exit status is returned, not
raised: callers interpret exit codes (``restic check`` exits 1 for "repository contains errors").

Failure reasons shared by every collector that runs commands:

* ``timeout`` -- the command (or the connection) did not finish in time;
* ``command_failed`` -- it could not be started or exited non-zero where that means failure;
* ``output_too_large`` -- it printed more than the byte or line cap;
* ``bad_output`` -- it printed something the parser does not accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from agent.childenv import child_env
from agent.configtypes import scrub
from collectors.base import TIMEOUT, CollectorError

COMMAND_FAILED = "command_failed"
OUTPUT_TOO_LARGE = "output_too_large"
BAD_OUTPUT = "bad_output"

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_LINES = 1_000_000
STDERR_KEEP = 16 * 1024  # the tail of stderr kept for error messages
STDERR_HEAD = 4 * 1024  # and its head (a tool's first findings)
ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"


@dataclass(frozen=True)
class OutputLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_lines: int = DEFAULT_MAX_LINES


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_status: int  # -1 when killed by a signal
    stdout: bytes
    stderr: bytes  # the first STDERR_HEAD and the last STDERR_KEEP bytes
    duration: float

    def stderr_summary(self, max_len: int = 300) -> str:
        """The last meaningful stderr lines, one line, secrets scrubbed."""
        text = self.stderr.decode("utf-8", "replace")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        summary = " | ".join(lines[-3:])
        if len(summary) > max_len:
            summary = "..." + summary[-max_len:]
        return scrub(summary) or "no error output"

    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def describe(argv: Sequence[str]) -> str:
    """A short, quoted, scrubbed rendering of a command for messages."""
    text = shlex.join(argv)
    if len(text) > 120:
        text = text[:117] + "..."
    return scrub(text)


def require_success(res: CommandResult, where: str) -> CommandResult:
    if res.exit_status != 0:
        raise CollectorError(
            COMMAND_FAILED,
            f"{where}: `{describe(res.argv)}` exited with status {res.exit_status}: {res.stderr_summary()}",
        )
    return res


class Capture:
    """Accumulates stdout up to the caps; raises ``output_too_large`` past them."""

    def __init__(self, limits: OutputLimits, where: str, argv: Sequence[str]) -> None:
        self.limits = limits
        self.where = where
        self.argv = argv
        self.chunks: list[bytes] = []
        self.size = 0
        self.lines = 0

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        self.lines += data.count(b"\n")
        if self.size > self.limits.max_bytes:
            self.chunks.clear()
            raise CollectorError(
                OUTPUT_TOO_LARGE,
                f"{self.where}: `{describe(self.argv)}` printed more than {self.limits.max_bytes} bytes; "
                "output discarded (raise max_output_bytes or narrow the command)",
            )
        if self.lines > self.limits.max_lines:
            self.chunks.clear()
            raise CollectorError(
                OUTPUT_TOO_LARGE,
                f"{self.where}: `{describe(self.argv)}` printed more than {self.limits.max_lines} lines; "
                "output discarded (raise max_output_lines or narrow the command)",
            )
        self.chunks.append(data)

    def value(self) -> bytes:
        return b"".join(self.chunks)


class TailBuffer:
    """Keeps the first ``head`` and the last ``keep`` bytes written (stderr): the head holds the
    first findings of a tool that goes on to print pages of retries, the tail its verdict."""

    def __init__(self, keep: int = STDERR_KEEP, head: int = STDERR_HEAD) -> None:
        self.keep = keep
        self.head_size = head
        self.head = bytearray()
        self.buf = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        if len(self.head) < self.head_size:
            take = self.head_size - len(self.head)
            self.head += data[:take]
            data = data[take:]
        self.buf += data
        if len(self.buf) > self.keep * 2:
            cut = len(self.buf) - self.keep
            self.dropped += cut
            del self.buf[:cut]

    def value(self) -> bytes:
        tail = self.buf[-self.keep :]
        dropped = self.dropped + len(self.buf) - len(tail)
        if not dropped:
            return bytes(self.head + tail)
        return bytes(self.head) + f"\n[... {dropped} bytes of stderr omitted ...]\n".encode() + bytes(tail)


class CommandRunner(ABC):
    """Runs argv lists on one host. Use as an async context manager: an SSH runner keeps one
    connection for the commands of one run and closes it on exit (and on any error)."""

    where: str  # for messages: "local" or "user@host:port"
    limits: OutputLimits
    deadline: float | None  # time.monotonic() value no command may run past

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        limits: OutputLimits | None = None,
    ) -> CommandResult:
        """Run ``argv`` for at most ``timeout`` seconds (cut to the deadline), with ``env`` added
        to the child's environment, in ``cwd``, its output capped by ``limits`` (default: the
        runner's)."""
        return await self._run(tuple(argv), timeout, env, cwd, limits or self.limits)

    @abstractmethod
    async def _run(
        self, argv: tuple[str, ...], timeout: float, env: Mapping[str, str] | None, cwd: str | None, lim: OutputLimits
    ) -> CommandResult: ...


def time_left(timeout: float, deadline: float | None, where: str) -> float:
    """Seconds a command may run: its own timeout, cut to the run's deadline (time.monotonic())."""
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
    if timeout <= 0:
        raise CollectorError(TIMEOUT, f"{where}: no time left to run the next command")
    return timeout


class LocalRunner(CommandRunner):
    """Runs commands on the agent's own host as child processes in their own process group,
    killed (the whole group) on timeout, cap or cancellation."""

    def __init__(self, where: str = "local", limits: OutputLimits | None = None, deadline: float | None = None):
        self.where = where
        self.limits = limits or OutputLimits()
        self.deadline = deadline  # time.monotonic() value no command may run past

    async def _run(
        self, argv: tuple[str, ...], timeout: float, env: Mapping[str, str] | None, cwd: str | None, lim: OutputLimits
    ) -> CommandResult:
        budget = time_left(timeout, self.deadline, self.where)
        full_env = child_env(env)
        t0 = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise CollectorError(COMMAND_FAILED, f"{self.where}: command not found: {argv[0]}") from None
        except PermissionError:
            raise CollectorError(COMMAND_FAILED, f"{self.where}: permission denied running {argv[0]}") from None
        except OSError as e:
            raise CollectorError(COMMAND_FAILED, f"{self.where}: cannot run {argv[0]}: {e.strerror or e}") from None
        out = Capture(lim, self.where, argv)
        err = TailBuffer()

        async def pump(stream: asyncio.StreamReader | None, sink: Capture | TailBuffer) -> None:
            assert stream is not None
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    return
                sink.feed(chunk)

        err_task = asyncio.create_task(pump(proc.stderr, err))
        try:
            async with asyncio.timeout(budget):
                await pump(proc.stdout, out)
                rc = await proc.wait()
                await err_task
        except TimeoutError:
            raise CollectorError(
                TIMEOUT, f"{self.where}: `{describe(argv)}` did not finish within {budget:.1f}s"
            ) from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
                    async with asyncio.timeout(5):
                        await proc.wait()
            if not err_task.done():
                err_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, CollectorError):
                    await err_task
        return CommandResult(argv, rc, out.value(), err.value(), time.monotonic() - t0)
