"""deploy/tools/shard_config.py: every target on exactly one shard, each shard a valid config, and
the split is the one Prometheus's own ``hashmod`` relabelling makes."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import yaml

from tests.helpers.common import AGENT_BIN, ROOT, free_port, need, wait_until
from tests.helpers.prom import Prometheus

TOOL = ROOT / "deploy" / "tools" / "shard_config.py"
CENTRAL = ROOT / "deploy" / "examples" / "central.yml"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shard_config", TOOL)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shards_partition_the_targets_and_each_passes_check_config(tmp_path: Path) -> None:
    shutil.copy(CENTRAL, tmp_path / "central.yml")
    for secret in re.findall(r"_file:\s*(\S+)", CENTRAL.read_text()):
        (tmp_path / secret).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / secret).write_text("example-secret-value\n")
        (tmp_path / secret).chmod(0o600)
    for d in ("runbooks", "evidence"):
        (tmp_path / d).mkdir()
    out = tmp_path / "shards"  # elsewhere than the config: its relative paths must still hold
    r = subprocess.run([str(TOOL), "--shards", "3", "--out", str(out), str(tmp_path / "central.yml")],
                       capture_output=True, text=True, timeout=60, env={"PATH": f"{AGENT_BIN.parent}:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    names = [t["name"] for t in yaml.safe_load(CENTRAL.read_text())["targets"]]
    seen: list[str] = []
    states = set()
    for k in range(3):
        path = out / f"central-shard-{k}-of-3.yml"
        cfg = yaml.safe_load(path.read_text())
        seen += [t["name"] for t in cfg["targets"]]
        states.add(cfg["agent"]["state_dir"])
        c = subprocess.run([str(AGENT_BIN), "check-config", str(path)], capture_output=True, text=True, timeout=60)
        assert c.returncode == 0, c.stderr
    assert sorted(seen) == sorted(names)
    assert len(states) == 3


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("targets: {not: a list}\n")
    r = subprocess.run([str(AGENT_BIN.parent / "python"), str(TOOL), "--shards", "2", "--out", str(tmp_path), str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "bad.yml" in r.stderr


def test_split_matches_prometheus_hashmod(tmp_path: Path) -> None:
    need("prometheus")
    names = [f"site-{i:02d}-router" for i in range(24)]
    closed = free_port()  # nothing listens: the targets are only relabelled, never reach anything
    cfg = {
        "global": {"scrape_interval": "1h"},
        "scrape_configs": [{
            "job_name": "shard",
            "static_configs": [{"targets": [f"127.0.0.1:{closed}"], "labels": {"name": n}} for n in names],
            "relabel_configs": [
                {"source_labels": ["name"], "modulus": 4, "target_label": "__tmp_shard", "action": "hashmod"},
                {"source_labels": ["__tmp_shard"], "regex": "1", "action": "keep"},
            ],
        }],
    }
    prom = Prometheus(tmp_path, cfg).start()
    try:
        wait_until(lambda: bool(prom.targets()), 30, what="targets discovered")
        kept = sorted(t["labels"]["name"] for t in prom.targets())
    finally:
        prom.stop()
    tool = _tool()
    expected = sorted(n for n in names if tool.hashmod(n, 4) == 1)
    assert kept == expected and 0 < len(kept) < len(names)
