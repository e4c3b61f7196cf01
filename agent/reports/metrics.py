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
)
