"""A real Prometheus scrapes the exercise metrics of a real agent during a running exercise, and
sees the projection move when a step is recorded."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from agent.exercises.record import Recorder
from tests.helpers import exercise_script as xs
from tests.helpers.common import AgentProcess, need, wait_until
from tests.helpers.prom import start_prometheus

pytestmark = pytest.mark.integration


def _value(prom, expr: str) -> float | None:  # type: ignore[no-untyped-def]
    r = prom.query(expr)
    assert len(r) <= 1, (expr, r)
    return float(r[0]["value"][1]) if r else None


def test_prometheus_scrapes_a_running_exercise(tmp_path: Path) -> None:
    need("prometheus")
    ev = tmp_path / "evidence"
    ev.mkdir()
    t0 = xs.running_exercise(ev)
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "agent": {"site": "hq", "state_dir": str(tmp_path / "state")},
                "exercises": {"runbooks_dir": str(xs.RUNBOOKS), "evidence_dir": str(ev), "refresh": "1s"},
            }
        )
    )
    agent = AgentProcess(cfg)
    prom = None
    try:
        agent.wait_ready()
        prom = start_prometheus(tmp_path, [f"127.0.0.1:{agent.port}"])
        sel = '{exercise="live-1"}'
        wait_until(
            lambda: _value(prom, f"continuity_exercise_projected_seconds{sel}") is not None,
            40,
            what="the exercise metrics in Prometheus",
        )
        assert _value(prom, f"continuity_exercise_projected_seconds{sel}") == xs.LIVE_PROJECTED
        assert _value(prom, f"continuity_exercise_objective_seconds{sel}") == 72 * 3600
        assert _value(prom, f"continuity_exercise_active{sel}") == 1
        assert _value(prom, f"continuity_exercise_late_steps{sel}") == 0
        elapsed = _value(prom, f"continuity_exercise_elapsed_seconds{sel}")
        assert elapsed is not None and 3600 <= elapsed < 3600 + 300
        steps = {
            r["metric"]["state"]: float(r["value"][1])
            for r in prom.query('continuity_exercise_steps{exercise="live-1",runbook="core-network"}')
        }
        assert steps == {"waiting": 1, "ready": 0, "in_progress": 2, "done": 2, "failed": 0}
        assert _value(prom, 'continuity_exercise_system_restored{exercise="live-1",runbook="core-network"}') == 0
        # promtool check metrics has nothing to say about the exposition.
        r = subprocess.run(
            [need("promtool"), "check", "metrics"], input=agent.metrics(), capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0 and r.stdout == r.stderr == "", r.stdout + r.stderr
        # The alert's expression: within the objective, nothing.
        assert not prom.query("continuity_exercise_projected_seconds > continuity_exercise_objective_seconds")

        # firewalls finishes at 0h50m: remote-access now waits only for dr-wan (ends at 2h): 4h.
        Recorder(xs.RUNBOOKS, ev, "live-1", "live-test").step(
            "core-network", "firewalls", "done", at=t0 + timedelta(minutes=50)
        )
        wait_until(
            lambda: _value(prom, f"continuity_exercise_projected_seconds{sel}") == 4 * 3600,
            40,
            what="the new projection in Prometheus",
        )
        steps = {
            r["metric"]["state"]: float(r["value"][1])
            for r in prom.query('continuity_exercise_steps{exercise="live-1",runbook="core-network"}')
        }
        assert steps["done"] == 3 and steps["in_progress"] == 1
    finally:
        if prom is not None:
            prom.stop()
        agent.stop()
