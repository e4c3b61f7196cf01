"""Hostile config files: whatever bytes or YAML structure the config holds, load_config returns a
config or raises ConfigError whose issues are one line each and name the file — never another
exception, never a traceback from check-config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.config import ConfigError, load_config
from collectors.registry import auth_models, collectors

KINDS = sorted(collectors())
FIELDS = sorted({f for c in collectors().values() for f in c.config_model.model_fields} - {"kind", "name"})
AUTH_TYPES = sorted(auth_models())
AUTH_FIELDS = sorted({f for m in auth_models().values() for f in m.model_fields} - {"type"})

_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["30s", "5m", "P3D", "-1s", "0", "127.0.0.1", "http://127.0.0.1:1/", "${NOPE_UNSET}", "tcp"]),
    st.sampled_from(KINDS),
)
_value = st.recursive(
    _scalar,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
    max_leaves=8,
)
_target = st.fixed_dictionaries(
    {"name": st.text(max_size=12) | st.just("t1"), "kind": st.sampled_from(KINDS) | st.text(max_size=6)},
    optional={f: _value for f in FIELDS},
)
_auth = st.fixed_dictionaries({"type": st.sampled_from(AUTH_TYPES) | st.text(max_size=6)},
                              optional={f: _value for f in AUTH_FIELDS})  # fmt: skip
_doc = st.fixed_dictionaries(
    {},
    optional={
        "agent": st.fixed_dictionaries(
            {}, optional={"site": _scalar, "listen_address": _scalar, "state_dir": _scalar, "retention": _scalar,
                          "max_workers": _scalar, "secret_file_mode": _scalar, "bogus": _scalar}
        ) | _value,
        "defaults": st.dictionaries(st.sampled_from(["interval", "timeout", "start_jitter", "x"]), _scalar) | _value,
        "sites": st.lists(st.dictionaries(st.sampled_from(["name", "class", "description"]), _scalar), max_size=2),
        "auths": st.dictionaries(st.text(max_size=6), _auth, max_size=2) | _value,
        "targets": st.lists(_target, max_size=3) | _value,
        "unknown": _value,
    },
)  # fmt: skip


def _check(path: Path) -> None:
    try:
        loaded = load_config(path)
    except ConfigError as e:
        assert e.issues
        for issue in e.issues:
            text = str(issue)
            assert text.startswith(str(path)), text
            assert "\n" not in text and "Traceback" not in text
        return
    assert loaded.config.agent.site


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(doc=_doc)
def test_any_structure_is_a_config_or_clear_issues(doc: dict[str, Any], tmp_path: Path) -> None:
    p = tmp_path / "agent.yml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _check(p)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=400))
def test_any_bytes_are_a_config_or_clear_issues(raw: bytes, tmp_path: Path) -> None:
    p = tmp_path / "agent.yml"
    p.write_bytes(raw)
    _check(p)


@pytest.mark.parametrize(
    "text",
    [
        "a: &a [*a, *a]\n",  # recursive alias
        "l1: &l1 [a,a,a]\nl2: &l2 [*l1,*l1,*l1]\nl3: [*l2,*l2]\n",  # alias fan-out
        "agent: !!python/object/apply:os.system ['echo pwned']\n",
        "agent: {site: " + "a" * 100_000 + "}\n",
        "\ufeffagent: {site: hq}\n",
        "agent: {site: hq}\ntargets: [" + ",".join(["{name: t, kind: host}"] * 3) + "]\n",
        "[" * 5000,
    ],
)
def test_nasty_yaml(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "agent.yml"
    p.write_text(text)
    _check(p)
    rc = main(["check-config", str(p)])
    err = capsys.readouterr().err
    assert rc in (0, 2) and "Traceback" not in err and "pwned" not in err
