"""The published JSON Schema of ``report dr --format json``, generated from the report model.

``python -m agent.reports.schema > agent/schemas/report.schema.json`` rewrites the shipped file;
a test fails when the two differ."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from agent.reports.model import SCHEMA_VERSION, Report

SCHEMA_ID = "https://continuity-agent.invalid/schemas/report.schema.json"


def _close(node: Any) -> None:
    """Every object in the schema lists its properties and refuses others."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        if "properties" not in node and isinstance(node.get("title"), str):
            del node["title"]  # pydantic's "Due", "Owner"... add nothing to the property names
        for v in node.values():
            _close(v)
    elif isinstance(node, list):
        for v in node:
            _close(v)


def _object(**properties: Any) -> dict[str, Any]:
    """A JSON Schema object that requires each of its ``properties``."""
    return {"type": "object", "required": list(properties), "properties": properties}


# The evidence verifier's own document (`evidence verify --format json`), as issue 7 fixes it;
# the verifier may add keys.
EVIDENCE: dict[str, Any] = {
    "description": "The evidence verifier's JSON, unchanged (null when the evidence could not be verified).",
    "anyOf": [
        {"type": "null"},
        _object(
            ok={"type": "boolean"},
            findings={
                "type": "array",
                "items": _object(
                    severity={"enum": ["error", "warning"]},
                    rule={"type": "string"},
                    runbook={"type": ["string", "null"]},
                    record={"type": ["string", "null"]},
                    message={"type": "string"},
                ),
            },
            systems={
                "type": "array",
                "items": _object(
                    runbook={"type": "string"},
                    last_test={"type": ["string", "null"]},
                    achieved_rto_seconds={"type": ["number", "null"]},
                    rto_seconds={"type": ["number", "null"]},
                    within_rto={"type": ["boolean", "null"]},
                    valid_until={"type": ["string", "null"]},
                ),
            },
            critical_path=_object(
                objective_seconds={"type": "number"},
                planned_seconds={"type": ["number", "null"]},
                projected_seconds={"type": ["number", "null"]},
                measured_seconds={"type": ["number", "null"]},
                path={"type": "array", "items": {"type": "string"}},
            ),
        ),
    ],
}


def report_schema() -> dict[str, Any]:
    schema = TypeAdapter(Report).json_schema()
    _close(schema)
    schema["properties"]["evidence"] = EVIDENCE
    schema["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    schema["properties"]["gaps"] = {
        "description": "Gaps stated in words, by section key; a section without gaps has no key.",
        "type": "object",
        "propertyNames": {
            "enum": ["summary", "systems", "timeline", "dependencies", "actions", "sites", "coverage", "integrity"]
        },
        "additionalProperties": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "continuity-agent DR test report",
        "description": "Output of `continuity-agent report dr --format json`. Times are ISO 8601 UTC strings, "
        "durations are seconds.",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def render() -> str:
    return json.dumps(report_schema(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
