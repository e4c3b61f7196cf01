"""Real restic and borg repositories made for backup tests, and agent configs pointing at them,
locally or over SSH (tests/helpers/sshd.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.common import need
from tests.helpers.sshd import Sshd


@dataclass
class Repos:
    base: Path
    password_file: Path
    data: Path
    restic: Path
    borg: Path
    restic_env: dict[str, str]
    borg_env: dict[str, str]

    def restic_cmd(self, *args: str, repo: Path | None = None) -> Any:
        out = subprocess.run(
            [need("restic"), f"--repo={repo or self.restic}", f"--password-file={self.password_file}", *args],
            check=True,
            capture_output=True,
            env={**os.environ, **self.restic_env},
            timeout=120,
        )
        return out.stdout

    def borg_cmd(self, *args: str) -> Any:
        out = subprocess.run(
            [need("borg"), *args],
            check=True,
            capture_output=True,
            env={**os.environ, **self.borg_env, "BORG_PASSCOMMAND": f"cat {self.password_file}", "TZ": "UTC"},
            timeout=120,
        )
        return out.stdout


def make_repos(base: Path) -> Repos:
    need("restic")
    need("borg")
    base.mkdir(parents=True, exist_ok=True)
    pw = base / "password"
    pw.write_text("correct horse battery staple\n")
    pw.chmod(0o600)
    data = base / "data"
    (data / "finance").mkdir(parents=True)
    (data / "finance" / "budget.xlsx").write_bytes(os.urandom(200_000))
    (data / "finance" / "we[ir]d *name.txt").write_text("odd names restore too\n")
    (data / "hr").mkdir()
    for i in range(5):
        (data / "hr" / f"record-{i}.txt").write_text(f"personnel record {i}\n" * 100)
    r = Repos(
        base,
        pw,
        data,
        base / "restic-repo",
        base / "borg-repo",
        {"RESTIC_CACHE_DIR": str(base / "restic-cache")},
        {"BORG_BASE_DIR": str(base / "borg-base")},
    )
    r.restic_cmd("init")
    r.restic_cmd("backup", "--host=fs1", "--tag=nightly", str(data))
    (data / "hr" / "record-5.txt").write_text("new starter\n")
    r.restic_cmd("backup", "--host=fs1", "--tag=nightly", str(data))
    r.restic_cmd("backup", "--host=db1", str(data / "hr"))
    r.borg_cmd("init", "--encryption=repokey", str(r.borg))
    r.borg_cmd("create", f"{r.borg}::fs-1", str(data))
    r.borg_cmd("create", f"{r.borg}::fs-2", str(data))
    r.borg_cmd("create", f"{r.borg}::db-1", str(data / "hr"))
    return r


def restic_time(text: str) -> float:
    """restic's RFC 3339 time (nanoseconds) read independently of the collector's parser."""
    # Whole seconds from datetime, the fraction (up to nanoseconds) added separately: truncating it
    # to datetime's microseconds would put the reference up to 1 µs off the real time.
    m = re.fullmatch(r"(.*?\d{2}:\d{2}:\d{2})(\.\d+)?(.*)", text)
    assert m, text
    whole = datetime.fromisoformat(m.group(1) + m.group(3).replace("Z", "+00:00")).timestamp()
    return whole + float(m.group(2) or 0)


def borg_time(text: str) -> float:
    """borg's naive time as printed with TZ=UTC."""
    return datetime.fromisoformat(text + "+00:00").timestamp()


def restic_snapshots(r: Repos, *filters: str) -> list[dict[str, Any]]:
    return json.loads(r.restic_cmd("--no-lock", "snapshots", "--json", *filters))  # type: ignore[no-any-return]


def where(mode: str, sshd: Sshd | None) -> dict[str, Any]:
    if mode == "local":
        return {}
    assert sshd is not None
    return {"host": "127.0.0.1", "auth": "site-b", "port": sshd.port}


def write_agent_config(
    path: Path, targets: list[dict[str, Any]], sshd: Sshd | None = None, extra: dict[str, Any] | None = None
) -> Path:
    cfg: dict[str, Any] = {
        "agent": {"site": "hq", "state_dir": str(path.parent / "state")},
        "defaults": {"interval": "1m", "timeout": "30s"},
        "targets": [{"kind": "backup", "rpo": "24h", **t} for t in targets],
    }
    if sshd is not None:
        cfg["auths"] = {
            "site-b": {
                "type": "ssh",
                "user": sshd.user,
                "key_file": str(sshd.user_key),
                "known_hosts": str(sshd.known_hosts),
                "port": sshd.port,
            }
        }
    cfg.update(extra or {})
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
