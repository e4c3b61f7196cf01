#!/usr/bin/env python3
"""Split one continuity-agent config into N shard configs, for estates too large for one agent.

    /opt/continuity-agent/bin/python deploy/tools/shard_config.py --shards 3 --out /tmp/shards \
        /etc/continuity-agent/estate.yml
    # -> /tmp/shards/estate-shard-0-of-3.yml ... each for its own agent (own host or own port)

(Run it with the agent's Python, which has PyYAML; in a checkout, ``.venv/bin/python``.)

Each target goes to shard ``hash(name) mod N`` with the hash Prometheus's ``hashmod`` relabel action
uses (the last 8 bytes of the MD5 of the value, big-endian), so a target stays on its shard when other
targets are added or removed, and the split can be reproduced with Prometheus relabelling.
Everything but ``targets`` (agent, defaults, sites, auths, ...) is copied into every shard; give
each shard agent its own ``--web.listen-address`` and state directory (``agent.state_dir`` gets a
``-shard-K`` suffix here). Relative paths (secret files, runbooks and evidence directories, bank
holiday lists) are made absolute, since a shard is written elsewhere than the config it came from;
a site's ``wan_interface`` stays only in the shard that polls its router. Validate each output with
``continuity-agent check-config``.
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


PATH_KEYS = ("_file", "_dir", "known_hosts")


def absolute_paths(node: Any, base: Path) -> Any:
    """A copy of ``node`` with every relative path value (keys ending ``_file``, ``_dir``, ``dir``,
    ``known_hosts``) made absolute against ``base``, the directory of the source config."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            is_path = isinstance(key, str) and (key.endswith(PATH_KEYS) or key == "dir")
            if is_path and isinstance(value, str) and value and not value.startswith(("/", "${")):
                out[key] = str(base / value)
            else:
                out[key] = absolute_paths(value, base)
        return out
    if isinstance(node, list):
        return [absolute_paths(v, base) for v in node]
    return node


def shard(cfg: dict[str, Any], shards: int, base: Path = Path(".")) -> list[dict[str, Any]]:
    cfg = absolute_paths(cfg, base.resolve())
    out = []
    for k in range(shards):
        part = {key: value for key, value in cfg.items() if key != "targets"}
        part["agent"] = dict(cfg.get("agent") or {})
        state = str(part["agent"].get("state_dir", "state"))
        part["agent"]["state_dir"] = f"{state.rstrip('/')}-shard-{k}"
        part["targets"] = [t for t in cfg.get("targets") or [] if hashmod(str(t["name"]), shards) == k]
        names = {t.get("name") for t in part["targets"]}
        sites = []
        for site in cfg.get("sites") or []:
            wan = site.get("wan_interface") if isinstance(site, dict) else None
            if isinstance(wan, dict) and wan.get("snmp_target") not in names:
                site = {key: value for key, value in site.items() if key != "wan_interface"}
            sites.append(site)
        if "sites" in cfg:
            part["sites"] = sites
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
    for k, part in enumerate(shard(cfg, args.shards, args.config.parent)):
        path = args.out / f"{args.config.stem}-shard-{k}-of-{args.shards}.yml"
        path.write_text(f"# Shard {k} of {args.shards} of {args.config.name} (deploy/tools/shard_config.py)\n"
                        + yaml.safe_dump(part, sort_keys=False))
        print(f"{path}: {len(part['targets'])} targets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
