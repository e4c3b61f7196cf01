"""Connection standards: config, service hours across clock changes and bank holidays,
time-weighted availability, hysteresis, negotiated speed, the sites command."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import ConfigError, load_config
from agent.standards import (
    AVAILABILITY_WINDOW,
    KV_KEY,
    AvailabilityCalc,
    CriterionState,
    Evaluator,
    EvaluatorState,
    in_service,
    load_bank_holidays,
    parse_bitrate,
    report_samples,
    service_windows,
)
from agent.standards.availability import availability
from agent.state import Result, StateStore
from collectors.base import Sample
from tests.helpers.collect import write_config

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "link"
UTC = dt.UTC


def ts(s: str) -> float:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()


CONFIG = """
agent: {{site: hq, state_dir: state}}
sites:
  - {{name: hq, class: office}}
  - name: branch
    class: library
    contracted_download: 100Mbit/s
    contracted_upload: 20Mbit/s
{wan}
site_classes:
  office: {{min_download: 100M}}
  library:
    min_download: 10Mbit/s
    min_upload: 2Mbit/s
    max_rtt: 50ms
    max_jitter: 10ms
    max_loss: 5%
    min_availability: 0.99
    hysteresis: {k}
    service_hours:
      timezone: Europe/London
      start: 08:00
      end: 18:00
      bank_holidays_file: {holidays}
