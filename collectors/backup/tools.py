"""restic and borg command lines, and what their exit codes and error text mean.

restic >= 0.17 has distinct exit codes (10 no repository, 11 lock failed, 12 wrong password);
older versions exit 1 for everything, so the error text decides there. ``restic check`` exits 1
for "repository contains errors": that is an integrity failure, not a failed check. borg 1.2
exits 1 (warning) when ``borg check`` finds errors and 2 for errors such as a held lock.
"""

from __future__ import annotations

import re
import shlex

from agent.configtypes import Secret, scrub
from collectors.backup.config import BackupTarget
from collectors.base import AUTH, CollectorError
from collectors.commands import COMMAND_FAILED, CommandResult, describe

REPOSITORY_LOCKED = "repository_locked"
REPOSITORY_ERROR = "repository_error"
REPOSITORY_BUSY = "repository_busy"
INTEGRITY_FAILED = "integrity_failed"
RESTORE_FAILED = "restore_failed"

_LOCK_TEXT = (
    "unable to create lock",
    "repository is already locked",
    "failed to create/acquire the lock",
)
_AUTH_TEXT = ("wrong password", "no key found", "passphrase supplied in", "incorrect passphrase")
_MISSING_TEXT = (
    "unable to open config file",
    "is there a repository at the following location",
    "is not a valid repository",
    "repository not found",
)
_MISSING_RE = re.compile(r"repository \S+ does not exist")


# -- restic -------------------------------------------------------------------------------------


def restic_base(t: BackupTarget) -> list[str]:
    argv = [t.binary or "restic", f"--repo={t.repository}"]
    if t.password_file:
        argv.append(f"--password-file={t.password_file}")
    return argv


def restic_snapshots(t: BackupTarget) -> list[str]:
    argv = [*restic_base(t), "--no-lock", "snapshots", "--json"]
    g = t.group
    if g is not None:
        if g.host:
            argv.append(f"--host={g.host}")
        argv += [f"--path={p}" for p in g.paths]
        if g.tags:
            argv.append(f"--tag={','.join(g.tags)}")
    return argv


def restic_stats(t: BackupTarget, snapshot_id: str) -> list[str]:
    return [*restic_base(t), "--no-lock", "stats", "--json", "--mode=restore-size", snapshot_id]


def restic_check(t: BackupTarget) -> list[str]:
    argv = [*restic_base(t), "check"]
    if t.integrity is not None and t.integrity.read_data_subset:
        argv.append(f"--read-data-subset={t.integrity.read_data_subset}")
    return argv


def restic_ls(t: BackupTarget, snapshot_id: str, paths: list[str]) -> list[str]:
    argv = [*restic_base(t), "--no-lock", "ls", "--json"]
    if paths:
        argv.append("--recursive")
    return [*argv, snapshot_id, *paths]


def restic_pattern(path: str) -> str:
    """A restic --include pattern matching exactly ``path`` (glob characters escaped)."""
    out = []
    for ch in path:
        if ch in "*?[]\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)


def restic_restore(t: BackupTarget, snapshot_id: str, target_dir: str, includes: list[str]) -> list[str]:
    argv = [*restic_base(t), "restore", snapshot_id, f"--target={target_dir}", "--verify"]
    return argv + [f"--include={restic_pattern(p)}" for p in includes]


# -- borg ---------------------------------------------------------------------------------------


def borg_env(t: BackupTarget) -> dict[str, str | Secret]:
    """borg prints naive local times, so it runs with TZ=UTC; it must never wait on a prompt."""
    env: dict[str, str | Secret] = {
        "TZ": "UTC",
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
        "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
        "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
    }
    if t.password_file:
        env["BORG_PASSCOMMAND"] = f"cat -- {shlex.quote(t.password_file)}"
    env.update(t.env)
    return env


def borg_list(t: BackupTarget) -> list[str]:
    argv = [t.binary or "borg", "list", "--json", "--consider-checkpoints"]
    if t.archive_glob:
        argv.append(f"--glob-archives={t.archive_glob}")
    return [*argv, "--", str(t.repository)]


def borg_info(t: BackupTarget, archive: str) -> list[str]:
    return [t.binary or "borg", "info", "--json", "--", f"{t.repository}::{archive}"]


def borg_check(t: BackupTarget) -> list[str]:
    argv = [t.binary or "borg", "check"]
    if t.integrity is not None and t.integrity.verify_data:
        argv.append("--verify-data")
    return [*argv, "--", str(t.repository)]


def borg_items(t: BackupTarget, archive: str, paths: list[str], *, sha256: bool) -> list[str]:
    fmt = "{type}{path}{size}" + ("{sha256}" if sha256 else "")
    return [
        t.binary or "borg",
        "list",
        "--json-lines",
        f"--format={fmt}",
        "--",
        f"{t.repository}::{archive}",
        *(f"pp:{p}" for p in paths),
    ]


