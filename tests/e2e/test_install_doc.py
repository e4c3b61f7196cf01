"""docs/deployment.md's install block, run as written by root, in a private mount namespace whose /etc,
/usr and /opt are overlays: the user, the files, their modes and `check-config` of the installed
config are checked, and the machine is left as it was. Only `systemctl ...` (systemd is not PID 1
here) is left out."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.common import ROOT, need, need_root
from tests.helpers.docsnippets import fenced, fresh_copy, shell_commands

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OVERLAY = r"""
set -eu
for d in etc usr opt; do
  mkdir -p "$T/$d.up" "$T/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$T/$d.up,workdir=$T/$d.work" "/$d"
done
cd "$CLONE"
while IFS= read -r line; do
  printf 'doc-test: %s\n' "$line"
  printf 'check-only-secret\n' | bash -e -o pipefail -c "$line"
done < "$T/block.sh"
id continuity-agent
stat -c '%U %a %n' /etc/continuity-agent/secrets /etc/continuity-agent/secrets/snmp-auth-password \
  /etc/continuity-agent/config.yml /usr/bin/continuity-agent /etc/systemd/system/continuity-agent.service
"""


def test_install_block_runs_as_written(tmp_path: Path) -> None:
    need_root("mount namespaces and overlays")
    need("systemd-sysusers")
    need("unshare")
    assert Path("/opt").is_dir()
    block = next(s for s in fenced(ROOT / "docs" / "deployment.md") if "systemd-sysusers" in s.body)
    lines = [cmd for _, cmd in shell_commands(block.body) if not cmd.startswith("systemctl")]
    assert any("check-config" in c for c in lines) and len(lines) >= 15
    (tmp_path / "block.sh").write_text("\n".join(lines) + "\n")
    clone = tmp_path / "checkout"
    fresh_copy(clone)
    before = Path("/etc/passwd").read_bytes()
    env = {**os.environ, "T": str(tmp_path), "CLONE": str(clone)}
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", OVERLAY],
                       env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "/etc/continuity-agent/config.yml: OK (" in out
    assert "continuity-agent 700 /etc/continuity-agent/secrets" in out
    assert "continuity-agent 600 /etc/continuity-agent/secrets/snmp-auth-password" in out
    assert "/usr/bin/continuity-agent" in out and "uid=" in out
    # the machine is as it was
    assert Path("/etc/passwd").read_bytes() == before
    assert not Path("/etc/continuity-agent").exists() and not Path("/opt/continuity-agent").exists()