targets:
  - {{name: standards, kind: standards}}
  - {{name: branch-link, kind: link, site: branch, host: 10.9.9.9, interval: 10m, count: 5,
      packet_interval: 0.1s}}
{extra}
"""


def make_config(tmp_path: Path, k: int = 3, wan: str = "", extra: str = "") -> Path:
    return write_config(
        tmp_path,
        CONFIG.format(k=k, wan=wan, extra=extra, holidays=FIX / "bank_holidays_2024.txt"),
    )


# -- value types and config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bps"),
    [("10Mbit/s", 10e6), ("10M", 10e6), ("2.5 Mbps", 2.5e6), ("512k", 512e3), ("1G", 1e9), (2000, 2000.0)],
)
def test_bitrates(text: object, bps: float) -> None:
    assert parse_bitrate(text) == bps


@pytest.mark.parametrize("bad", ["10MB", "fast", -1, 0, "1.2.3M", True])
def test_bad_bitrates(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_bitrate(bad)


def test_config_loads_and_unquoted_yaml_times_work(tmp_path: Path) -> None:
    cfg = load_config(make_config(tmp_path)).config
    lib = cfg.site_classes["library"]
    assert lib.min_download == 10e6 / 8 and lib.max_rtt == 0.05 and lib.max_loss == 0.05
    assert lib.service_hours is not None
    # "end: 18:00" unquoted is YAML 1.1 sexagesimal 1080; it must still mean 18:00.
    assert (lib.service_hours.start, lib.service_hours.end) == ("08:00", "18:00")
    assert lib.service_hours.holidays == {dt.date(2024, 3, 29), dt.date(2024, 4, 1)}
    branch = next(s for s in cfg.sites if s.name == "branch")
    assert branch.contracted_download == 100e6 / 8  # config in bit/s, held in bytes/s


def test_gov_uk_json_bank_holidays() -> None:
    ew = load_bank_holidays(FIX / "bank_holidays_ew_2024.json", "england-and-wales")
    assert ew == {dt.date(2024, 3, 29), dt.date(2024, 4, 1)}
    assert load_bank_holidays(FIX / "bank_holidays_ew_2024.json", "scotland") == {dt.date(2024, 3, 29)}
    with pytest.raises(ValueError, match="no 'wales'"):
        load_bank_holidays(FIX / "bank_holidays_ew_2024.json", "wales")


def test_bad_holiday_line_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bh.txt"
    f.write_text("2024-03-29\n2024-13-01 oops\n")
    with pytest.raises(ValueError, match=r"bh.txt: line 2: '2024-13-01' is not a date"):
        load_bank_holidays(f, "x")


def _issues(tmp_path: Path, text: str) -> list[str]:
    p = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    return [f"{i.key}: {i.message}" for i in ei.value.issues]


def test_every_site_needs_a_known_class(tmp_path: Path) -> None:
    issues = _issues(
        tmp_path,
        "agent: {site: hq}\nsites: [{name: hq, class: office}, {name: b, class: nope}]\n"
        "site_classes: {office: {max_loss: 1%}}\ntargets: [{name: s, kind: standards}]\n",
    )
    assert issues == ["sites[1].class: class 'nope' is not in site_classes (known: office)"]


def test_site_classes_need_a_standards_target_and_only_one(tmp_path: Path) -> None:
    issues = _issues(tmp_path, "agent: {site: hq}\nsites: [{name: hq, class: a}]\nsite_classes: {a: {}}\n")
    assert len(issues) == 1 and "no target of kind standards" in issues[0]
    issues = _issues(
        tmp_path,
        "agent: {site: hq}\nsites: [{name: hq, class: a}]\nsite_classes: {a: {}}\n"
        "targets: [{name: s1, kind: standards}, {name: s2, kind: standards}]\n",
    )
    assert issues == ["targets[1]: only one target of kind standards is allowed"]


def test_wan_interface_must_name_an_snmp_target(tmp_path: Path) -> None:
    issues = _issues(
        tmp_path,
        "agent: {site: hq}\nsites: [{name: hq, class: a, wan_interface: {snmp_target: l, interface: ge0}},"
        " {name: b, class: a, wan_interface: {snmp_target: gone, interface: x}}]\n"
        "site_classes: {a: {}}\ntargets: [{name: s, kind: standards}, {name: l, kind: link, host: h}]\n",
    )
    assert "sites[0].wan_interface.snmp_target: target 'l' is a link target, not snmp" in issues
    assert "sites[1].wan_interface.snmp_target: target 'gone' is not in targets" in issues


def test_one_link_target_per_site_feeds_standards(tmp_path: Path) -> None:
    base = (
        "agent: {site: hq}\nsites: [{name: hq, class: a}]\nsite_classes: {a: {}}\n"
        "targets:\n  - {name: s, kind: standards}\n  - {name: l1, kind: link, host: h}\n"
    )
    issues = _issues(tmp_path, base + "  - {name: l2, kind: link, host: h2}\n")
    assert len(issues) == 1 and issues[0].startswith(
        "targets[2].standards: site 'hq' already has link target 'l1'"
    )
    p = write_config(tmp_path, base + "  - {name: l2, kind: link, host: h2, standards: false}\n")
    load_config(p)


def test_service_hours_errors(tmp_path: Path) -> None:
    issues = _issues(
        tmp_path,
        "agent: {site: hq}\nsites: [{name: hq, class: a}]\ntargets: [{name: s, kind: standards}]\n"
        "site_classes:\n  a: {service_hours: {timezone: Mars/Olympus}}\n"
        "  b: {service_hours: {start: '25:00'}}\n  c: {max_loss: 150%, min_download: 10MB}\n",
    )
    text = "\n".join(issues)
    assert "site_classes.a.service_hours.timezone: Value error, unknown time zone 'Mars/Olympus'" in text or (
        "unknown time zone 'Mars/Olympus'" in text
    )
    assert "'25:00' is not a time of day" in text
    assert "ratio must be between 0 and 1" in text
    assert "invalid bit rate '10MB'" in text


def test_bad_config_messages_are_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_config(
        tmp_path,
        "agent: {site: hq}\nsites: [{name: hq, class: a}]\ntargets: [{name: s, kind: standards}]\n"
        "site_classes:\n  a: {service_hours: {bank_holidays_file: missing.txt}}\n",
    )
    assert main(["check-config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "cannot read bank holidays file" in err and "missing.txt" in err and "Traceback" not in err


# -- service hours ----------------------------------------------------------------------------------


def test_service_windows_follow_clock_change_and_skip_bank_holidays(tmp_path: Path) -> None:
    hours = load_config(make_config(tmp_path)).config.site_classes["library"].service_hours
    w = service_windows(hours, ts("2024-03-27T00:00"), ts("2024-04-03T00:00"))
    assert w == [
        (ts("2024-03-27T08:00"), ts("2024-03-27T18:00")),  # Wed, GMT
        (ts("2024-03-28T08:00"), ts("2024-03-28T18:00")),  # Thu, GMT; Fri 29 is Good Friday
        (ts("2024-04-02T07:00"), ts("2024-04-02T17:00")),  # Tue, BST; Mon 1 is Easter Monday
    ]
    assert in_service(hours, ts("2024-04-02T07:30"))  # 08:30 BST
    assert not in_service(hours, ts("2024-04-02T17:10"))  # 18:10 BST
    assert not in_service(hours, ts("2024-03-29T10:00"))  # bank holiday
    assert not in_service(hours, ts("2024-03-28T07:30"))  # 07:30 GMT
    assert in_service(None, ts("2024-03-30T03:00"))  # no service_hours: 24x7


def test_overnight_and_24h_service_hours(tmp_path: Path) -> None:
    p = write_config(
        tmp_path,
        "agent: {site: hq}\nsites: [{name: hq, class: a}]\ntargets: [{name: s, kind: standards}]\n"
        "site_classes:\n  a: {service_hours: {timezone: UTC, days: [sat], start: '22:00', end: '06:00'}}\n"
        "  b: {service_hours: {timezone: UTC, days: [sun], start: '00:00', end: '24:00'}}\n",
    )
    classes = load_config(p).config.site_classes
    sat = service_windows(classes["a"].service_hours, ts("2024-03-29T00:00"), ts("2024-04-02T00:00"))
    assert sat == [(ts("2024-03-30T22:00"), ts("2024-03-31T06:00"))]
    sun = service_windows(classes["b"].service_hours, ts("2024-03-29T00:00"), ts("2024-04-02T00:00"))
    assert sun == [(ts("2024-03-31T00:00"), ts("2024-04-01T00:00"))]


# -- availability -----------------------------------------------------------------------------------

WEEK_START, WEEK_END = ts("2024-03-27T00:00"), ts("2024-04-03T00:00")
OUTAGES = [
    ("2024-03-28T07:00", "2024-03-28T08:30"),  # Thu: 30 min inside 08:00-18:00 GMT
    ("2024-03-29T10:00", "2024-03-29T12:00"),  # Good Friday: none in service hours
    ("2024-03-30T00:00", "2024-03-31T00:00"),  # Saturday: none in service hours
    ("2024-04-02T06:30", "2024-04-02T07:30"),  # Tue 07:30-08:30 BST: 30 min in service hours
    ("2024-04-02T17:00", "2024-04-02T17:10"),  # Tue 18:00-18:10 BST: outside
]
GAP = ("2024-03-27T12:00", "2024-03-27T13:00")  # agent not running: no rows


def synthetic_week() -> list[tuple[float, float, bool]]:
    """A run every 10 minutes for the week, failing during OUTAGES, none during GAP."""
    rows = []
    t = WEEK_START
    while t < WEEK_END:
        if not ts(GAP[0]) <= t < ts(GAP[1]):
            down = any(ts(a) <= t < ts(b) for a, b in OUTAGES)
            rows.append((t, 0.2, not down))
        t += 600
    return rows


# Hand-computed. Service hours in the week (Mon-Fri 08:00-18:00 Europe/London, Good Friday and
# Easter Monday off, clocks forward on Sunday 31 March): Wed 27 and Thu 28 08:00-18:00 UTC, Tue 2
# April 07:00-17:00 UTC = 30 h = 108000 s. The run at 11:50 before the gap covers 20 min (two run
# intervals), so 12:10-13:00 on Wednesday (3000 s, in service hours) is unknown: known 105000 s.
# Down in service hours: Thu 08:00-08:30 + Tue 07:00-07:30 UTC = 3600 s.
SERVICE_HOURS_EXPECTED = (105000 - 3600) / 105000  # 0.965714...
# Around the clock: 604800 s, 3000 unknown; down 1.5 h + 2 h + 24 h + 1 h + 10 min = 103200 s.
ALL_HOURS_EXPECTED = (601800 - 103200) / 601800  # 0.828514...


def test_service_hours_availability_hand_computed(tmp_path: Path) -> None:
    hours = load_config(make_config(tmp_path)).config.site_classes["library"].service_hours
    up, known = availability(synthetic_week(), WEEK_START, WEEK_END, 1200.0, hours)
    assert known == pytest.approx(105000)
    assert up / known == pytest.approx(SERVICE_HOURS_EXPECTED, abs=1e-12)
    up, known = availability(synthetic_week(), WEEK_START, WEEK_END, 1200.0, None)
    assert (up, known) == (pytest.approx(498600), pytest.approx(601800))
    assert up / known == pytest.approx(ALL_HOURS_EXPECTED, abs=1e-12)


def test_day_cached_availability_matches_the_direct_computation(tmp_path: Path) -> None:
    hours = load_config(make_config(tmp_path)).config.site_classes["library"].service_hours
    rows = synthetic_week()
    calls: list[tuple[float, float]] = []

    def history(target: str, since: float, until: float) -> list[tuple[float, float, bool]]:
        calls.append((since, until))
        return [r for r in rows if since <= r[0] < until]

    calc = AvailabilityCalc()
    since = WEEK_START + 3 * 3600.5  # not on a day boundary
    direct = availability([r for r in rows if r[0] >= since - 1200], since, WEEK_END, 1200.0, hours)
    assert calc.compute(history, "t", hours, 1200.0, since, WEEK_END, WEEK_END + 3600) == pytest.approx(
        direct
    )
    first = len(calls)
    assert calc.compute(history, "t", hours, 1200.0, since, WEEK_END, WEEK_END + 3600) == pytest.approx(
        direct
    )
    assert len(calls) - first == 1  # only the partial first day is read again


def test_availability_from_the_state_history_with_a_fixed_clock(tmp_path: Path) -> None:
    cfg = load_config(make_config(tmp_path)).config
    now = WEEK_END
    store = StateStore(tmp_path / "state", clock=lambda: now)
    try:
        for started, dur, ok in synthetic_week():
            store.put(
                Result(
                    "branch-link",
                    "reachability",
                    "link",
                    "branch",
                    started,
                    dur,
                    ok,
                    None if ok else "unreachable",
                )
            )
        store.flush()
        ev = Evaluator(cfg, store, clock=lambda: now)
        assert now - AVAILABILITY_WINDOW < WEEK_START
        rep = next(r for r in ev.evaluate() if r.site == "branch")
        assert rep.availability["service_hours_30d"] == pytest.approx(SERVICE_HOURS_EXPECTED, abs=1e-12)
        assert rep.availability["24x7_30d"] == pytest.approx(ALL_HOURS_EXPECTED, abs=1e-12)
        crit = {c.criterion: c for c in rep.criteria}
        assert crit["availability"].value == pytest.approx(SERVICE_HOURS_EXPECTED)
        assert crit["availability"].instant is False  # below 0.99
        samples = {(s.name, s.labels.get("window")): s.value for s in report_samples([rep])}
        assert samples[("continuity_site_availability_ratio", "service_hours_30d")] == pytest.approx(
            SERVICE_HOURS_EXPECTED
        )
        assert samples[("continuity_site_in_service", None)] == 0.0  # Wednesday 00:00 UTC
    finally:
        store.close()


# -- hysteresis -------------------------------------------------------------------------------------


def test_hysteresis_needs_k_agreeing_evaluations() -> None:
    st = CriterionState()
    seq = [False, False, True, False, False, False, True, True, False, True, True, True]
    verdicts = []
    for good in seq:
        st.observe(good, 3)
        verdicts.append(st.verdict)
    assert verdicts == [None, None, None, None, None, False, False, False, False, False, False, True]
    one = CriterionState()
    one.observe(False, 1)
    assert one.verdict is False


def link_result(started: float, *, rtt: float = 0.01, loss: float = 0.0) -> Result:
    samples = [Sample("continuity_link_loss_ratio", loss, {"class": "library"})]
    if loss < 1.0:
        samples += [
            Sample("continuity_link_rtt_seconds", rtt, {"class": "library", "stat": "avg"}),
            Sample("continuity_link_jitter_seconds", 0.001, {"class": "library"}),
        ]
    return Result("branch-link", "", "link", "branch", started, 1.0, True, samples=samples)


def reach_result(started: float, ok: bool = True) -> Result:
    reason, msg = (
        (None, None) if ok else ("unreachable", "branch-link: no reply to any of 5 icmp probes (loss 1.0)")
    )
    return Result("branch-link", "reachability", "link", "branch", started, 1.0, ok, reason, msg)


def throughput_result(started: float, down: float, up: float = 5e6) -> Result:
    """``down`` and ``up`` in bit/s, as iperf3 measures them; the metric is in bytes/s."""
    samples = [
        Sample(
            "continuity_link_throughput_bytes_per_second", down / 8, {"class": "library", "direction": "download"}
        ),
        Sample(
            "continuity_link_throughput_bytes_per_second", up / 8, {"class": "library", "direction": "upload"}
        ),
    ]
    return Result("branch-link", "throughput", "link", "branch", started, 20.0, True, samples=samples)


def verdicts(ev: Evaluator, site: str = "branch") -> dict[str, bool | None]:
    rep = next(r for r in ev.evaluate() if r.site == site)
    return {c.criterion: c.verdict for c in rep.criteria}


def test_criteria_change_after_exactly_k_new_measurements(tmp_path: Path) -> None:
    cfg = load_config(make_config(tmp_path, k=3)).config
    t = ts("2024-04-02T10:00")
    store = StateStore(None)
    ev = Evaluator(cfg, store, clock=lambda: t)
    store.put(link_result(t))
    seen = []
    for i in range(3):
        store.put(throughput_result(t + 600 * i, down=2e6))
        seen.append(verdicts(ev)["download"])
        # Re-evaluating the same measurement does not count.
        assert verdicts(ev)["download"] == seen[-1]
    assert seen == [None, None, False]
    assert verdicts(ev)["rtt"] is None  # one rtt measurement only
    seen = []
    for i in range(3, 6):
        store.put(throughput_result(t + 600 * i, down=50e6))
        seen.append(verdicts(ev)["download"])
    assert seen == [False, False, True]


def test_restored_link_recovers_after_k(tmp_path: Path) -> None:
    cfg = load_config(make_config(tmp_path, k=2)).config
    t = ts("2024-04-02T10:00")
    store = StateStore(None)
    ev = Evaluator(cfg, store, clock=lambda: t)
    history = []
    for i, down in enumerate([2e6, 2e6, 50e6, 50e6, 2e6, 50e6]):
        store.put(throughput_result(t + i, down))
        history.append(verdicts(ev)["download"])
    assert history == [None, False, False, True, True, True]


def test_unanswered_burst_is_total_loss_and_failed_throughput_is_no_verdict(tmp_path: Path) -> None:
    cfg = load_config(make_config(tmp_path, k=1)).config
    t = ts("2024-04-02T10:00")
    store = StateStore(None)
    ev = Evaluator(cfg, store, clock=lambda: t)
    store.put(link_result(t))
    store.put(throughput_result(t, 50e6))
    assert verdicts(ev)["loss"] is True and verdicts(ev)["download"] is True
    store.put(link_result(t + 60, loss=1.0))
    store.put(reach_result(t + 60, ok=False))
    # A busy iperf3 server: the throughput run failed, the last good measurement stands.
    store.put(
        Result("branch-link", "throughput", "link", "branch", t + 60, 1.0, False, "server_busy", "busy")
    )
    rep = next(r for r in ev.evaluate() if r.site == "branch")
    crit = {c.criterion: c for c in rep.criteria}
    assert crit["loss"].value == 1.0 and crit["loss"].verdict is False
    assert crit["download"].value == 50e6 / 8 and crit["download"].verdict is True
    # No reply, so no RTT or jitter: not known now, whatever the last ones were. Their hysteresis
    # state is kept, so the first burst that answers well again reads met at once.
    assert crit["rtt"].value is None and crit["rtt"].verdict is None
    assert crit["jitter"].value is None and crit["jitter"].verdict is None
    assert rep.met_all is False
    assert "branch-link: no reply to any of 5 icmp probes (loss 1.0)" in rep.notes
    samples = {(s.name, s.labels.get("criterion")) for s in report_samples([rep])}
    assert ("continuity_site_standard_met", "rtt") not in samples
    assert ("continuity_site_standard_met", "loss") in samples
    store.put(link_result(t + 120))
    assert verdicts(ev)["rtt"] is True and verdicts(ev)["jitter"] is True


def test_a_failed_burst_or_poll_leaves_its_criteria_unknown_not_met(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link's burst cannot run at all (a timeout, a name that no longer resolves), the WAN
    router's poll fails: nothing was measured, so rtt, jitter, loss and negotiated_speed are
    unknown and the site's ``met_all`` with them, not the last verdicts carried on as current."""
    cfg = load_config(snmp_config(tmp_path, monkeypatch, k=1)).config
    t = ts("2024-04-02T10:00")
    store = StateStore(None)
    ev = Evaluator(cfg, store, clock=lambda: t)
    store.put(link_result(t))
    store.put(reach_result(t))
    store.put(throughput_result(t, 50e6))
    store.put(snmp_result(t, 1e9, rx=0, tx=0))
    live = ("rtt", "jitter", "loss", "negotiated_speed")
    assert {c: verdicts(ev)[c] for c in live} == dict.fromkeys(live, True)
    store.put(Result("branch-link", "", "link", "branch", t + 600, 9.0, False, "timeout", "branch-link: no result"))
    store.put(Result("branch-router", "", "snmp", "branch", t + 600, 9.0, False, "timeout", "branch-router: no"))
    rep = next(r for r in ev.evaluate() if r.site == "branch")
    crit = {c.criterion: c for c in rep.criteria}
    assert {c: crit[c].verdict for c in live} == dict.fromkeys(live, None)
    assert crit["download"].verdict is True  # the last throughput test stands (tests run 4 times a day)
    assert rep.met_all is None
    samples = {(s.name, s.labels.get("criterion")) for s in report_samples([rep])}
    assert not {("continuity_site_standard_met", c) for c in live} & samples
    assert ("continuity_site_standard_met_all", None) not in samples
    # Measured again and as good as before: met at once (the hysteresis state was kept).
    store.put(link_result(t + 1200))
    store.put(snmp_result(t + 1200, 1e9, rx=0, tx=0))
    assert {c: verdicts(ev)[c] for c in live} == dict.fromkeys(live, True)


