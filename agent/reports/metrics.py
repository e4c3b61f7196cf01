"""Metrics of the scheduled DR report job, declared once and gathered in agent.catalogue."""

from __future__ import annotations

from agent.plugin import MetricSpec

REPORT_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "continuity_report_last_success_timestamp_seconds",
        "gauge",
        "When the scheduled report last finished writing every configured format (Unix time).",
        "seconds",
        labels=("report",),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_report_last_duration_seconds",
        "gauge",
        "How long the last scheduled report run took, successful or not.",
        "seconds",
        labels=("report",),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_report_last_due_timestamp_seconds",
        "gauge",
        "When the report was last due by its schedule (Unix time): the latest fire time of reports.schedule "
        "in reports.timezone at or before now, whether or not a run started then. Fire times before the "
        "agent first had a report schedule do not count; absent without a schedule or before its first fire "
        "time. The report is overdue while this is later than continuity_report_last_success_timestamp_seconds.",
        "seconds",
        labels=("report",),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_report_last_run_success",
        "gauge",
        "1 if the last report run wrote every configured format, 0 if it failed (the agent log and "
        "/api/v1/status say why); absent before the first run and while the report has no schedule.",
        labels=("report",),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_report_skipped_runs_total",
        "counter",
        "Scheduled report runs that did not start, by reason: still_running (the previous report run was "
        "still going), late (the agent could not start it within its misfire grace of one hour: overloaded "
        "or paused; such runs are merged into the next one). Exposed while the report has a schedule.",
        labels=("report", "reason"),
        target_labels=False,
    ),
)
