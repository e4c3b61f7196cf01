"""Every collector kind and auth type the agent knows. Add a module here to add a kind.

A collector module exports ``COLLECTORS`` (list of Collector classes) and may export
``AUTH_MODELS`` (list of StrictModel classes with a ``type: Literal[...]`` field).

``KINDS`` and ``AUTH_TYPES`` say which module provides each kind and auth type, so that a config
imports only the modules of the kinds and auth types it uses (:func:`collector`,
:func:`auth_model`); :func:`collectors` and :func:`auth_models` import them all.
``tests/unit/test_registry.py`` checks these tables against what the modules export.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from typing import Any

from agent.plugin import Collector, HttpRequest, HttpResponse, Route

KINDS: dict[str, str] = {
    "probe": "collectors.probe",
    "host": "collectors.host",
    "link": "collectors.link",
    "standards": "collectors.standards",
    "snmp": "collectors.snmp",
    "evidence": "collectors.evidence",
    "backup": "collectors.backup",
}
AUTH_TYPES: dict[str, str] = {
    "http_basic": "collectors.probe",
    "snmp_v1": "collectors.snmp",
    "snmp_v2c": "collectors.snmp",
    "snmp_v3": "collectors.snmp",
    "ssh": "collectors.ssh",
}
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
# HTTP routes a kind serves whether or not a target of it is configured (method, path prefix,
# own_auth): the agent serves them from start without importing the module, which loads on the
# first request (:func:`routes`).
ROUTES: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "backup": (("POST", "/api/v1/backup/", True),),
}

_loaded: dict[str, type[Collector]] = {}


@cache
def collector(kind: str) -> type[Collector]:
    """The collector class of ``kind`` (KeyError for an unknown kind); imports only its module."""
    mod = importlib.import_module(KINDS[kind])
    found: list[type[Collector]] = [cls for cls in getattr(mod, "COLLECTORS", []) if cls.kind == kind]
    if len(found) != 1:
        raise RuntimeError(f"{KINDS[kind]} does not export exactly one collector of kind {kind!r}")
    _loaded[kind] = found[0]
    return found[0]


def loaded() -> frozenset[str]:
    """The kinds whose collector has been imported so far."""
    return frozenset(_loaded)


@cache
def auth_model(tag: str) -> type[Any]:
    """The auth model of type ``tag`` (KeyError for an unknown type); imports only its module."""
    mod = importlib.import_module(AUTH_TYPES[tag])
    found: list[type[Any]] = [cls for cls in getattr(mod, "AUTH_MODELS", []) if _auth_tag(cls) == tag]
    if len(found) != 1:
        raise RuntimeError(f"{AUTH_TYPES[tag]} does not export exactly one auth model of type {tag!r}")
    return found[0]


def _auth_tag(cls: Any) -> str:
    return str(cls.model_fields["type"].annotation.__args__[0])


@cache
def collectors() -> dict[str, type[Collector]]:
    out: dict[str, type[Collector]] = {}
    for mod_name in MODULES:
        mod = importlib.import_module(mod_name)
        for cls in getattr(mod, "COLLECTORS", []):
            if cls.kind in out:
                raise RuntimeError(f"collector kind {cls.kind!r} registered twice")
            out[cls.kind] = cls
    _loaded.update(out)
    return out


@cache
def auth_models() -> dict[str, type[Any]]:
    out: dict[str, type[Any]] = {}
    for mod_name in MODULES:
        mod = importlib.import_module(mod_name)
        for cls in getattr(mod, "AUTH_MODELS", []):
            out[_auth_tag(cls)] = cls
    return out


def routes(agent: Any) -> list[Route]:
    """Every kind's HTTP routes: those of the kinds already imported from the collector class, the
    others from ``ROUTES`` with a handler that imports the kind on its first request."""
    out: list[Route] = []
    for kind in KINDS:
        if kind in _loaded:
            out.extend(_loaded[kind].http_routes(agent))
        else:
            out.extend(
                Route(method, prefix, _lazy_handler(kind, method, prefix, agent), own_auth=own)
                for method, prefix, own in ROUTES.get(kind, ())
            )
    return out


def _lazy_handler(kind: str, method: str, prefix: str, agent: Any) -> Callable[[HttpRequest], HttpResponse]:
    real: list[Callable[[HttpRequest], HttpResponse]] = []

    def handle(req: HttpRequest) -> HttpResponse:
        if not real:
            found = collector(kind).http_routes(agent)
            real.extend(r.handler for r in found if (r.method, r.prefix) == (method, prefix))
        return real[0](req)

    return handle
