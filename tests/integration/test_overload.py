"""50 probe targets, 20 of which accept TCP and never answer HTTP and 10 of which are closed:
every healthy target is still collected every interval and /metrics stays fast."""

from __future__ import annotations

import contextlib
import itertools
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from tests.helpers.common import agent_process, free_port, http_get, metric_value
from tests.helpers.httpserve import serve_http

INTERVAL = 2.0
RUN_FOR = 20.0


@pytest.mark.slow
def test_hung_and_closed_targets_do_not_delay_healthy_ones(tmp_path: Path) -> None:
    servers = contextlib.ExitStack()
    healthy = servers.enter_context(serve_http())
    hung = []
    for _ in range(20):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)  # the kernel completes the handshake; nobody ever reads or answers
        hung.append(s)
    closed = [free_port() for _ in range(10)]
    lines = []
    for i in range(20):
        lines.append(
            f"  - {{name: ok-{i}, kind: probe, module: http, url: 'http://127.0.0.1:{healthy}/'}}"
        )
    for i, s in enumerate(hung):
        lines.append(
            f"  - {{name: hung-{i}, kind: probe, module: http, url: 'http://127.0.0.1:{s.getsockname()[1]}/'}}"
        )
    for i, p in enumerate(closed):
        lines.append(f"  - {{name: closed-{i}, kind: probe, module: tcp, host: 127.0.0.1, port: {p}}}")
    cfg = tmp_path / "agent.yml"
    cfg.write_text(
        "agent: {site: hq, state_dir: state}\n"
        f"defaults: {{interval: {INTERVAL:g}s, timeout: 1500ms, start_jitter: 0.5}}\n"
        "targets:\n" + "\n".join(lines) + "\n"
    )
    try:
        with agent_process(cfg) as agent:
            t_start = time.time()
            worst = 0.0
            scrapes = 0
            while time.time() - t_start < RUN_FOR:
                t0 = time.perf_counter()
                status, _body = http_get(agent.url + "/metrics", timeout=5)
                worst = max(worst, time.perf_counter() - t0)
                scrapes += 1
                assert status == 200
                time.sleep(0.2)
            t_end = time.time()
            text = agent.metrics()
    finally:
        servers.close()
        for s in hung:
            s.close()

    assert scrapes >= 50
    assert worst < 1.0, f"/metrics took {worst:.3f}s at worst"
    for i in range(20):
        assert metric_value(text, "continuity_probe_success", target=f"ok-{i}") == 1.0
        assert metric_value(text, "continuity_probe_success", target=f"hung-{i}") == 0.0
        assert metric_value(text, "continuity_target_errors_total", target=f"hung-{i}", reason="timeout")
    for i in range(10):
        assert metric_value(text, "continuity_probe_success", target=f"closed-{i}") == 0.0
    for name in [f"ok-{i}" for i in range(20)] + [f"hung-{i}" for i in range(20)]:
        for reason in ("still_running", "late"):
            assert metric_value(text, "continuity_target_skipped_runs_total", target=name, reason=reason) == 0.0

    # Every healthy target ran every interval: no gap between consecutive runs beyond one interval.
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    for i in range(20):
        starts = [
            r[0]
            for r in db.execute(
                "SELECT started FROM results WHERE target = ? AND started BETWEEN ? AND ? ORDER BY started",
                (f"ok-{i}", t_start, t_end),
            )
        ]
        assert len(starts) >= int(RUN_FOR / INTERVAL) - 1, (i, starts)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert max(gaps) < INTERVAL * 1.5, (i, gaps)
    db.close()
