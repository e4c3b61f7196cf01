"""The board's journal page in words: every kind of entry is described, a malformed one does not
break the page, and every field an amend may change has a field on the amend form."""

from __future__ import annotations

from typing import Any

from agent.exercises.model import AMENDABLE
from agent.exercises.web import AMEND_LABELS, current, describe, voided_by


def _e(seq: int, action: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "at": f"2026-09-04T18:{seq:02d}:00+00:00", "action": action, **fields}


ENTRIES = [
    _e(1, "start", type="tabletop", systems=["email", "payroll"]),
    _e(2, "step", runbook="email", step="activate-dag", state="start", operator="N. Patel", note="slow"),
    _e(3, "restored", runbook="email"),
    _e(4, "validate", runbook="email", validation="owa-login", result="pass", by="K. Moore"),
    _e(5, "action", runbook="email", description="Fix <relay>", owner="J. Reid", due="2026-12-31"),
    _e(6, "participant", name="Z. Ahmed", role="Head of ICT"),
    _e(7, "sign_off", runbook="email", by="Z. Ahmed", role="Head of ICT"),
    _e(8, "artefact", runbook="email", path="artefacts/x/email/log.txt", file_sha256="0" * 64),
    _e(9, "amend", target=2, changes={"operator": "S. Okafor"}),
    _e(10, "void", target=4, reason="wrong validation"),
    _e(11, "finish"),
]


def test_every_kind_of_entry_is_described() -> None:
    assert [describe(x) for x in ENTRIES] == [
        "exercise declared: tabletop, systems email, payroll",
        "email/activate-dag start (operator N. Patel); note: slow",
        "email: service restored",
        "email: validation owa-login pass (by K. Moore)",
        "email: action: Fix <relay> (owner J. Reid, due 2026-12-31)",
        "participant Z. Ahmed (Head of ICT)",
        "email: signed off by Z. Ahmed (Head of ICT)",
        "email: artefact artefacts/x/email/log.txt",
        "amends entry 2: operator = S. Okafor",
        "voids entry 4: wrong validation",
        "exercise finished",
    ]
    # A chained but malformed entry (fields missing or of the wrong type) is still described.
    assert describe({"seq": 3, "action": "amend", "changes": ["x"]}) == "amends entry None: "
    assert describe({"seq": 3, "action": "step"}) == "/  (operator )"
    assert describe({"seq": 3, "action": "teleport"}) == "teleport"


def test_current_applies_amends_and_drops_voided_entries() -> None:
    got = current(ENTRIES, 2)
    assert got is not None and got["operator"] == "S. Okafor" and got["note"] == "slow"
    assert current(ENTRIES, 4) is None and current(ENTRIES, 99) is None
    assert list(voided_by(ENTRIES)) == [4]
    # A correction naming a later entry: the journal cannot be replayed, so nothing is current.
    assert current([*ENTRIES[:2], _e(3, "void", target=7, reason="x")], 2) is None
    assert current([*ENTRIES[:2], {**_e(3, "restored", runbook="email"), "at": "yesterday"}], 2) is None


def test_every_amendable_field_has_a_form_field() -> None:
    fields = {k for ks in AMENDABLE.values() for k in ks}
    assert fields == set(AMEND_LABELS)
