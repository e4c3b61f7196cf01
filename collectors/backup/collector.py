"""Collector ``backup``: is each backup fresh against its RPO, is its repository intact, does a
restore work. Runs locally, or on a remote host over SSH (collectors/ssh.py).

The main task reports the backup's state as a measurement: when the check itself fails (host
unreachable, wrong password, bad output) the state is ``unknown`` -- never ``stale`` -- with the
reason in ``continuity_target_errors_total`` and the status page. The integrity check and the
restore test are extra tasks with their own schedule; the three jobs of one repository never
run at the same time (an asyncio lock per repository in ``ctx.shared``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from agent.childenv import reveal_env
from collectors.backup import parsers, tools
from collectors.backup.config import BackupTarget, EvidenceConfig
from collectors.backup.evidence import EVIDENCE_FAILED, EvidenceError, iso, write_evidence
from collectors.backup.kv import BackupKV, key
from collectors.backup.push import make_routes
from collectors.backup.restore import RestoreOutcome, RestoreTester, not_run_outcome
from collectors.backup.status import STATES, Facts, backup_state, size_dropped
from collectors.base import (
    AUTH,
    TIMEOUT,
    UNREACHABLE,
    Collected,
    Collector,
    CollectorError,
    MetricSpec,
    Route,
    TargetBase,
    Task,
)
from collectors.commands import (
    BAD_OUTPUT,
    COMMAND_FAILED,
    OUTPUT_TOO_LARGE,
    CommandRunner,
    LocalRunner,
    require_success,
)
from collectors.ssh import HOST_KEY, SshAuth, SshRunner

log = logging.getLogger(__name__)

L = ("backup", "kind")
METRICS = (
    MetricSpec(
        "continuity_backup_last_success_timestamp_seconds",
        "gauge",
        "When the backup's latest successful run finished (Unix time); while the state is unknown, the "
        "last one the agent knew.",
        "seconds",
        L,
    ),
    MetricSpec(
        "continuity_backup_last_attempt_timestamp_seconds",
        "gauge",
        "When the backup last ran, successfully or not (Unix time). restic records only "
        "successes, so for restic this equals the last success.",
        "seconds",
        L,
    ),
    MetricSpec(
        "continuity_backup_size_bytes",
        "gauge",
        "Size of the latest successful backup (restore size for restic, original size for borg, file size for files).",
        "bytes",
        L,
    ),
    MetricSpec(
        "continuity_backup_snapshots", "gauge", "Successful snapshots, archives or dump files the backup holds.", "", L
    ),
    MetricSpec("continuity_backup_rpo_seconds", "gauge", "The backup's recovery point objective.", "seconds", L),
    MetricSpec(
        "continuity_backup_state",
        "stateset",
        "The backup's state: fresh, late (past RPO, within grace), stale, failed (last attempt failed "
        "after the last success), never_ran, unknown (could not be checked). 1 for the current state.",
        "",
        (*L, "state"),
    ),
    MetricSpec(
        "continuity_backup_size_drop",
        "gauge",
        "1 if the latest successful backup is smaller than the previous one by more than "
        "size_drop_fraction (ransomware-style shrinkage), else 0.",
        "",
        L,
    ),
    MetricSpec(
        "continuity_backup_integrity_check_last_success_timestamp_seconds",
        "gauge",
        "When the repository's integrity check last completed and found no errors (Unix time).",
        "seconds",
        L,
    ),
    MetricSpec(
        "continuity_backup_integrity_ok",
        "gauge",
        "1 if the latest integrity check (restic check, borg check) found no errors, 0 if it found errors.",
        "",
        L,
    ),
    MetricSpec(
        "continuity_backup_restore_test_last_success_timestamp_seconds",
        "gauge",
        "When a restore test of the backup last passed (Unix time).",
        "seconds",
        L,
    ),
    MetricSpec(
        "continuity_backup_restore_test_duration_seconds",
        "gauge",
        "How long the latest restore test took, from restore start to end of verification.",
        "seconds",
        L,
    ),
    MetricSpec(
        "continuity_backup_restore_test_ok",
        "gauge",
        "1 if the latest restore test restored and verified every selected file, else 0.",
        "",
        L,
    ),
    MetricSpec(
        "continuity_backup_restore_test_not_run_total",
        "counter",
        "Scheduled restore tests that could not run to a verdict, by reason (repository_locked, "
        "repository_busy, unreachable, timeout...). Counted across restarts.",
        "",
        (*L, "reason"),
    ),
)

REASONS = (
    UNREACHABLE,
    TIMEOUT,
    AUTH,
    HOST_KEY,
    COMMAND_FAILED,
    OUTPUT_TOO_LARGE,
    BAD_OUTPUT,
    tools.REPOSITORY_LOCKED,
    tools.REPOSITORY_ERROR,
    tools.REPOSITORY_BUSY,
    tools.INTEGRITY_FAILED,
    tools.RESTORE_FAILED,
    EVIDENCE_FAILED,
)

# Reasons that come with a verdict or after one: a check or restore that ran and failed, a record
# that could not be written.
VERDICT_REASONS = (tools.INTEGRITY_FAILED, tools.RESTORE_FAILED, EVIDENCE_FAILED)
# Reasons a restore test may not run to a verdict: all the others. Its not-run counter starts at 0
# for each, so the first blocked test already shows as an increase.
NOT_RUN_REASONS = tuple(r for r in REASONS if r not in VERDICT_REASONS)

SIZE_CACHE = 64


def check_evidence_ids(ev: EvidenceConfig) -> list[tuple[str, str]]:
    """The runbook, its version, step and validation a restore test records must exist in runbooks_dir,
    or the sealed record fails ``evidence verify``."""
    if ev.runbooks_dir is None:
        return []
    from agent.evidence.loader import EvidenceInputError, load_runbooks

    try:
        estate = load_runbooks(ev.runbooks_dir)
    except EvidenceInputError as e:
        return [("runbooks_dir", str(e.issues[0]))]
    runbook = estate.get(ev.runbook)
    if runbook is None:
        known = ", ".join(sorted(estate.runbooks))
        return [("runbook", f"no runbook {ev.runbook!r} in {ev.runbooks_dir} (runbooks: {known})")]
    out = []
    if ev.runbook_version != runbook.version:
        msg = f"runbook {ev.runbook!r} is at version {runbook.version}, not {ev.runbook_version}"
        out.append(("runbook_version", msg))
    steps = [s.id for s in runbook.recovery_steps]
    if ev.step not in steps:
        out.append(("step", f"runbook {ev.runbook!r} has no recovery step {ev.step!r} (steps: {', '.join(steps)})"))
    checks = [v.id for v in runbook.validation]
    if ev.validation not in checks:
        known = ", ".join(checks) or "none"
        out.append(("validation", f"runbook {ev.runbook!r} has no validation {ev.validation!r} (validations: {known})"))
    return out


class BackupCollector(Collector):
    kind = "backup"
    config_model = BackupTarget
    METRICS = METRICS
    REASONS = REASONS
    AUTH_TYPES = ("ssh",)
    target: BackupTarget

    def __init__(self, target: TargetBase, ctx: Any, *, interval: float, timeout: float) -> None:
        super().__init__(target, ctx, interval=interval, timeout=timeout)
        self.kv = BackupKV.of(ctx.shared, ctx.store)
        self._sizes: dict[str, int] = {}  # snapshot id / archive name -> size
        self._last_facts: tuple[float, Facts] | None = None
        t = self.target
        self.labels = {"backup": t.label, "kind": t.type}
        if t.host is not None:
            self.where = f"{t.name} ({t.host})"
        else:
            self.where = t.name

    # -- plumbing ----------------------------------------------------------------------------------
    @classmethod
    def http_routes(cls, agent: Any) -> list[Route]:
        return make_routes(agent)

    @classmethod
    def validate_config(cls, target: TargetBase, config: Any) -> list[tuple[str, str]]:
        assert isinstance(target, BackupTarget)
        out = []
        for name, sub in (("integrity", target.integrity), ("restore_test", target.restore_test)):
            if sub is not None and sub.cron is None and sub.timeout > sub.interval:
                out.append((f"{name}.timeout", "must not be longer than its interval"))
        if target.restore_test is not None and target.restore_test.evidence is not None:
            out += [(f"restore_test.evidence.{k}", msg) for k, msg in check_evidence_ids(target.restore_test.evidence)]
        return out

    def tasks(self) -> list[Task]:
        t = self.target
        out = [Task("", self.interval, self.timeout, self.collect)]
        if t.integrity is not None:
            out.append(
                Task("integrity", t.integrity.interval, t.integrity.timeout, self.integrity_check, t.integrity.cron)
            )
        if t.restore_test is not None:
            out.append(
                Task(
                    "restore_test",
                    t.restore_test.interval,
                    t.restore_test.timeout,
                    self.restore_test,
                    t.restore_test.cron,
                )
            )
        return out

    def _runner(self, deadline: float) -> CommandRunner:
        t = self.target
        if t.host is None:
            return LocalRunner(where=self.where, deadline=deadline)
        auth = self.ctx.auths[t.auth] if t.auth is not None else None
        if not isinstance(auth, SshAuth):
            raise CollectorError(AUTH, f"{self.where}: auth {t.auth!r} is not an ssh auth")
        runner = SshRunner(self.ctx, auth, t.host, t.port, deadline=deadline)
        runner.where = f"{t.name} ({runner.where})"
        return runner

    def _env(self) -> dict[str, str]:
        t = self.target
        return reveal_env(tools.borg_env(t) if t.type == "borg" else t.env)

    def _repo_key(self) -> str:
        t = self.target
        repo = t.repository or t.directory or t.name
        if ":" in repo and not repo.startswith("/"):
            return repo  # a URL-style repository is the same repository from wherever it is reached
        auth = self.ctx.auths.get(t.auth) if t.auth is not None else None
        port = t.port or getattr(auth, "port", 22)
        return f"{t.host or 'local'}:{port}:{repo}"

    def _repo_lock(self) -> asyncio.Lock:
        locks: dict[str, asyncio.Lock] = self.ctx.shared.setdefault("backup.repo_locks", {})
        return locks.setdefault(self._repo_key(), asyncio.Lock())

    # -- main task ---------------------------------------------------------------------------------
    async def collect(self) -> Collected:
        t = self.target
        out = Collected()
        now = self.ctx.clock()
        # Finish inside the runner's timeout so a failed check is still reported as state unknown.
        budget = max(0.1, self.timeout * 0.9 - 0.1)
        deadline = time.monotonic() + budget
        facts: Facts | None = None
        try:
            async with asyncio.timeout(budget):
                facts = await self._facts_locked(deadline, out)
        except TimeoutError:
            out.partial_errors.append((TIMEOUT, f"{self.where}: check did not finish within {budget:.1f}s"))
        except CollectorError as e:
            out.partial_errors.append(
                (e.reason, e.message if e.message.startswith(t.name) else f"{t.name}: {e.message}")
            )
        state = backup_state(facts, now, t.rpo, t.grace)
        lb = self.labels
        for s in STATES:
            out.add("continuity_backup_state", 1.0 if s == state else 0.0, **lb, state=s)
        out.add("continuity_backup_rpo_seconds", t.rpo, **lb)
        out.info["state"] = state
        if facts is None:
            # Unknown is not "never": the last success the agent knew still dates the backup (its age
            # makes BackupCheckFailing critical past the RPO), as stored with its previous result.
            known = self._stored_last_success()
            if known is not None:
                out.add("continuity_backup_last_success_timestamp_seconds", known, **lb)
                out.info["last_success"] = iso(known)
        else:
            if facts.last_success is not None:
                out.add("continuity_backup_last_success_timestamp_seconds", facts.last_success, **lb)
                out.info["last_success"] = iso(facts.last_success)
            if facts.last_attempt is not None:
                out.add("continuity_backup_last_attempt_timestamp_seconds", facts.last_attempt, **lb)
                out.info["last_attempt"] = iso(facts.last_attempt)
            if facts.size is not None:
                out.add("continuity_backup_size_bytes", facts.size, **lb)
                dropped = size_dropped(facts.size, facts.prev_size, t.size_drop_fraction)
                out.add("continuity_backup_size_drop", 1.0 if dropped else 0.0, **lb)
                out.info["size_bytes"] = facts.size
                if facts.prev_size is not None:
                    out.info["previous_size_bytes"] = facts.prev_size
                if dropped:
                    out.info["size_drop"] = (
                        f"latest backup is {facts.size} bytes, previous {facts.prev_size} bytes "
                        f"(drop of more than {t.size_drop_fraction:.0%})"
                    )
                    log.warning("%s: backup size dropped: %s", t.name, out.info["size_drop"])
            if facts.snapshots is not None:
                out.add("continuity_backup_snapshots", facts.snapshots, **lb)
            if facts.detail:
                out.info["detail"] = facts.detail
        integ = self.kv.get(key(t.name, "integrity")) or {}
        if integ.get("last_success") is not None:
            out.add("continuity_backup_integrity_check_last_success_timestamp_seconds", integ["last_success"], **lb)
        rest = self.kv.get(key(t.name, "restore_test")) or {}
        if rest.get("last_success") is not None:
            out.add("continuity_backup_restore_test_last_success_timestamp_seconds", rest["last_success"], **lb)
        return out

    def _stored_last_success(self) -> float | None:
        """The last success this backup's previous result in the state store reported (it survives
        a restart), or None."""
        store = self.ctx.store
        prev = store.latest(self.target.name) if store is not None else None
        if prev is None:
            return None
        for s in prev.samples:
            if (
                s.name == "continuity_backup_last_success_timestamp_seconds"
                and s.labels.get("backup") == self.labels["backup"]
            ):
                return float(s.value)
        return None

    async def _facts_locked(self, deadline: float, out: Collected) -> Facts:
        t = self.target
        if t.type not in ("restic", "borg"):
            return await self._facts(deadline)
        lock = self._repo_lock()
        try:
            # Wait a little for a running integrity check or restore test, not the whole budget.
            async with asyncio.timeout(max(0.0, (deadline - time.monotonic()) * 0.25)):
                await lock.acquire()
        except TimeoutError:
            if self._last_facts is not None:
                at, facts = self._last_facts
                out.info["note"] = f"repository busy (integrity check or restore test); facts from {iso(at)}"
                return facts
            raise CollectorError(
                tools.REPOSITORY_BUSY,
                f"{self.where}: repository busy with an integrity check or restore test, nothing checked yet",
            ) from None
        try:
            facts = await self._facts(deadline)
        finally:
            lock.release()
        self._last_facts = (self.ctx.clock(), facts)
        return facts

    async def _facts(self, deadline: float) -> Facts:
        t = self.target
        if t.type == "push":
            return self._push_facts()
        async with self._runner(deadline) as runner:
            if t.type == "restic":
                return await self._restic_facts(runner, deadline)
            if t.type == "borg":
                return await self._borg_facts(runner, deadline)
            if t.type == "files":
                return await self._files_facts(runner, deadline)
            return await self._command_facts(runner, deadline)

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.0, deadline - time.monotonic())

    def _cache_size(self, ident: str, size: int) -> None:
        self._sizes[ident] = size
        while len(self._sizes) > SIZE_CACHE:
            self._sizes.pop(next(iter(self._sizes)))

    async def _two_sizes(
        self,
        runner: CommandRunner,
        deadline: float,
        last_two: list[tuple[str, list[str]]],
        parse: Callable[[bytes], int],
    ) -> tuple[int, int | None]:
        """(size of the latest snapshot, of the one before it or None) from ``last_two``: (id, command
        that prints its size) of the latest two, oldest first. A size is asked for once per id."""
        sizes = []
        for ident, argv in last_two[::-1]:
            if ident not in self._sizes:
                res = await runner.run(argv, timeout=self._left(deadline), env=self._env())
                r = tools.require_tool(res, self.where)
                self._cache_size(ident, parse(r.stdout))
            sizes.append(self._sizes[ident])
        return sizes[0], sizes[1] if len(sizes) > 1 else None

    async def _restic_facts(self, runner: CommandRunner, deadline: float) -> Facts:
        t = self.target
        res = tools.require_tool(
            await runner.run(tools.restic_snapshots(t), timeout=self._left(deadline), env=self._env()), self.where
        )
        snaps = parsers.parse_restic_snapshots(res.stdout)
        if not snaps:
            return Facts(None, None, None, snapshots=0)
        size, previous = await self._two_sizes(
            runner, deadline, [(s.id, tools.restic_stats(t, s.id)) for s in snaps[-2:]], parsers.parse_restic_stats
        )
        latest = snaps[-1]
        return Facts(
            latest.time,
            latest.time,
            True,
            size,
            previous,
            len(snaps),
            detail=f"latest snapshot {latest.id[:8]}",
        )

    async def _borg_facts(self, runner: CommandRunner, deadline: float) -> Facts:
        t = self.target
        res = tools.require_tool(
            await runner.run(tools.borg_list(t), timeout=self._left(deadline), env=self._env()), self.where
        )
        done, checkpoints = parsers.parse_borg_list(res.stdout)
        last_cp = checkpoints[-1].time if checkpoints else None
        if not done:
            return Facts(
                None,
                last_cp,
                False if last_cp is not None else None,
                snapshots=0,
                detail="only checkpoint (interrupted) archives" if last_cp else "",
            )
        size, previous = await self._two_sizes(
            runner, deadline, [(a.id, tools.borg_info(t, a.name)) for a in done[-2:]], parsers.parse_borg_info
        )
        latest = done[-1]
        interrupted = last_cp is not None and last_cp > latest.time
        return Facts(
            latest.time,
            last_cp if interrupted else latest.time,
            not interrupted,
            size,
            previous,
            len(done),
            detail=f"latest archive {latest.name}"
            + (f"; interrupted run left {checkpoints[-1].name}" if interrupted else ""),
        )

    async def _files_facts(self, runner: CommandRunner, deadline: float) -> Facts:
        t = self.target
        assert t.directory is not None
        argv = ["find", t.directory]
        if not t.recursive:
            argv += ["-maxdepth", "1"]
        argv += ["-type", "f", "-name", t.pattern, "-printf", "%T@\\t%s\\t%P\\0"]
        res = require_success(await runner.run(argv, timeout=self._left(deadline)), self.where)
        entries = sorted(parsers.parse_find(res.stdout), key=lambda e: (e.mtime, e.path))
        if not entries:
            return Facts(None, None, None, snapshots=0, detail=f"no file matching {t.pattern} in {t.directory}")
        good = [e for e in entries if e.size >= t.min_size]
        newest = entries[-1]
        ok = newest.size >= t.min_size
        detail = f"newest {newest.path} ({newest.size} bytes)"
        if not ok:
            detail += f" is below min_size {t.min_size}: a failed dump"
        return Facts(
            good[-1].mtime if good else None,
            newest.mtime,
            ok,
            good[-1].size if good else None,
            good[-2].size if len(good) > 1 else None,
            len(good),
            detail=detail,
        )

    async def _command_facts(self, runner: CommandRunner, deadline: float) -> Facts:
        t = self.target
        assert t.command is not None
        res = await runner.run(t.command, timeout=self._left(deadline), env=self._env())
        require_success(res, self.where)
        st = parsers.parse_command_status(res.stdout, self.ctx.clock(), what=f"{self.where}: command output")
        prev = self._remember_size(st.last_success, st.size_bytes)
        return Facts(st.last_success, st.last_attempt, st.ok, st.size_bytes, prev, st.snapshots, detail=st.message)

    def _remember_size(self, success: float | None, size: int | None) -> int | None:
        """Size of the success before the latest one, from the sizes seen at earlier runs."""
        if success is None or size is None:
            return None

        def apply(rec: dict[str, Any]) -> dict[str, Any]:
            if rec.get("success") is not None and rec["success"] != success:
                return {"success": success, "size": size, "prev_size": rec.get("size")}
            return {"success": success, "size": size, "prev_size": rec.get("prev_size")}

        rec = self.kv.update(key(self.target.name, "sizes"), apply)
        prev = rec.get("prev_size")
        return int(prev) if isinstance(prev, int) else None

    def _push_facts(self) -> Facts:
        rec = self.kv.get(key(self.target.name, "push"))
        if not rec:
            return Facts(None, None, None, detail="no push received yet")
        return Facts(
            rec.get("last_success"),
            rec.get("last_attempt"),
            rec.get("last_attempt_ok"),
            rec.get("size_bytes"),
            rec.get("prev_size_bytes"),
            None,  # a push says nothing about restore points held
            detail=str(rec.get("message") or ""),
        )

    # -- integrity ---------------------------------------------------------------------------------
    async def integrity_check(self) -> Collected:
        t = self.target
        assert t.integrity is not None
        t0 = time.monotonic()
        deadline = t0 + max(0.1, t.integrity.timeout * 0.95 - 0.1)
        lock = self._repo_lock()
        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
            await lock.acquire()
        try:
            async with self._runner(deadline) as runner:
                argv = tools.restic_check(t) if t.type == "restic" else tools.borg_check(t)
                res = await runner.run(argv, timeout=self._left(deadline), env=self._env())
        finally:
            lock.release()
        ok, detail = tools.check_verdict(t.type, res, self.where)
        now = self.ctx.clock()

        def apply(rec: dict[str, Any]) -> dict[str, Any]:
            rec = dict(rec)
            rec.update(last_run=now, ok=ok, detail=detail)
            if ok:
                rec["last_success"] = now
            return rec

        self.kv.update(key(t.name, "integrity"), apply)
        out = Collected()
        out.add("continuity_backup_integrity_ok", 1.0 if ok else 0.0, **self.labels)
        out.info.update(integrity="ok" if ok else "errors found", detail=detail, duration_seconds=res.duration)
        if not ok:
            # The check completed and the repository is damaged: a failure of the task, not a success
            # with a remark, so the task's last-success timestamp stays at the last clean check.
            out.failure = (tools.INTEGRITY_FAILED, f"{t.name}: {t.type} check found errors in {t.repository}: {detail}")
            log.error("%s: integrity check failed: %s", t.name, detail)
        return out

    # -- restore test ------------------------------------------------------------------------------
    async def restore_test(self) -> Collected:
        t = self.target
        rt = t.restore_test
        assert rt is not None
        t0 = time.monotonic()
        started = self.ctx.clock()
        work_deadline = t0 + rt.timeout * 0.85
        cleanup_deadline = t0 + rt.timeout * 0.97
        lock = self._repo_lock()
        where = self.where
        try:
            try:
                async with asyncio.timeout(max(0.0, work_deadline - time.monotonic())):
                    await lock.acquire()
            except TimeoutError:
                raise CollectorError(
                    tools.REPOSITORY_BUSY,
                    f"{self.where}: repository stayed busy with another job of this repository (backup "
                    f"check, integrity check) for {work_deadline - t0:.0f}s",
                ) from None
            try:
                async with self._runner(work_deadline) as runner:
                    where = runner.where
                    tester = RestoreTester(t, runner, self._env(), self.ctx.clock, self.where)
                    outcome = await tester.run(work_deadline, cleanup_deadline)
            finally:
                lock.release()
        except CollectorError as e:
            # Blocked (lock, busy repository, unreachable host, timeout...): no verdict, but a trace.
            message = e.message if e.message.startswith(t.name) else f"{t.name}: {e.message}"
            outcome = not_run_outcome(t.type, started, self.ctx.clock(), e.reason, message)
        return await self._restore_result(outcome, where)

    async def _restore_result(self, outcome: RestoreOutcome, where: str) -> Collected:
        t = self.target
        rt = t.restore_test
        assert rt is not None
        now = self.ctx.clock()
        reason = outcome.not_run_reason

        def apply(rec: dict[str, Any]) -> dict[str, Any]:
            rec = dict(rec)
            rec["last_run"] = now
            if reason is not None:
                counts = dict(rec.get("not_run") or {})
                counts[reason] = int(counts.get(reason, 0)) + 1
                rec["not_run"] = counts
                rec["last_not_run"] = {"at": now, "reason": reason, "message": outcome.summary()}
                return rec
            rec.update(ok=outcome.ok, duration=outcome.duration)
            if outcome.ok:
                rec["last_success"] = now
            return rec

        rec = self.kv.update(key(t.name, "restore_test"), apply)
        out = Collected()
        lb = self.labels
        counts = {r: 0 for r in NOT_RUN_REASONS}
        counts.update({str(r): int(c) for r, c in (rec.get("not_run") or {}).items()})
        for r, c in sorted(counts.items()):
            out.add("continuity_backup_restore_test_not_run_total", c, **lb, reason=r)
        if reason is not None:
            out.info.update(result="not_run", reason=reason, summary=outcome.summary())
            out.failure = (reason, outcome.summary())
            log.warning("%s", outcome.summary())
        else:
            out.add("continuity_backup_restore_test_ok", 1.0 if outcome.ok else 0.0, **lb)
            out.add("continuity_backup_restore_test_duration_seconds", outcome.duration, **lb)
            out.info.update(
                result="pass" if outcome.ok else "fail",
                snapshot=outcome.snapshot,
                files_verified=sum(1 for f in outcome.files if f.get("result") == "ok"),
                summary=outcome.summary(),
            )
            if not outcome.ok:
                out.failure = (tools.RESTORE_FAILED, f"{t.name}: restore test failed: {outcome.summary()}")
        if outcome.cleanup_error:
            out.partial_errors.append((COMMAND_FAILED, outcome.cleanup_error))
        if rt.evidence is not None:
            try:
                path = await self.ctx.run_blocking(write_evidence, t, outcome, where)
            except (OSError, EvidenceError) as e:
                out.partial_errors.append(
                    (EVIDENCE_FAILED, f"{t.name}: cannot record restore-test evidence in {rt.evidence.dir}: {e}")
                )
            else:
                out.info["evidence"] = str(path)
        return out
