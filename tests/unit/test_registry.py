"""The registry's tables (which module provides each kind, auth type and always-served route) match
what the collector modules export, and a config imports and builds only the kinds it uses while
validating exactly as the model of every kind does (issue #15, point 6)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import agent.config
from agent.config import AgentConfig, ConfigError, load_config
from agent.registry import AUTH_TYPES, KINDS, MODULES, ROUTES, collector, collectors

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((ROOT / "tests" / "fixtures" / "bad_config").glob("*.yml"))


def _run(code: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", code]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)


def test_kind_and_auth_tables_match_the_modules() -> None:
    kinds: dict[str, str] = {}
    auths: dict[str, str] = {}
    for name in MODULES:
        mod = importlib.import_module(name)
        for cls in getattr(mod, "COLLECTORS", []):
            kinds[cls.kind] = name
        for model in getattr(mod, "AUTH_MODELS", []):
            auths[model.model_fields["type"].annotation.__args__[0]] = name
    assert kinds == KINDS
    assert auths == AUTH_TYPES
    assert {k: collector(k) for k in KINDS} == collectors()


def test_always_served_routes_match_the_collectors() -> None:
    for kind, cls in collectors().items():
        declared = [(r.method, r.prefix, r.own_auth) for r in cls.http_routes(object())]
        assert declared == list(ROUTES.get(kind, ())), kind


def _issues(path: Path) -> list[str] | dict[str, Any]:
    try:
        return load_config(path).config.model_dump(mode="json")
    except ConfigError as e:
        return [str(i) for i in e.issues]


@pytest.mark.parametrize("path", [*BAD, ROOT / "deploy" / "examples" / "demo.yml"], ids=lambda p: p.name)
def test_a_config_validates_as_with_every_kind(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The model built for the kinds a config uses gives the same errors (or the same config) as
    # the model of every kind -- including one-kind configs, whose union is padded.
    own = _issues(path)
    monkeypatch.setattr(agent.config, "_model_for", lambda data: AgentConfig)
    assert own == _issues(path)


def test_a_one_kind_config_names_the_field_in_error(tmp_path: Path) -> None:
    # A probe's field named like a kind (``host``): the key stays ``targets[0].host``.
    cfg = tmp_path / "one.yml"
    cfg.write_text(
        "agent: {site: hq}\ntargets:\n  - {name: p, kind: probe, module: tcp, host: [1], port: 1}\n"
    )
    issues = _issues(cfg)
    assert isinstance(issues, list) and issues and all(": targets[0].host: " in i for i in issues), issues


def test_only_the_kinds_used_are_built() -> None:
    probe = (
        "import json, sys\n"
        "from agent.config import load_config\n"
        "cfg = load_config('deploy/examples/demo.yml').config\n"
        "print(json.dumps({'type': type(cfg).__name__, 'kinds': sorted({t.kind for t in cfg.targets}),\n"
        "  'loaded': sorted(m for m in ('collectors.snmp', 'collectors.backup', 'collectors.ssh')\n"
        "                   if m in sys.modules)}))\n"
    )
    out = _run(probe)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"type": "AgentConfig", "kinds": ["evidence", "host", "link", "probe", "standards"], "loaded": []}


def test_a_route_of_a_kind_not_loaded_is_served_and_loads_it() -> None:
    # The backup push endpoint answers on an agent without backup targets as before (401 without
    # a token), importing the backup collector only then.
    probe = (
        "import json, sys\n"
        "from agent.plugin import HttpRequest\n"
        "from agent.registry import routes\n"
        "(r,) = routes(object())\n"
        "before = 'collectors.backup' in sys.modules\n"
        "resp = r.handler(HttpRequest('POST', '/api/v1/backup/x/success', {}, {}, b'', '127.0.0.1'))\n"
        "print(json.dumps([r.method, r.prefix, r.own_auth, before, resp.status, 'collectors.backup' in sys.modules]))\n"
    )
    out = _run(probe)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["POST", "/api/v1/backup/", True, False, 401, True]
