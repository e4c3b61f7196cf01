"""The ``exercises:`` section of the agent config: where the board finds runbooks and journals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from agent.configtypes import Duration, StrictModel, resolve_path

PREFIX = "/exercise"  # the board's pages
CSRF_KEY_FILE = "exercise-board.key"  # the board's form key, in the state directory, mode 0600


class ExercisesConfig(StrictModel):
    """The DR exercise board (/exercise/) and its metrics. Directories default to those the DR
    report uses (``reports:``, else the first ``evidence`` target)."""

    runbooks_dir: Path | None = Field(default=None, description="runbooks directory (runbooks/<id>.yml)")
    evidence_dir: Path | None = Field(
        default=None, description="evidence directory; journals are in its exercises/ subdirectory"
    )
    refresh: Duration = Field(
        default=30.0, description="how often the board's status and the exercise metrics are recomputed"
    )

    @field_validator("runbooks_dir", "evidence_dir", mode="before")
    @classmethod
    def _path(cls, v: object, info: ValidationInfo) -> object:
        if isinstance(v, str | Path) and str(v):
            return resolve_path(v, info)
        return v


def directories(config: Any) -> tuple[Path | None, Path | None]:
    """(runbooks_dir, evidence_dir) for the board: ``exercises:``, else as the DR report finds them."""
    from agent.reports.config import sources

    ex: ExercisesConfig | None = getattr(config, "exercises", None)
    src = sources(config)
    rb = ex.runbooks_dir if ex and ex.runbooks_dir else src.runbooks_dir
    ev = ex.evidence_dir if ex and ex.evidence_dir else src.evidence_dir
    return rb, ev
