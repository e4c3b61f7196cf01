"""The agent makes DR reports on its cron schedule (controlled clock), exposes their metrics,
serves them read-only at /reports/, and the HTML holds up in real headless Chromium: no console
errors, no network requests beyond the page, every section in the DOM, accessible markup, and a
multi-page A4 PDF."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import load_config
from agent.reports.model import SECTIONS
from agent.service import Agent
from tests.helpers.chromium import DevTools, pdf_pages, print_to_pdf
from tests.helpers.common import free_port, http_get, wait_until
from tests.helpers.dr_estate import build_estate
from tests.helpers.schedclock import Clock, fake_datetime

EVIL = '<script>document.title="pwned"</script> Review DNS runbook'
SCHEDULED = datetime(2025, 3, 31, 7, 30, tzinfo=UTC)  # schedule "30 7 * * *"


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An agent whose clock stands at 07:29:59 — no report; then at 07:30:00 — one report."""
    root = tmp_path_factory.mktemp("reports-agent")
    est = build_estate(root, action_text=EVIL)
    port = free_port()
    cfg = root / "agent.yml"
    cfg.write_text(yaml.safe_dump({
        "agent": {"site": "hq", "listen_address": f"127.0.0.1:{port}", "state_dir": "state"},
        "reports": {"schedule": "30 7 * * *", "timezone": "UTC", "output_dir": "out",
                    "runbooks_dir": str(est.runbooks), "evidence_dir": str(est.evidence),
                    "formats": ["html", "md", "json"], "title": "Council DR <test> report"},
    }))
    clock = Clock(datetime(2025, 3, 31, 7, 29, 0, tzinfo=UTC))
    mp = pytest.MonkeyPatch()
    fake = fake_datetime(clock)
    mp.setattr("apscheduler.schedulers.base.datetime", fake)
    mp.setattr("apscheduler.executors.base.datetime", fake)
    loop = asyncio.new_event_loop()
    agent = Agent(load_config(cfg), clock=clock.time)
    out = root / "out"
    try:
        loop.run_until_complete(agent.start())
        job = agent.scheduler.get_job("reports:dr")
        assert job is not None and job.next_run_time == SCHEDULED

        def tick(t: datetime) -> None:
            clock.now = t
            agent.scheduler.wakeup()
            loop.run_until_complete(asyncio.sleep(0.2))

        tick(datetime(2025, 3, 31, 7, 29, 59, tzinfo=UTC))
        before = sorted(p.name for p in out.glob("*")) if out.exists() else []
        metrics_before = http_get(f"http://127.0.0.1:{port}/metrics")[1].decode()
        tick(SCHEDULED)

        def written() -> bool:
            loop.run_until_complete(asyncio.sleep(0.1))
            return len(list(out.glob("dr-*"))) == 3 and agent.report_job.last_success is not None

        wait_until(written, timeout=60, what="scheduled report")
        next_run = agent.scheduler.get_job("reports:dr").next_run_time
        # The event loop is idle from here on, so nothing else is scheduled; undo the patch now so
        # no other test sharing this worker process sees the fake clock.
        mp.undo()
        yield {"next_run": next_run, "agent": agent, "port": port, "out": out, "before": before,
               "metrics_before": metrics_before, "job": job, "url": f"http://127.0.0.1:{port}", "loop": loop}
    finally:
        loop.run_until_complete(agent.stop())
        loop.close()
        mp.undo()


def test_cron_schedule_makes_the_report_at_the_scheduled_time(scheduled: dict[str, Any]) -> None:
    assert scheduled["before"] == []
    assert "continuity_report_last_success_timestamp_seconds" not in scheduled["metrics_before"]
    names = sorted(p.name for p in scheduled["out"].glob("dr-*"))
    assert names == ["dr-20250331T073000Z.html", "dr-20250331T073000Z.json", "dr-20250331T073000Z.md"]
    doc = json.loads((scheduled["out"] / "dr-20250331T073000Z.json").read_text())
    assert doc["meta"]["at"] == "2025-03-31T07:30:00Z"
    assert doc["summary"]["measured_seconds"] == 22 * 3600
    # The next run is the next day at 07:30.
    assert scheduled["next_run"] == datetime(2025, 4, 1, 7, 30, tzinfo=UTC)


def test_report_metrics_exposed(scheduled: dict[str, Any]) -> None:
    status, body = http_get(scheduled["url"] + "/metrics")
    text = body.decode()
    assert status == 200
    m = re.search(r'^continuity_report_last_success_timestamp_seconds\{report="dr"\} (\S+)$', text, re.M)
    assert m and float(m.group(1)) == SCHEDULED.timestamp()
    d = re.search(r'^continuity_report_last_duration_seconds\{report="dr"\} (\S+)$', text, re.M)
    assert d and 0 < float(d.group(1)) < 60
    assert "# TYPE continuity_report_last_duration_seconds gauge" in text


