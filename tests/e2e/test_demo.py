"""What `make run` shows: the shipped demo config, on this machine, gives probe and host metrics."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.common import ROOT, agent_process, free_port, metric_value, wait_until


def test_demo_config_shows_probe_and_host_metrics(tmp_path: Path) -> None:
    port = free_port()
    demo_dir = ROOT / "deploy" / "examples"
    text = (demo_dir / "demo.yml").read_text().replace("127.0.0.1:9072", f"127.0.0.1:{port}")
    text = text.replace("port: 9072", f"port: {port}")
    text = text.replace("state_dir: state", f"state_dir: {tmp_path / 'state'}")
    # Relative paths in the demo are relative to deploy/examples/: keep the file there.
    cfg = demo_dir / f".demo-test-{port}.yml"
    cfg.write_text(text)
    try:
        with agent_process(cfg, port=port, log_dir=tmp_path) as agent:

            def ready() -> bool:
                m = agent.metrics()
                return (
                    metric_value(m, "continuity_probe_success", target="agent-self-http") == 1.0
                    and metric_value(m, "continuity_probe_success", target="agent-self-tcp") is not None
                    and metric_value(m, "continuity_host_memory_total_bytes", target="this-host") is not None
                )

            wait_until(ready, timeout=60, what="demo probe and host metrics")
            m = agent.metrics()
            assert metric_value(m, "continuity_probe_success", target="agent-self-tcp") == 1.0
            assert (metric_value(m, "continuity_host_filesystem_size_bytes", target="this-host") or 0) > 0
    finally:
        cfg.unlink(missing_ok=True)
