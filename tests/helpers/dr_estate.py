"""A small council estate for report tests: runbooks, one sealed joint exercise, actions.

``build_estate(root, ...)`` writes ``root/runbooks`` (with ``estate.yml``) and
``root/evidence`` and seals every record with the evidence verifier's own ``seal``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

T0 = datetime(2025, 3, 14, 18, 0, tzinfo=UTC)  # the exercise is declared (a Friday evening)
AT = datetime(2025, 3, 31, 9, 0, tzinfo=UTC)  # fixed "as at" of the reports


def _rb(rid: str, name: str, tier: int, rto: str, deps: list[str], steps: list[tuple[str, str, str]],
        backups: list[str] | None = None, owner: str = "Head of ICT") -> dict[str, Any]:
    return {
        "id": rid,
        "name": name,
        "version": 1,
        "owner": owner,
        "tier": tier,
        "objectives": {"rto": rto, "rpo": "24h", "mtpd": "5d"},
        "depends_on": deps,
        "backups": backups or [],
        "recovery_steps": [
            {"id": sid, "title": title, "role": "ICT engineer", "after": [] if i == 0 else [steps[i - 1][0]],
             "expected_duration": dur}
            for i, (sid, title, dur) in enumerate(steps)
        ],
        "validation": [{"id": "smoke", "description": "Users can log in and use the service"}],
        "test_policy": {"max_evidence_age": "365d"},
    }


RUNBOOKS = [
    _rb("core-network", "Core network", 1, "8h", [], [("power", "Power up core switches", "2h"),
                                                       ("routing", "Restore routing and firewall", "3h")]),
    _rb("active-directory", "Active Directory", 1, "12h", ["core-network"],
        [("dc", "Restore domain controllers", "4h"), ("dns", "Check DNS and time", "2h")], ["ad-systemstate"]),
    _rb("email", "E-Mail", 1, "24h", ["active-directory"],
        [("mailbox", "Restore mailbox servers", "8h"), ("flow", "Re-enable mail flow", "4h")], ["exchange-db"]),
    _rb("intranet", "Intranet", 2, "48h", ["active-directory"],
        [("web", "Restore web servers", "6h")], ["intranet-files"]),
    _rb("mapping", "Mapping / LPG", 3, "72h", ["active-directory"], [("gis", "Restore GIS server", "8h")]),
]


@dataclass
class Estate:
    runbooks: Path
    evidence: Path


def _record(rid: str, start_h: float, restore_h: float, steps: list[tuple[str, float, float]],
            issues: list[dict[str, Any]] | None = None, exercise: str = "ex-2025-03-major-incident") -> dict[str, Any]:
    def ts(h: float) -> str:
        return (T0 + timedelta(hours=h)).isoformat()

    return {
        "runbook": rid,
        "runbook_version": 1,
        "exercise": exercise,
        "type": "full_recovery",
        "declared_at": ts(0),
        "steps": [{"id": sid, "started_at": ts(a), "ended_at": ts(b), "operator": "j.smith", "result": "ok"}
                  for sid, a, b in steps],
        "service_restored_at": ts(restore_h),
        "validations": [{"id": "smoke", "result": "pass", "by": "a.user"}],
        "result": "pass",
        "issues": issues or [],
        "participants": ["j.smith", "a.user", "c.lead"],
        "sign_off": {"by": "c.lead", "role": "BC lead", "at": ts(restore_h + 1)},
    }


def build_estate(root: Path, *, email_restored_h: float = 22.0, action_text: str = "Document the DNS check",
                 with_evidence: bool = True) -> Estate:
    from agent.evidence import seal

    rb = root / "runbooks"
    ev = root / "evidence"
    rb.mkdir(parents=True)
    ev.mkdir(parents=True)
    (rb / "estate.yml").write_text(yaml.safe_dump({"name": "Test council", "objective": "72h",
                                                   "expiry_warning": "30d"}))
    for r in RUNBOOKS:
        (rb / f"{r['id']}.yml").write_text(yaml.safe_dump(r, sort_keys=False))
    if not with_evidence:
        return Estate(rb, ev)
    email_start = 12.0
    records = [
        _record("core-network", 0, 5, [("power", 0.5, 2.0), ("routing", 2.0, 5.0)]),
        _record("active-directory", 0, 11, [("dc", 5.5, 9.0), ("dns", 9.0, 11.0)],
                issues=[{"id": "ACT-1", "description": action_text, "owner": "ICT infrastructure lead",
                         "due": "2025-03-21", "status": "open"},
                        {"id": "ACT-2", "description": "Closed one", "owner": "x", "due": "2025-03-20",
                         "status": "closed"}]),
        _record("email", 0, email_restored_h,
                [("mailbox", email_start, email_start + (email_restored_h - email_start) * 0.7),
                 ("flow", email_start + (email_restored_h - email_start) * 0.7, email_restored_h)],
                issues=[{"id": "ACT-3", "description": "Buy more mailbox storage", "owner": "E-mail service owner",
                         "due": "2025-06-30", "status": "open"}]),
        _record("intranet", 0, 20, [("web", 12.0, 20.0)]),
    ]
    for i, rec in enumerate(records, 1):
        path = ev / f"{i:03d}-{rec['runbook']}.yml"
        path.write_text(yaml.safe_dump(rec, sort_keys=False))
        seal(rb, ev, path)
    return Estate(rb, ev)