def test_reports_served_read_only(scheduled: dict[str, Any]) -> None:
    url = scheduled["url"]
    status, body = http_get(url + "/reports/")
    assert status == 200 and b"dr-20250331T073000Z.html" in body
    status, body = http_get(url + "/reports/dr-20250331T073000Z.json")
    assert status == 200 and json.loads(body)["schema_version"] == 1
    for bad in ("/reports/../agent.yml", "/reports/%2e%2e/agent.yml", "/reports/..%2Fagent.yml",
                "/reports/%2Fetc%2Fpasswd", "/reports/state"):
        status, body = http_get(url + bad)
        assert status in (400, 404), bad
        assert b"listen_address" not in body and b"root:" not in body
    import urllib.request

    req = urllib.request.Request(url + "/reports/dr-20250331T073000Z.html", data=b"x", method="POST")
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("POST accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 405


DOM_CHECKS = r"""
(() => {
  const lum = (c) => {
    const m = c.match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/);
    if (!m) return null;
    const v = [m[1], m[2], m[3]].map(x => {
      x = x / 255;
      return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
    });
    return {l: 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2], a: m[4] === undefined ? 1 : +m[4]};
  };
  const bg = (el) => {
    for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
      const c = lum(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) return c.l;
    }
    return 1;
  };
  const lowContrast = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('svg')) continue;
    const text = [...el.childNodes].filter(n => n.nodeType === 3).map(n => n.textContent.trim()).join('');
    if (!text) continue;
    const fg = lum(getComputedStyle(el).color).l, b = bg(el);
    const ratio = (Math.max(fg, b) + 0.05) / (Math.min(fg, b) + 0.05);
    if (ratio < 4.5) lowContrast.push(el.tagName + ': ' + text.slice(0, 40) + ' ' + ratio.toFixed(2));
  }
  const hs = [...document.querySelectorAll('h1,h2,h3,h4,h5,h6')].map(h => +h.tagName[1]);
  const svgs = [...document.querySelectorAll('svg')].map(s => ({
    role: s.getAttribute('role'),
    label: (s.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean)
      .map(id => (document.getElementById(id) || {textContent: ''}).textContent.trim()),
    title: !!s.querySelector(':scope > title'),
  }));
  return {
    lang: document.documentElement.lang,
    title: document.title,
    sections: [...document.querySelectorAll('section.report-section')].map(s => s.id),
    sectionHeadings: [...document.querySelectorAll('section.report-section > h2')].map(h => h.textContent),
    headings: hs,
    h1: hs.filter(h => h === 1).length,
    skips: hs.filter((h, i) => i > 0 && h > hs[i - 1] + 1).length,
    thNoScope: [...document.querySelectorAll('th')]
      .filter(t => !['col', 'row'].includes(t.getAttribute('scope'))).length,
    tablesNoHeader: [...document.querySelectorAll('table')].filter(t => !t.querySelector('thead th')).length,
    tablesNoCaption: [...document.querySelectorAll('table')].filter(t => !t.querySelector('caption')).length,
    tables: document.querySelectorAll('table').length,
    svgs,
    imgNoAlt: [...document.querySelectorAll('img')].filter(i => !i.hasAttribute('alt')).length,
    emptyLinks: [...document.querySelectorAll('a')].filter(a => !a.textContent.trim()).length,
    brokenAnchors: [...document.querySelectorAll('a[href^="#"]')]
      .filter(a => !document.getElementById(a.getAttribute('href').slice(1))).length,
    scripts: document.querySelectorAll('script').length,
    evilShownAsText: document.body.innerText.includes('<script>document.title="pwned"</script>'),
    verdictText: (document.querySelector('.verdict') || {textContent: ''}).textContent.trim(),
    lowContrast,
  };
})()
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[DevTools]:
    dt = DevTools()
    try:
        yield dt
    finally:
        dt.close()


def test_html_in_headless_chromium(scheduled: dict[str, Any], browser: DevTools) -> None:
    page = scheduled["url"] + "/reports/dr-20250331T073000Z.html"
    browser.open(page)
    assert browser.console_errors() == []
    assert browser.requests() == [page]  # the page itself and nothing else
    dom = browser.evaluate(DOM_CHECKS)
    assert dom["lang"] == "en" and dom["title"].startswith("Council DR <test> report")
    assert dom["sections"] == [k for k, _ in SECTIONS]
    assert [h.split(". ", 1)[1] for h in dom["sectionHeadings"]] == [t for _, t in SECTIONS]
    assert dom["h1"] == 1 and dom["headings"][0] == 1 and dom["skips"] == 0
    assert dom["tables"] >= 8 and dom["thNoScope"] == 0 and dom["tablesNoHeader"] == 0
    assert dom["tablesNoCaption"] == 0
    assert len(dom["svgs"]) == 2
    for s in dom["svgs"]:
        assert s["role"] == "img" and s["title"] and len(s["label"]) == 2 and all(s["label"])
    assert dom["imgNoAlt"] == 0 and dom["emptyLinks"] == 0 and dom["brokenAnchors"] == 0
    assert dom["scripts"] == 0 and dom["evilShownAsText"] is True
    assert dom["verdictText"].startswith(("GREEN", "AMBER", "RED"))  # the verdict in words, not only colour
    assert dom["lowContrast"] == []
    pdf = browser.print_pdf()
    assert pdf.startswith(b"%PDF") and pdf_pages(pdf) > 1


def test_print_to_pdf_cli_gives_a_page_per_section(scheduled: dict[str, Any], tmp_path: Path) -> None:
    html = scheduled["out"] / "dr-20250331T073000Z.html"
    pdf = print_to_pdf(html.as_uri(), tmp_path / "report.pdf")
    assert pdf.startswith(b"%PDF")
    # Each of the 8 sections starts a new A4 page.
    assert pdf_pages(pdf) >= len(SECTIONS)
    boxes = re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf)
    assert boxes and all(abs(float(w) - 595.9) < 2 and abs(float(h) - 842.9) < 2 for w, h in boxes)  # A4 points


@pytest.mark.parametrize("case", ["no_evidence", "at_73h"])
def test_gap_reports_render_in_chromium(case: str, tmp_path: Path, browser: DevTools) -> None:
    from agent.reports.model import BuildContext, build_report
    from agent.reports.render import render_html
    from agent.reports.runner import read_evidence
    from tests.helpers.dr_estate import AT

    est = build_estate(tmp_path, with_evidence=case != "no_evidence", email_restored_h=73.0)
    ev = read_evidence(est.runbooks, est.evidence, AT)
    r = build_report(BuildContext(evidence=ev, at=AT, period_seconds=86400.0))
    page = tmp_path / "r.html"
    page.write_text(render_html(r))
    browser.open(page.as_uri())
    assert browser.console_errors() == []
    assert browser.requests() == [page.as_uri()]
    dom = browser.evaluate(DOM_CHECKS)
    assert dom["sections"] == [k for k, _ in SECTIONS] and dom["lowContrast"] == [] and dom["thNoScope"] == 0
    text = browser.evaluate("document.body.innerText")
    assert "RED" in dom["verdictText"]
    if case == "no_evidence":
        assert "No recovery evidence found" in text and len(dom["svgs"]) == 1  # the graph; no Gantt
    else:
        assert "OBJECTIVE EXCEEDED" in text and "measured recovery time 73 h exceeds the 72 h objective" in text


def test_shipped_example_fits_a4_width_in_print(tmp_path: Path, browser: DevTools) -> None:
    from agent.cli import main

    root = Path(__file__).resolve().parents[2]
    page = tmp_path / "example.html"
    rc = main(["report", "dr", "--config", str(root / "tests" / "fixtures" / "reports" / "example.yml"),
               "--at", "2026-07-01T09:00:00Z", "--format", "html", "--output", str(page)])
    assert rc in (0, 1)
    browser.open(page.as_uri())
    assert browser.console_errors() == [] and browser.requests() == [page.as_uri()]
    # A4 minus the 14 mm side margins of the print CSS is 182 mm = 688 CSS px.
    browser.send("Emulation.setEmulatedMedia", {"media": "print"})
    browser.send("Emulation.setDeviceMetricsOverride", {"width": 688, "height": 1000, "deviceScaleFactor": 1,
                                                        "mobile": False})
    wide = browser.evaluate(
        "[...document.querySelectorAll('table, figure, p, h2')]"
        ".filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)"
        ".map(e => e.tagName + ': ' + e.textContent.slice(0, 40))"
    )
    assert wide == []
    dom = browser.evaluate(DOM_CHECKS)
    assert dom["sections"] == [k for k, _ in SECTIONS] and dom["lowContrast"] == [] and dom["thNoScope"] == 0
    pdf = browser.print_pdf()
    assert pdf_pages(pdf) >= len(SECTIONS)
