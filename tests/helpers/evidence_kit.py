"""A small estate of runbooks and one sealed joint exercise, written into a temp dir, for the
evidence tests. Tests change one thing (a near-identical variant) and look at which rules fire.

Estate: ``base`` (tier 1, RTO 8h) <- ``app`` (tier 1, RTO 72h) and ``aux`` (tier 2, RTO 24h).
Exercise ``ex1`` declared at D = 2025-01-10T08:00:00+00:00; everything restored within 7h.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from agent import cli
from agent.evidence import VerificationReport, dump_yaml, seal, verify

D = datetime(2025, 1, 10, 8, 0, tzinfo=UTC)
AT = D + timedelta(days=30)


def ts(hours: float = 0.0, minutes: float = 0.0) -> str:
    return (D + timedelta(hours=hours, minutes=minutes)).isoformat()


def runbooks() -> dict[str, dict[str, Any]]:
    return {
        "base": {
            "id": "base", "name": "Base platform", "version": 1, "owner": "Infra Manager", "tier": 1,
            "objectives": {"rto": "8h", "rpo": "24h", "mtpd": "24h"},
            "depends_on": [], "assets": ["srv1"], "backups": ["base-backup"],
            "recovery_steps": [
                {"id": "s1", "title": "Restore server", "role": "Engineer", "expected_duration": "1h"},
                {"id": "s2", "title": "Start services", "role": "Engineer", "after": ["s1"],
                 "expected_duration": "1h"},
            ],
            "validation": [{"id": "v1", "description": "Users log on"}],
        },
        "app": {
            "id": "app", "name": "Application", "version": 2, "owner": "App Manager", "tier": 1,
            "objectives": {"rto": "72h", "rpo": "1h", "mtpd": "5d"},
            "depends_on": ["base"], "backups": ["app-db"],
            "recovery_steps": [
                {"id": "a1", "title": "Restore database", "role": "DBA", "expected_duration": "2h"},
                {"id": "a2", "title": "Start application", "role": "Engineer", "after": ["a1"],
                 "expected_duration": "1h"},
            ],
            "validation": [{"id": "v2", "description": "A case is created"}],
        },
        "aux": {
            "id": "aux", "name": "Auxiliary", "version": 1, "owner": "Aux Manager", "tier": 2,
            "objectives": {"rto": "24h", "rpo": "24h", "mtpd": "48h"},
            "depends_on": ["base"],
            "recovery_steps": [
                {"id": "x1", "title": "Restore aux", "role": "Engineer", "expected_duration": "2h"},
            ],
            "validation": [],
        },
    }


def records() -> dict[str, dict[str, Any]]:
    """File name -> record, in sealing order."""
    def rec(runbook: str, version: int, steps: list[dict[str, Any]], restored: str, validations: list[str],
            artefact: str) -> dict[str, Any]:
        return {
            "runbook": runbook, "runbook_version": version, "exercise": "ex1", "type": "full_recovery",
            "declared_at": ts(0),
            "steps": steps,
            "service_restored_at": restored,
            "validations": [{"id": v, "result": "pass", "by": "U. User"} for v in validations],
            "result": "pass",
            "participants": ["O. One", "U. User", "S. Signer"],
            "sign_off": {"by": "S. Signer", "role": "Service owner", "at": ts(8)},
            "artefacts": [{"path": artefact}],
        }

    return {
        "01-base.yml": rec("base", 1, [
            {"id": "s1", "started_at": ts(0, 10), "ended_at": ts(1, 10), "operator": "O. One", "result": "ok"},
            {"id": "s2", "started_at": ts(1, 15), "ended_at": ts(2, 15), "operator": "O. One", "result": "ok"},
        ], ts(2, 30), ["v1"], "artefacts/base-log.txt"),
        "02-app.yml": rec("app", 2, [
            {"id": "a1", "started_at": ts(3), "ended_at": ts(5), "operator": "O. One", "result": "ok"},
            {"id": "a2", "started_at": ts(5, 10), "ended_at": ts(6, 10), "operator": "O. One", "result": "ok"},
        ], ts(6, 30), ["v2"], "artefacts/app-log.txt"),
        "03-aux.yml": rec("aux", 1, [
            {"id": "x1", "started_at": ts(3), "ended_at": ts(5), "operator": "O. One", "result": "ok"},
        ], ts(5, 30), [], "artefacts/aux-log.txt"),
    }


@dataclass
class Kit:
    root: Path
    runbooks: Path
    evidence: Path
    at: datetime = AT

    def verify(self, at: datetime | None = None) -> VerificationReport:
        return verify(self.runbooks, self.evidence, at or self.at)

    def rules(self, at: datetime | None = None) -> set[str]:
        return {f.rule for f in self.verify(at).findings}

    def record_path(self, name: str) -> Path:
        return self.evidence / name

    def seal(self, name: str) -> None:
        seal(self.runbooks, self.evidence, self.evidence / name)

    def write_record(self, name: str, rec: dict[str, Any]) -> Path:
        p = self.evidence / name
        p.write_text(dump_yaml(rec))
        for a in rec.get("artefacts", []):
            ap = self.evidence / a["path"]
            if ".." not in a["path"] and not a["path"].startswith("/") and not ap.exists():
                ap.parent.mkdir(parents=True, exist_ok=True)
                ap.write_text(f"log for {name}\n")
        return p

    def hand_seal(self, name: str, rec: dict[str, Any], artefact_hashes: list[str]) -> Path:
        """Write a record with seal fields computed here (for paths `evidence seal` refuses)."""
        sealed = [r for r in self.evidence.glob("*.yml") if "sequence:" in r.read_text()]
        seqs = []
        for r in sealed:
            d = yaml.safe_load(r.read_text())
            seqs.append((d["sequence"], r))
        out = copy.deepcopy(rec)
        for a, h in zip(out.get("artefacts", []), artefact_hashes, strict=True):
            a["sha256"] = h
        out["runbook_sha256"] = hashlib.sha256((self.runbooks / f"{rec['runbook']}.yml").read_bytes()).hexdigest()
        if seqs:
            n, prev = max(seqs)
            out["sequence"] = n + 1
            out["prev_record_sha256"] = hashlib.sha256(prev.read_bytes()).hexdigest()
        else:
            out["sequence"] = 1
            out["prev_record_sha256"] = None
        p = self.evidence / name
        p.write_text(dump_yaml(out))
        return p


def make(tmp_path: Path, *, rbs: dict[str, dict[str, Any]] | None = None,
         recs: dict[str, dict[str, Any]] | None = None, estate: dict[str, Any] | None = None,
         seal_records: bool = True) -> Kit:
    root = tmp_path
    rb_dir = root / "runbooks"
    ev_dir = root / "evidence"
    rb_dir.mkdir(parents=True, exist_ok=True)
    ev_dir.mkdir(parents=True, exist_ok=True)
    (rb_dir / "estate.yml").write_text(dump_yaml(estate if estate is not None else
                                                 {"objective": "72h", "expiry_warning": "30d"}))
    for rid, rb in (rbs if rbs is not None else runbooks()).items():
        (rb_dir / f"{rid}.yml").write_text(dump_yaml(rb))
    kit = Kit(root, rb_dir, ev_dir)
    for name, rec in (recs if recs is not None else records()).items():
        kit.write_record(name, rec)
        if seal_records:
            kit.seal(name)
    return kit


def run_cli(*argv: str) -> tuple[int, str, str]:
    """The CLI in-process: (exit code, stdout, stderr). An exception escaping is a test failure."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(list(argv))
            except SystemExit as e:  # argparse usage errors
                rc = int(e.code or 0)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return rc, out.getvalue(), err.getvalue()
