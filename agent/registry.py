"""Every collector kind and auth type the agent knows. Add a module here to add a kind.

A collector module exports ``COLLECTORS`` (list of Collector classes) and may export
``AUTH_MODELS`` (list of StrictModel classes with a ``type: Literal[...]`` field).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from agent.plugin import Collector

MODULES: tuple[str, ...] = (
    "collectors.probe",
    "collectors.host",
    "collectors.link",
    "collectors.standards",
    "collectors.snmp",
    "collectors.evidence",
    "collectors.ssh",
    "collectors.backup",
)


@cache
def collectors() -> dict[str, type[Collector]]:
    out: dict[str, type[Collector]] = {}
    for mod_name in MODULES:
        mod = importlib.import_module(mod_name)
        for cls in getattr(mod, "COLLECTORS", []):
            if cls.kind in out:
                raise RuntimeError(f"collector kind {cls.kind!r} registered twice")
            out[cls.kind] = cls
    return out


@cache
def auth_models() -> dict[str, type[Any]]:
    out: dict[str, type[Any]] = {}
    for mod_name in MODULES:
        mod = importlib.import_module(mod_name)
        for cls in getattr(mod, "AUTH_MODELS", []):
            tag = cls.model_fields["type"].annotation.__args__[0]
            out[tag] = cls
    return out
