"""Adapter from the evidence verifier's Python API (:mod:`agent.evidence`) to the JSON document
``continuity-agent evidence verify --format json`` prints — the one shape a report reads."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from agent.evidence import EvidenceInputError
from agent.evidence import verify as _verify


class VerifierInputError(ValueError):
    """Unreadable or schema-invalid runbooks or evidence: the report states it as a gap."""


def verify(runbooks_dir: Path, evidence_dir: Path, at: datetime) -> dict[str, Any]:
    try:
        return _verify(runbooks_dir, evidence_dir, at).to_json()
    except EvidenceInputError as e:
        issues = [str(i) for i in e.issues]
        more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
        raise VerifierInputError("; ".join(issues[:3]) + more) from None
