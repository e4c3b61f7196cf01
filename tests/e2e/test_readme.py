"""README's two commands on a fresh copy of the checkout: `make run` creates the virtual environment,
says where the command is, and serves the demo on 127.0.0.1:9072; then the README's next steps work.
(`make test` is this suite.) The agent runs in a private network namespace, so port 9072 is free and
nothing it sends leaves the machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.common import need, need_root
from tests.helpers.docsnippets import fresh_copy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT = r"""
set -u
ip link set lo up
setsid make run > run.log 2>&1 &
pid=$!
ready=""
for _ in $(seq 1 240); do
  if curl -fsS -o /dev/null http://127.0.0.1:9072/-/ready; then ready=yes; break; fi
  sleep 0.5
done
status=1
if [ -n "$ready" ]; then
  # README: "Then open http://127.0.0.1:9072/ (status page) or `curl localhost:9072/metrics`."
  curl -fsS http://127.0.0.1:9072/ > status.html &&
  curl -fsS localhost:9072/metrics > metrics.txt &&
  .venv/bin/continuity-agent check-config deploy/examples/demo.yml > check.txt 2>&1 &&
  . .venv/bin/activate && continuity-agent --version > version.txt && status=0
fi
kill -TERM -- -"$pid" 2>/dev/null
wait "$pid" 2>/dev/null
exit $status
"""


def test_make_run_on_a_fresh_copy_then_the_readme_steps(tmp_path: Path) -> None:
    need_root("a private network namespace for port 9072")
    need("git")
    need("curl")
    clone = tmp_path / "continuity-agent"
    fresh_copy(clone)
    assert not (clone / ".venv").exists()
    # The virtual environment needs the package index, so it is made before the namespace is entered.
    venv = subprocess.run(["make", "venv"], cwd=clone, capture_output=True, text=True, timeout=900)
    assert venv.returncode == 0, venv.stdout[-3000:] + venv.stderr[-3000:]
    r = subprocess.run(["unshare", "--net", "bash", "-c", SCRIPT], cwd=clone, capture_output=True, text=True,
                       timeout=300)
    log = (clone / "run.log").read_text() if (clone / "run.log").exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + log[-3000:]
    assert f"the command is {clone}/.venv/bin/continuity-agent" in log
    assert "continuity_agent_info" in (clone / "metrics.txt").read_text()
    assert "this-host" in (clone / "status.html").read_text()
    assert ": OK (" in (clone / "check.txt").read_text()
    assert (clone / "version.txt").read_text().startswith("continuity-agent ")
    assert "Traceback" not in log
