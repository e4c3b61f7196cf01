"""Metrics of running DR exercises, declared once and gathered in agent.catalogue."""

from __future__ import annotations

from agent.plugin import MetricSpec

EXERCISE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "continuity_exercise_active",
        "gauge",
        "1 while a DR exercise is running (its journal is not finished), 0 once it is finished.",
        labels=("exercise",),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_exercise_elapsed_seconds",
        "gauge",
        "Time since the running exercise was declared (T0).",
        "seconds",
        labels=("exercise",),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_exercise_projected_seconds",
        "gauge",
        "Projected estate recovery time from T0: done steps as measured, the rest at their planned "
        "durations over the dependency graph.",
        "seconds",
        labels=("exercise",),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_exercise_objective_seconds",
        "gauge",
        "The estate recovery objective the running exercise is judged against (72 h by default).",
        "seconds",
        labels=("exercise",),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_exercise_steps",
        "gauge",
        "Recovery steps of a system in the running exercise, by state (waiting, ready, in_progress, done, failed).",
        labels=("exercise", "runbook", "state"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_exercise_system_restored",
        "gauge",
        "1 when the system's service has been restored in the running exercise.",
        labels=("exercise", "runbook"),
        target_labels=False,
    ),
    MetricSpec(
        "continuity_exercise_late_steps",
        "gauge",
        "Steps of the running exercise in progress for longer than their expected duration.",
        labels=("exercise",),
        target_labels=False,
    ),
)
