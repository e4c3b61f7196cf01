"""docs/configuration.md is generated from the config models' field descriptions (agent.docs), like
docs/metrics.md from the catalogue; this fails when the two disagree (run `make docs`)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.config import AgentConfig
from agent.docs import render_configuration_md
from agent.registry import auth_models, collectors
from agent.webconfig import WebConfigModel

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_md_is_current() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == render_configuration_md(), "run `make docs`"


def test_every_kind_auth_and_section_has_its_table() -> None:
    text = render_configuration_md()
    for kind in collectors():
        assert f"### `kind: {kind}`" in text
    for tag in auth_models():
        assert f"### `type: {tag}`" in text
    for section in ("agent", "defaults", "sites", "site_classes", "reports", "exercises", "targets[]"):
        assert f"## `{section}`" in text
    # Descriptions come from Field(description=...): one from the core, one from a collector.
    assert "| `agent.state_dir` | path | `state` | SQLite results and history. |" in text
    assert "| `throughput.omit` | duration | `1s` | iperf3 -O: seconds of TCP ramp-up not counted. |" in text


def test_web_config_has_its_own_section_with_every_key() -> None:
    text = render_configuration_md()
    section = text[text.index("## Web config (`--web.config.file`)") :]
    for name, field in WebConfigModel.model_fields.items():
        assert f"| `{name}` |" in section
        nested = typing.get_args(field.annotation)[0]
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            for sub in nested.model_fields:
                assert f"| `{name}.{sub}` |" in section, f"{name}.{sub}"
    # The inline key is a pydantic SecretStr: shown as a string with an empty default; the rate
    # limit's interval is parsed as Go parses durations.
    assert "| `tls_server_config.key` | string | `\"\"` |" in section
    assert "| `rate_limit.interval` | Go duration |" in section


def _models_in(ann: Any) -> Iterator[type[BaseModel]]:
    """Every model a field annotation holds: directly, in a list, a mapping, a union or Annotated."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        yield ann
        return
    for arg in typing.get_args(ann):
        yield from _models_in(arg)


def _undescribed(roots: list[type[BaseModel]]) -> tuple[list[str], set[type[BaseModel]]]:
    """(`module.Model.field` of every field without a description, every model reached) from roots."""
    seen: set[type[BaseModel]] = set()
    missing: list[str] = []
    todo = list(roots)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                missing.append(f"{model.__module__}.{model.__qualname__}.{name}")
            todo.extend(_models_in(field.annotation))
    return sorted(missing), seen


def _config_roots() -> list[type[BaseModel]]:
    return [AgentConfig, *(c.config_model for c in collectors().values()), *auth_models().values(), WebConfigModel]


def test_every_config_field_has_a_description() -> None:
    missing, _ = _undescribed(_config_roots())
    assert not missing, "config fields without Field(description=...): " + ", ".join(missing)


def test_the_walk_reaches_nested_models_and_finds_a_missing_description() -> None:
    _, seen = _undescribed(_config_roots())
    names = {m.__name__ for m in seen}
    # Nested in lists, optional fields, mappings and the discriminated auth/target unions.
    for name in ("AgentSection", "Site", "ServiceHours", "OidMapping", "EvidenceConfig", "SshAuth", "SnmpV3Auth"):
        assert name in names, name

    class Inner(BaseModel):
        bare: int = 0

    class Outer(BaseModel):
        described: str = Field(default="", description="Has one.")
        inner: dict[str, list[Inner]] | None = Field(default=None, description="Has one too.")

    missing, _ = _undescribed([Outer])
    assert missing == [f"{__name__}.{Inner.__qualname__}.bare"]
