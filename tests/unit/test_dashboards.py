"""Grafana dashboards as code: the committed JSON is the generator's output, and every dashboard is a
valid Grafana 10 dashboard model (Grafana itself is not in the Debian archive, so the model is
checked field by field: what Grafana needs to import and render each panel)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers.promql import DASHBOARDS_DIR, ROOT

GRAFANA = ROOT / "grafana"
PANEL_TYPES = {"row", "stat", "timeseries", "table", "bargauge", "gauge", "state-timeline", "text", "piechart"}
DS = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
EXPECTED = {"estate-overview.json", "site-detail.json", "backups.json", "dr-readiness.json", "agent-health.json",
            "dr-exercise.json"}


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def test_committed_json_is_generator_output() -> None:
    rendered = _generator().render()
    committed = {p.name: p.read_text() for p in DASHBOARDS_DIR.glob("*.json")}
    assert set(rendered) == set(committed) == EXPECTED
    for name, text in rendered.items():
        assert committed[name] == text, f"grafana/dashboards/{name} is stale: run python grafana/generate.py"


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    gen = _generator()
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out", str(tmp_path)]) == 0
    f = tmp_path / "backups.json"
    f.write_text(f.read_text().replace("Backups", "Backupz"))
    assert gen.main(["--check", "--out", str(tmp_path)]) == 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_model(name: str) -> None:
    d = _dashboards()[name]
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 38  # Grafana 10.0+
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", d["uid"])
    assert d["title"] and isinstance(d["version"], int)
    assert "continuity" in d["tags"]
    assert d["time"]["from"] and d["time"]["to"]

    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == DS
            assert v["query"]["query"].startswith("label_values(")

    ids = [p["id"] for p in d["panels"]]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for p in d["panels"]:
        where = f"{name}: panel {p['id']} {p['title']!r}"
        assert p["type"] in PANEL_TYPES, where
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh"), where
        assert g["x"] >= 0 and g["y"] >= 0 and g["w"] >= 1 and g["h"] >= 1 and g["x"] + g["w"] <= 24, where
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"{where} overlaps another panel"
        occupied |= cells
        if p["type"] in ("row", "text"):
            assert "targets" not in p, where
            continue
        assert p["title"], where
        assert p["datasource"] == DS, where
        assert "defaults" in p["fieldConfig"] and isinstance(p["fieldConfig"]["overrides"], list), where
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), where
        for t in p["targets"]:
            assert t["datasource"] == DS, where
            assert isinstance(t["expr"], str) and t["expr"].strip(), where
            for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                assert var in variables or var in BUILTIN_VARS, f"{where}: undefined variable ${var}"
        steps = p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps")
        if steps:
            assert steps[0]["value"] is None, f"{where}: the first threshold step must be the base (null)"
        if p["type"] == "table":
            renamed = next(t for t in p["transformations"] if t["id"] == "organize")["options"]["renameByName"]
            assert len(renamed) == len(p["targets"]), where
            for o in p["fieldConfig"]["overrides"]:
                col = o["matcher"]["options"]
                assert col in renamed.values() or col.islower(), f"{where}: override for unknown column {col!r}"


def test_dashboard_uids_and_titles_are_unique() -> None:
    ds = _dashboards().values()
    assert len({d["uid"] for d in ds}) == len({d["title"] for d in ds}) == len(EXPECTED)


def test_site_detail_has_a_site_variable_used_by_its_panels() -> None:
    d = _dashboards()["site-detail.json"]
    site = next(v for v in d["templating"]["list"] if v["name"] == "site")
    assert not site["multi"]
    exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
    assert sum('site="$site"' in e for e in exprs) >= len(exprs) * 0.9


def test_provisioning_files() -> None:
    dsf = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "continuity.yml").read_text())
    assert dsf["apiVersion"] == 1
    (ds,) = dsf["datasources"]
    assert ds["type"] == "prometheus" and ds["access"] == "proxy" and ds["url"].startswith("http")
    dbf = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "continuity.yml").read_text())
    assert dbf["apiVersion"] == 1
    (prov,) = dbf["providers"]
    assert prov["type"] == "file" and prov["options"]["path"].startswith("/")
