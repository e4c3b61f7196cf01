"""Making a DR report: verify the evidence (in process, leniently), build the model, write dated
files, prune old ones. Shared by ``continuity-agent report dr`` and the agent's scheduled job."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.evidence import EvidenceInputError, verify
from agent.fileio import atomic_write
from agent.reports.config import EXTENSIONS, REPORT_PREFIX, ReportsConfig, sources
from agent.reports.model import BuildContext, Report, ReportEvidence, StateView, build_report
from agent.reports.render import RENDERERS
from agent.yamlfile import FileInputError

log = logging.getLogger(__name__)

_DATED = re.compile(r"^dr-(\d{8}T\d{6}Z)\.(html|md|json)$")


def read_evidence(runbooks_dir: Path | None, evidence_dir: Path | None, at: datetime) -> ReportEvidence:
    """The verifier's typed result, loaded leniently: a bad runbook or record is a finding and a
    line in ``problems``. A directory that is missing or cannot be listed (or a verifier bug) leaves
    no verification, and ``error`` says why: a gap the report states, never an exception."""
    ev = ReportEvidence(runbooks_dir, evidence_dir)
    if runbooks_dir is None:
        ev.problems.append("no runbooks directory configured (reports.runbooks_dir)")
    if evidence_dir is None:
        ev.problems.append("no evidence directory configured (reports.evidence_dir)")
    if runbooks_dir is None or evidence_dir is None:
        return ev
    try:
        ev.verification = verify(runbooks_dir, evidence_dir, at, lenient=True)
    except EvidenceInputError as e:  # a directory, not a file: the report states the gap
        log.warning("evidence not verified: %s", e)
        issues = [str(i) for i in e.issues]
        more = f" (and {len(issues) - 3} more)" if len(issues) > 3 else ""
        ev.problems.extend(issues)
        ev.error = "invalid runbooks or evidence: " + "; ".join(issues[:3]) + more
    except Exception as e:  # a verifier bug must not stop the report; logged with its traceback
        log.exception("evidence verification failed")
        ev.error = f"evidence verification failed: {e}"
    if ev.verification is not None:
        ev.problems.extend(str(i) for i in ev.verification.bad_files)
        ev.no_evidence = not ev.verification.records
    else:
        ev.no_evidence = not evidence_dir.is_dir()
    return ev


def generate(
    config: Any,
    *,
    at: datetime,
    period: float | None = None,
    store: StateView | None = None,
    config_path: Path | None = None,
    config_sha256: str | None = None,
    generated_at: datetime | None = None,
    strict: bool = False,
) -> Report:
    """The report. A runbook or record that cannot be read or is invalid is a finding the report
    states; with ``strict`` (``report dr``) it is :class:`FileInputError` instead."""
    rep: ReportsConfig = getattr(config, "reports", None) or ReportsConfig()
    src = sources(config)
    evidence = read_evidence(src.runbooks_dir, src.evidence_dir, at)
    if strict and evidence.bad_files:
        raise FileInputError(evidence.bad_files)
    return build_report(
        BuildContext(
            evidence=evidence,
            at=at,
            period_seconds=period if period is not None else rep.period,
            config=config,
            config_path=config_path,
            config_sha256=config_sha256,
            store=store,
            title=rep.title,
            organisation=rep.organisation,
            unavailable_threshold_percent=rep.unavailable_threshold_percent,
            generated_at=generated_at,
        )
    )


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Reports are 0600 in a directory made 0700: they name every system and its weak points;
    readers get them through the agent's authenticated /reports/ or from the owner. (Evidence
    records pass 0644, as ``evidence seal`` writes them.)"""
    path.parent.mkdir(mode=0o700 if not mode & 0o077 else 0o755, parents=True, exist_ok=True)
    atomic_write(path, text, mode=mode)


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_dated(report: Report, out_dir: Path, formats: list[str], at: datetime) -> list[Path]:
    """Write ``dr-<UTC stamp>.<ext>`` for each format; returns the paths written."""
    written = []
    for fmt in formats:
        path = out_dir / f"{REPORT_PREFIX}{stamp(at)}.{EXTENSIONS[fmt]}"
        write_atomic(path, RENDERERS[fmt](report))
        written.append(path)
    return written


def prune(out_dir: Path, *, retention: float, keep_min: int, now: float) -> list[Path]:
    """Delete dated reports older than ``retention``, always keeping the ``keep_min`` newest runs."""
    if not out_dir.is_dir():
        return []
    runs: dict[str, list[Path]] = {}
    for p in out_dir.iterdir():
        m = _DATED.match(p.name)
        if m and p.is_file():
            runs.setdefault(m.group(1), []).append(p)
    removed: list[Path] = []
    for i, key in enumerate(sorted(runs, reverse=True)):
        if i < keep_min:
            continue
        when = datetime.strptime(key, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        if now - when > retention:
            for p in runs[key]:
                try:
                    p.unlink()
                    removed.append(p)
                except OSError as e:
                    log.warning("cannot delete old report %s: %s", p, e)
    return removed
