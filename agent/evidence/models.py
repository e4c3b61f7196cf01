"""Runbook, estate and evidence-record models: strict, frozen, unknown keys rejected.

Inputs are YAML files read by :mod:`agent.evidence.loader`, which keeps timestamps as strings so
that this module alone decides what a valid timestamp is: ISO 8601 with a UTC offset
(``2025-03-14T18:00:00+00:00`` or ``...Z``). Naive times are rejected. Dates (``due``) are ISO
dates. Durations are ``30m``, ``4h``, ``3d``, ``365d`` (see :func:`agent.durations.parse_duration`).

The JSON Schemas shipped in ``agent/schemas/`` are generated from these models
(``python -m agent.evidence.schema``) and describe the YAML as written.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agent.durations import format_duration, parse_duration
from agent.graph import find_cycle

ID_RE = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
SHA256_RE = r"^[0-9a-f]{64}$"
_OFFSET_RE = re.compile(r"(Z|z|[+-]\d{2}:?\d{2})$")
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|z|[+-]\d{2}:?\d{2})$"
DURATION_PATTERN = (
    r"^((\d+(\.\d+)?(ms|s|m|h|d|w))+"
    r"|P(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?(T(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?)$"
)


def _parse_timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PydanticCustomError("naive_timestamp", "timestamp has no UTC offset (write e.g. +00:00 or Z)")
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "timestamp", "expected an ISO 8601 timestamp with a UTC offset, e.g. 2025-03-14T18:00:00+00:00"
        )
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise PydanticCustomError(
            "timestamp",
            "'{value}' is not an ISO 8601 timestamp (e.g. 2025-03-14T18:00:00+00:00)",
            {"value": text[:60]},
        ) from None
    if parsed.tzinfo is None or not _OFFSET_RE.search(text):
        raise PydanticCustomError(
            "naive_timestamp", "timestamp '{value}' has no UTC offset (write e.g. +00:00 or Z)", {"value": text[:60]}
        )
    return parsed


def _parse_date(value: Any) -> date:
    if isinstance(value, datetime):
        raise PydanticCustomError("date", "expected an ISO date (YYYY-MM-DD), not a timestamp")
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        raise PydanticCustomError(
            "date", "expected an ISO date (YYYY-MM-DD), got '{value}'", {"value": str(value)[:60]}
        )
    try:
        return date.fromisoformat(value.strip())
    except ValueError as e:
        raise PydanticCustomError("date", "invalid date '{value}': {err}", {"value": value, "err": str(e)}) from None


def _parse_duration(value: Any) -> float:
    if not isinstance(value, str):
        raise PydanticCustomError("duration", "expected a duration string like 30m, 4h, 3d or 365d")
    try:
        return parse_duration(value)
    except ValueError as e:
        raise PydanticCustomError("duration", str(e)) from None


def _iso(v: datetime) -> str:
    return v.isoformat()


Timestamp = Annotated[
    datetime,
    BeforeValidator(_parse_timestamp),
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "ISO 8601 timestamp with a UTC offset",
        }
    ),
]
IsoDate = Annotated[
    date,
    BeforeValidator(_parse_date),
    PlainSerializer(lambda v: v.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}),
]
DurationSeconds = Annotated[
    float,
    BeforeValidator(_parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "description": "duration: 30m, 4h, 3d, 365d (or ISO 8601 P3D)"}
    ),
]
Ident = Annotated[str, Field(pattern=ID_RE, description="lower-case identifier")]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Sha256 = Annotated[str, Field(pattern=SHA256_RE)]

TestType = Literal["full_recovery", "partial_recovery", "tabletop", "automated_restore"]
ALL_TEST_TYPES: tuple[str, ...] = ("full_recovery", "partial_recovery", "tabletop", "automated_restore")
DEFAULT_ACCEPTED: tuple[str, ...] = ("full_recovery", "partial_recovery", "automated_restore")
SIGN_OFF_TYPES: tuple[str, ...] = ("full_recovery", "partial_recovery")


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", defer_build=True)


def _unique(items: list[Any], what: str) -> None:
    seen: set[str] = set()
    for i, it in enumerate(items):
        if it.id in seen:
            raise PydanticCustomError(
                "duplicate_id", "{what}[{i}].id: {id!r} is used more than once", {"what": what, "i": i, "id": it.id}
            )
        seen.add(it.id)


# -- runbooks ------------------------------------------------------------------------------------


class Objectives(Strict):
    rto: DurationSeconds = Field(description="recovery time objective")
    rpo: DurationSeconds = Field(description="recovery point objective")
    mtpd: DurationSeconds = Field(description="maximum tolerable period of disruption")

    @model_validator(mode="after")
    def _order(self) -> Objectives:
        if self.rto <= 0:
            raise ValueError("rto must be more than 0")
        if self.rto > self.mtpd:
            raise ValueError(f"rto ({format_duration(self.rto)}) is longer than mtpd ({format_duration(self.mtpd)})")
        return self


class RecoveryStep(Strict):
    id: Ident
    title: Text
    role: Text
    after: list[Ident] = Field(default_factory=list, description="ids of steps that must finish first")
    expected_duration: DurationSeconds


class Validation(Strict):
    id: Ident
    description: Text


class TestPolicy(Strict):
    max_evidence_age: DurationSeconds = Field(
        default=365 * 86400.0,
        json_schema_extra={"default": "365d"},
        description="evidence older than this no longer counts",
    )
    accepted_types: list[TestType] = Field(
        default_factory=lambda: list(DEFAULT_ACCEPTED),  # type: ignore[arg-type]
        description="test types that count as evidence (default: all but tabletop)",
    )


class Runbook(Strict):
    id: Ident
    name: Text
    version: int = Field(ge=1)
    owner: Text
    tier: int = Field(ge=1, le=9, description="1 is most critical")
    description: str = ""
    objectives: Objectives
    depends_on: list[Ident] = Field(default_factory=list, description="runbook ids this system needs first")
    assets: list[Text] = Field(default_factory=list)
    backups: list[Text] = Field(default_factory=list, description="names of backup targets in the agent config")
    recovery_steps: list[RecoveryStep] = Field(min_length=1)
    validation: list[Validation] = Field(default_factory=list)
    test_policy: TestPolicy = Field(default_factory=TestPolicy)

    @model_validator(mode="after")
    def _graph(self) -> Runbook:
        _unique(self.recovery_steps, "recovery_steps")
        _unique(self.validation, "validation")
        if self.id in self.depends_on:
            raise ValueError(f"depends_on: runbook {self.id!r} depends on itself")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("depends_on: a runbook is listed more than once")
        ids = {s.id for s in self.recovery_steps}
        for i, s in enumerate(self.recovery_steps):
            for j, a in enumerate(s.after):
                if a not in ids:
                    raise ValueError(f"recovery_steps[{i}].after[{j}]: unknown step {a!r}")
                if a == s.id:
                    raise ValueError(f"recovery_steps[{i}].after[{j}]: step {a!r} comes after itself")
        cycle = find_cycle({s.id: list(s.after) for s in self.recovery_steps})
        if cycle:
            raise ValueError(f"recovery_steps: steps form a cycle: {' -> '.join(cycle)}")
        return self

    def step(self, step_id: str) -> RecoveryStep | None:
        for s in self.recovery_steps:
            if s.id == step_id:
                return s
        return None


class EstateSettings(Strict):
    name: str = ""
    objective: DurationSeconds = Field(
        default=72 * 3600.0, json_schema_extra={"default": "72h"}, description="estate recovery objective"
    )
    expiry_warning: DurationSeconds = Field(
        default=30 * 86400.0, json_schema_extra={"default": "30d"}, description="warn this long before evidence expires"
    )


# -- evidence records ----------------------------------------------------------------------------


class StepRecord(Strict):
    id: Ident
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    operator: Text
    result: Literal["ok", "failed", "skipped"]
    notes: str = ""

    @model_validator(mode="after")
    def _times(self) -> StepRecord:
        if self.result != "skipped" and (self.started_at is None or self.ended_at is None):
            raise ValueError(f"step {self.id!r}: started_at and ended_at are required unless result is skipped")
        return self


class ValidationRecord(Strict):
    id: Ident
    result: Literal["pass", "fail"]
    by: Text
    notes: str = ""


class Issue(Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
    description: Text
    owner: Text
    due: IsoDate
    status: Literal["open", "closed"]


class SignOff(Strict):
    by: Text
    role: Text
    at: Timestamp


class Artefact(Strict):
    path: Annotated[str, Field(min_length=1, max_length=1024)]
    sha256: Sha256 | None = None
    description: str = ""


class EvidenceRecord(Strict):
    runbook: Ident
    runbook_version: int = Field(ge=1)
    exercise: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")]
    type: TestType
    declared_at: Timestamp
    steps: list[StepRecord] = Field(default_factory=list)
    service_restored_at: Timestamp | None = None
    validations: list[ValidationRecord] = Field(default_factory=list)
    result: Literal["pass", "fail"]
    issues: list[Issue] = Field(default_factory=list)
    participants: list[Text] = Field(default_factory=list)
    sign_off: SignOff | None = None
    artefacts: list[Artefact] = Field(default_factory=list)
    notes: str = ""
    # Written only by `evidence seal`.
    runbook_sha256: Sha256 | None = None
    sequence: int | None = Field(default=None, ge=1)
    prev_record_sha256: Sha256 | None = None

    @model_validator(mode="after")
    def _restore(self) -> EvidenceRecord:
        if self.result == "pass" and self.type != "tabletop" and self.service_restored_at is None:
            raise ValueError(f"service_restored_at is required for a passing {self.type} record")
        return self

    @property
    def sealed(self) -> bool:
        return self.sequence is not None

    @property
    def first_step_start(self) -> datetime | None:
        starts = [s.started_at for s in self.steps if s.started_at is not None]
        return min(starts) if starts else None

    @property
    def achieved_rto(self) -> float | None:
        if self.service_restored_at is None or self.type == "tabletop":
            return None
        return (self.service_restored_at - self.declared_at).total_seconds()


SEAL_FIELDS = ("runbook_sha256", "sequence", "prev_record_sha256")
