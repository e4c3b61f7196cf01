#!/usr/bin/env python3
"""Grafana dashboards for continuity-agent, as code.

    python grafana/generate.py          # write grafana/dashboards/*.json
    python grafana/generate.py --check  # exit 1 if the committed JSON differs from this file's output

Plain Python, no dependencies: each dashboard is built from a few panel helpers into the Grafana 10
dashboard model (schemaVersion 39). Every panel queries the data source chosen in the
``datasource`` variable, so the JSON imports into any Grafana 10+ with a Prometheus data source, and
the provisioning files in grafana/provisioning/ load it as is. Edit this file, not the JSON: a test
checks that the committed JSON equals this output, and another runs every panel query against a live
Prometheus scraping a live agent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 39  # Grafana 10.4
OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
DAY = 86400
ESTATE_OBJECTIVE = 72 * 3600

Json = dict[str, Any]

# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------

# Criteria measured in bytes per second (the metrics' base unit); the dashboards show them in bit/s.
RATE_CRITERIA = "download|upload|negotiated_speed"


def criteria_in_bits(metric: str, selector: str) -> str:
    """Per-criterion values of a ``continuity_site_standard_*`` metric with the rate criteria in bit/s."""
    return (f'max by (criterion) ({metric}{{{selector},criterion=~"{RATE_CRITERIA}"}}) * 8 '
            f'or max by (criterion) ({metric}{{{selector},criterion!~"{RATE_CRITERIA}"}})')



def q(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    """A Prometheus query target; refIds are assigned by the panel."""
    t: Json = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not (instant or table),
        "instant": instant or table,
    }
    if table:
        t["format"] = "table"
    return t


def steps(*pairs: tuple[str, float | None]) -> Json:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in pairs]}


OK_BAD = steps(("red", None), ("green", 1))  # 1 good, 0 bad
RATIO_GOOD_HIGH = steps(("red", None), ("orange", 0.95), ("green", 0.99))


def value_map(mapping: dict[str, tuple[str, str]]) -> list[Json]:
    return [{
        "type": "value",
        "options": {k: {"text": text, "color": color, "index": i}
                    for i, (k, (text, color)) in enumerate(mapping.items())},
    }]


MET = value_map({"0": ("Below standard", "red"), "1": ("Met", "green")})
UP = value_map({"0": ("Down", "red"), "1": ("Up", "green")})
YES_NO = value_map({"0": ("No", "red"), "1": ("Yes", "green")})
IN_HOURS = value_map({"0": ("Closed", "blue"), "1": ("In service", "green")})
BACKUP_STATES = {"fresh": "green", "late": "orange", "stale": "red", "failed": "red", "never_ran": "purple",
                 "unknown": "text"}


def _panel(kind: str, title: str, targets: list[Json], *, description: str = "", unit: str = "",
           thresholds: Json | None = None, mappings: list[Json] | None = None, options: Json | None = None,
           overrides: list[Json] | None = None, transformations: list[Json] | None = None,
           min_: float | None = None, max_: float | None = None, color_mode: str = "") -> Json:
    defaults: Json = {}
    if unit:
        defaults["unit"] = unit
    if thresholds is not None:
        defaults["thresholds"] = thresholds
        defaults["color"] = {"mode": color_mode or "thresholds"}
    elif color_mode:
        defaults["color"] = {"mode": color_mode}
    if mappings:
        defaults["mappings"] = mappings
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    p: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if transformations:
        p["transformations"] = transformations
    return p


def stat(title: str, *targets: Json, text_mode: str = "value_and_name", **kw: Any) -> Json:
    opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background", "graphMode": "none", "textMode": text_mode, "justifyMode": "auto",
            "orientation": "auto"}
    return _panel("stat", title, list(targets), options=opts, **kw)


def timeseries(title: str, *targets: Json, **kw: Any) -> Json:
    opts = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True,
                       "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"}}
    kw.setdefault("color_mode", "palette-classic")
    return _panel("timeseries", title, list(targets), options=opts, **kw)


def state_timeline(title: str, *targets: Json, **kw: Any) -> Json:
    opts = {"showValue": "never", "mergeValues": True, "rowHeight": 0.8, "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False}}
    return _panel("state-timeline", title, list(targets), options=opts, **kw)


def bargauge(title: str, *targets: Json, **kw: Any) -> Json:
    opts = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "displayMode": "gradient", "orientation": "horizontal", "showUnfilled": True}
    return _panel("bargauge", title, list(targets), options=opts, **kw)


def table(title: str, columns: list[tuple[str, Json]], *, hide: tuple[str, ...] = (), **kw: Any) -> Json:
    """A table of instant queries merged on their common labels; ``columns`` is (header, target)."""
    targets = [t for _, t in columns]
    rename = {f"Value #{chr(ord('A') + i)}": header for i, (header, _) in enumerate(columns)}
    excluded = {"Time": True, "job": True, "instance": True, "__name__": True} | {h: True for h in hide}
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": excluded, "renameByName": rename, "indexByName": {}}},
    ]
    opts = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}}
    return _panel("table", title, targets, options=opts, transformations=transformations, **kw)


def column(header: str, *, unit: str = "", mappings: list[Json] | None = None, thresholds: Json | None = None,
           cell: str = "") -> Json:
    """A field override for one table column."""
    props: list[Json] = []
    if unit:
        props.append({"id": "unit", "value": unit})
    if mappings:
        props.append({"id": "mappings", "value": mappings})
    if thresholds:
        props.append({"id": "thresholds", "value": thresholds})
    if cell:
        props.append({"id": "custom.cellOptions", "value": {"type": cell}})
    return {"matcher": {"id": "byName", "options": header}, "properties": props}


def text(title: str, content: str) -> Json:
    return {"type": "text", "title": title, "description": "", "options": {"mode": "markdown", "content": content}}


class Dashboard:
    """Lays panels out left to right on Grafana's 24-column grid."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str], variables: list[Json]) -> None:
        self.uid, self.title, self.description, self.tags = uid, title, description, tags
        self.variables = [datasource_variable(), *variables]
        self.panels: list[Json] = []
        self._x = self._y = self._row_h = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "gridPos": {"x": 0, "y": self._y, "w": GRID_WIDTH, "h": 1}})
        self._y += 1

    def add(self, panel: Json, w: int, h: int) -> None:
        if self._x + w > GRID_WIDTH:
            self._newline()
        panel["gridPos"] = {"x": self._x, "y": self._y, "w": w, "h": h}
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_h
        self._x = self._row_h = 0

    def model(self) -> Json:
        panels = []
        for i, p in enumerate(self.panels, start=1):
            panels.append({"id": i, **p})
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["continuity", *self.tags],
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "editable": True,
            "graphTooltip": 1,
            "timezone": "",
            "refresh": "1m",
            "time": {"from": "now-24h", "to": "now"},
            "timepicker": {},
            "fiscalYearStartMonth": 0,
            "liveNow": False,
            "annotations": {"list": [{
                "builtIn": 1, "type": "dashboard", "name": "Annotations & Alerts", "enable": True, "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)", "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            }]},
            "links": [{"type": "dashboards", "tags": ["continuity"], "asDropdown": True, "title": "Continuity",
                       "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                       "tooltip": "", "url": ""}],
            "templating": {"list": self.variables},
            "panels": panels,
        }


def datasource_variable() -> Json:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def query_variable(name: str, label: str, query: str, *, multi: bool = False) -> Json:
    v: Json = {"name": name, "label": label, "type": "query", "datasource": DS,
               "query": {"query": query, "refId": f"{name}-variable"}, "definition": query,
               "current": {}, "hide": 0, "includeAll": multi, "multi": multi, "options": [], "refresh": 2,
               "regex": "", "skipUrlSync": False, "sort": 1}
    if multi:
        v["allValue"] = ".*"
    return v


# --------------------------------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------------------------------

REACHABLE = "max by (site) (continuity_device_up or continuity_probe_success)"


def estate_overview() -> Dashboard:
    d = Dashboard("continuity-estate", "Continuity — Estate overview",
                  "Every site at a glance: connection standard, reachability, backups and DR readiness.",
                  ["estate"], [])
    d.add(stat("Sites", q("count(count by (site) (continuity_target_up))", "sites"),
               thresholds=steps(("blue", None)), text_mode="value"), 3, 4)
    d.add(stat("Sites reachable", q(f"avg({REACHABLE})", "reachable"), unit="percentunit",
               thresholds=RATIO_GOOD_HIGH, text_mode="value",
               description="Share of sites where an SNMP device or a probe answers."), 4, 4)
    d.add(stat("Sites meeting their connection standard",
               q("avg(min by (site) (continuity_site_standard_met_all))", "met"), unit="percentunit",
               thresholds=steps(("red", None), ("orange", 0.8), ("green", 1)), text_mode="value"), 5, 4)
    d.add(stat("Targets up", q("sum(continuity_target_up) / count(continuity_target_up)", "up"),
               unit="percentunit", thresholds=RATIO_GOOD_HIGH, text_mode="value"), 3, 4)
    d.add(stat("Backups fresh",
               q('sum(continuity_backup_state{state="fresh"})'
                 " / count(max by (target, backup) (continuity_backup_state))", "fresh"),
               unit="percentunit", thresholds=steps(("red", None), ("green", 1)), text_mode="value"), 3, 4)
    d.add(stat("Systems with valid recovery evidence", q("avg(continuity_recovery_evidence_valid)", "valid"),
               unit="percentunit", thresholds=steps(("red", None), ("orange", 0.8), ("green", 1)),
               text_mode="value"), 3, 4)
    d.add(stat("Estate recovery (measured)",
               q('max(continuity_recovery_critical_path_seconds{basis="measured"})', "measured"), unit="s",
               thresholds=steps(("green", None), ("red", ESTATE_OBJECTIVE)), text_mode="value",
               description="Latest joint exercise: last restore minus first declaration. Objective 72 h."), 3, 4)

    d.add(table("Sites", [
        ("Reachable", q(REACHABLE, table=True)),
        ("Standard met", q("min by (site) (continuity_site_standard_met_all)", table=True)),
        ("Criteria failing", q("sum by (site) (1 - continuity_site_standard_met)", table=True)),
        ("Availability (service hours, 30 d)",
         q('min by (site) (continuity_site_availability_ratio{window="service_hours_30d"})', table=True)),
        ("Targets up", q("avg by (site) (continuity_target_up)", table=True)),
        ("Backups fresh", q('sum by (site) (continuity_backup_state{state="fresh"}) '
                            "/ count by (site) (max by (site, target, backup) (continuity_backup_state))", table=True)),
    ], description="One row per site, coloured by whether its connection meets the standard for its class.",
        overrides=[
            column("Reachable", mappings=UP, thresholds=OK_BAD, cell="color-background"),
            column("Standard met", mappings=MET, thresholds=OK_BAD, cell="color-background"),
            column("Criteria failing", thresholds=steps(("green", None), ("red", 1)), cell="color-text"),
            column("Availability (service hours, 30 d)", unit="percentunit", thresholds=RATIO_GOOD_HIGH,
                   cell="color-text"),
            column("Targets up", unit="percentunit", thresholds=RATIO_GOOD_HIGH, cell="color-text"),
            column("Backups fresh", unit="percentunit", thresholds=steps(("red", None), ("green", 1)),
                   cell="color-text"),
        ]), 24, 10)

    d.add(state_timeline("Site reachability", q(REACHABLE, "{{site}}"), mappings=UP, thresholds=OK_BAD), 12, 8)
    d.add(state_timeline("Connection standard", q("min by (site) (continuity_site_standard_met_all)", "{{site}}"),
                         mappings=MET, thresholds=OK_BAD), 12, 8)
    d.add(bargauge("Backups by state", q("sum by (state) (continuity_backup_state)", "{{state}}"),
                   thresholds=steps(("blue", None)),
                   overrides=[{"matcher": {"id": "byName", "options": s},
                               "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}]}
                              for s, c in BACKUP_STATES.items()]), 8, 8)
    d.add(bargauge("Estate recovery time vs objective",
                   q("max by (basis) (continuity_recovery_critical_path_seconds)", "{{basis}}"),
                   q("max(continuity_recovery_objective_seconds)", "objective"),
                   unit="s", thresholds=steps(("green", None), ("red", ESTATE_OBJECTIVE)), min_=0), 8, 8)
    d.add(stat("Failing targets by collector",
               q("count by (collector) (continuity_target_up) - sum by (collector) (continuity_target_up)",
                 "{{collector}}"),
               thresholds=steps(("green", None), ("red", 1)), text_mode="value_and_name"), 8, 8)
    return d


def site_detail() -> Dashboard:
    s = 'site="$site"'
    d = Dashboard("continuity-site", "Continuity — Site detail",
                  "One site: its connection against the standard for its class, link quality, interfaces, "
                  "availability in service hours, targets and servers.",
                  ["site"], [query_variable("site", "Site", "label_values(continuity_target_up, site)")])
    d.row("Connection standard")
    d.add(stat("Standard met", q(f"min(continuity_site_standard_met_all{{{s}}})", "all criteria"),
               mappings=MET, thresholds=OK_BAD, text_mode="value"), 4, 6)
    d.add(stat("Service hours", q(f"max(continuity_site_in_service{{{s}}})", "now"),
               mappings=IN_HOURS, thresholds=steps(("blue", None), ("green", 1)), text_mode="value"), 4, 6)
    d.add(stat("Availability, last 30 days", q(f"continuity_site_availability_ratio{{{s}}}", "{{window}}"),
               unit="percentunit", thresholds=RATIO_GOOD_HIGH), 6, 6)
    d.add(table("Criteria", [
        ("Measured", q(criteria_in_bits("continuity_site_standard_value", s), table=True)),
        ("Threshold", q(criteria_in_bits("continuity_site_standard_threshold", s), table=True)),
        ("Met", q(f"max by (criterion) (continuity_site_standard_met{{{s}}})", table=True)),
    ], description="Each criterion of the site class: bits/s for download, upload and negotiated speed; "
                   "seconds for rtt and jitter; 0-1 for loss and availability.",
        overrides=[column("Met", mappings=MET, thresholds=OK_BAD, cell="color-background")]), 10, 6)

    d.row("Link")
    d.add(timeseries("Round-trip time", q(f"continuity_link_rtt_seconds{{{s}}}", "{{target}} {{stat}}"),
                     q(f'continuity_site_standard_threshold{{{s},criterion="rtt"}}', "standard"), unit="s"), 8, 8)
    d.add(timeseries("Jitter", q(f"continuity_link_jitter_seconds{{{s}}}", "{{target}}"),
                     q(f'continuity_site_standard_threshold{{{s},criterion="jitter"}}', "standard"), unit="s"), 8, 8)
    d.add(timeseries("Packet loss", q(f"continuity_link_loss_ratio{{{s}}}", "{{target}}"),
                     q(f'continuity_site_standard_threshold{{{s},criterion="loss"}}', "standard"),
                     unit="percentunit", min_=0), 8, 8)
    d.add(timeseries("Throughput vs contracted vs standard",
                     q(f"continuity_link_throughput_bytes_per_second{{{s}}} * 8", "measured {{direction}}"),
                     q(f"continuity_link_contracted_bytes_per_second{{{s}}} * 8", "contracted {{direction}}"),
                     q(f'continuity_site_standard_threshold{{{s},criterion=~"download|upload"}} * 8',
                       "standard {{criterion}}"),
                     q(f'continuity_site_standard_value{{{s},criterion="negotiated_speed"}} * 8',
                       "negotiated (WAN port)"),
                     unit="bps", min_=0), 12, 8)
    d.add(timeseries("WAN utilisation", q(f"continuity_link_utilisation_ratio{{{s}}}", "{{direction}}"),
                     unit="percentunit", min_=0), 6, 8)
    d.add(stat("Last throughput test",
               q(f"time() - max(continuity_link_throughput_test_timestamp_seconds{{{s}}})", "age"),
               unit="s", thresholds=steps(("green", None), ("orange", DAY)), text_mode="value"), 6, 8)
    d.add(state_timeline("Service hours and availability",
                         q(f"max(continuity_site_in_service{{{s}}})", "service hours"),
                         q(f"max(continuity_device_up{{{s}}} or continuity_probe_success{{{s}}})",
                           "reachable"),
                         mappings=value_map({"0": ("No", "red"), "1": ("Yes", "green")}), thresholds=OK_BAD), 24, 5)

    d.row("Devices and interfaces")
    d.add(stat("Devices", q(f"continuity_device_up{{{s}}}", "{{target}}"), mappings=UP, thresholds=OK_BAD), 6, 7)
    d.add(table("Interfaces", [
        ("Oper", q(f"max by (target, interface, alias) (continuity_interface_up{{{s}}})", table=True)),
        ("Admin", q(f"max by (target, interface, alias) (continuity_interface_admin_up{{{s}}})", table=True)),
        ("Speed", q(f"max by (target, interface, alias) (continuity_interface_speed_bytes_per_second{{{s}}}) * 8",
                    table=True)),
    ], overrides=[column("Oper", mappings=UP, thresholds=OK_BAD, cell="color-background"),
                  column("Admin", mappings=UP, thresholds=OK_BAD, cell="color-text"),
                  column("Speed", unit="bps")]), 18, 7)
    d.add(timeseries("Interface traffic",
                     q(f"rate(continuity_interface_receive_bytes_total{{{s}}}[$__rate_interval]) * 8",
                       "{{target}} {{interface}} in"),
                     q(f"rate(continuity_interface_transmit_bytes_total{{{s}}}[$__rate_interval]) * 8",
                       "{{target}} {{interface}} out"), unit="bps"), 12, 8)
    d.add(timeseries("Interface errors and discards",
                     q(f"rate(continuity_interface_errors_total{{{s}}}[$__rate_interval])",
                       "{{target}} {{interface}} errors {{direction}}"),
                     q(f"rate(continuity_interface_discards_total{{{s}}}[$__rate_interval])",
                       "{{target}} {{interface}} discards {{direction}}"), unit="pps"), 6, 8)
    d.add(timeseries("Device uptime", q(f"continuity_device_uptime_seconds{{{s}}}", "{{target}}"), unit="s"), 6, 8)

    d.row("Targets, probes and servers")
    d.add(state_timeline("Targets", q(f"continuity_target_up{{{s}}}", "{{collector}} {{target}}"),
                         mappings=UP, thresholds=OK_BAD), 12, 8)
    d.add(timeseries("Probe duration", q(f"continuity_probe_duration_seconds{{{s}}}", "{{target}}"), unit="s"), 6, 8)
    d.add(stat("Probes", q(f"continuity_probe_success{{{s}}}", "{{target}}"), mappings=UP, thresholds=OK_BAD), 6, 8)
    d.add(bargauge("TLS certificates: time to expiry",
                   q(f"continuity_probe_tls_cert_expiry_timestamp_seconds{{{s}}} - time()", "{{target}}"),
                   unit="s", thresholds=steps(("red", None), ("orange", 7 * DAY), ("green", 21 * DAY))), 8, 8)
    d.add(timeseries("Server CPU", q(f"continuity_host_cpu_usage_ratio{{{s}}}", "{{target}}"),
                     unit="percentunit", min_=0, max_=1), 8, 8)
    d.add(timeseries("Server memory used",
                     q(f"1 - continuity_host_memory_available_bytes{{{s}}} / continuity_host_memory_total_bytes{{{s}}}",
                       "{{target}}"), unit="percentunit", min_=0, max_=1), 8, 8)
    d.add(bargauge("Filesystem free",
                   q(f"continuity_host_filesystem_free_bytes{{{s}}} / continuity_host_filesystem_size_bytes{{{s}}}",
                     "{{target}} {{mountpoint}}"),
                   unit="percentunit", min_=0, max_=1,
                   thresholds=steps(("red", None), ("orange", 0.1), ("green", 0.2))),
          12, 8)
    d.add(stat("Processes running", q(f"continuity_host_processes_running{{{s}}}", "{{target}} {{process}}"),
               thresholds=steps(("red", None), ("green", 1))), 12, 8)
    return d


def backups() -> Dashboard:
    s = 'site=~"$site"'
    by = "site, target, backup, kind"
    d = Dashboard("continuity-backups", "Continuity — Backups",
                  "Every backup: state against its RPO, size, snapshots, integrity checks and restore tests.",
                  ["backup"], [query_variable("site", "Site", "label_values(continuity_backup_state, site)",
                                              multi=True)])
    for state, color in BACKUP_STATES.items():
        d.add(stat(state.replace("_", " ").capitalize(),
                   q(f'sum(continuity_backup_state{{{s},state="{state}"}})', state),
                   thresholds=steps((color if state == "fresh" else "green", None), (color, 1)),
                   text_mode="value"), 4, 4)
    d.add(table("Backups", [
        ("State", q(f"max by ({by}, state) (continuity_backup_state{{{s}}}) == 1", table=True)),
        ("Last success", q(f"max by ({by}) (continuity_backup_last_success_timestamp_seconds{{{s}}}) * 1000",
                           table=True)),
        ("Last attempt", q(f"max by ({by}) (continuity_backup_last_attempt_timestamp_seconds{{{s}}}) * 1000",
                           table=True)),
        ("RPO", q(f"max by ({by}) (continuity_backup_rpo_seconds{{{s}}})", table=True)),
        ("Size", q(f"max by ({by}) (continuity_backup_size_bytes{{{s}}})", table=True)),
        ("Snapshots", q(f"max by ({by}) (continuity_backup_snapshots{{{s}}})", table=True)),
        # 1 when the latest success shrank past the backup's size_drop_fraction (alert BackupSizeDropped).
        ("Size drop", q(f"max by ({by}) (continuity_backup_size_drop{{{s}}})", table=True)),
    ], hide=("Value #A",), overrides=[
        column("state", mappings=value_map({k: (k.replace("_", " "), c) for k, c in BACKUP_STATES.items()}),
               cell="color-background"),
        column("Last success", unit="dateTimeAsIso"), column("Last attempt", unit="dateTimeAsIso"),
        column("RPO", unit="s"), column("Size", unit="bytes"),
        column("Size drop", mappings=value_map({"0": ("No", "green"), "1": ("Shrank", "red")}),
               cell="color-background"),
    ]), 24, 10)
    d.add(timeseries("Age of last success vs RPO",
                     q(f"time() - continuity_backup_last_success_timestamp_seconds{{{s}}}", "{{backup}} age"),
                     q(f"continuity_backup_rpo_seconds{{{s}}}", "{{backup}} RPO"), unit="s", min_=0), 12, 8)
    d.add(timeseries("Backup size", q(f"continuity_backup_size_bytes{{{s}}}", "{{backup}}"), unit="bytes"), 12, 8)
    d.add(timeseries("Snapshots", q(f"continuity_backup_snapshots{{{s}}}", "{{backup}}")), 8, 8)
    d.add(table("Integrity checks", [
        ("OK", q(f"max by ({by}) (continuity_backup_integrity_ok{{{s}}})", table=True)),
        ("Last good check", q(f"max by ({by}) (continuity_backup_integrity_check_last_success_timestamp_seconds{{{s}}})"
                              " * 1000", table=True)),
    ], overrides=[column("OK", mappings=YES_NO, thresholds=OK_BAD, cell="color-background"),
                  column("Last good check", unit="dateTimeAsIso")],
       description="Last good check: the last check that completed and found the repository intact. A check "
                   "that found damage is a failure (OK No, reason integrity_failed), never a success."), 8, 8)
    d.add(table("Restore tests", [
        ("Last success", q(f"max by ({by}) (continuity_backup_restore_test_last_success_timestamp_seconds{{{s}}})"
                           " * 1000", table=True)),
        ("Duration", q(f"max by ({by}) (continuity_backup_restore_test_duration_seconds{{{s}}})", table=True)),
        ("OK", q(f"max by ({by}) (continuity_backup_restore_test_ok{{{s}}})", table=True)),
        ("Not run (7d)", q(f"round(sum by ({by}) (increase(continuity_backup_restore_test_not_run_total{{{s}}}[7d])))",
                           table=True)),
    ], overrides=[column("Last success", unit="dateTimeAsIso"), column("Duration", unit="s"),
                  column("OK", mappings=YES_NO, thresholds=OK_BAD, cell="color-background"),
                  column("Not run (7d)", thresholds=steps(("green", None), ("red", 1)), cell="color-background")],
       description="Last success: the last test that restored and verified every selected file. OK is empty "
                   "when the latest test could not run. Not run: tests blocked by a lock, a busy repository, an "
                   "unreachable host or a timeout (the reason is on the agent's status page)."), 8, 8)
    return d


def dr_readiness() -> Dashboard:
    by = "runbook, tier"
    d = Dashboard("continuity-dr", "Continuity — DR readiness",
                  "Per system: RTO against the achieved recovery time, evidence validity and expiry; for the "
                  "estate: the recovery critical path against the 72-hour objective, and verification findings.",
                  ["dr"], [])
    d.add(stat("Systems with valid evidence", q("sum(continuity_recovery_evidence_valid)", "valid"),
               q("count(continuity_recovery_evidence_valid)", "systems"), thresholds=steps(("blue", None))), 6, 5)
    d.add(stat("Last test within RTO", q("avg(continuity_recovery_test_within_rto)", "share"), unit="percentunit",
               thresholds=steps(("red", None), ("green", 1)), text_mode="value"), 4, 5)
    d.add(stat("RPO met (backups named in runbooks)", q("avg(continuity_runbook_rpo_met)", "share"),
               unit="percentunit", thresholds=steps(("red", None), ("green", 1)), text_mode="value"), 4, 5)
    d.add(stat("Recovery critical path", q("max by (basis) (continuity_recovery_critical_path_seconds)", "{{basis}}"),
               q("max(continuity_recovery_objective_seconds)", "objective"), unit="s",
               thresholds=steps(("green", None), ("red", ESTATE_OBJECTIVE))), 10, 5)
    d.add(table("Systems", [
        ("RTO", q(f"max by ({by}) (continuity_runbook_rto_seconds)", table=True)),
        ("Achieved", q(f"max by ({by}) (continuity_recovery_test_achieved_rto_seconds)", table=True)),
        ("Within RTO", q(f"max by ({by}) (continuity_recovery_test_within_rto)", table=True)),
        ("RPO", q(f"max by ({by}) (continuity_runbook_rpo_seconds)", table=True)),
        ("RPO met", q(f"max by ({by}) (continuity_runbook_rpo_met)", table=True)),
        ("Last test", q(f"max by ({by}) (continuity_recovery_test_last_timestamp_seconds) * 1000", table=True)),
        ("Evidence valid", q(f"max by ({by}) (continuity_recovery_evidence_valid)", table=True)),
        ("Evidence expires", q(f"max by ({by}) (continuity_recovery_evidence_expiry_timestamp_seconds) * 1000",
                               table=True)),
    ], overrides=[
        column("RTO", unit="s"), column("Achieved", unit="s"), column("RPO", unit="s"),
        column("Within RTO", mappings=YES_NO, thresholds=OK_BAD, cell="color-background"),
        column("RPO met", mappings=YES_NO, thresholds=OK_BAD, cell="color-background"),
        column("Evidence valid", mappings=YES_NO, thresholds=OK_BAD, cell="color-background"),
        column("Last test", unit="dateTimeAsIso"), column("Evidence expires", unit="dateTimeAsIso"),
    ]), 24, 10)
    d.add(bargauge("RTO vs achieved",
                   q("max by (runbook) (continuity_recovery_test_achieved_rto_seconds)"
                     " / max by (runbook) (continuity_runbook_rto_seconds)", "{{runbook}}"),
                   unit="percentunit", min_=0, thresholds=steps(("green", None), ("red", 1)),
                   description="Achieved recovery time as a share of the RTO; over 100 % is a miss."), 12, 9)
    d.add(bargauge("Evidence expires in",
                   q("max by (runbook) (continuity_recovery_evidence_expiry_timestamp_seconds) - time()",
                     "{{runbook}}"),
                   unit="s", thresholds=steps(("red", None), ("orange", 0), ("yellow", 30 * DAY), ("green", 60 * DAY))),
          12, 9)
    d.add(bargauge("Critical path vs 72 h objective",
                   q("max by (basis) (continuity_recovery_critical_path_seconds)"
                     " / scalar(max(continuity_recovery_objective_seconds))", "{{basis}}"),
                   unit="percentunit", min_=0, max_=1.5,
                   thresholds=steps(("green", None), ("orange", 0.9), ("red", 1))),
          8, 7)
    d.add(table("Findings", [
        ("Count", q("sum by (severity, rule) (continuity_recovery_findings)", table=True)),
    ], overrides=[column("Count", thresholds=steps(("green", None), ("red", 1)), cell="color-background")],
        description="Every verification rule, 0 when it did not fire."), 8, 7)
    d.add(table("Evidence chain head", [
        ("Recorded", q("max by (sha256) (continuity_recovery_evidence_chain_head_info)", table=True)),
    ], hide=("Recorded",), description="sha256 of the newest sealed record; its history in Prometheus is the "
                                       "outside record of the chain."), 8, 7)
    return d


def dr_exercise() -> Dashboard:
    e = 'exercise=~"$exercise"'
    d = Dashboard("continuity-dr-exercise", "Continuity — DR exercise (live)",
                  "A DR exercise while it runs (`continuity-agent exercise`, the agent's /exercise/ board): time "
                  "since the incident was declared, the projected estate recovery against the 72-hour objective, "
                  "systems restored, steps by state and late steps.",
                  ["dr"], [query_variable("exercise", "Exercise",
                                          "label_values(continuity_exercise_active, exercise)", multi=True)])
    d.add(stat("Elapsed since T0", q(f"max by (exercise) (continuity_exercise_elapsed_seconds{{{e}}})",
                                     "{{exercise}}"), unit="s", thresholds=steps(("blue", None))), 6, 5)
    d.add(stat("Projected estate recovery",
               q(f"max by (exercise) (continuity_exercise_projected_seconds{{{e}}})", "{{exercise}}"),
               q(f"max(continuity_exercise_objective_seconds{{{e}}})", "objective"), unit="s",
               thresholds=steps(("green", None), ("red", ESTATE_OBJECTIVE)),
               description="Done steps as measured, the rest at their planned durations over the dependency "
                           "graph, from T0."), 8, 5)
    d.add(stat("Systems restored", q(f"sum(continuity_exercise_system_restored{{{e}}})", "restored"),
               q(f"count(continuity_exercise_system_restored{{{e}}})", "systems"),
               thresholds=steps(("blue", None))), 5, 5)
    d.add(stat("Late steps", q(f"sum(continuity_exercise_late_steps{{{e}}})", "late"),
               thresholds=steps(("green", None), ("orange", 1)), text_mode="value",
               description="Steps in progress for longer than their expected duration."), 5, 5)
    d.add(timeseries("Projection against the objective",
                     q(f"max by (exercise) (continuity_exercise_projected_seconds{{{e}}})", "projected {{exercise}}"),
                     q(f"max by (exercise) (continuity_exercise_elapsed_seconds{{{e}}})", "elapsed {{exercise}}"),
                     q(f"max(continuity_exercise_objective_seconds{{{e}}})", "objective"),
                     unit="s", min_=0,
                     description="A projection that climbs while elapsed time climbs means the work is "
                                 "falling behind the plan."), 14, 9)
    d.add(bargauge("Projection as a share of the objective",
                   q(f"max by (exercise) (continuity_exercise_projected_seconds{{{e}}})"
                     f" / max by (exercise) (continuity_exercise_objective_seconds{{{e}}})", "{{exercise}}"),
                   unit="percentunit", min_=0, max_=1.5,
                   thresholds=steps(("green", None), ("orange", 0.9), ("red", 1))), 10, 9)
    d.add(table("Systems", [
        ("Restored", q(f"max by (exercise, runbook) (continuity_exercise_system_restored{{{e}}})", table=True)),
        ("Done", q(f'sum by (exercise, runbook) (continuity_exercise_steps{{{e},state="done"}})', table=True)),
        ("In progress", q(f'sum by (exercise, runbook) (continuity_exercise_steps{{{e},state="in_progress"}})',
                          table=True)),
        ("Ready", q(f'sum by (exercise, runbook) (continuity_exercise_steps{{{e},state="ready"}})', table=True)),
        ("Steps", q(f"sum by (exercise, runbook) (continuity_exercise_steps{{{e}}})", table=True)),
    ], overrides=[column("Restored", mappings=YES_NO, thresholds=OK_BAD, cell="color-background")]), 12, 9)
    d.add(bargauge("Steps by state",
                   q(f"sum by (state) (continuity_exercise_steps{{{e}}})", "{{state}}"),
                   min_=0, thresholds=steps(("blue", None))), 12, 9)
    return d


def agent_health() -> Dashboard:
    i = 'instance=~"$instance"'
    d = Dashboard("continuity-agent-health", "Continuity — Agent health",
                  "The agents themselves: scrapes, config reloads, targets up, collection durations, errors by "
                  "reason and skipped runs.",
                  ["agent"], [query_variable("instance", "Agent", "label_values(continuity_agent_info, instance)",
                                             multi=True)])
    d.add(stat("Agents up", q(f'sum(up{{job=~"continuity.*",{i}}})', "up"),
               q(f'count(up{{job=~"continuity.*",{i}}})', "agents"), thresholds=steps(("blue", None))), 5, 5)
    d.add(stat("Config", q(f"min(continuity_config_last_reload_successful{{{i}}})", "last reload"),
               mappings=value_map({"0": ("Reload failed", "red"), "1": ("OK", "green")}), thresholds=OK_BAD), 4, 5)
    d.add(stat("State database", q(f"min(continuity_state_db_healthy{{{i}}})", "SQLite"),
               mappings=value_map({"0": ("Memory only", "red"), "1": ("OK", "green")}), thresholds=OK_BAD), 4, 5)
    d.add(stat("Targets up", q(f"sum(continuity_target_up{{{i}}})", "up"),
               q(f"count(continuity_target_up{{{i}}})", "targets"), thresholds=steps(("blue", None))), 5, 5)
    d.add(bargauge("Targets up by collector", q(f"avg by (collector) (continuity_target_up{{{i}}})", "{{collector}}"),
                   unit="percentunit", min_=0, max_=1, thresholds=RATIO_GOOD_HIGH), 6, 5)
    d.add(table("Agents", [
        ("Info", q(f"max by (instance, site, version) (continuity_agent_info{{{i}}})", table=True)),
        ("Uptime", q(f"max by (instance) (time() - continuity_agent_start_time_seconds{{{i}}})", table=True)),
        ("Config loaded",
         q(f"max by (instance) (continuity_config_last_reload_success_timestamp_seconds{{{i}}}) * 1000", table=True)),
    ], hide=("Info",), overrides=[column("Uptime", unit="s"), column("Config loaded", unit="dateTimeAsIso")]), 24, 5)
    d.add(state_timeline("Targets", q(f"continuity_target_up{{{i}}}", "{{collector}} {{target}}"),
                         mappings=UP, thresholds=OK_BAD), 24, 9)
    d.add(timeseries("Collection duration", q(f"continuity_target_collection_duration_seconds{{{i}}}",
                                              "{{collector}} {{target}}"), unit="s"), 12, 8)
    d.add(timeseries("Time since last success", q(f"time() - continuity_target_last_success_timestamp_seconds{{{i}}}",
                                                  "{{collector}} {{target}}"), unit="s"), 12, 8)
    d.add(timeseries("Errors by reason",
                     q("sum by (collector, reason) "
                       f"(increase(continuity_target_errors_total{{{i}}}[$__rate_interval]))",
                       "{{collector}} {{reason}}"),
                     min_=0), 12, 8)
    d.add(timeseries("Skipped runs",
                     q("sum by (collector, target, reason) "
                       f"(increase(continuity_target_skipped_runs_total{{{i}}}[$__rate_interval]))",
                       "{{collector}} {{target}} {{reason}}"),
                     min_=0,
                     description="Scheduled runs that did not start. still_running: the previous one was still "
                     "going (the interval is too short for the collection); late: the agent could not start it "
                     "within one interval (overloaded or paused)."),
          12, 8)
    d.add(timeseries("Secondary tasks: time since last success",
                     q(f"time() - continuity_task_last_success_timestamp_seconds{{{i}}}", "{{target}} {{task}}"),
                     unit="s", description="Integrity checks, restore tests, throughput tests. Success means the "
                     "task completed and found no failure: an integrity check that found damage, or a restore "
                     "test that did not verify or could not run, does not reset this age."), 12, 8)
    d.add(timeseries("State database write errors",
                     q(f"increase(continuity_state_db_errors_total{{{i}}}[$__rate_interval])", "{{instance}}"),
                     min_=0), 12, 8)
    return d


DASHBOARDS = {
    "estate-overview": estate_overview,
    "site-detail": site_detail,
    "backups": backups,
    "dr-readiness": dr_readiness,
    "agent-health": agent_health,
    "dr-exercise": dr_exercise,
}


def render() -> dict[str, str]:
    """file name -> JSON text, exactly as committed."""
    return {f"{name}.json": json.dumps(build().model(), indent=2, sort_keys=True) + "\n"
            for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed JSON instead of writing")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    files = render()
    if args.check:
        stale = [n for n, text in files.items()
                 if not (args.out / n).exists() or (args.out / n).read_text() != text]
        extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in files)
        for n in stale:
            print(f"{args.out / n}: differs from grafana/generate.py output (run python grafana/generate.py)",
                  file=sys.stderr)
        for n in extra:
            print(f"{args.out / n}: not produced by grafana/generate.py", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n, text in files.items():
        (args.out / n).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
