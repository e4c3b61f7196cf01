"""Helpers shared by the test suites: free ports, readiness waits, required tools, the agent
as a real process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
AGENT_BIN = VENV_BIN / "continuity-agent"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(msg: str) -> NoReturn:
    """A prerequisite (tool, privilege, kernel feature) is missing: fail under CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def shared_testdata(name: str) -> Path:
    """A directory of peer data in ``shared/testdata/`` beside the repository (or beside a folder
    holding it, as for a git worktree); read in place, never copied into the project. Missing: fail
    under CI, skip elsewhere."""
    for up in ROOT.parents:
        path = up / "shared" / "testdata" / name
        if path.is_dir():
            return path
    unavailable(f"peer data shared/testdata/{name} is not beside {ROOT} or a folder above it")


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root")


def need(tool: str) -> str:
    """Path of a required external tool. Missing: fail under CI, skip on a developer machine."""
    path = shutil.which(tool) or next(
        (str(p) for p in (Path("/usr/sbin") / tool, Path("/usr/bin") / tool) if p.exists()), None
    )
    if path is None:
        unavailable(f"{tool} is not installed (run `make system-deps`)")
    return path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(pred, timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as e:
            last_exc = e
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


def wait_http(url: str, timeout: float = 20.0) -> None:
    wait_until(lambda: http_get(url, timeout=1.0)[0] == 200, timeout, what=url)


class AgentProcess:
    """``continuity-agent run`` as a subprocess on a free port."""

    def __init__(
        self,
        config: Path,
        port: int | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.port = port or free_port()
        self.log_path = (log_dir or config.parent) / f"agent-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                str(AGENT_BIN),
                "--log-level",
                "debug",
                "run",
                "--config",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{self.port}",
                *(extra_args or []),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> AgentProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:  # fail at once, not after the timeout
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if http_get(self.url + "/-/ready", timeout=1.0)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"agent not ready after {timeout}s:\n{self.log()[-3000:]}")

    def metrics(self) -> str:
        status, body = http_get(self.url + "/metrics")
        assert status == 200
        return body.decode()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def agent_process(config: Path, **kw) -> Iterator[AgentProcess]:  # type: ignore[no-untyped-def]
    a = AgentProcess(config, **kw)
    try:
        yield a.wait_ready()
    finally:
        a.stop()


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text exposition, matched by name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None
