"""The restore test: restore configured paths, configured checksummed files and/or a sample of
files from the latest snapshot into a fresh scratch directory on the backup host, verify them,
time it and clean up.

Verification: every expected regular file is restored with the size the snapshot records; its
sha256 matches the configured checksum, and for borg the sha256 borg computes from the archive;
restic additionally re-reads what it restored (``restore --verify``). Nothing verified is a
failure, never a pass.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collectors.backup import parsers, tools
from collectors.backup.config import BackupTarget
from collectors.base import CollectorError
from collectors.commands import CommandRunner, require_success

log = logging.getLogger(__name__)

MAX_PROBLEMS = 20


@dataclass
class RestoreOutcome:
    ok: bool
    tool: str
    snapshot: str  # restic snapshot id or borg archive name
    snapshot_time: float | None
    started_at: float  # wall clock, test start
    restore_started_at: float
    restore_ended_at: float
    verified_at: float
    duration: float  # seconds from restore start to end of verification
    files: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    cleanup_error: str | None = None
    restore_ok: bool = False  # the restore command itself succeeded
    not_run_reason: str | None = None  # the test could not run to a verdict (lock, host down...)

    def summary(self) -> str:
        if self.not_run_reason is not None:
            return f"restore test not run ({self.not_run_reason}): {self.problems[0] if self.problems else ''}"
        if self.ok:
            snap = self.snapshot[:8] if self.tool == "restic" else self.snapshot
            return f"restored and verified {len(self.files)} file(s) from {snap} in {self.duration:.1f}s"
        return "; ".join(self.problems[:3]) or "restore test failed"


def not_run_outcome(tool: str, started: float, now: float, reason: str, message: str) -> RestoreOutcome:
    """A restore test that could not run to a verdict: blocked by a lock or a busy repository,
    an unreachable host, a timeout. It is a failed test with the reason, never a pass."""
    return RestoreOutcome(False, tool, "", None, started, now, now, now, 0.0, problems=[message], not_run_reason=reason)


def _under(path: str, prefixes: list[str]) -> bool:
    for p in prefixes:
        p = p.rstrip("/") or "/"
        if path == p or path.startswith(p + "/") or p == "/":
            return True
    return False


def _select(
    nodes: list[parsers.Node], paths: list[str], checksums: Mapping[str, str], sample: int, seed: str
) -> tuple[dict[str, parsers.Node], list[str]]:
    """Files to verify (path -> node) and problems (configured paths missing)."""
    problems = []
    chosen: dict[str, parsers.Node] = {}
    by_path = {n.path: n for n in nodes}
    for p in paths:
        hits = [n for n in nodes if _under(n.path, [p])]
        if not hits:
            problems.append(f"path {p} is not in the snapshot (or holds no regular files)")
        for n in hits:
            chosen[n.path] = n
    for p in checksums:
        if p in by_path:
            chosen[p] = by_path[p]
        else:
            problems.append(f"checksummed file {p} is not in the snapshot")
    if sample:
        rest = sorted(n.path for n in nodes if n.path not in chosen)
        for p in random.Random(seed).sample(rest, min(sample, len(rest))):
            chosen[p] = by_path[p]
    return chosen, problems


class RestoreTester:
    """Runs one restore test through a command runner (local or SSH)."""

    def __init__(
        self,
        target: BackupTarget,
        runner: CommandRunner,
        env: Mapping[str, str],
        clock: Callable[[], float],
        where: str,
    ) -> None:
        assert target.restore_test is not None
        self.t = target
        self.cfg = target.restore_test
        self.runner = runner
        self.env = dict(env)
        self.clock = clock
        self.where = where

    async def _run(self, argv: list[str], timeout: float, cwd: str | None = None) -> Any:
        return await self.runner.run(argv, timeout=timeout, env=self.env, cwd=cwd)

    async def run(self, work_deadline: float, cleanup_deadline: float) -> RestoreOutcome:
        started = self.clock()

        def left() -> float:
            return max(0.0, work_deadline - time.monotonic())

        if self.t.type == "restic":
            snap_id, snap_time, nodes = await self._restic_snapshot(left)
        else:
            snap_id, snap_time, nodes = await self._borg_snapshot(left)
        if snap_id is None:
            now = self.clock()
            return RestoreOutcome(
                False, self.t.type, "", None, started, now, now, now, 0.0, problems=["no snapshot to restore"]
            )
        chosen, problems = _select(
            nodes,
            [self._norm(p) for p in self.cfg.paths],
            {self._norm(k): v for k, v in self.cfg.checksums.items()},
            self.cfg.sample_files,
            snap_id,
        )
        if self.t.type == "borg" and chosen:
            chosen = await self._borg_hashes(snap_id, chosen, left)
        res = await self._run(["mktemp", "-d", "-p", self.cfg.scratch_dir, "continuity-restore.XXXXXXXX"], left())
        scratch = parsers.parse_mktemp(require_success(res, self.where).stdout, self.cfg.scratch_dir)
        outcome: RestoreOutcome | None = None
        try:
            outcome = await self._restore_and_verify(scratch, snap_id, snap_time, chosen, problems, started, left)
        finally:
            # Clean up even after a failure or timeout of the work above, with time of its own.
            self.runner.deadline = cleanup_deadline
            try:
                res = await self._run(["rm", "-rf", "--", scratch], max(1.0, cleanup_deadline - time.monotonic()))
                require_success(res, f"{self.where}: cleaning up {scratch}")
            except CollectorError as e:
                if outcome is None:  # the work failed: its error is the one to report
                    log.warning("%s", e.message)
                else:
                    outcome.cleanup_error = e.message
        assert outcome is not None
        return outcome

    def _norm(self, p: str) -> str:
        # restic paths inside a snapshot are absolute; borg stores them without the leading slash
        return ("/" + p.lstrip("/")) if self.t.type == "restic" else p.lstrip("/")

    async def _restic_snapshot(self, left: Callable[[], float]) -> tuple[str | None, float | None, list[parsers.Node]]:
        res = tools.require_tool(await self._run(tools.restic_snapshots(self.t), left()), self.where)
        snaps = parsers.parse_restic_snapshots(res.stdout)
        if not snaps:
            return None, None, []
        latest = snaps[-1]
        only = [] if self.cfg.sample_files else [self._norm(p) for p in [*self.cfg.paths, *self.cfg.checksums]]
        res = tools.require_tool(await self._run(tools.restic_ls(self.t, latest.id, only), left()), self.where)
        return latest.id, latest.time, parsers.parse_restic_ls(res.stdout)

    async def _borg_snapshot(self, left: Callable[[], float]) -> tuple[str | None, float | None, list[parsers.Node]]:
        res = tools.require_tool(await self._run(tools.borg_list(self.t), left()), self.where)
        done, _ = parsers.parse_borg_list(res.stdout)
        if not done:
            return None, None, []
        latest = done[-1]
        only = [] if self.cfg.sample_files else [self._norm(p) for p in [*self.cfg.paths, *self.cfg.checksums]]
        res = tools.require_tool(
            await self._run(tools.borg_items(self.t, latest.name, only, sha256=False), left()), self.where
        )
        return latest.name, latest.time, parsers.parse_borg_items(res.stdout)

    async def _borg_hashes(
        self, archive: str, chosen: dict[str, parsers.Node], left: Callable[[], float]
    ) -> dict[str, parsers.Node]:
        res = tools.require_tool(
            await self._run(tools.borg_items(self.t, archive, sorted(chosen), sha256=True), left()), self.where
        )
        hashed = {n.path: n for n in parsers.parse_borg_items(res.stdout)}
        return {p: hashed.get(p, n) for p, n in chosen.items()}

    async def _restore_and_verify(
        self,
        scratch: str,
        snap_id: str,
        snap_time: float | None,
        chosen: dict[str, parsers.Node],
        problems: list[str],
        started: float,
        left: Callable[[], float],
    ) -> RestoreOutcome:
        t0 = time.monotonic()
        restore_started = self.clock()
        files: list[dict[str, Any]] = []
        restore_ended = restore_started
        restore_ok = False
        if chosen:
            if self.t.type == "restic":
                argv = tools.restic_restore(self.t, snap_id, scratch, sorted(chosen))
                res = await self._run(argv, left())
            else:
                res = await self._run(tools.borg_extract(self.t, snap_id, sorted(chosen)), left(), cwd=scratch)
            restore_ended = self.clock()
            restore_ok = res.exit_status == 0
            if res.exit_status != 0:
                problem = tools.repository_problem(res, self.where)
                if problem is not None:
                    raise problem
                problems.append(f"{res.argv[0]} exited with status {res.exit_status}: {res.stderr_summary()}")
            listing = require_success(
                await self._run(["find", ".", "-type", "f", "-printf", "%T@\\t%s\\t%P\\0"], left(), cwd=scratch),
                self.where,
            )
            restored = {e.path: e.size for e in parsers.parse_find(listing.stdout)}
            sums = require_success(
                await self._run(
                    ["find", ".", "-type", "f", "-exec", "sha256sum", "-z", "--", "{}", "+"], left(), cwd=scratch
                ),
                self.where,
            )
            digests = {p.removeprefix("./"): d for p, d in parsers.parse_sha256sum(sums.stdout).items()}
            files, more = self._compare(chosen, restored, digests)
            problems.extend(more)
        else:
            problems.append("nothing to restore: no regular files selected")
        verified = self.clock()
        ok = not problems and bool(files)
        return RestoreOutcome(
            ok=ok,
            tool=self.t.type,
            snapshot=snap_id,
            snapshot_time=snap_time,
            started_at=started,
            restore_started_at=restore_started,
            restore_ended_at=restore_ended,
            verified_at=verified,
            duration=time.monotonic() - t0,
            files=files,
            problems=problems[:MAX_PROBLEMS],
            restore_ok=restore_ok,
        )

    def _compare(
        self, chosen: dict[str, parsers.Node], restored: dict[str, int], digests: dict[str, str]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        checksums = {self._norm(k): v for k, v in self.cfg.checksums.items()}
        files: list[dict[str, Any]] = []
        problems: list[str] = []
        for path, node in sorted(chosen.items()):
            rel = path.lstrip("/")
            entry: dict[str, Any] = {"path": path, "size": node.size, "sha256": digests.get(rel)}
            expected = checksums.get(path) or node.sha256
            if rel not in restored:
                problems.append(f"{path}: not restored")
                entry["result"] = "missing"
            elif restored[rel] != node.size:
                problems.append(f"{path}: restored {restored[rel]} bytes, snapshot says {node.size}")
                entry["result"] = "size_mismatch"
            elif expected is not None and digests.get(rel) != expected:
                problems.append(f"{path}: sha256 {digests.get(rel)} does not match expected {expected}")
                entry["result"] = "checksum_mismatch"
            else:
                entry["result"] = "ok"
            if expected is not None:
                entry["expected_sha256"] = expected
            files.append(entry)
        return files, problems
