"""The DR report as data: built from the evidence verifier, the state history in SQLite and the
config, then rendered to HTML, Markdown or JSON. Every section is always present; a section with
nothing to show carries its gap in words (``gaps``), never an exception."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from agent import __version__
from agent.evidence.backupstate import BackupState, backup_states
from agent.reports.inputs import DrInputs, Record

SCHEMA_VERSION = 1
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Executive summary"),
    ("systems", "Systems"),
    ("timeline", "Timeline of the latest joint exercise"),
    ("dependencies", "Dependency graph"),
    ("actions", "Open actions"),
    ("sites", "Remote sites"),
    ("coverage", "Coverage gaps"),
    ("integrity", "Integrity"),
)
BAD_BACKUP_STATES = ("stale", "failed", "never_ran")
GOOD_BACKUP_STATES = ("fresh", "late")


class StateView(Protocol):
    """What the report reads from agent.state.StateStore."""

    def snapshot(self) -> Any: ...

    def history(self, target: str, since: float, until: float, task: str = "") -> list[tuple[float, float, bool]]: ...


def iso(t: datetime | float | None) -> str | None:
    if t is None:
        return None
    if isinstance(t, int | float):
        t = datetime.fromtimestamp(t, UTC)
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- the model -----------------------------------------------------------------------------------


@dataclass
class Meta:
    title: str
    organisation: str
    generated_at: str
    at: str
    period_start: str
    period_end: str
    period_seconds: float
    runbooks_dir: str | None
    evidence_dir: str | None


@dataclass
class Summary:
    verdict: Literal["green", "amber", "red"]
    sentence: str
    reasons: list[str]
    objective_seconds: float | None
    planned_seconds: float | None
    projected_seconds: float | None
    measured_seconds: float | None
    critical_path: list[str]
    systems_total: int
    systems_in_policy: int
    systems_out_of_policy: int
    errors: int
    warnings: int


@dataclass
class Finding:
    severity: str
    rule: str
    runbook: str | None
    record: str | None
    message: str


@dataclass
class BackupStatus:
    name: str
    state: str  # fresh/late/stale/failed/never_ran/unknown, or "not reported"
    last_success: str | None
    age_seconds: float | None
    rpo_met: bool | None  # last good backup against the runbook's RPO


@dataclass
class SystemRow:
    runbook: str
    name: str
    tier: int | None
    owner: str
    rto_seconds: float | None
    rpo_seconds: float | None
    last_test: str | None  # as the verifier reports it
    last_test_type: str | None
    last_test_exercise: str | None
    achieved_rto_seconds: float | None
    within_rto: bool | None
    valid_until: str | None
    backups: list[BackupStatus]
    backup_state: str  # summary in words
    last_good_backup: str | None
    rpo_met: bool | None
    open_findings: list[Finding]
    in_policy: bool
    policy_reasons: list[str]


@dataclass
class TimelineStep:
    id: str
    title: str
    start_seconds: float
    end_seconds: float
    result: str


@dataclass
class TimelineSystem:
    runbook: str
    name: str
    declared_seconds: float
    restored_seconds: float | None
    rto_seconds: float | None
    within_rto: bool | None
    critical: bool
    steps: list[TimelineStep]


@dataclass
class Timeline:
    exercise: str | None
    declared_at: str | None
    objective_seconds: float
    measured_seconds: float | None
    critical_path: list[str]
    systems: list[TimelineSystem]


@dataclass
class GraphNodeRow:
    runbook: str
    name: str
    tier: int | None
    layer: int
    status: Literal["in policy", "out of policy", "not tested"]
    depends_on: list[str]


@dataclass
class ActionRow:
    id: str
    description: str
    owner: str
    due: str | None
    status: str
    overdue: bool
    days_overdue: int | None
    runbook: str
    exercise: str
    record: str


@dataclass
class CriterionRow:
    criterion: str
    met: bool | None
    threshold: float | None


@dataclass
class SiteRow:
    site: str
    site_class: str
    criteria: list[CriterionRow]
    criteria_failed: int
    all_met: bool | None
    availability_service_hours: float | None
    availability_24x7: float | None
    up_ratio_period: float | None  # share of successful runs of the site's targets in the period
    runs_period: int


@dataclass
class UnavailableTarget:
    target: str
    kind: str
    site: str
    unavailable_ratio: float
    runs: int


@dataclass
class Coverage:
    never_tested: list[str]
    last_joint_exercise: str | None
    tier1_missing_from_last_exercise: list[str]
    backups_not_linked: list[str]
    unknown_backups_in_runbooks: list[str]
    unavailable_targets: list[UnavailableTarget]
    targets_without_history: list[str]
    threshold_percent: float


@dataclass
class Integrity:
    evidence_chain_head_sha256: str | None
    evidence_records: int
    sealed_records: int
    agent_version: str
    config_path: str | None
    config_sha256: str | None
    verifier_ok: bool | None


@dataclass
class Report:
    schema_version: int
    meta: Meta
    summary: Summary
    systems: list[SystemRow]
    timeline: Timeline
    dependencies: list[GraphNodeRow]
    actions: list[ActionRow]
    sites: list[SiteRow]
    coverage: Coverage
    integrity: Integrity
    findings: list[Finding]
    evidence: dict[str, Any] | None  # the verifier's own JSON, unchanged
    gaps: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- building ------------------------------------------------------------------------------------


@dataclass
class BuildContext:
    inputs: DrInputs
    at: datetime
    period_seconds: float
    config: Any = None  # agent.config.AgentConfig
    config_path: Path | None = None
    config_sha256: str | None = None
    store: StateView | None = None
    title: str = "Disaster-recovery test report"
    organisation: str = ""
    unavailable_threshold_percent: float = 5.0
    generated_at: datetime | None = None


def _latest_samples(store: StateView | None) -> list[tuple[Any, Any]]:
    """(result, sample) for every sample of every successful latest result."""
    if store is None:
        return []
    try:
        snap = store.snapshot()
    except Exception:  # noqa: BLE001 - a broken store is a stated gap, not a failed report
        return []
    out = []
    for (_t, _task), res in sorted(snap.latest.items()):
        if not res.ok:
            continue
        for s in res.samples:
            out.append((res, s))
    return out


def _configured_backups(config: Any) -> set[str]:
    names: set[str] = set()
    if config is None:
        return names
    for t in getattr(config, "targets", []):
        if t.kind == "backup":
            names.add(str(getattr(t, "backup", None) or t.name))  # the `backup` label, default the name
    return names


def _findings(inp: DrInputs) -> list[Finding]:
    v = inp.verification or {}
    out = []
    for f in v.get("findings") or []:
        if isinstance(f, dict):
            out.append(
                Finding(
                    severity=str(f.get("severity", "")),
                    rule=str(f.get("rule", "")),
                    runbook=None if f.get("runbook") is None else str(f.get("runbook")),
                    record=None if f.get("record") is None else str(f.get("record")),
                    message=str(f.get("message", "")),
                )
            )
    out.sort(key=lambda f: (f.severity != "error", f.runbook or "", f.rule, f.record or ""))
    return out


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _parse_iso(v: Any) -> datetime | None:
    if not isinstance(v, str):
        return None
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _latest_record(records: list[Record], runbook: str) -> Record | None:
    mine = [r for r in records if r.runbook == runbook and r.declared_at is not None]
    return max(mine, key=lambda r: (r.declared_at, r.file)) if mine else None


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _s(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _system_ids(inp: DrInputs, vsys: dict[str, dict[str, Any]]) -> list[str]:
    def key(r: str) -> tuple[int, str]:
        t = vsys.get(r, {}).get("tier")
        if not isinstance(t, int) and r in inp.runbooks:
            t = inp.runbooks[r].tier
        return (t if isinstance(t, int) else 99, r)

    return sorted(set(inp.runbooks) | set(vsys), key=key)


def _timeline_from_verifier(v: dict[str, Any], names: dict[str, str], objective: float) -> Timeline | None:
    ex_id = v.get("latest_joint_exercise")
    exercises = v.get("exercises")
    if not isinstance(ex_id, str) or not isinstance(exercises, list):
        return None
    ex = next((e for e in exercises if isinstance(e, dict) and e.get("id") == ex_id), None)
    if ex is None:
        return None
    t0 = _parse_iso(ex.get("started_at"))
    crit = [str(c) for c in ex.get("critical_path") or []]
    rows: list[TimelineSystem] = []
    for sy in ex.get("systems") or []:
        if not isinstance(sy, dict):
            continue
        rid = str(sy.get("runbook", ""))
        declared = _parse_iso(sy.get("declared_at"))
        steps = [
            TimelineStep(
                id=str(st.get("id", "")),
                title=str(st.get("title") or st.get("id", "")),
                start_seconds=float(st["start_offset_seconds"]),
                end_seconds=float(st["end_offset_seconds"]),
                result=str(st.get("result", "")),
            )
            for st in sy.get("steps") or []
            if isinstance(st, dict)
            and _num(st.get("start_offset_seconds")) is not None
            and _num(st.get("end_offset_seconds")) is not None
        ]
        rows.append(
            TimelineSystem(
                runbook=rid,
                name=names.get(rid, rid),
                declared_seconds=(declared - t0).total_seconds() if declared and t0 else 0.0,
                restored_seconds=_num(sy.get("restored_offset_seconds")),
                rto_seconds=_num(sy.get("rto_seconds")),
                within_rto=_bool(sy.get("within_rto")),
                critical=rid in crit,
                steps=steps,
            )
        )
    rows.sort(key=lambda r: (r.restored_seconds if r.restored_seconds is not None else float("inf"), r.runbook))
    return Timeline(
        exercise=ex_id,
        declared_at=iso(t0) if t0 else _s(ex.get("started_at")),
        objective_seconds=objective,
        measured_seconds=_num(ex.get("measured_seconds")),
        critical_path=crit,
        systems=rows,
    )


def _actions(inp: DrInputs, at: datetime) -> list[ActionRow]:
    today = at.date()
    by_file = {r.file: r for r in inp.records}
    status: dict[tuple[str, str], str] = {}
    for r in inp.records:
        for a in r.issues:
            status[(r.file, a.id)] = a.status
    out: list[ActionRow] = []
    v = inp.verification
    if v is not None and isinstance(v.get("open_actions"), list):
        for a in v["open_actions"]:
            if not isinstance(a, dict):
                continue
            rec_name = str(a.get("record", ""))
            rec = by_file.get(rec_name) or next(
                (r for r in inp.records if Path(r.file).name == Path(rec_name).name), None
            )
            due = _parse_date(a.get("due"))
            overdue = bool(a.get("overdue")) if isinstance(a.get("overdue"), bool) else bool(due and due < today)
            out.append(
                ActionRow(
                    id=str(a.get("id", "")),
                    description=str(a.get("description", "")),
                    owner=str(a.get("owner", "")),
                    due=due.isoformat() if due else None,
                    status=status.get((rec.file, str(a.get("id"))), "open") if rec else "open",
                    overdue=overdue,
                    days_overdue=(today - due).days if overdue and due else None,
                    runbook=str(a.get("runbook", "")),
                    exercise=rec.exercise if rec else "",
                    record=rec_name,
                )
            )
    else:
        for r in inp.records:
            for act in r.issues:
                if act.status == "closed":
                    continue
                overdue = act.due is not None and act.due < today
                out.append(
                    ActionRow(
                        id=act.id,
                        description=act.description,
                        owner=act.owner,
                        due=act.due.isoformat() if act.due else None,
                        status=act.status,
                        overdue=overdue,
                        days_overdue=(today - act.due).days if overdue and act.due else None,
                        runbook=r.runbook,
                        exercise=r.exercise,
                        record=r.file,
                    )
                )
    out.sort(key=lambda a: (not a.overdue, a.due or "9999", a.runbook, a.id))
    return out


def _parse_date(v: Any) -> date | None:
    if not isinstance(v, str):
        return None
    try:
        return date.fromisoformat(v[:10])
    except ValueError:
        return None


def build_report(bc: BuildContext) -> Report:
    """The report, one function per section; each section states its own gaps."""
    inp = bc.inputs
    at = bc.at.astimezone(UTC)
    since = at.timestamp() - bc.period_seconds
    gaps: dict[str, list[str]] = {k: [] for k, _ in SECTIONS}
    v = inp.verification
    findings = _findings(inp)
    samples = _latest_samples(bc.store)
    backups = backup_states(bc.store)

    no_evidence = not inp.records
    if inp.verification_error:
        gaps["summary"].append(f"The evidence could not be verified: {inp.verification_error}.")
    if no_evidence:
        gaps["summary"].append("No recovery evidence found.")
    vsys: dict[str, dict[str, Any]] = {}
    for s in (v or {}).get("systems") or []:
        if isinstance(s, dict) and isinstance(s.get("runbook"), str):
            vsys[s["runbook"]] = s
    systems = _systems_section(inp, vsys, findings, backups, at, gaps["systems"])
    summary = _summary_section(inp, systems, findings)
    names = {s.runbook: s.name for s in systems}
    objective = _objective(inp)
    # The exercise, its critical path and within-RTO verdicts are the verifier's; unverified
    # evidence shows no timeline rather than a second opinion.
    timeline = _timeline_from_verifier(v, names, objective) if v is not None else None
    if timeline is None:
        timeline = Timeline(None, None, objective, None, [], [])
        gaps["timeline"].append(
            "No recovery evidence found, so there is no exercise to show."
            if no_evidence
            else "The evidence could not be verified, so no exercise is shown."
            if v is None
            else "No joint exercise found: no exercise has evidence for two or more systems."
        )
    graph = _dependencies_section(inp, vsys, systems, gaps["dependencies"])
    actions = _actions(inp, at)
    if not actions:
        gaps["actions"].append(
            "No recovery evidence found, so there are no actions." if no_evidence else "No open actions."
        )
    sites = _sites(bc, samples, since, at.timestamp(), gaps["sites"])
    coverage = _coverage_section(bc, systems, timeline, backups, since, at, gaps["coverage"])
    integrity = _integrity_section(bc, gaps["integrity"])
    return Report(
        schema_version=SCHEMA_VERSION,
        meta=_meta(bc, since, at),
        summary=summary,
        systems=systems,
        timeline=timeline,
        dependencies=graph,
        actions=actions,
        sites=sites,
        coverage=coverage,
        integrity=integrity,
        findings=findings,
        evidence=v,
        gaps={k: g for k, g in gaps.items() if g},
        problems=list(inp.problems) + ([inp.verification_error] if inp.verification_error else []),
    )


def _objective(inp: DrInputs) -> float:
    cp = (inp.verification or {}).get("critical_path") or {}
    return _num(cp.get("objective_seconds")) or inp.objective_seconds


def _backup_statuses(
    backup_names: list[str], backups: dict[str, BackupState], rpo: float | None, at: datetime
) -> list[BackupStatus]:
    bstat: list[BackupStatus] = []
    for bname in backup_names:
        b = backups.get(bname)
        if b is None:
            bstat.append(BackupStatus(bname, "not reported", None, None, None))
            continue
        last = b.last_success
        age = at.timestamp() - last if last else None
        # The backup collector's state decides, as for continuity_runbook_rpo_met: fresh/late
        # (within RPO plus grace) meet it, stale/failed/never_ran do not, unknown is unknown.
        state = b.state
        if state in GOOD_BACKUP_STATES:
            met: bool | None = True
        elif state in BAD_BACKUP_STATES:
            met = False
        elif state is None and age is not None and rpo is not None:
            met = age <= rpo
        else:
            met = None
        bstat.append(BackupStatus(bname, b.state or "unknown", iso(last) if last else None, age, met))
    return bstat


def _systems_section(
    inp: DrInputs,
    vsys: dict[str, dict[str, Any]],
    findings: list[Finding],
    backups: dict[str, BackupState],
    at: datetime,
    gaps: list[str],
) -> list[SystemRow]:
    """One row per system: objectives, last test, evidence, backups and whether it is in policy."""
    v = inp.verification
    rb = inp.runbooks
    if not rb and not vsys:
        gaps.append("No runbooks found, so no systems are listed.")
    systems: list[SystemRow] = []
    for rid in _system_ids(inp, vsys):
        book = rb.get(rid)
        vs = vsys.get(rid, {})
        rec = _latest_record(inp.records, rid)
        mine = [f for f in findings if f.runbook == rid]
        rto = _num(vs.get("rto_seconds"))
        if rto is None and book:
            rto = book.rto_seconds
        rpo = _num(vs.get("rpo_seconds"))
        if rpo is None and book:
            rpo = book.rpo_seconds
        tier = vs.get("tier") if isinstance(vs.get("tier"), int) else book.tier if book else None
        within = _bool(vs.get("within_rto"))
        valid_until = _s(vs.get("valid_until"))
        if v is not None:
            last_test, last_type = _s(vs.get("last_test")), _s(vs.get("last_test_type"))
        else:
            last_test, last_type = (iso(rec.declared_at), rec.type) if rec else (None, None)
        backup_names = (
            [str(b) for b in vs.get("backups") or []] if "backups" in vs else list(book.backups if book else ())
        )
        bstat = _backup_statuses(backup_names, backups, rpo, at)
        reasons: list[str] = []
        if last_test is None:
            reasons.append("never tested")
        if within is False:
            reasons.append("RTO exceeded")
        elif within is None and last_test is not None:
            reasons.append("achieved RTO unknown")
        vu = _parse_iso(valid_until)
        valid = _bool(vs.get("valid"))
        if valid is None:
            valid = vu is not None and vu > at
        if not valid and last_test is not None:
            reasons.append("evidence expired" if vu is not None and vu <= at else "no valid evidence")
        errs = sorted({f.rule for f in mine if f.severity == "error"})
        if errs:
            reasons.append("findings: " + ", ".join(errs))
        bad_b = [b.name for b in bstat if b.state in BAD_BACKUP_STATES or b.rpo_met is False]
        if bad_b:
            reasons.append("backup RPO not met: " + ", ".join(bad_b))
        if not bstat:
            bsum = "no backups listed"
        elif all(b.state == "not reported" for b in bstat):
            bsum = "not reported"
        elif bad_b:
            bsum = "RPO not met"
        elif any(b.state in ("unknown", "not reported") or b.rpo_met is None for b in bstat):
            bsum = "partly unknown"
        else:
            bsum = "RPO met"
        goods = [b.last_success for b in bstat if b.last_success]
        known_met = [b.rpo_met for b in bstat]
        systems.append(
            SystemRow(
                runbook=rid,
                name=_s(vs.get("name")) or (book.name if book else rid),
                tier=tier,
                owner=_s(vs.get("owner")) or (book.owner if book else ""),
                rto_seconds=rto,
                rpo_seconds=rpo,
                last_test=last_test,
                last_test_type=last_type,
                last_test_exercise=rec.exercise if rec else None,
                achieved_rto_seconds=_num(vs.get("achieved_rto_seconds")),
                within_rto=within,
                valid_until=valid_until,
                backups=bstat,
                backup_state=bsum,
                last_good_backup=min(goods) if goods else None,
                rpo_met=(False if False in known_met else True if known_met and None not in known_met else None),
                open_findings=mine,
                in_policy=not reasons,
                policy_reasons=reasons,
            )
        )
    if systems and not inp.records:
        gaps.append("No recovery evidence found: no system has a test on record.")
    return systems


def _summary_section(inp: DrInputs, systems: list[SystemRow], findings: list[Finding]) -> Summary:
    """The verdict (red, amber, green), its reasons and the critical-path figures."""
    v = inp.verification
    no_evidence = not inp.records
    cp = (v or {}).get("critical_path") or {}
    objective = _objective(inp)
    planned, projected, measured = (
        _num(cp.get(k)) for k in ("planned_seconds", "projected_seconds", "measured_seconds")
    )
    path = [str(p) for p in cp.get("path") or []] if isinstance(cp.get("path"), list) else []
    n_in = sum(1 for s in systems if s.in_policy)
    n_out = len(systems) - n_in
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = sum(1 for f in findings if f.severity == "warning")
    red: list[str] = []
    amber: list[str] = []
    for label, val in (("planned", planned), ("projected", projected), ("measured", measured)):
        if val is not None and val > objective:
            red.append(f"{label} recovery time {_h(val)} exceeds the {_h(objective)} objective")
    if no_evidence:
        red.append("no recovery evidence found")
    elif v is None:
        red.append("the evidence could not be verified")
    if not systems:
        red.append("no systems are described by runbooks")
    t1_out = [s.name for s in systems if s.tier == 1 and not s.in_policy]
    if t1_out:
        red.append("tier-1 systems out of policy: " + ", ".join(t1_out))
    if measured is None and not no_evidence:
        amber.append("no joint exercise has measured the whole estate")
    others_out = [s.name for s in systems if s.tier != 1 and not s.in_policy]
    if others_out:
        amber.append("systems out of policy: " + ", ".join(others_out))
    if warnings:
        amber.append(f"{warnings} warning(s) from the evidence verifier")
    unknown_b = sorted({b.name for s in systems for b in s.backups if b.state in ("not reported", "unknown")})
    if unknown_b:
        amber.append("backup state not reported: " + ", ".join(unknown_b))
    verdict: Literal["green", "amber", "red"] = "red" if red else "amber" if amber else "green"
    figures = "; ".join(
        f"{label} {_h(val)}"
        for label, val in (("planned", planned), ("projected", projected), ("measured", measured))
        if val is not None
    )
    figures = f" ({figures})" if figures else ""
    counts = (
        f"{n_in} of {len(systems)} {'system is' if len(systems) == 1 else 'systems are'} in policy "
        f"and {n_out} {'is' if n_out == 1 else 'are'} out of policy."
    )
    if verdict == "red":
        sentence = f"The estate cannot be shown to recover within the {_h(objective)} objective{figures}: {counts}"
    elif verdict == "amber":
        sentence = f"The estate can recover within the {_h(objective)} objective{figures}, with reservations: {counts}"
    else:
        sentence = (
            f"The estate can recover within the {_h(objective)} objective{figures}: "
            f"all {len(systems)} systems are in policy."
        )
    return Summary(
        verdict=verdict,
        sentence=sentence,
        reasons=red + amber,
        objective_seconds=objective,
        planned_seconds=planned,
        projected_seconds=projected,
        measured_seconds=measured,
        critical_path=path,
        systems_total=len(systems),
        systems_in_policy=n_in,
        systems_out_of_policy=n_out,
        errors=errors,
        warnings=warnings,
    )


def _dependencies_section(
    inp: DrInputs, vsys: dict[str, dict[str, Any]], systems: list[SystemRow], gaps: list[str]
) -> list[GraphNodeRow]:
    """The systems laid out in dependency layers, each with its policy status."""
    rb = inp.runbooks
    from agent.reports.svg import layered_layout

    deps: dict[str, tuple[str, ...]] = {k: b.depends_on for k, b in rb.items()}
    for rid, vs in vsys.items():
        if isinstance(vs.get("depends_on"), list):
            deps[rid] = tuple(str(d) for d in vs["depends_on"])
    lay = layered_layout(deps, deps)
    by_rid = {s.runbook: s for s in systems}
    graph = [
        GraphNodeRow(
            runbook=k,
            name=by_rid[k].name if k in by_rid else k,
            tier=by_rid[k].tier if k in by_rid else None,
            layer=lay.position[k][0],
            status=(
                "not tested"
                if k not in by_rid or "never tested" in by_rid[k].policy_reasons
                else "in policy"
                if by_rid[k].in_policy
                else "out of policy"
            ),
            depends_on=list(deps[k]),
        )
        for k in sorted(deps, key=lambda k: (lay.position[k], k))
    ]
    if not graph:
        gaps.append("No runbooks found, so there is no dependency graph.")
    return graph


def _coverage_section(
    bc: BuildContext,
    systems: list[SystemRow],
    timeline: Timeline,
    backups: dict[str, BackupState],
    since: float,
    at: datetime,
    gaps: list[str],
) -> Coverage:
    """Untested systems, tier-1 systems missing from the last exercise, backup links, availability."""
    never = sorted(s.runbook for s in systems if s.last_test is None)
    last_ex = timeline.exercise
    in_last = {t.runbook for t in timeline.systems}
    t1_missing = sorted(s.runbook for s in systems if s.tier == 1 and s.runbook not in in_last) if last_ex else []
    linked = {b.name for s in systems for b in s.backups}
    known_backups = _configured_backups(bc.config) | set(backups)
    not_linked = sorted(known_backups - linked)
    unknown_in_rb = sorted(linked - known_backups) if known_backups else []
    unavailable, without = _unavailable(bc, since, at.timestamp())
    if bc.store is None:
        gaps.append("No history for the period: the agent's state database is not available.")
    elif bc.config is not None and bc.config.targets and len(without) == len(bc.config.targets):
        gaps.append("No history for the period: no target has results in the state database.")
    if not known_backups:
        gaps.append("No backups are configured or reported, so backup links cannot be checked.")
    if last_ex is None:
        gaps.append("No joint exercise found, so tier-1 coverage of the last exercise is unknown.")
    return Coverage(
        never_tested=never,
        last_joint_exercise=last_ex,
        tier1_missing_from_last_exercise=t1_missing,
        backups_not_linked=not_linked,
        unknown_backups_in_runbooks=unknown_in_rb,
        unavailable_targets=unavailable,
        targets_without_history=without,
        threshold_percent=bc.unavailable_threshold_percent,
    )


def _integrity_section(bc: BuildContext, gaps: list[str]) -> Integrity:
    """The evidence chain head and what produced the report."""
    inp = bc.inputs
    v = inp.verification
    chain = (v or {}).get("chain") if isinstance((v or {}).get("chain"), dict) else {}
    head = _s((chain or {}).get("head_sha256")) or inp.chain_head
    if head is None:
        gaps.append("No sealed evidence records found, so there is no evidence chain head.")
    return Integrity(
        evidence_chain_head_sha256=head,
        evidence_records=len(inp.records),
        sealed_records=sum(1 for r in inp.records if r.sequence is not None),
        agent_version=__version__,
        config_path=str(bc.config_path) if bc.config_path else None,
        config_sha256=bc.config_sha256,
        verifier_ok=_bool(v.get("ok")) if v is not None else None,
    )


def _meta(bc: BuildContext, since: float, at: datetime) -> Meta:
    inp = bc.inputs
    gen = bc.generated_at or datetime.now(UTC)
    return Meta(
        title=bc.title,
        organisation=bc.organisation,
        generated_at=iso(gen) or "",
        at=iso(at) or "",
        period_start=iso(since) or "",
        period_end=iso(at) or "",
        period_seconds=bc.period_seconds,
        runbooks_dir=str(inp.runbooks_dir) if inp.runbooks_dir else None,
        evidence_dir=str(inp.evidence_dir) if inp.evidence_dir else None,
    )


def _h(seconds: float | None) -> str:
    from agent.reports.svg import hours

    return hours(seconds)


def _history(bc: BuildContext, target: str, since: float, until: float) -> list[tuple[float, float, bool]]:
    if bc.store is None:
        return []
    try:
        return bc.store.history(target, since, until)
    except Exception:  # noqa: BLE001 - a broken store is a stated gap
        return []


def _unavailable(bc: BuildContext, since: float, until: float) -> tuple[list[UnavailableTarget], list[str]]:
    cfg = bc.config
    if cfg is None:
        return [], []
    out: list[UnavailableTarget] = []
    without: list[str] = []
    for t in cfg.targets:
        rows = _history(bc, t.name, since, until)
        if not rows:
            without.append(t.name)
            continue
        bad = sum(1 for _s, _d, ok in rows if not ok) / len(rows)
        if bad * 100.0 > bc.unavailable_threshold_percent:
            out.append(UnavailableTarget(t.name, t.kind, cfg.site_of(t), round(bad, 6), len(rows)))
    out.sort(key=lambda u: (-u.unavailable_ratio, u.target))
    return out, sorted(without)


def _sites(
    bc: BuildContext, samples: list[tuple[Any, Any]], since: float, until: float, gaps: list[str]
) -> list[SiteRow]:
    cfg = bc.config
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"criteria": {}, "thresholds": {}})
    for res, s in samples:
        site = s.labels.get("site") or res.site
        if s.name == "continuity_site_standard_met" and "criterion" in s.labels:
            per[site]["criteria"][s.labels["criterion"]] = s.value == 1
            if "class" in s.labels:
                per[site]["class"] = s.labels["class"]
        elif s.name == "continuity_site_standard_threshold" and "criterion" in s.labels:
            per[site]["thresholds"][s.labels["criterion"]] = s.value
        elif s.name == "continuity_site_availability_ratio":
            w = s.labels.get("window", "")
            if w.startswith("service_hours"):
                per[site]["service_hours"] = s.value
            elif w.startswith("24x7"):
                per[site]["24x7"] = s.value
    names = set(per)
    if cfg is not None:
        names |= {s.name for s in cfg.sites}
        names -= {cfg.agent.site} - set(per)  # the agent's own site is not a remote site unless measured
    rows: list[SiteRow] = []
    for site in sorted(names):
        d = per.get(site, {"criteria": {}, "thresholds": {}})
        crit = [CriterionRow(c, met, d["thresholds"].get(c)) for c, met in sorted(d["criteria"].items())]
        hist: list[tuple[float, float, bool]] = []
        if cfg is not None:
            for t in cfg.targets:
                if cfg.site_of(t) == site:
                    hist.extend(_history(bc, t.name, since, until))
        failed = sum(1 for c in crit if c.met is False)
        rows.append(
            SiteRow(
                site=site,
                site_class=d.get("class") or (cfg.site_class(site) if cfg is not None else "default"),
                criteria=crit,
                criteria_failed=failed,
                all_met=None if not crit else failed == 0,
                availability_service_hours=d.get("service_hours"),
                availability_24x7=d.get("24x7"),
                up_ratio_period=round(sum(1 for h in hist if h[2]) / len(hist), 6) if hist else None,
                runs_period=len(hist),
            )
        )

    def worst(r: SiteRow) -> tuple[int, float, float, str]:
        return (
            -r.criteria_failed,
            r.availability_service_hours if r.availability_service_hours is not None else 2.0,
            r.up_ratio_period if r.up_ratio_period is not None else 2.0,
            r.site,
        )

    rows.sort(key=worst)
    if not rows:
        gaps.append("No remote sites are configured.")
    elif not any(r.criteria for r in rows):
        gaps.append("No connection-standard measurements for any site (no link collector results).")
    if rows and bc.store is not None and not any(r.runs_period for r in rows):
        gaps.append("No history for the period for any site's targets.")
    return rows


def overdue_days(due: date, at: datetime) -> int:
    return (at.date() - due).days
