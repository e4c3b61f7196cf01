"""JSON Schemas for the YAML formats, generated from the models.

``python -m agent.evidence.schema`` rewrites ``agent/schemas/*.schema.json``; a test checks the
shipped files equal what the models generate.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.evidence.models import EstateSettings, EvidenceRecord, Runbook
from agent.fileio import atomic_write

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

FILES: dict[str, tuple[type[BaseModel], str]] = {
    "runbook.schema.json": (Runbook, "A disaster-recovery runbook (runbooks/<id>.yml)."),
    "evidence.schema.json": (EvidenceRecord, "One system's record of one recovery test (evidence/*.yml)."),
    "estate.schema.json": (EstateSettings, "Estate-wide recovery settings (runbooks/estate.yml)."),
}


def generate() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for fname, (model, description) in FILES.items():
        schema = model.model_json_schema(mode="validation")
        out[fname] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://continuity-agent.example/schemas/{fname}",
            "description": description,
            **schema,
        }
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, schema in generate().items():
        p = directory / fname
        atomic_write(p, render(schema))
        written.append(p)
    return written


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