def borg_extract(t: BackupTarget, archive: str, paths: list[str]) -> list[str]:
    return [t.binary or "borg", "extract", "--", f"{t.repository}::{archive}", *(f"pp:{p}" for p in paths)]


# -- exit codes ---------------------------------------------------------------------------------


def repository_problem(res: CommandResult, where: str) -> CollectorError | None:
    """A lock, password or missing-repository failure, told apart from everything else."""
    err = res.stderr_text().lower()
    rc = res.exit_status
    summary = res.stderr_summary()
    if rc == 11 or any(s in err for s in _LOCK_TEXT):
        return CollectorError(REPOSITORY_LOCKED, f"{where}: repository is locked by another process: {summary}")
    if rc == 12 or any(s in err for s in _AUTH_TEXT):
        return CollectorError(AUTH, f"{where}: wrong repository password or key: {summary}")
    if rc == 10 or any(s in err for s in _MISSING_TEXT) or _MISSING_RE.search(err):
        return CollectorError(REPOSITORY_ERROR, f"{where}: repository not found or unreadable: {summary}")
    return None


def tool_failure(res: CommandResult, where: str) -> CollectorError:
    problem = repository_problem(res, where)
    if problem is not None:
        return problem
    if res.exit_status == 127:
        return CollectorError(COMMAND_FAILED, f"{where}: {res.argv[0]} not found on the host: {res.stderr_summary()}")
    return CollectorError(
        COMMAND_FAILED,
        f"{where}: `{describe(res.argv)}` exited with status {res.exit_status}: {res.stderr_summary()}",
    )


def require_tool(res: CommandResult, where: str) -> CommandResult:
    if res.exit_status != 0:
        raise tool_failure(res, where)
    return res


# What ``restic check`` / ``borg check`` print around their findings: progress, phases, retries
# and the one-line verdict. Everything else on stderr is a finding.
_CHECK_NOISE = re.compile(
    r"^(\[\d+:\d+(:\d+)?\]"  # restic progress "[0:01] 100.00%  2 / 2 packs"
    r"|using temporary cache in |create exclusive lock|load indexes|check all packs|check snapshots, trees"
    r"|read all data|read \d+ of |no errors were found|Fatal: repository contains errors"
    r"|Starting (repository|archive) |Finished full repository check|Archive consistency check complete"
    r"|Repository (index|check) .*complete"
    r"|.*returned error, retrying after )",  # restic's backend retry lines repeat one finding ten times
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_FINDINGS = 5  # lines
MAX_FINDING_LEN = 150  # characters per line (a finding names a 64-digit id and says why)
MAX_DETAIL_LEN = 800  # characters in all


def check_findings(stderr: str) -> list[str]:
    """The finding lines of a failed ``restic check`` / ``borg check`` (``pack ...: does not exist``,
    ``Pack ID does not match ...``, ``Data integrity error: ...``), in order, without progress,
    phase, retry and verdict lines; an indented line is joined to the line it continues."""
    out: list[str] = []
    for raw in stderr.splitlines():
        line = _CONTROL.sub(" ", raw).rstrip()
        if not line.strip():
            continue
        if line[:1] in (" ", "\t") and out:
            out[-1] = f"{out[-1]} {line.strip()}"
            continue
        line = line.strip()
        if _CHECK_NOISE.match(line):
            continue
        if out and out[-1] == line:
            continue
        out.append(line)
    return out


def findings_detail(stderr: str) -> str:
    """The first few findings, each and all capped in length, secrets scrubbed: what an operator
    would otherwise rerun the check by hand to learn."""
    lines = check_findings(stderr)
    if not lines:
        kept = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        return scrub(" | ".join(kept[-2:])[:MAX_DETAIL_LEN]) or "errors found"
    parts = [ln if len(ln) <= MAX_FINDING_LEN else ln[: MAX_FINDING_LEN - 3] + "..." for ln in lines[:MAX_FINDINGS]]
    detail = " | ".join(parts)
    if len(detail) > MAX_DETAIL_LEN:
        detail = detail[: MAX_DETAIL_LEN - 3] + "..."
    if len(lines) > MAX_FINDINGS:
        detail += f" (and {len(lines) - MAX_FINDINGS} more finding lines)"
    return scrub(detail)


def check_verdict(kind: str, res: CommandResult, where: str) -> tuple[bool, str]:
    """(repository intact?, detail) for ``restic check`` / ``borg check``; raises when the check
    could not be made (lock, password, missing repository, other failures). The detail of a
    failed check is the tool's own findings (:func:`findings_detail`)."""
    if res.exit_status == 0:
        return True, "no errors found"
    problem = repository_problem(res, where)
    if problem is not None:
        raise problem
    err = res.stderr_text()
    low = err.lower()
    if kind == "restic" and res.exit_status == 1:
        return False, findings_detail(err)
    if kind == "borg" and (res.exit_status == 1 or "errors found" in low or "integrity error" in low):
        return False, findings_detail(err)
    raise tool_failure(res, where)
