"""The DR report as data: built from the evidence verifier's typed result (runbooks and records
loaded leniently, so a bad file is a finding), the state history in SQLite and the config, then
rendered to HTML, Markdown or JSON. Every verdict is the verifier's; nothing here re-reads a
runbook or record. Every section is always present; a section with nothing to show carries its
gap in words (``gaps``), never an exception."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from agent import __version__
from agent.backupstate import BackupState, backup_states
from agent.evidence import EstateSettings, ExerciseSystem, SystemStatus, VerificationReport
from agent.yamlfile import FileIssue

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
class ReportEvidence:
    """What the report reads of runbooks and evidence: the verifier's typed result, loaded
    leniently (a bad file is an ``invalid_runbook``/``invalid_record`` finding and a line in
    ``problems``), or, when the verifier could not run, why not (``error``)."""

    runbooks_dir: Path | None
    evidence_dir: Path | None
    verification: VerificationReport | None = None
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    no_evidence: bool = True  # no record was loaded (or the evidence directory is missing)

    @property
    def bad_files(self) -> list[FileIssue]:
        return list(self.verification.bad_files) if self.verification else []


@dataclass
class BuildContext:
    evidence: ReportEvidence
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


def _findings(rep: VerificationReport | None) -> list[Finding]:
    out = [Finding(f.severity, f.rule, f.runbook, f.record, f.message) for f in (rep.findings if rep else [])]
    out.sort(key=lambda f: (f.severity != "error", f.runbook or "", f.rule, f.record or ""))
    return out


def _ts(t: datetime | None) -> str | None:
    """A time as the verifier's JSON writes it (the golden test compares them)."""
    return t.isoformat() if t is not None else None


def build_report(bc: BuildContext) -> Report:
    """The report, one function per section; each section states its own gaps."""
    ev = bc.evidence
    rep = ev.verification
    at = bc.at.astimezone(UTC)
    since = at.timestamp() - bc.period_seconds
    gaps: dict[str, list[str]] = {k: [] for k, _ in SECTIONS}
    findings = _findings(rep)
    backups = backup_states(bc.store)
    objective = rep.critical_path.objective_seconds if rep else EstateSettings().objective
    gaps["summary"].extend(_evidence_gaps(ev))
    systems = _systems_section(ev, findings, backups, at, gaps["systems"])
    timeline = _timeline_section(ev, {s.runbook: s.name for s in systems}, objective, gaps["timeline"])
    return Report(
        schema_version=SCHEMA_VERSION,
        meta=_meta(bc, since, at),
        summary=_summary_section(ev, objective, systems, findings),
        systems=systems,
        timeline=timeline,
        dependencies=_dependencies_section(ev, systems, gaps["dependencies"]),
        actions=_actions_section(ev, at, gaps["actions"]),
        sites=_sites(bc, _latest_samples(bc.store), since, at.timestamp(), gaps["sites"]),
        coverage=_coverage_section(bc, systems, timeline, backups, since, at, gaps["coverage"]),
        integrity=_integrity_section(bc, gaps["integrity"]),
        findings=findings,
        evidence=rep.to_json() if rep else None,
        gaps={k: g for k, g in gaps.items() if g},
        problems=list(ev.problems) + ([ev.error] if ev.error else []),
    )


def _evidence_gaps(ev: ReportEvidence) -> list[str]:
    """Why the evidence is not (all) verified, for the summary."""
    out = [f"The evidence could not be verified: {ev.error}."] if ev.error else []
    by_file: dict[str, list[FileIssue]] = {}
    for issue in ev.bad_files:
        by_file.setdefault(issue.file, []).append(issue)
    for issues in by_file.values():
        more = f" (and {len(issues) - 1} more, under Integrity)" if len(issues) > 1 else ""
        out.append(f"A file could not be verified and is left out: {issues[0]}{more}.")
    if ev.no_evidence:
        out.append("No recovery evidence found.")
    return out


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


def _backup_summary(bstat: list[BackupStatus], bad: list[str]) -> str:
    if not bstat:
        return "no backups listed"
    if all(b.state == "not reported" for b in bstat):
        return "not reported"
    if bad:
        return "RPO not met"
    if any(b.state in ("unknown", "not reported") or b.rpo_met is None for b in bstat):
        return "partly unknown"
    return "RPO met"


