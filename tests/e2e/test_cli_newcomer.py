"""The command line as a newcomer meets it: global options anywhere, any case; a misspelt task is an error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.cli import build_parser
from tests.helpers.common import AGENT_BIN, free_port


def _config(tmp_path: Path) -> Path:
    p = tmp_path / "agent.yml"
    p.write_text(
        "agent: {site: hq, state_dir: state}\n"
        "defaults: {interval: 60s, timeout: 10s}\n"
        "targets:\n"
        f"  - {{name: shut, kind: probe, module: tcp, host: 127.0.0.1, port: {free_port()}}}\n"
        "  - {name: rig, kind: link, host: 127.0.0.1,"
        " throughput: {server: 127.0.0.1, port: 5201, interval: 6h}}\n"
    )
    return p


@pytest.mark.parametrize(
    ("argv", "level", "fmt"),
    [
        (["--log-level", "DEBUG", "check-config", "x.yml"], "debug", "text"),
        (["check-config", "x.yml", "--log-level", "Warning"], "warning", "text"),
        (["collect-once", "--config", "c.yml", "--log-format", "JSON", "t"], "info", "json"),
        (["--log-level", "error", "collect-once", "--config", "c.yml", "t"], "error", "text"),
        (["evidence", "verify", "--runbooks", "r", "--evidence", "e", "--log-level", "debug"], "debug", "text"),
    ],
)
def test_global_options_before_or_after_the_subcommand(argv: list[str], level: str, fmt: str) -> None:
    args = build_parser().parse_args(argv)
    assert (args.log_level, args.log_format) == (level, fmt)


def test_unknown_log_level_is_refused() -> None:
    r = subprocess.run([str(AGENT_BIN), "--log-level", "loud", "check-config", "x.yml"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "invalid choice: 'loud'" in r.stderr


def test_collect_once_unknown_task_exits_2_naming_the_tasks(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    r = subprocess.run(
        [str(AGENT_BIN), "collect-once", "--config", str(cfg), "--task", "througput", "rig"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == ""
    assert "target 'rig' has no task 'througput'" in r.stderr and "'throughput'" in r.stderr
    r = subprocess.run(
        [str(AGENT_BIN), "collect-once", "--config", str(cfg), "--task", "x", "--log-level", "DEBUG", "shut"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 2 and "has no task 'x' (tasks: '' (the main task))" in r.stderr, r.stderr


def test_a_process_name_longer_than_the_kernels_15_characters_is_found(tmp_path: Path) -> None:
    # collect-once runs as "continuity-agent", which the kernel keeps as "continuity-agen".
    cfg = tmp_path / "agent.yml"
    cfg.write_text("agent: {site: hq, state_dir: state}\n"
                   "targets:\n  - {name: me, kind: host, processes: [continuity-agent, no-such-daemon-xyz]}\n")
    r = subprocess.run([str(AGENT_BIN), "collect-once", "--config", str(cfg), "me"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = dict(line.rsplit(" ", 1) for line in r.stdout.splitlines() if line.startswith("continuity_host_proc"))
    assert float(lines['continuity_host_processes_running{process="continuity-agent"}']) >= 1
    assert float(lines['continuity_host_processes_running{process="no-such-daemon-xyz"}']) == 0
