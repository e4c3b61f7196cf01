"""DR report: model, gaps, escaping, SVG, palette contrast, schema, config, retention, /reports/."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest

from agent.catalogue import catalogue
from agent.reports import svg
from agent.reports.config import ReportsConfig
from agent.reports.model import SECTIONS, BuildContext, Report, build_report
from agent.reports.render import PALETTE, render_html, render_json, render_md
from agent.reports.runner import prune, read_evidence, stamp, write_dated
from agent.reports.schema import render as render_schema
from agent.state import Result, StateStore
from collectors.base import HttpRequest, Sample
from tests.helpers.dr_estate import AT, build_estate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "agent" / "schemas" / "report.schema.json"
DAY = 86400.0


def make(tmp: Path, *, store: Any = None, config: Any = None, **kw: Any) -> Report:
    est = build_estate(tmp, **kw)
    ev = read_evidence(est.runbooks, est.evidence, AT)
    return build_report(
        BuildContext(evidence=ev, at=AT, period_seconds=30 * DAY, store=store, config=config, generated_at=AT)
    )


def all_formats(report: Report) -> dict[str, str]:
    return {"html": render_html(report), "md": render_md(report), "json": render_json(report)}


def validate(doc: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(doc)


# -- contents ------------------------------------------------------------------------------------


def test_passing_exercise_figures_come_from_the_verifier(tmp_path: Path) -> None:
    r = make(tmp_path)
    assert r.evidence is not None
    cp = r.evidence["critical_path"]
    assert r.summary.measured_seconds == cp["measured_seconds"] == 22 * 3600
    assert r.summary.planned_seconds == cp["planned_seconds"]
    assert r.summary.projected_seconds == cp["projected_seconds"]
    by = {s.runbook: s for s in r.systems}
    for vs in r.evidence["systems"]:
        assert by[vs["runbook"]].achieved_rto_seconds == vs["achieved_rto_seconds"]
        assert by[vs["runbook"]].within_rto == vs["within_rto"]
        assert by[vs["runbook"]].valid_until == vs["valid_until"]
    # mapping was never tested: out of policy, in coverage gaps, verdict not green.
    assert by["mapping"].in_policy is False and "never tested" in by["mapping"].policy_reasons
    assert r.coverage.never_tested == ["mapping"]
    assert r.coverage.tier1_missing_from_last_exercise == []
    assert r.summary.verdict == "amber"
    assert r.summary.systems_in_policy == 4 and r.summary.systems_out_of_policy == 1
    # Timeline: critical path through the dependency chain, email last.
    assert r.timeline.critical_path == ["core-network", "active-directory", "email"]
    assert [s.runbook for s in r.timeline.systems if s.critical] == ["core-network", "active-directory", "email"]
    # Actions: the overdue one first, the closed one absent.
    assert [(a.id, a.overdue) for a in r.actions] == [("ACT-1", True), ("ACT-3", False)]
    assert r.actions[0].days_overdue == 10 and r.actions[0].exercise == "ex-2025-03-major-incident"
    assert r.integrity.evidence_chain_head_sha256 == r.evidence["chain"]["head_sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", r.integrity.evidence_chain_head_sha256 or "")
    validate(r.to_dict())


def test_system_restored_at_73h_is_red_with_reasons(tmp_path: Path) -> None:
    r = make(tmp_path, email_restored_h=73.0)
    assert r.summary.verdict == "red"
    assert r.summary.measured_seconds == 73 * 3600
    assert any("measured recovery time 73 h exceeds the 72 h objective" in x for x in r.summary.reasons)
    email = next(s for s in r.systems if s.runbook == "email")
    assert email.within_rto is False and not email.in_policy
    assert "rto_exceeded" in {f.rule for f in email.open_findings}
    out = all_formats(r)
    assert "OBJECTIVE EXCEEDED" in out["html"] and "RTO EXCEEDED" in out["html"]
    assert "| Measured | 73 h | 72 h | NO |" in out["md"]
    validate(json.loads(out["json"]))


def test_no_evidence_at_all_states_the_gaps(tmp_path: Path) -> None:
    r = make(tmp_path, with_evidence=False)
    assert r.summary.verdict == "red"
    assert "No recovery evidence found." in r.gaps["summary"]
    assert r.timeline.exercise is None and r.gaps["timeline"]
    assert r.actions == [] and r.gaps["actions"]
    assert r.integrity.evidence_chain_head_sha256 is None and r.gaps["integrity"]
    assert all(not s.in_policy for s in r.systems)
    out = all_formats(r)
    for text in out.values():
        assert "No recovery evidence found" in text
    validate(json.loads(out["json"]))


def test_nothing_configured_still_renders(tmp_path: Path) -> None:
    ev = read_evidence(None, None, AT)
    r = build_report(BuildContext(evidence=ev, at=AT, period_seconds=DAY))
    out = all_formats(r)
    assert r.summary.verdict == "red"
    assert "No runbooks found" in out["html"] and "No runbooks found" in out["md"]
    validate(json.loads(out["json"]))


def test_unreadable_evidence_is_a_stated_gap(tmp_path: Path) -> None:
    # Lenient verification: the bad record is an invalid_record finding and a stated gap, and the
    # rest of the evidence is still verified (one bad file no longer hides the whole estate).
    est = build_estate(tmp_path)
    good = build_report(BuildContext(evidence=read_evidence(est.runbooks, est.evidence, AT), at=AT, period_seconds=DAY))
    (est.evidence / "999-broken.yml").write_text("runbook: email\nresult: [unclosed\n")
    r = build_report(BuildContext(evidence=read_evidence(est.runbooks, est.evidence, AT), at=AT, period_seconds=DAY))
    assert r.evidence is not None and r.summary.verdict == "red"
    assert any("could not be verified" in g and "999-broken.yml: invalid YAML" in g for g in r.gaps["summary"])
    assert any("999-broken.yml" in x for x in r.summary.reasons)
    bad = [f for f in r.findings if f.rule == "invalid_record"]
    assert [(f.severity, f.record) for f in bad] == [("error", "999-broken.yml")]
    assert bad[0].message.startswith("999-broken.yml: invalid YAML") and r.problems == [bad[0].message]
    assert r.timeline == good.timeline and r.summary.measured_seconds == good.summary.measured_seconds
    assert [(s.runbook, s.in_policy) for s in r.systems] == [(s.runbook, s.in_policy) for s in good.systems]
    assert r.integrity.verifier_ok is False and r.summary.errors == good.summary.errors + 1
    html = render_html(r)
    assert "999-broken.yml" in html and "invalid_record" in html


def test_unverified_evidence_shows_no_second_opinion(tmp_path: Path) -> None:
    # The exercise, its critical path and the within-RTO verdicts come from the verifier only:
    # when it cannot run (here: the runbooks directory is gone), the report states the gap
    # instead of recomputing them from the records.
    est = build_estate(tmp_path)
    good = build_report(BuildContext(evidence=read_evidence(est.runbooks, est.evidence, AT), at=AT, period_seconds=DAY))
    assert good.timeline.exercise is not None  # the estate has a joint exercise
    est.runbooks.rename(tmp_path / "moved")
    r = build_report(BuildContext(evidence=read_evidence(est.runbooks, est.evidence, AT), at=AT, period_seconds=DAY))
    assert r.evidence is None and r.summary.verdict == "red"
    assert r.timeline.exercise is None and r.timeline.systems == [] and r.timeline.critical_path == []
    assert r.gaps["timeline"] == ["The evidence could not be verified, so no exercise is shown."]
    assert r.systems == [] and r.actions == [] and r.summary.measured_seconds is None
    assert any("runbooks directory does not exist" in g for g in r.gaps["summary"])


def test_bad_runbook_and_record_are_findings_and_report_dr_refuses_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    est = build_estate(tmp_path)
    good = read_evidence(est.runbooks, est.evidence, AT)
    (est.runbooks / "zz.yml").write_text("id: zz\nname: x\n")  # schema-invalid runbook
    (est.evidence / "998-schema.yml").write_text("runbook: email\nresult: maybe\n")  # schema-invalid record
    ev = read_evidence(est.runbooks, est.evidence, AT)
    r = build_report(BuildContext(evidence=ev, at=AT, period_seconds=DAY))
    bad = [f for f in r.findings if f.rule in ("invalid_runbook", "invalid_record")]
    assert {(f.rule, f.runbook, f.record) for f in bad} == {
        ("invalid_runbook", "zz", None), ("invalid_record", None, "998-schema.yml")}
    # Input problems are the same lines as the findings, each as `evidence verify` prints it.
    assert sorted(r.problems) == sorted(f.message for f in bad) and len(bad) == 10
    assert any(p.startswith(f"{est.runbooks / 'zz.yml'}: owner: ") for p in r.problems)
    assert any(p.startswith("998-schema.yml: result: ") for p in r.problems)
    # The bad runbook is no system; the good ones are verified as before.
    assert good.verification is not None and ev.verification is not None
    assert [s.to_json() for s in ev.verification.systems] == [s.to_json() for s in good.verification.systems]
    assert "files left out of the verification (unreadable or invalid): 998-schema.yml, zz.yml" in r.summary.reasons
    # `report dr` (strict) exits 2 with one line per problem, like `evidence verify`.
    cfg = tmp_path / "agent.yml"
    cfg.write_text(json.dumps({"agent": {"site": "hq", "state_dir": str(tmp_path / "state")},
                               "reports": {"runbooks_dir": str(est.runbooks), "evidence_dir": str(est.evidence),
                                           "schedule": None}}))
    capsys.readouterr()
    rc = main(["report", "dr", "--config", str(cfg), "--at", AT.isoformat(), "--format", "md",
               "--output", str(tmp_path / "r.md")])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "r.md").exists()
    assert sorted(err.splitlines()) == sorted(f"continuity-agent: {p}" for p in r.problems)
    rc = main(["evidence", "verify", "--runbooks", str(est.runbooks), "--evidence", str(est.evidence)])
    assert rc == 2 and "zz.yml: owner: " in capsys.readouterr().err


def test_script_in_evidence_is_escaped(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script> | <img src=x onerror=alert(1)>'
    r = make(tmp_path, action_text=evil)
    out = all_formats(r)
    for fmt in ("html", "md"):
        assert "<script>" not in out[fmt] and "<img" not in out[fmt]
        assert "&lt;script&gt;alert(" in out[fmt]
    assert "\\| &lt;img" in out["md"]  # the pipe cannot break the Markdown table
    assert json.loads(out["json"])["actions"][0]["description"] == evil  # JSON keeps the data as data


def test_backups_and_sites_from_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state", clock=lambda: AT.timestamp())
    now = AT.timestamp()

    def put(target: str, site: str, samples: list[Sample], ok: bool = True, started: float = now - 60) -> None:
        store.put(Result(target, "", "backup", site, started, 1.0, ok, samples=samples))

    put("ad-systemstate", "hq", [
        Sample("continuity_backup_state", 1, {"backup": "ad-systemstate", "state": "fresh"}),
        Sample("continuity_backup_last_success_timestamp_seconds", now - 3600, {"backup": "ad-systemstate"}),
    ])
    put("exchange-db", "hq", [
        Sample("continuity_backup_state", 1, {"backup": "exchange-db", "state": "stale"}),
        Sample("continuity_backup_last_success_timestamp_seconds", now - 3 * DAY, {"backup": "exchange-db"}),
    ])
    put("orphan-backup", "hq", [Sample("continuity_backup_state", 1, {"backup": "orphan", "state": "fresh"})])
    # History in the period for one link target: 1 failure in 4 runs.
    for i, ok in enumerate((True, False, True, True)):
        put("link-library", "library", [], ok=ok, started=now - (i + 2) * 3600)
    for site, met, avail in (("library", 0.0, 0.91), ("depot", 1.0, 0.999)):
        put(f"link-{site}", site, [
            Sample("continuity_site_standard_met", met, {"criterion": "download", "class": "branch"}),
            Sample("continuity_site_standard_met", 1.0, {"criterion": "rtt", "class": "branch"}),
            Sample("continuity_site_availability_ratio", avail, {"window": "service_hours_30d"}),
        ])
    store.flush()
    try:
        r = make(tmp_path, store=store)
    finally:
        store.close()
    by = {s.runbook: s for s in r.systems}
    ad, email = by["active-directory"], by["email"]
    assert ad.backups[0].state == "fresh" and ad.backups[0].rpo_met is True and ad.rpo_met is True
    assert email.backups[0].state == "stale" and email.backups[0].rpo_met is False
    assert not email.in_policy and "backup RPO not met: exchange-db" in email.policy_reasons
    assert r.summary.verdict == "red"  # a tier-1 system is out of policy
    assert "orphan" in r.coverage.backups_not_linked
    assert "intranet-files" in r.coverage.unknown_backups_in_runbooks
    assert [s.site for s in r.sites] == ["library", "depot"]  # worst first
    lib = r.sites[0]
    assert lib.all_met is False and lib.criteria_failed == 1 and lib.site_class == "branch"
    assert lib.availability_service_hours == 0.91
    html = render_html(r)
    assert "NOT MET" in html and "91.00 %" in html


def test_no_history_for_the_period(tmp_path: Path) -> None:
    from agent.config import AgentConfig

    cfg = AgentConfig.model_validate(
        {"agent": {"site": "hq"}, "sites": [{"name": "hq"}, {"name": "library", "class": "branch"}],
         "targets": [{"name": "lib-http", "kind": "probe", "module": "tcp", "host": "127.0.0.1", "port": 9,
                      "site": "library"}]}
    )
    store = StateStore(tmp_path / "state", clock=lambda: AT.timestamp())
    # Results older than the period do not count.
    store.put(Result("lib-http", "", "probe", "library", AT.timestamp() - 90 * DAY, 0.1, True))
    store.flush()
    try:
        r = make(tmp_path, store=store, config=cfg)
    finally:
        store.close()
    assert any(g.startswith("No history for the period") for g in r.gaps["coverage"])
    assert r.coverage.targets_without_history == ["lib-http"]
    assert r.sites[0].site == "library" and r.sites[0].runs_period == 0
    assert any("No history for the period" in g for g in r.gaps["sites"])
    out = all_formats(r)
    assert "No history for the period" in out["html"] and "No history for the period" in out["md"]


def test_unavailable_targets_over_threshold(tmp_path: Path) -> None:
    from agent.config import AgentConfig

    cfg = AgentConfig.model_validate(
        {"agent": {"site": "hq"},
         "targets": [{"name": n, "kind": "probe", "module": "tcp", "host": "127.0.0.1", "port": 9} for n in "ab"]}
    )
    store = StateStore(tmp_path / "state", clock=lambda: AT.timestamp())
    for i in range(20):
        store.put(Result("a", "", "probe", "hq", AT.timestamp() - (i + 1) * 3600, 0.1, i != 0))  # 5 % down
        store.put(Result("b", "", "probe", "hq", AT.timestamp() - (i + 1) * 3600, 0.1, i > 1))  # 10 % down
    store.flush()
    try:
        r = make(tmp_path, store=store, config=cfg)
    finally:
        store.close()
    assert [(u.target, u.unavailable_ratio, u.runs) for u in r.coverage.unavailable_targets] == [("b", 0.1, 20)]


def test_every_section_in_html_and_md(tmp_path: Path) -> None:
    out = all_formats(make(tmp_path))
    for key, title in SECTIONS:
        assert f'<section class="report-section" id="{key}"' in out["html"]
        assert re.search(rf"^## \d\. {re.escape(title)}$", out["md"], re.M), title
    assert out["html"].count("<svg") == 2


# -- SVG -----------------------------------------------------------------------------------------


def test_gantt_marks_rto_objective_and_critical_path() -> None:
    rows = [
        svg.GanttRow("Core <net>", [svg.GanttBar("power & cooling", 0, 3600)], rto_at=8 * 3600, critical=True,
                     verdict="within RTO"),
        svg.GanttRow("Intranet", [svg.GanttBar("web", 3600, 7200, ok=False)], rto_at=48 * 3600, verdict="x"),
    ]
    out = svg.gantt(rows, objective=72 * 3600, title="T <1>", desc="D")
    assert out.startswith('<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="gantt-title')
    assert "<title id=\"gantt-title\">T &lt;1&gt;</title>" in out
    assert "Core &lt;net&gt;" in out and "power &amp; cooling" in out and "<net>" not in out
    assert out.count("<path d=") == 2  # one RTO diamond per row
    assert "Objective 72 h" in out and 'stroke-dasharray="6 4"' in out
    assert 'aria-label="Core &lt;net&gt; (critical path). within RTO"' in out
    assert "url(#gantt-hatch)" in out  # a failed step is hatched, not only coloured


def test_layered_layout_and_cycles() -> None:
    lay = svg.layered_layout(["a", "b", "c", "d"], {"b": ["a"], "c": ["b", "a"], "d": ["a"]})
    assert lay.layers == [["a"], ["b", "d"], ["c"]]
    cyc = svg.layered_layout(["x", "y"], {"x": ["y"], "y": ["x"]})
    assert sorted(n for layer in cyc.layers for n in layer) == ["x", "y"]
    out = svg.dependency_graph([svg.GraphNode("x", "X"), svg.GraphNode("y", "Y")], {"x": ["y"], "y": ["x"]},
                               title="t", desc="d")
    assert out.count("<line") == 2


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_contrast_formula() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


@pytest.mark.parametrize("name", sorted(PALETTE))
def test_palette_meets_wcag_aa(name: str) -> None:
    fg, bg = PALETTE[name]
    assert contrast(fg, bg) >= 4.5, f"{name}: {fg} on {bg} is {contrast(fg, bg):.2f}:1"


def test_html_uses_only_the_palette(tmp_path: Path) -> None:
    html = render_html(make(tmp_path))
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    text_colours = set(re.findall(r"(?<![-\w])color:\s*(#[0-9a-fA-F]{6})", style))
    assert text_colours <= {fg for fg, _ in PALETTE.values()}


# -- schema --------------------------------------------------------------------------------------


def test_published_schema_is_generated_from_the_model() -> None:
    assert SCHEMA_PATH.read_text() == render_schema(), "run: python -m agent.reports.schema > " + str(SCHEMA_PATH)
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_schema_rejects_a_wrong_report(tmp_path: Path) -> None:
    doc = make(tmp_path).to_dict()
    bad = json.loads(json.dumps(doc))
    bad["summary"]["verdict"] = "purple"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    bad = json.loads(json.dumps(doc))
    bad["systems"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    bad = json.loads(json.dumps(doc))
    del bad["evidence"]["critical_path"]["measured_seconds"]
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)


# -- config, files, retention ---------------------------------------------------------------------


def _load_cfg(tmp_path: Path, reports: dict[str, Any]) -> Any:
    import yaml

    from agent.config import load_config

    p = tmp_path / "agent.yml"
    p.write_text(yaml.safe_dump({"agent": {"site": "hq"}, "reports": reports}))
    return load_config(p)


def test_reports_config_resolves_paths_and_checks_cron(tmp_path: Path) -> None:
    from agent.config import ConfigError

    loaded = _load_cfg(tmp_path, {"schedule": "0 7 1 * *", "output_dir": "out", "runbooks_dir": "rb",
                                  "evidence_dir": "/abs/ev", "formats": ["html", "json"], "retention": "400d"})
    rep = loaded.config.reports
    assert rep.output_dir == tmp_path / "out" and rep.runbooks_dir == tmp_path / "rb"
    assert rep.evidence_dir == Path("/abs/ev") and rep.retention == 400 * DAY
    for bad, key, msg in (
        ({"schedule": "61 * * * *"}, "reports.schedule", "not a valid crontab line"),
        ({"schedule": "@daily"}, "reports.schedule", "5-field crontab"),
        ({"schedule": "0 9 31 2 *"}, "reports.schedule", "schedule '0 9 31 2 *' never fires"),
        ({"schedule": "0 9 31 4,6,9,11 *"}, "reports.schedule", "never fires"),
        ({"formats": ["pdf"]}, "reports.formats[0]", ""),
        ({"formats": ["md", "md"]}, "reports.formats", "once"),
        ({"timezone": "Mars/Olympus"}, "reports.timezone", "unknown time zone"),
        ({"bogus": 1}, "reports.bogus", ""),
    ):
        with pytest.raises(ConfigError) as ei:
            _load_cfg(tmp_path, bad)
        issue = ei.value.issues[0]
        assert issue.key == key and msg in issue.message, (bad, issue)
    # Rare is not never: 29 February on a Monday (next in 2044).
    assert _load_cfg(tmp_path, {"schedule": "0 0 29 2 1"}).config.reports.schedule == "0 0 29 2 1"


def test_write_dated_and_prune(tmp_path: Path) -> None:
    r = make(tmp_path / "e")
    out = tmp_path / "out"
    t = AT
    written = []
    for i in range(5):
        written += write_dated(r, out, ["html", "json"], t - timedelta(days=100 * i))
    assert len(list(out.iterdir())) == 10 and written[0].name == f"dr-{stamp(AT)}.html"
    (out / "notes.txt").write_text("keep me")
    removed = prune(out, retention=250 * DAY, keep_min=2, now=AT.timestamp())
    # Runs at 0, 100, 200 days are kept (200 < 250), 300 and 400 go.
    assert sorted(p.name for p in removed) == sorted(
        f"dr-{stamp(AT - timedelta(days=d))}.{e}" for d in (300, 400) for e in ("html", "json")
    )
    # keep_min wins over retention.
    assert len(prune(out, retention=0, keep_min=3, now=AT.timestamp())) == 0
    assert (out / "notes.txt").exists()


# -- /reports/ -----------------------------------------------------------------------------------


class _FakeAgent:
    def __init__(self, cfg: Any) -> None:
        self.loaded = type("L", (), {"config": cfg})()


def _req(path: str) -> HttpRequest:
    return HttpRequest("GET", path, {}, {}, b"", "127.0.0.1")


def test_reports_route_lists_serves_and_refuses_traversal(tmp_path: Path) -> None:
    from agent.reports.service import reports_handler

    out = tmp_path / "out"
    out.mkdir()
    (out / "dr-20250331T090000Z.html").write_text("<p>report</p>")
    (out / "a&<b>.json").write_text("{}")
    (out / ".hidden").write_text("x")
    (tmp_path / "secret.txt").write_text("secret")
    (out / "link.txt").symlink_to(tmp_path / "secret.txt")
    (out / "sub").mkdir()
    cfg = type("C", (), {"reports": ReportsConfig(output_dir=out)})()
    h = reports_handler(_FakeAgent(cfg))
    listing = h(_req("/reports/"))
    assert listing.status == 200 and b"dr-20250331T090000Z.html" in listing.body
    assert b"a&amp;&lt;b&gt;.json" not in listing.body and b"a&<b>" not in listing.body  # not a report's name
    assert b".hidden" not in listing.body and b"link.txt" not in listing.body
    got = h(_req("/reports/dr-20250331T090000Z.html"))
    assert got.status == 200 and got.body == b"<p>report</p>" and got.content_type.startswith("text/html")
    assert "default-src 'none'" in got.headers["Content-Security-Policy"]
    assert h(_req("/reports")).status == 301
    for bad in ("/reports/../secret.txt", "/reports/..", "/reports//etc/passwd", "/reports/link.txt",
                "/reports/.hidden", "/reports/sub", "/reports/sub/../dr-20250331T090000Z.html",
                "/reports/missing.html", "/reports/x\x00y", "/reportsx", "/reports/..%2fsecret.txt",
                "/reports/a&<b>.json"):
        resp = h(_req(bad))
        assert resp.status == 404, bad
        assert b"secret" not in resp.body
    off = type("C", (), {"reports": None})()
    assert reports_handler(_FakeAgent(off))(_req("/reports/")).status == 404


def test_report_metrics_are_declared() -> None:
    """Declared and exposed: tests/unit/test_report_watch.py runs the real job for every metric."""
    from agent.reports.metrics import REPORT_METRICS
    from agent.reports.service import ReportJob, ReportMetrics

    cat = catalogue()
    for spec in REPORT_METRICS:
        assert cat[spec.name] == spec
    agent = SimpleNamespace(store=StateStore(None), clock=time.time)
    job = ReportJob(agent)
    assert list(ReportMetrics(job).collect()) == []  # no schedule, no run yet: nothing
    job.last_success, job.last_duration, job.last_run_ok = time.time(), 1.5, True
    fams = list(ReportMetrics(job).collect())
    # No schedule: when and how long the last report took, not its outcome (DRReportFailed is about
    # scheduled reports; the scheduled case is in test_report_watch.py).
    assert {f.name for f in fams} == {
        "continuity_report_last_success_timestamp_seconds", "continuity_report_last_duration_seconds",
    }
    for f in fams:
        for s in f.samples:
            assert s.name in cat and set(s.labels) == set(cat[s.name].labels)


def test_replace_keeps_report_dataclass_frozen_free(tmp_path: Path) -> None:
    r = make(tmp_path)
    r2 = replace(r, problems=["x"])
    assert r2.problems == ["x"] and r.problems == []


def test_generated_at_defaults_to_now(tmp_path: Path) -> None:
    est = build_estate(tmp_path)
    r = build_report(BuildContext(evidence=read_evidence(est.runbooks, est.evidence, AT), at=AT, period_seconds=DAY))
    assert abs(datetime.fromisoformat(r.meta.generated_at.replace("Z", "+00:00")).timestamp() - time.time()) < 60
    assert r.meta.at == "2025-03-31T09:00:00Z"
    assert datetime.fromisoformat(r.meta.period_start.replace("Z", "+00:00")) == AT - timedelta(days=1)
    assert datetime.fromisoformat(r.meta.period_start.replace("Z", "+00:00")).tzinfo == UTC


def test_sources_fall_back_to_the_evidence_target(tmp_path: Path) -> None:
    import yaml

    from agent.config import load_config
    from agent.reports.model import _configured_backups
    from agent.reports.runner import sources

    (tmp_path / "rb").mkdir()
    (tmp_path / "ev").mkdir()
    p = tmp_path / "agent.yml"
    p.write_text(yaml.safe_dump({
        "agent": {"site": "hq"},
        "targets": [
            {"name": "dr-evidence", "kind": "evidence", "runbooks_dir": "rb", "evidence_dir": "ev"},
        ],
        "reports": {"evidence_dir": "other-ev"},
    }))
    cfg = load_config(p).config
    src = sources(cfg)
    assert src.runbooks_dir == tmp_path / "rb" and src.evidence_dir == tmp_path / "other-ev"
    # Backup targets: the `backup` label value, defaulting to the target name.
    targets = [
        SimpleNamespace(kind="backup", name="exchange", backup="exchange-db"),
        SimpleNamespace(kind="backup", name="intranet-files", backup=None),
        SimpleNamespace(kind="probe", name="web"),
    ]
    assert _configured_backups(SimpleNamespace(targets=targets)) == {"exchange-db", "intranet-files"}


def test_shipped_example_config_loads() -> None:
    from agent.config import load_config

    loaded = load_config(ROOT / "deploy" / "examples" / "reports.yml")
    rep = loaded.config.reports
    assert rep is not None and rep.schedule and set(rep.formats) == {"html", "md", "json"}
