"""Connection standards for sites: site classes, service hours, availability and hysteresis.

A site class (config ``site_classes:``) says what a site's connection must achieve: minimum
download/upload rate, maximum RTT, jitter and loss, minimum availability over its service hours.

* :mod:`agent.standards.types` — bit rates, site classes, service hours, sites, criteria,
  thresholds and the config cross-checks (what agent.config needs);
* :mod:`agent.standards.availability` — service-hour windows and time-weighted availability;
* :mod:`agent.standards.evaluator` — the evaluation with hysteresis and its samples.

The names are re-exported here.
"""

from agent.standards.availability import (
    REACHABILITY_TASK,
    AvailabilityCalc,
    Interval,
    Row,
    coverage,
    in_service,
    overlap,
    service_windows,
)
from agent.standards.evaluator import (
    KV_KEY,
    CriterionReport,
    CriterionState,
    Evaluator,
    EvaluatorState,
    SiteReport,
    report_samples,
)
from agent.standards.types import (
    AVAILABILITY_WINDOW,
    CRITERIA,
    DAY_NAMES,
    WEEKDAYS,
    WINDOWS,
    Bitrate,
    ClockTime,
    Criterion,
    DayName,
    Ratio,
    ServiceHours,
    Site,
    SiteClass,
    WanInterface,
    check_config,
    format_bitrate,
    load_bank_holidays,
    parse_bitrate,
    thresholds,
)

__all__ = [
    "AVAILABILITY_WINDOW",
    "CRITERIA",
    "DAY_NAMES",
    "KV_KEY",
    "REACHABILITY_TASK",
    "WEEKDAYS",
    "WINDOWS",
    "AvailabilityCalc",
    "Bitrate",
    "ClockTime",
    "Criterion",
    "CriterionReport",
    "CriterionState",
    "DayName",
    "Evaluator",
    "EvaluatorState",
    "Interval",
    "Ratio",
    "Row",
    "ServiceHours",
    "Site",
    "SiteClass",
    "SiteReport",
    "WanInterface",
    "check_config",
    "coverage",
    "format_bitrate",
    "in_service",
    "load_bank_holidays",
    "overlap",
    "parse_bitrate",
    "report_samples",
    "service_windows",
    "thresholds",
]
