"""Docs are code, run: the shell blocks marked ``<!-- doc-test: run -->`` and the commands in the
comment headers of deploy/examples/ run as written, in a copy of the shipped files, and succeed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.common import ROOT, VENV_BIN
from tests.helpers.docsnippets import Snippet, agent_argv, all_snippets, shell_commands

pytestmark = pytest.mark.e2e

SNIPPETS = all_snippets()
RUN_BLOCKS = [s for s in SNIPPETS if s.lang == "sh" and s.mark == "run"]
HEADER_CHECKS = [s for s in SNIPPETS if s.lang == "header" and (agent_argv(s.body) or [""])[0] in ("check-config",
                                                                                                    "report")]


def _workspace(tmp_path: Path) -> Path:
    """The shipped files a reader has in a checkout, with the secret files and directories the
    example configs name (as the examples' headers tell the reader to create them)."""
    work = tmp_path / "checkout"
    for d in ("runbooks", "deploy", "docs", "grafana"):
        shutil.copytree(ROOT / d, work / d)
    (work / ".venv").symlink_to(VENV_BIN.parent)  # the checkout's virtual environment
    examples = work / "deploy" / "examples"
    for cfg in examples.glob("*.yml"):
        text = cfg.read_text()
        for rel in re.findall(r"^\s*[\w]*_file:\s*([^\s#/][^\s#]*)", text, re.M):
            p = examples / rel
            if p.exists():  # a shipped file (the bank holidays list)
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("example-secret-value\n")
            p.chmod(0o600)
    return work


def _env(text: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "HOME", "TMPDIR")}
    env["PATH"] = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
    for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", text):
        env.setdefault(name, "doc-test-stub")  # the examples take these secrets from the environment
    return env


def _run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_there_is_something_to_run() -> None:
    assert len(RUN_BLOCKS) >= 3 and len(HEADER_CHECKS) >= 5


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=lambda s: s.where)
def test_runnable_shell_blocks_run_as_written(block: Snippet, tmp_path: Path) -> None:
    work = _workspace(tmp_path)
    for _, command in shell_commands(block.body):
        r = _run(command, work, _env(command))
        assert r.returncode == 0, f"{block.where}: {command}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("snippet", HEADER_CHECKS, ids=lambda s: s.where)
def test_example_header_commands_run_as_written(snippet: Snippet, tmp_path: Path) -> None:
    work = _workspace(tmp_path)
    config = (work / snippet.file.relative_to(ROOT)).read_text()
    command = snippet.body.replace("/tmp/", f"{tmp_path}/")  # where the reader's report goes
    r = _run(command, work, _env(config))
    ok = (0, 1) if agent_argv(command)[:1] == ["report"] else (0,)  # type: ignore[index]
    assert r.returncode in ok, f"{snippet.where}: {command}\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr
