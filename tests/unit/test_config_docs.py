"""docs/configuration.md is generated from the config models' field descriptions (agent.docs), like
docs/metrics.md from the catalogue; this fails when the two disagree (run `make docs`)."""

from __future__ import annotations

from pathlib import Path

from agent.docs import render_configuration_md
from agent.registry import auth_models, collectors

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
