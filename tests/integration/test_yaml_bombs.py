"""YAML bombs in every kind of file the agent reads (issue #19, M3): a 7-level alias bomb (a
522-byte runbook once took ``report dr`` to 2.4 GB) and 5,000 nested ``[``, in the agent config,
the web config, a runbook, the estate file and an evidence record.

Each is loaded in a fresh Python process by the function the agent uses, measuring that process's
peak RSS growth (``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs``) and CPU
time around the call: a clear error naming the file, within 2 s of CPU and 50 MiB. The CLI that
reads the file exits 2 with one line per problem and no traceback. A running agent with a report
schedule survives a bombed runbook: the report job writes a report stating the refused file and
/metrics keeps answering."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.common import AGENT_BIN, free_port
from tests.helpers.dr_estate import Estate, build_estate


def alias_bomb(field: str, prefix: str = "") -> str:
    """Seven levels of nine aliases each: 4.8 million strings once expanded."""
    lines = [prefix.rstrip("\n")] if prefix else []
    lines.append('l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
    for i in range(1, 7):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    lines.append(f"{field}: [" + ",".join(["*l6"] * 9) + "]")
    return "\n".join(lines) + "\n"


def deep(field: str, prefix: str = "") -> str:
    return prefix + f"{field}: " + "[" * 5000 + "\n"


BOMBS = {"alias": alias_bomb, "deep": deep}
KINDS = ("config", "webconfig", "runbook", "estate", "record")

MEASURE = r"""
import json, resource, sys, time
from pathlib import Path

def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no " + field)

kind, path, extra = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
from agent.config import ConfigError, load_config
from agent.webconfig import WebConfigError, load_web_config
from agent.evidence.loader import EvidenceInputError, load_records, load_runbooks
from agent.reports.runner import read_evidence
from datetime import UTC, datetime
# Warm up: everything imported and allocated before the baseline.
try:
    load_config(Path(extra[0]))
except ConfigError:
    pass
Path("/proc/self/clear_refs").write_text("5")
base = rss("VmRSS")
cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
errors = []
try:
    if kind == "config":
        load_config(path)
    elif kind == "webconfig":
        load_web_config(path)
    elif kind in ("runbook", "estate"):
        load_runbooks(path)
    else:
        load_records(path)
except (ConfigError, WebConfigError, EvidenceInputError) as e:
    errors.append(str(e))
if kind != "webconfig" and kind != "config":
    rb, ev = (path, Path(extra[1])) if kind != "record" else (Path(extra[1]), path)
    inp = read_evidence(rb, ev, datetime.now(UTC))  # what the report job reads
    errors.append("\n".join(inp.problems))
cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0
print(json.dumps({"growth": rss("VmHWM") - base, "cpu": cpu, "errors": errors}))
"""


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bomb-estate")
    build_estate(root)
    return root


def _files(tmp_path: Path, estate: Path, kind: str, bomb: str) -> tuple[Path, list[str], Path]:
    """(the bombed file or directory, CLI arguments reading it, a good agent config)."""
    shutil.copytree(estate, tmp_path / "estate")
    est = Estate(tmp_path / "estate" / "runbooks", tmp_path / "estate" / "evidence")
    good = tmp_path / "good.yml"
    port = free_port()
    good.write_text(yaml.safe_dump({
        "agent": {"site": "hq", "state_dir": str(tmp_path / "state"), "listen_address": f"127.0.0.1:{port}"},
        "reports": {"runbooks_dir": str(est.runbooks), "evidence_dir": str(est.evidence), "schedule": None},
    }))  # fmt: skip
    make = BOMBS[bomb]
    verify = ["evidence", "verify", "--runbooks", str(est.runbooks), "--evidence", str(est.evidence)]
    if kind == "config":
        p = tmp_path / "agent.yml"
        p.write_text(make("targets", "agent: {site: hq}\n"))
        return p, ["check-config", str(p)], good
    if kind == "webconfig":
        p = tmp_path / "web.yml"
        p.write_text(make("basic_auth_users"))
        return p, ["run", "--config", str(good), "--web.config.file", str(p)], good
    if kind == "runbook":
        (est.runbooks / "email.yml").write_text(make("name", "id: email\n"))
        return est.runbooks, verify, good
    if kind == "estate":
        (est.runbooks / "estate.yml").write_text(make("objective"))
        return est.runbooks, verify, good
    rec = est.evidence / "004-intranet.yml"
    assert rec.is_file()
    rec.write_text(make("steps", "runbook: email\n"))
    return est.evidence, verify, good


@pytest.mark.slow  # ten cases, each with three processes importing the agent
@pytest.mark.parametrize("bomb", sorted(BOMBS))
@pytest.mark.parametrize("kind", KINDS)
def test_bomb_is_one_clear_error(tmp_path: Path, estate: Path, kind: str, bomb: str) -> None:
    target, argv, good = _files(tmp_path, estate, kind, bomb)
    est = tmp_path / "estate"
    extra = [str(good), str(est / ("evidence" if kind != "record" else "runbooks"))]
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, kind, str(target), *extra], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    print(kind, bomb, f"growth {m['growth'] / 2**20:.1f} MiB, cpu {m['cpu']:.2f} s")
    assert m["growth"] < 50 * 1024 * 1024, m
    assert m["cpu"] < 2.0, m
    reason = "aliases" if bomb == "alias" else "nested"
    for err in m["errors"]:
        assert reason in err and "Traceback" not in err, err
        assert ("refused" in err or "not allowed" in err), err

    cli = subprocess.run([str(AGENT_BIN), *argv], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2, (cli.stdout, cli.stderr)
    assert "Traceback" not in cli.stderr and reason in cli.stderr, cli.stderr
    named = {"config": "agent.yml", "webconfig": "web.yml", "runbook": "email.yml", "estate": "estate.yml"}
    assert named.get(kind, "004-intranet.yml") in cli.stderr, cli.stderr
    if kind in ("runbook", "estate", "record"):
        rep = subprocess.run(
            [str(AGENT_BIN), "report", "dr", "--config", str(good), "--format", "md", "--output", "-"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rep.returncode == 2, (rep.stdout[-500:], rep.stderr)
        assert "Traceback" not in rep.stderr and reason in rep.stderr, rep.stderr


SURVIVE = r"""
import asyncio, json, sys, urllib.request
from pathlib import Path
from agent.config import load_config
from agent.service import Agent

def rss(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

async def main():
    agent = Agent(load_config(sys.argv[1]))
    await agent.start()
    try:
        job = agent.scheduler.get_job("reports:dr")
        assert job is not None
        Path("/proc/self/clear_refs").write_text("5")
        base = rss("VmRSS")
        written = await job.func()
        growth = rss("VmHWM") - base
        port = sys.argv[2]
        url = f"http://127.0.0.1:{port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        print(json.dumps({"growth": growth, "written": [str(p) for p in written],
                          "metrics": body.decode()}))
    finally:
        await agent.stop()

asyncio.run(main())
"""


def test_running_agent_survives_a_bombed_runbook(tmp_path: Path) -> None:
    est = build_estate(tmp_path / "estate")
    (est.runbooks / "email.yml").write_text(alias_bomb("name", "id: email\n"))
    port = free_port()
    cfg = tmp_path / "agent.yml"
    cfg.write_text(yaml.safe_dump({
        "agent": {"site": "hq", "state_dir": str(tmp_path / "state"), "listen_address": f"127.0.0.1:{port}"},
        "reports": {"runbooks_dir": str(est.runbooks), "evidence_dir": str(est.evidence),
                    "schedule": "0 7 1 * *", "output_dir": str(tmp_path / "out"), "formats": ["md"]},
    }))  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", SURVIVE, str(cfg), str(port)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads(out.stdout)
    assert m["growth"] < 50 * 1024 * 1024, m["growth"]
    assert len(m["written"]) == 1
    report = Path(m["written"][0]).read_text()
    assert "email.yml" in report and "aliases are not allowed" in report  # the gap is stated
    assert "continuity_report_last_success_timestamp_seconds" in m["metrics"]
    assert "MemoryError" not in out.stderr and "Traceback" not in out.stderr
