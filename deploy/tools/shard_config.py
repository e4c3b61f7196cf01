#!/usr/bin/env python3
"""Split one continuity-agent config into N shard configs, for estates too large for one agent.

    python deploy/tools/shard_config.py --shards 3 --out /tmp/shards /etc/continuity-agent/estate.yml
    # -> /tmp/shards/estate-shard-0-of-3.yml ... each for its own agent (own host or own port)

Each target goes to shard ``hash(name) mod N`` with the hash Prometheus's ``hashmod`` relabel action
uses (the last 8 bytes of the MD5 of the value, big-endian), so a target stays on its shard when other
targets are added or removed, and the split can be reproduced with Prometheus relabelling.
Everything but ``targets`` (agent, defaults, sites, auths, ...) is copied into every shard; give
each shard agent its own ``--web.listen-address`` and state directory (``agent.state_dir`` gets a
``-shard-K`` suffix here). Validate each output with ``continuity-agent check-config``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import yaml


def hashmod(value: str, modulus: int) -> int:
    """Prometheus's ``action: hashmod``: sum64(md5(value)) % modulus."""
    return int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big") % modulus  # noqa: S324 - not security


def shard(cfg: dict[str, Any], shards: int) -> list[dict[str, Any]]:
    out = []
    for k in range(shards):
        part = {key: value for key, value in cfg.items() if key != "targets"}
        part["agent"] = dict(cfg.get("agent") or {})
        state = str(part["agent"].get("state_dir", "state"))
        part["agent"]["state_dir"] = f"{state.rstrip('/')}-shard-{k}"
        part["targets"] = [t for t in cfg.get("targets") or [] if hashmod(str(t["name"]), shards) == k]
        out.append(part)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--shards", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.shards < 1:
        print("shard_config: --shards must be at least 1", file=sys.stderr)
        return 2
    try:
        cfg = yaml.safe_load(args.config.read_text())
    except (OSError, yaml.YAMLError) as e:
        print(f"shard_config: {args.config}: {e}", file=sys.stderr)
        return 2
    if not isinstance(cfg, dict) or not isinstance(cfg.get("targets", []), list):
        print(f"shard_config: {args.config}: not an agent config (mapping with a targets list)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(shard(cfg, args.shards)):
        path = args.out / f"{args.config.stem}-shard-{k}-of-{args.shards}.yml"
        path.write_text(f"# Shard {k} of {args.shards} of {args.config.name} (deploy/tools/shard_config.py)\n"
                        + yaml.safe_dump(part, sort_keys=False))
        print(f"{path}: {len(part['targets'])} targets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