def _policy_reasons(s: SystemStatus, at: datetime, mine: list[Finding], bad_backups: list[str]) -> list[str]:
    """Why a system is out of policy (none: in policy), from the verifier's verdicts."""
    reasons: list[str] = []
    if s.last_test is None:
        reasons.append("never tested")
    if s.within_rto is False:
        reasons.append("RTO exceeded")
    elif s.within_rto is None and s.last_test is not None:
        reasons.append("achieved RTO unknown")
    if not s.valid and s.last_test is not None:
        expired = s.valid_until is not None and s.valid_until <= at
        reasons.append("evidence expired" if expired else "no valid evidence")
    errs = sorted({f.rule for f in mine if f.severity == "error"})
    if errs:
        reasons.append("findings: " + ", ".join(errs))
    if bad_backups:
        reasons.append("backup RPO not met: " + ", ".join(bad_backups))
    return reasons


def _system_row(
    s: SystemStatus, rep: VerificationReport, findings: list[Finding], backups: dict[str, BackupState], at: datetime
) -> SystemRow:
    mine = [f for f in findings if f.runbook == s.runbook]
    last = rep.record(s.last_record) if s.last_record else None
    bstat = _backup_statuses(list(s.backups), backups, s.rpo_seconds, at)
    bad_b = [b.name for b in bstat if b.state in BAD_BACKUP_STATES or b.rpo_met is False]
    reasons = _policy_reasons(s, at, mine, bad_b)
    goods = [b.last_success for b in bstat if b.last_success]
    known_met = [b.rpo_met for b in bstat]
    return SystemRow(
        runbook=s.runbook,
        name=s.name,
        tier=s.tier,
        owner=s.owner,
        rto_seconds=s.rto_seconds,
        rpo_seconds=s.rpo_seconds,
        last_test=_ts(s.last_test),
        last_test_type=s.last_test_type,
        last_test_exercise=last.record.exercise if last else None,
        achieved_rto_seconds=s.achieved_rto_seconds,
        within_rto=s.within_rto,
        valid_until=_ts(s.valid_until),
        backups=bstat,
        backup_state=_backup_summary(bstat, bad_b),
        last_good_backup=min(goods) if goods else None,
        rpo_met=(False if False in known_met else True if known_met and None not in known_met else None),
        open_findings=mine,
        in_policy=not reasons,
        policy_reasons=reasons,
    )


def _systems_section(
    ev: ReportEvidence, findings: list[Finding], backups: dict[str, BackupState], at: datetime, gaps: list[str]
) -> list[SystemRow]:
    """One row per system: objectives, last test, evidence, backups and whether it is in policy."""
    rep = ev.verification
    if rep is None:
        gaps.append(
            "The evidence could not be verified, so no systems are listed."
            if ev.error
            else "No runbooks found, so no systems are listed."
        )
        return []
    systems = [_system_row(s, rep, findings, backups, at) for s in rep.systems]
    if systems and ev.no_evidence:
        gaps.append("No recovery evidence found: no system has a test on record.")
    return systems


Figures = list[tuple[str, float | None]]  # (basis, seconds) for planned, projected, measured


def _summary_section(
    ev: ReportEvidence, objective: float, systems: list[SystemRow], findings: list[Finding]
) -> Summary:
    """The verdict (red, amber, green), its reasons and the critical-path figures."""
    cp = ev.verification.critical_path if ev.verification else None
    figures: Figures = [(b, cp.seconds(b) if cp else None) for b in ("planned", "projected", "measured")]
    planned, projected, measured = (v for _b, v in figures)
    n_in = sum(1 for s in systems if s.in_policy)
    warnings = sum(1 for f in findings if f.severity == "warning")
    red = _red_reasons(ev, objective, figures, systems)
    amber = _amber_reasons(ev, measured, systems, warnings)
    verdict: Literal["green", "amber", "red"] = "red" if red else "amber" if amber else "green"
    return Summary(
        verdict=verdict,
        sentence=_sentence(verdict, objective, figures, len(systems), n_in, len(systems) - n_in),
        reasons=red + amber,
        objective_seconds=objective,
        planned_seconds=planned,
        projected_seconds=projected,
        measured_seconds=measured,
        critical_path=list(cp.path) if cp else [],
        systems_total=len(systems),
        systems_in_policy=n_in,
        systems_out_of_policy=len(systems) - n_in,
        errors=sum(1 for f in findings if f.severity == "error"),
        warnings=warnings,
    )


