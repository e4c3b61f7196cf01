"""fields_json: a dataclass as a JSON object, field by field; and the exercise board's JSON keys,
which it now writes (they are an interface: the board page and `exercise status --format json`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.exercises.status import StepStatus, SystemProgress
from agent.jsonfields import fields_json


@dataclass(frozen=True)
class _Thing:
    name: str
    offset: float | None
    tags: tuple[str, ...]
    extra: dict[str, int] = field(default_factory=dict)
    hidden: int = 0


def test_fields_in_order_renamed_omitted_and_plain() -> None:
    t = _Thing("a", None, ("x", "y"), {"k": 1}, 7)
    out = fields_json(t, rename={"offset": "offset_seconds"}, omit=("hidden",))
    assert list(out) == ["name", "offset_seconds", "tags", "extra"]
    assert out == {"name": "a", "offset_seconds": None, "tags": ["x", "y"], "extra": {"k": 1}}
    out["extra"]["k"] = 2  # a copy: the frozen object is not changed through its JSON
    assert t.extra == {"k": 1}
    assert fields_json(t) == {"name": "a", "offset": None, "tags": ["x", "y"], "extra": {"k": 1}, "hidden": 7}


def test_exercise_board_json_keys() -> None:
    step = StepStatus("rb", "s1", "Step", "done", 60.0, "op", 0.0, 61.5, 0.0, 61.5, False)
    assert list(step.to_json()) == [
        "runbook",
        "id",
        "title",
        "state",
        "expected_seconds",
        "operator",
        "started_offset_seconds",
        "ended_offset_seconds",
        "projected_start_offset_seconds",
        "projected_end_offset_seconds",
        "late",
    ]
    assert step.to_json()["ended_offset_seconds"] == 61.5
    system = SystemProgress(
        "rb", "Payroll", 1, "restored", ("db",), 3600.0, 7200.0, 61.5, 61.5, (step,), {"v1": "pass"}, "Z", ("v1",)
    )
    doc = system.to_json()
    assert list(doc) == [
        "runbook",
        "name",
        "tier",
        "state",
        "depends_on",
        "planned_seconds",
        "rto_seconds",
        "restored_offset_seconds",
        "projected_restore_offset_seconds",
        "validations",
        "signed_off_by",
        "steps",
    ]
    assert doc["depends_on"] == ["db"] and doc["steps"] == [step.to_json()] and doc["validations"] == {"v1": "pass"}