def test_state_survives_a_restart_through_the_store_kv(tmp_path: Path) -> None:
    st = EvaluatorState()
    st.criteria["branch"] = {"download": CriterionState(False, 4, False, 123.0)}
    st.utilisation["branch"] = {"download": 0.5}
    back = EvaluatorState.from_json(json.loads(json.dumps(st.to_json())))
    assert back.criteria == st.criteria and back.utilisation == st.utilisation
    assert EvaluatorState.from_json({"criteria": {"x": {"y": {"streak": "bogus"}}}}).criteria == {}
    assert EvaluatorState.from_json("garbage").criteria == {}


# -- negotiated speed and utilisation ---------------------------------------------------------------

WAN = "    wan_interface: {snmp_target: branch-router, interface: ge-0/0/0}\n"
SNMP_TARGET = "  - {name: branch-router, kind: snmp, host: 10.9.9.1, auth: v2}\n"
AUTHS = 'auths:\n  v2: {type: snmp_v2c, community: "${SNMP_COMMUNITY}"}\n'


def snmp_result(started: float, speed: float, rx: float, tx: float) -> Result:
    """``speed`` in bit/s, as the device reports it; the metric is in bytes/s."""
    lb = {"interface": "ge-0/0/0", "alias": "WAN to ISP"}
    return Result(
        "branch-router",
        "",
        "snmp",
        "branch",
        started,
        0.1,
        True,
        samples=[
            Sample("continuity_interface_speed_bytes_per_second", speed / 8, lb),
            Sample("continuity_interface_receive_bytes_total", rx, lb),
            Sample("continuity_interface_transmit_bytes_total", tx, lb),
            Sample("continuity_interface_speed_bytes_per_second", 1e9 / 8, {"interface": "lan", "alias": ""}),
        ],
    )