def _red_reasons(ev: ReportEvidence, objective: float, figures: Figures, systems: list[SystemRow]) -> list[str]:
    """Why recovery within the objective is not demonstrated."""
    red = [
        f"{label} recovery time {_h(val)} exceeds the {_h(objective)} objective"
        for label, val in figures
        if val is not None and val > objective
    ]
    if ev.no_evidence:
        red.append("no recovery evidence found")
    elif ev.verification is None:
        red.append("the evidence could not be verified")
    bad_files = sorted({Path(i.file).name for i in ev.bad_files})
    if bad_files:
        red.append("files left out of the verification (unreadable or invalid): " + ", ".join(bad_files))
    if not systems:
        red.append("no systems are described by runbooks")
    t1_out = [s.name for s in systems if s.tier == 1 and not s.in_policy]
    if t1_out:
        red.append("tier-1 systems out of policy: " + ", ".join(t1_out))
    return red


def _amber_reasons(ev: ReportEvidence, measured: float | None, systems: list[SystemRow], warnings: int) -> list[str]:
    """Reservations: recovery is demonstrated, but not everything is in order."""
    amber: list[str] = []
    if measured is None and not ev.no_evidence:
        amber.append("no joint exercise has measured the whole estate")
    others_out = [s.name for s in systems if s.tier != 1 and not s.in_policy]
    if others_out:
        amber.append("systems out of policy: " + ", ".join(others_out))
    if warnings:
        amber.append(f"{warnings} warning(s) from the evidence verifier")
    unknown_b = sorted({b.name for s in systems for b in s.backups if b.state in ("not reported", "unknown")})
    if unknown_b:
        amber.append("backup state not reported: " + ", ".join(unknown_b))
    return amber


def _sentence(verdict: str, objective: float, figures: Figures, total: int, n_in: int, n_out: int) -> str:
    shown = "; ".join(f"{label} {_h(val)}" for label, val in figures if val is not None)
    within = f"within the {_h(objective)} objective" + (f" ({shown})" if shown else "")
    counts = (
        f"{n_in} of {total} {'system is' if total == 1 else 'systems are'} in policy "
        f"and {n_out} {'is' if n_out == 1 else 'are'} out of policy."
    )
    if verdict == "red":
        return f"The estate cannot be shown to recover {within}: {counts}"
    if verdict == "amber":
        return f"The estate can recover {within}, with reservations: {counts}"
    return f"The estate can recover {within}: all {total} systems are in policy."


def _timeline_system(sy: ExerciseSystem, start: datetime, name: str, critical: bool) -> TimelineSystem:
    steps = [
        TimelineStep(st.id, st.title or st.id, st.start_offset_seconds, st.end_offset_seconds, st.result)
        for st in sy.steps
        if st.start_offset_seconds is not None and st.end_offset_seconds is not None
    ]
    return TimelineSystem(
        runbook=sy.runbook,
        name=name,
        declared_seconds=(sy.declared_at - start).total_seconds(),
        restored_seconds=sy.restored_offset_seconds,
        rto_seconds=sy.rto_seconds,
        within_rto=sy.within_rto,
        critical=critical,
        steps=steps,
    )


def _timeline_section(ev: ReportEvidence, names: dict[str, str], objective: float, gaps: list[str]) -> Timeline:
    """The latest joint exercise as the verifier measured it (its critical path and within-RTO
    verdicts); unverified evidence shows no timeline rather than a second opinion."""
    rep = ev.verification
    ex = rep.exercise(rep.latest_joint_exercise) if rep and rep.latest_joint_exercise else None
    if ex is None:
        gaps.append(
            "No recovery evidence found, so there is no exercise to show."
            if ev.no_evidence
            else "The evidence could not be verified, so no exercise is shown."
            if rep is None
            else "No joint exercise found: no exercise has evidence for two or more systems."
        )
        return Timeline(None, None, objective, None, [], [])
    crit = list(ex.critical_path)
    rows = [
        _timeline_system(sy, ex.started_at, names.get(sy.runbook, sy.runbook), sy.runbook in crit) for sy in ex.systems
    ]
    rows.sort(key=lambda r: (r.restored_seconds if r.restored_seconds is not None else float("inf"), r.runbook))
    return Timeline(ex.id, iso(ex.started_at), objective, ex.measured_seconds, crit, rows)


