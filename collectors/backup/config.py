"""Config of a ``kind: backup`` target: one backup, its RPO, and optional integrity check and
restore test. Keys that do not apply to the target's ``type`` are errors, not silently ignored."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from agent.configtypes import (
    NAME_RE,
    Duration,
    EnvValue,
    Secret,
    StrictModel,
    check_cron,
    resolve_env_files,
    resolve_path,
)
from collectors.base import TargetBase
from collectors.commands import ENV_NAME_RE

BackupType = Literal["restic", "borg", "files", "command", "push"]

_SUBSET_RE = re.compile(r"^(\d+(\.\d+)?%|\d+/\d+|\d+[KMGT]?)$")
EVIDENCE_ID_RE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # ids in runbooks and evidence records
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# A side task's schedule, run on instead of its `interval`.
CronLine = Annotated[str | None, AfterValidator(check_cron)]


def _cron_field() -> Any:
    return Field(
        default=None,
        description="5-field crontab line (minute hour day month weekday, UTC) run on instead of `interval`.",
    )


class SnapshotGroup(StrictModel):
    """restic snapshot filters: the snapshots of one backup job."""

    host: str | None = Field(default=None, description="Only snapshots taken on this host (`restic --host`).")
    paths: list[str] = Field(
        default_factory=list, description="Only snapshots of exactly these backup paths (`restic --path`, each)."
    )
    tags: list[str] = Field(
        default_factory=list, description="Only snapshots carrying all of these tags (`restic --tag a,b`)."
    )


class IntegrityCheck(StrictModel):
    """``restic check`` / ``borg check`` on its own, slower schedule."""

    interval: Duration = Field(default=7 * 86400.0, description="How often the check runs, unless `cron` is set.")
    cron: CronLine = _cron_field()
    timeout: Duration = Field(default=6 * 3600.0, description="How long one check may run before it is stopped.")
    read_data_subset: str | None = Field(default=None, description='restic: "5%", "1/10", "500M".')
    verify_data: bool = Field(default=False, description="borg: --verify-data (reads every chunk).")

    @field_validator("read_data_subset")
    @classmethod
    def _subset(cls, v: str | None) -> str | None:
        if v is not None and not _SUBSET_RE.match(v):
            raise ValueError(f"read_data_subset {v!r} must look like 5%, 1/10 or 500M")
        return v


class EvidenceConfig(StrictModel):
    """Where a restore test records its result as recovery-test evidence (docs/backups.md)."""

    dir: Path = Field(description="The evidence directory the record and its artefact are written and sealed into.")
    runbook: str = Field(pattern=EVIDENCE_ID_RE, description="The id of the runbook the restore test is evidence for.")
    runbook_version: int = Field(
        ge=1, description="The runbook version the record claims; checked against the runbook given `runbooks_dir`."
    )
    runbooks_dir: Path | None = Field(
        default=None,
        description="Needed to seal (the record carries the runbook's sha256).",
    )
    # No defaults: a default id that the runbook does not define would seal evidence that fails
    # `evidence verify`. check-config checks both against the runbook when runbooks_dir is given.
    step: str = Field(pattern=EVIDENCE_ID_RE, description="A recovery_steps id of the runbook.")
    validation: str = Field(pattern=EVIDENCE_ID_RE, description="A validation id of the runbook.")
    operator: str = Field(
        default="continuity-agent",
        min_length=1,
        max_length=200,
        description="Name recorded as the step's operator, the validator and the only participant.",
    )
    seal: bool = Field(
        default=True, description="Seal each record into the directory's hash chain (as `evidence seal` does)."
    )

    @field_validator("dir", "runbooks_dir")
    @classmethod
    def _resolve(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else resolve_path(v, info)

    @model_validator(mode="after")
    def _sealing(self) -> EvidenceConfig:
        if self.seal and self.runbooks_dir is None:
            raise ValueError("sealing a record needs runbooks_dir (or set seal: false and seal by hand)")
        return self


class RestoreTest(StrictModel):
    """Restore paths or a sample of files from the latest snapshot into a scratch directory on
    the backup host, verify, time, clean up."""

    interval: Duration = Field(default=7 * 86400.0, description="How often the test runs, unless `cron` is set.")
    cron: CronLine = _cron_field()
    timeout: Duration = Field(
        default=3600.0, description="Budget of one test: it restores for 85 % of it and keeps the rest to clean up."
    )
    paths: list[str] = Field(
        default_factory=list, description="Snapshot paths restored and verified in full (every file under each)."
    )
    sample_files: int = Field(
        default=0, ge=0, le=1000, description="Number of files picked at random (seeded by the snapshot id) to restore."
    )
    checksums: dict[str, str] = Field(default_factory=dict, description="Snapshot path -> sha256.")
    scratch_dir: str = Field(
        default="/var/tmp",
        description="Absolute path on the backup host under which each test makes and removes its own directory.",
    )
    evidence: EvidenceConfig | None = Field(
        default=None, description="Record each test as recovery-test evidence; absent: no record is written."
    )

    @field_validator("scratch_dir")
    @classmethod
    def _abs(cls, v: str) -> str:
        if not v.startswith("/") or "\0" in v:
            raise ValueError("scratch_dir must be an absolute path")
        return v.rstrip("/") or "/"

    @field_validator("checksums")
    @classmethod
    def _sums(cls, v: dict[str, str]) -> dict[str, str]:
        for path, digest in v.items():
            if not _SHA256_RE.match(digest):
                raise ValueError(f"checksum for {path!r} must be 64 lower-case hex digits (sha256)")
        return v

    @model_validator(mode="after")
    def _what(self) -> RestoreTest:
        if not self.paths and not self.sample_files and not self.checksums:
            raise ValueError("restore_test needs paths, checksums or sample_files")
        return self


# Keys of a repository read with its tool (restic, borg), locally or over SSH.
_REPOSITORY_KEYS = {"repository", "password_file", "binary", "host", "port", "auth", "env", "integrity", "restore_test"}
_PER_TYPE: dict[str, set[str]] = {
    "restic": {*_REPOSITORY_KEYS, "group"},
    "borg": {*_REPOSITORY_KEYS, "archive_glob"},
    "files": {"directory", "pattern", "recursive", "min_size", "host", "port", "auth"},
    "command": {"command", "host", "port", "auth", "env"},
    "push": {"token"},
}
_ALL_SPECIFIC = set().union(*_PER_TYPE.values())


class BackupTarget(TargetBase):
    kind: Literal["backup"] = Field(description="Selects this collector: `backup`.")
    type: BackupType = Field(
        description="Where the facts come from: a restic or borg repository, dump files, a command's JSON, "
        "or the job's own push."
    )
    backup: str | None = Field(
        default=None, pattern=NAME_RE, description="The `backup` label of its metrics; defaults to the target name."
    )
    rpo: Duration = Field(
        description="Recovery point objective: a last success older than this is `late` or `stale` (`24h`, `P1D`)."
    )
    grace: Duration = Field(
        default=0.0, description="Time past the RPO during which the backup is `late` rather than `stale`."
    )
    size_drop_fraction: float | None = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="Flag a success smaller than the previous one by more than this fraction; `null` turns it off.",
    )
    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Host the check runs on over SSH (with auth); absent: on the agent's own host.",
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="SSH port of `host`; absent: the auth's port.")
    auth: str | None = Field(
        default=None, description="Name of the `auths` entry to log in to `host` with; given together with `host`."
    )
    env: dict[str, EnvValue] = Field(
        default_factory=dict,
        description="The child's environment on top of PATH, HOME and locale: text or `${ENV_VAR}`, or from files "
        "through `env_file: {NAME: /path}`; all print as `<secret>`. Over SSH the values go on the command's "
        "stdin, never on a command line.",
    )
    # restic / borg
    repository: str | None = Field(default=None, description="restic/borg: the repository, as the tool takes it.")
    password_file: str | None = Field(default=None, description="Path on the host the command runs on.")
    group: SnapshotGroup | None = Field(
        default=None, description="restic: the snapshot filter selecting one backup job; absent: all snapshots."
    )
    archive_glob: str | None = Field(
        default=None, description="borg: only archives whose name matches this glob (`--glob-archives`), e.g. `fs1-*`."
    )
    binary: str | None = Field(
        default=None, description="restic/borg: path of the tool on the host it runs on; absent: `restic` or `borg`."
    )
    # files
    directory: str | None = Field(default=None, description="files: the directory holding the dumps.")
    pattern: str = Field(default="*", description="files: glob the dump file names match (no `/`).")
    recursive: bool = Field(default=False, description="files: also look in subdirectories of `directory`.")
    min_size: int = Field(
        default=1, ge=0, description="files: smallest size in bytes of a good dump; a smaller newest dump is a failure."
    )
    # command
    command: list[str] | None = Field(
        default=None, description="command: argv of a command printing the backup's JSON object."
    )
    # push
    token: Secret | None = Field(default=None, description="push: the bearer token the backup job posts with.")
    # side tasks
    integrity: IntegrityCheck | None = Field(
        default=None, description="restic/borg: the repository check (the `integrity` task)."
    )
    restore_test: RestoreTest | None = Field(
        default=None, description="restic/borg: the scheduled restore test (the `restore_test` task); absent: none."
    )

    @model_validator(mode="before")
    @classmethod
    def _env_files(cls, data: Any, info: ValidationInfo) -> Any:
        return resolve_env_files(data, info)

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str | Secret]) -> dict[str, str | Secret]:
        for k in v:
            if not re.match(ENV_NAME_RE, k):
                raise ValueError(f"env name {k!r} is not a valid environment variable name")
        return v

    @field_validator("rpo")
    @classmethod
    def _rpo(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("rpo must be more than 0s")
        return v

    @field_validator("grace")
    @classmethod
    def _grace(cls, v: float) -> float:
        if v < 0:
            raise ValueError("grace must not be negative")
        return v

    @model_validator(mode="after")
    def _per_type(self) -> BackupTarget:
        t = self.type
        extra = sorted({k for k in self.model_fields_set if k in _ALL_SPECIFIC} - _PER_TYPE[t])
        if extra:
            raise ValueError(f"{', '.join(extra)} do{'es' if len(extra) == 1 else ''} not apply to type {t}")
        if t in ("restic", "borg") and not self.repository:
            raise ValueError(f"type {t} needs repository")
        if t == "files":
            if not self.directory or not self.directory.startswith("/"):
                raise ValueError("type files needs directory, an absolute path")
            if "/" in self.pattern or not self.pattern:
                raise ValueError("pattern matches file names: it must not be empty or contain '/'")
        if t == "command" and not self.command:
            raise ValueError("type command needs command, an argv list such as [/usr/local/bin/check, --json]")
        if t == "push" and self.token is None:
            raise ValueError("type push needs token (token_file: /path or token: ${ENV})")
        if (self.host is None) != (self.auth is None):
            raise ValueError("host and auth go together: give both for SSH, neither for local")
        if self.port is not None and self.host is None:
            raise ValueError("port needs host")
        if self.password_file is not None and not self.password_file.startswith("/"):
            raise ValueError("password_file must be an absolute path on the host the command runs on")
        if self.integrity is not None:
            if self.integrity.read_data_subset and t != "restic":
                raise ValueError("integrity.read_data_subset applies to restic only")
            if self.integrity.verify_data and t != "borg":
                raise ValueError("integrity.verify_data applies to borg only")
        return self

    @property
    def label(self) -> str:
        return self.backup or self.name
