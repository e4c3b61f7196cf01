"""The status page shows health, not just collection: a closed port, a missing critical process and
a stale backup are collected fine and shown as failing outcomes, in words and colour, grouped by
site, under a summary; the same facts are in /api/v1/status. Checked in headless Chromium: no
console errors, readable contrast, no link to a page that is not configured."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.chromium import DevTools
from tests.helpers.common import ROOT, agent_process, free_port, http_get, wait_until

pytestmark = pytest.mark.e2e

CONTRAST = """
(() => {
  const lum = (c) => { const v = c.match(/\\d+(\\.\\d+)?/g).slice(0, 3).map(Number).map(x => x / 255)
    .map(x => x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4));
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const bg = (el) => { for (let e = el; e; e = e.parentElement) { const b = getComputedStyle(e).backgroundColor;
    if (b && !b.startsWith('rgba(0, 0, 0, 0)')) return b; } return 'rgb(255, 255, 255)'; };
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (!el.childNodes.length || ![...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) continue;
    const a = lum(getComputedStyle(el).color), b = lum(bg(el));
    out.push([el.tagName + '.' + el.className, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]);
  }
  return out;
})()
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("status")
    port, closed = free_port(), free_port()
    backups = tmp / "dumps"
    backups.mkdir()
    dump = backups / "payroll-20260101.dump"
    dump.write_bytes(b"x" * 1000)
    old = time.time() - 5 * 86400
    os.utime(dump, (old, old))
    cfg = tmp / "agent.yml"
    cfg.write_text(
        f"""agent: {{site: county-hall, listen_address: 127.0.0.1:{port}, state_dir: {tmp / 'state'}}}
defaults: {{interval: 2s, timeout: 2s}}
sites: [{{name: county-hall}}, {{name: depot-east}}]
targets:
  - {{name: agent-self, kind: probe, module: tcp, host: 127.0.0.1, port: {port}}}
  - {{name: closed-port, kind: probe, module: tcp, host: 127.0.0.1, port: {closed}, site: depot-east}}
  - {{name: this-host, kind: host, processes: [no-such-daemon-xyz]}}
  - {{name: payroll-dumps, kind: backup, type: files, directory: {backups}, pattern: "payroll-*.dump", rpo: 24h,
      site: depot-east}}
  - {{name: dr-evidence, kind: evidence, runbooks_dir: {ROOT / 'runbooks'},
      evidence_dir: {ROOT / 'runbooks' / 'evidence'},
      interval: 1h, timeout: 60s}}
"""
    )
    with agent_process(cfg, port=port, log_dir=tmp):
        def all_collected() -> bool:
            st = json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/status")[1])
            return all(t["state"] != "pending" for t in st["targets"])

        wait_until(all_collected, timeout=90, what="every target collected once")
        yield port, tmp


def _status(port: int) -> dict:  # type: ignore[type-arg]
    return json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/status")[1])


def test_api_gives_outcome_and_summary(agent: tuple[int, Path]) -> None:
    port, _ = agent
    st = _status(port)
    t = {x["name"]: x for x in st["targets"]}
    assert t["closed-port"]["state"] == "up" and t["closed-port"]["outcome"] == {"level": "bad", "text": "probe failed"}
    assert t["agent-self"]["outcome"]["level"] == "ok"
    assert t["this-host"]["outcome"]["level"] == "bad"
    assert "no-such-daemon-xyz" in t["this-host"]["outcome"]["text"]
    assert t["payroll-dumps"]["outcome"] == {"level": "bad", "text": "backup stale"}
    assert t["payroll-dumps"]["details"]["size_bytes"] == 1000 and t["payroll-dumps"]["details"]["state"] == "stale"
    sm = st["summary"]
    assert sm["backups"] == {"total": 1, "fresh": 0, "by_state": {"stale": 1}}
    assert sm["config_reload_successful"] is True
    assert sm["dr_estate"]["objective_seconds"] == 72 * 3600
    assert sm["dr_estate"]["basis"] in ("projected", "measured", "planned")


def test_page_in_chromium(agent: tuple[int, Path]) -> None:
    port, tmp = agent
    dt = DevTools()
    try:
        dt.open(f"http://127.0.0.1:{port}/")
        assert dt.console_errors() == []
        assert all(u.startswith(f"http://127.0.0.1:{port}/") for u in dt.requests())
        rows = dt.evaluate(
            "[...document.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => [c.className, c.innerText]))"
        )
        by_name = {r[0][1]: r for r in rows}
        assert by_name["closed-port"][2] == ["bad", "BAD: probe failed"]
        assert by_name["closed-port"][3][1].startswith("collected")
        assert by_name["this-host"][2][0] == "bad"
        assert "size bytes: 1000" in by_name["payroll-dumps"][3][1]
        assert by_name["agent-self"][2][0] == "ok"
        headings = dt.evaluate("[...document.querySelectorAll('h3')].map(h => h.innerText)")
        assert headings == ["county-hall", "depot-east"]
        summary = dt.evaluate("document.querySelector('ul.summary').innerText")
        assert "Backups fresh: 0 of 1" in summary and "Config: loaded" in summary and "DR estate:" in summary
        assert "UNKNOWN" in dt.evaluate("document.querySelector('dl.legend').innerText")
        links = dt.evaluate("[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))")
        assert "/reports/" not in links  # no reports configured: no link to a 404
        low = [(el, round(c, 2)) for el, c in dt.evaluate(CONTRAST) if c < 4.5]
        assert not low, f"text below WCAG AA contrast 4.5:1: {low}"
        png = dt.screenshot()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        (tmp / "status.png").write_bytes(png)
        if os.environ.get("CONTINUITY_UPDATE_DOCS"):
            (ROOT / "docs" / "status-page.png").write_bytes(png)
    finally:
        dt.close()
