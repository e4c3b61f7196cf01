"""The ``reports:`` section of the agent config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from agent.configtypes import Duration, StrictModel, TimeZoneName, check_cron, resolve_path

Format = Literal["html", "md", "json"]
FORMATS: tuple[Format, ...] = ("html", "md", "json")
EXTENSIONS = {"html": "html", "md": "md", "json": "json"}  # format -> file extension
REPORT_PREFIX = "dr-"  # dated report files: dr-YYYYMMDDTHHMMSSZ.<extension>


class ReportsConfig(StrictModel):
    """Where DR reports come from, when they are made, where they go and how long they are kept."""

    schedule: str | None = Field(
        default="0 7 1 * *",
        description="Crontab line, evaluated in ``timezone``; e.g. \"0 7 1 * *\" = 07:00 on the first of each month.",
    )
    timezone: TimeZoneName = Field(default="UTC", description="Time zone of the schedule.")
    output_dir: Path = Field(default=Path("reports"), description="Where dated reports are written.")
    formats: list[Format] = Field(
        default_factory=lambda: list(FORMATS), min_length=1,
        description="Formats written on each run.",
    )
    retention: Duration = Field(default=3 * 365 * 86400.0, description="Dated reports older than this are deleted.")
    keep_min: int = Field(default=12, ge=1, description="The newest reports kept whatever their age.")
    period: Duration = Field(
        default=30 * 86400.0,
        description="Default reporting period (history, availability, actions).",
    )
    runbooks_dir: Path | None = Field(
        default=None,
        description="Runbooks and evidence; default: the directories of the first `evidence` target, if any.",
    )
    evidence_dir: Path | None = Field(default=None, description="Evidence records; default: as for runbooks_dir.")
    unavailable_threshold_percent: float = Field(
        default=5.0, ge=0.0, le=100.0,
        description="Coverage gap: targets unknown/unreachable for more than this share of the period (percent).",
    )
    title: str = Field(
        default="Disaster-recovery test report", min_length=1, max_length=200,
        description="The report's title.",
    )
    organisation: str = Field(default="", max_length=200, description="Organisation named on the report.")
    serve: bool = Field(default=True, description="Serve output_dir read-only at /reports/.")

    @field_validator("output_dir", "runbooks_dir", "evidence_dir", mode="before")
    @classmethod
    def _path(cls, v: object, info: ValidationInfo) -> object:
        if isinstance(v, str | Path) and str(v):
            return resolve_path(v, info)
        return v

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[Format]) -> list[Format]:
        if len(set(v)) != len(v):
            raise ValueError("each format may be listed once")
        return v

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return check_cron(v, "schedule")


@dataclass(frozen=True)
class Sources:
    runbooks_dir: Path | None
    evidence_dir: Path | None


def sources(config: Any) -> Sources:
    """Runbooks and evidence directories (here, not in the report runner, so the exercise board finds
    them without loading the report machinery): ``reports.runbooks_dir``/``evidence_dir``, else those of
    the first ``evidence`` target in the config."""
    rep: ReportsConfig | None = getattr(config, "reports", None)
    rb = rep.runbooks_dir if rep else None
    ev = rep.evidence_dir if rep else None
    if rb is None or ev is None:
        for t in getattr(config, "targets", []):
            if t.kind != "evidence":
                continue
            rb = rb or _path_attr(t, ("runbooks", "runbooks_dir"))
            ev = ev or _path_attr(t, ("evidence", "evidence_dir"))
            break
    return Sources(rb, ev)


def _path_attr(obj: Any, names: tuple[str, ...]) -> Path | None:
    for n in names:
        v = getattr(obj, n, None)
        if isinstance(v, str | Path) and str(v):
            return Path(v)
    return None