def _actions_section(ev: ReportEvidence, at: datetime, gaps: list[str]) -> list[ActionRow]:
    """Open actions as the verifier lists them (the latest mention of each issue decides)."""
    rep = ev.verification
    out: list[ActionRow] = []
    for a in rep.open_actions if rep else []:
        rec = rep.record(a.record) if rep else None
        out.append(
            ActionRow(
                id=a.id,
                description=a.description,
                owner=a.owner,
                due=a.due.isoformat(),
                status="open",
                overdue=a.overdue,
                days_overdue=overdue_days(a.due, at) if a.overdue else None,
                runbook=a.runbook,
                exercise=rec.record.exercise if rec else "",
                record=a.record,
            )
        )
    out.sort(key=lambda a: (not a.overdue, a.due or "9999", a.runbook, a.id))
    if not out:
        gaps.append(
            "No recovery evidence found, so there are no actions."
            if ev.no_evidence
            else "The evidence could not be verified, so no actions are shown."
            if rep is None
            else "No open actions."
        )
    return out


def _dependencies_section(ev: ReportEvidence, systems: list[SystemRow], gaps: list[str]) -> list[GraphNodeRow]:
    """The systems laid out in dependency layers, each with its policy status."""
    from agent.reports.svg import layered_layout

    rep = ev.verification
    deps: dict[str, tuple[str, ...]] = {s.runbook: s.depends_on for s in rep.systems} if rep else {}
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
    rep = bc.evidence.verification
    head = rep.chain_head if rep else None
    if head is None:
        gaps.append("No sealed evidence records found, so there is no evidence chain head.")
    return Integrity(
        evidence_chain_head_sha256=head,
        evidence_records=len(rep.records) if rep else 0,
        sealed_records=rep.chain_length if rep else 0,
        agent_version=__version__,
        config_path=str(bc.config_path) if bc.config_path else None,
        config_sha256=bc.config_sha256,
        verifier_ok=rep.ok if rep else None,
    )


def _meta(bc: BuildContext, since: float, at: datetime) -> Meta:
    ev = bc.evidence
    gen = bc.generated_at or datetime.now(UTC)
    return Meta(
        title=bc.title,
        organisation=bc.organisation,
        generated_at=iso(gen) or "",
        at=iso(at) or "",
        period_start=iso(since) or "",
        period_end=iso(at) or "",
        period_seconds=bc.period_seconds,
        runbooks_dir=str(ev.runbooks_dir) if ev.runbooks_dir else None,
        evidence_dir=str(ev.evidence_dir) if ev.evidence_dir else None,
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


def _site_measurements(samples: list[tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    """Per site: connection-standard verdicts and thresholds, class and availability, from state."""
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
    return per


def _site_row(bc: BuildContext, site: str, d: dict[str, Any], since: float, until: float) -> SiteRow:
    cfg = bc.config
    crit = [CriterionRow(c, met, d["thresholds"].get(c)) for c, met in sorted(d["criteria"].items())]
    hist: list[tuple[float, float, bool]] = []
    if cfg is not None:
        for t in cfg.targets:
            if cfg.site_of(t) == site:
                hist.extend(_history(bc, t.name, since, until))
    failed = sum(1 for c in crit if c.met is False)
    return SiteRow(
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


def _worst_site_first(r: SiteRow) -> tuple[int, float, float, str]:
    return (
        -r.criteria_failed,
        r.availability_service_hours if r.availability_service_hours is not None else 2.0,
        r.up_ratio_period if r.up_ratio_period is not None else 2.0,
        r.site,
    )


def _sites(
    bc: BuildContext, samples: list[tuple[Any, Any]], since: float, until: float, gaps: list[str]
) -> list[SiteRow]:
    """Remote sites, worst first: connection-standard verdicts, availability, runs in the period."""
    cfg = bc.config
    per = _site_measurements(samples)
    names = set(per)
    if cfg is not None:
        names |= {s.name for s in cfg.sites}
        names -= {cfg.agent.site} - set(per)  # the agent's own site is not a remote site unless measured
    empty: dict[str, Any] = {"criteria": {}, "thresholds": {}}
    rows = sorted((_site_row(bc, site, per.get(site, empty), since, until) for site in names), key=_worst_site_first)
    if not rows:
        gaps.append("No remote sites are configured.")
    elif not any(r.criteria for r in rows):
        gaps.append("No connection-standard measurements for any site (no link collector results).")
    if rows and bc.store is not None and not any(r.runs_period for r in rows):
        gaps.append("No history for the period for any site's targets.")
    return rows


def overdue_days(due: date, at: datetime) -> int:
    return (at.date() - due).days