def snmp_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int = 2) -> Path:
    monkeypatch.setenv("SNMP_COMMUNITY", "public-test")
    p = make_config(tmp_path, k=k, wan=WAN, extra=SNMP_TARGET)
    p.write_text(p.read_text() + AUTHS)
    return p


def test_negotiated_speed_below_contract_fails_and_utilisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fed from stored SNMP results (the real snmpd path is in tests/integration/test_link_snmp.py)."""
    cfg = load_config(snmp_config(tmp_path, monkeypatch)).config
    t = ts("2024-04-02T10:00")
    store = StateStore(None)
    ev = Evaluator(cfg, store, clock=lambda: t)
    store.put(snmp_result(t, 10e6, rx=1000, tx=500))
    rep = next(r for r in ev.evaluate() if r.site == "branch")
    c = next(c for c in rep.criteria if c.criterion == "negotiated_speed")
    assert (c.threshold, c.value, c.instant, c.verdict) == (100e6 / 8, 10e6 / 8, False, None)
    # 60 s later: 7.5 MB in (1 Mbit/s), 750 kB out (0.1 Mbit/s) on a 10 Mbit/s interface.
    store.put(snmp_result(t + 60, 10e6, rx=1000 + 7_500_000, tx=500 + 750_000))
    rep = next(r for r in ev.evaluate() if r.site == "branch")
    c = next(c for c in rep.criteria if c.criterion == "negotiated_speed")
    assert c.verdict is False
    assert rep.negotiated == 10e6 / 8
    assert rep.utilisation == {"download": pytest.approx(0.1), "upload": pytest.approx(0.01)}
    samples = {
        (s.name, s.labels.get("direction"), s.labels.get("criterion")): s.value for s in report_samples([rep])
    }
    assert samples[("continuity_link_contracted_bytes_per_second", "download", None)] == 100e6 / 8
    assert samples[("continuity_link_utilisation_ratio", "download", None)] == pytest.approx(0.1)
    assert samples[("continuity_site_standard_threshold", None, "negotiated_speed")] == 100e6 / 8
    assert samples[("continuity_site_standard_value", None, "negotiated_speed")] == 10e6 / 8
    assert samples[("continuity_site_standard_met", None, "negotiated_speed")] == 0.0
    # A counter reset (device reboot) gives no utilisation spike.
    store.put(snmp_result(t + 120, 10e6, rx=10, tx=10))
    rep = next(r for r in ev.evaluate() if r.site == "branch")
    assert rep.utilisation == {"download": pytest.approx(0.1), "upload": pytest.approx(0.01)}


# -- sites command ----------------------------------------------------------------------------------


def test_sites_command_prints_thresholds_values_and_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = make_config(tmp_path, k=1)
    cfg = load_config(p).config
    import time

    now = time.time()
    store = StateStore(cfg.agent.state_dir)
    try:
        store.put(link_result(now - 30, rtt=0.120, loss=0.0))
        store.put(throughput_result(now - 3600, down=1.9e6, up=1.8e6))
        ev = Evaluator(cfg, store)
        ev.evaluate()
        store.set_kv(KV_KEY, ev.state.to_json())
        store.flush()
    finally:
        store.close()
    rc = main(["sites", "--config", str(p)])
    out = capsys.readouterr().out
    assert rc == 1  # findings: criteria failing
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  ") and ln.split()}
    assert "branch  class library" in out and "hq  class office" in out
    assert ">= 10Mbit/s" in lines["download"] and "1.9Mbit/s" in lines["download"]
    assert lines["download"].rstrip().endswith("FAILED")
    assert (
        "<= 50 ms" in lines["rtt"] and "120 ms" in lines["rtt"] and lines["rtt"].rstrip().endswith("FAILED")
    )
    assert lines["loss"].rstrip().endswith("met")
    assert "contracted download 100Mbit/s, upload 20Mbit/s" in out
    rc = main(["sites", "--config", str(p), "--format", "json", "--site", "branch"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 1 and [s["site"] for s in data["sites"]] == ["branch"]
    dl = next(c for c in data["sites"][0]["criteria"] if c["criterion"] == "download")
    assert (dl["threshold"], dl["value"], dl["verdict"]) == (10e6 / 8, 1.9e6 / 8, "failed")
    assert main(["sites", "--config", str(p), "--site", "nowhere"]) == 2
    assert "no site named 'nowhere'" in capsys.readouterr().err


def test_sites_without_state_or_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = make_config(tmp_path)
    assert main(["sites", "--config", str(p)]) == 0
    out = capsys.readouterr().out
    assert "no state database" in out and "unknown" in out
    assert not (tmp_path / "state").exists()  # the command does not create one
    q = write_config(tmp_path, "agent: {site: hq}\n", "plain.yml")
    assert main(["sites", "--config", str(q)]) == 2
    assert "no site_classes" in capsys.readouterr().err


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers.common import ROOT

    monkeypatch.setenv("SNMP_COMMUNITY", "example-community")
    path = ROOT / "deploy" / "examples" / "link.yml"
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err
    cfg = load_config(path).config
    hours = cfg.site_classes["library_branch"].service_hours
    assert (
        hours is not None
        and dt.date(2026, 12, 28) in hours.holidays
        and dt.date(2026, 12, 24) in hours.holidays
    )
    assert {s.name: s.class_ for s in cfg.sites} == {
        "hq": "main_office",
        "library-north": "library_branch",
        "depot-east": "depot",
    }
