"""The ``snmp`` collector: device availability, interface state, link speed and traffic counters.

One walk per run: sysUpTime, sysName and ifNumber as non-repeaters, the IF-MIB columns side by
side, plus any OIDs mapped in the target's ``metrics:``. Counters are exposed exactly as the device
reports them; a reboot shows as ``continuity_device_uptime_seconds`` going back (and Prometheus's
rate() treats the counter drop as a reset), so no fake spike is made here.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Any

from agent.catalogue import check_dynamic
from collectors.base import Collected, Collector, CollectorContext, MetricSpec, TargetBase
from collectors.snmp import ber
from collectors.snmp.ber import OID, parse_oid
from collectors.snmp.config import OidMapping, SnmpTarget, SnmpV1Auth, SnmpV2cAuth, SnmpV3Auth
from collectors.snmp.session import (
    END_OF_MIB_VIEW,
    MALFORMED_REPLY,
    NO_SUCH_INSTANCE,
    NO_SUCH_OBJECT,
    REASONS,
    BuiltinV2cSession,
    PysnmpSession,
    Session,
    SnmpShared,
    shared,
)
from collectors.snmp.walk import WalkResult, walk

SYS_UPTIME = parse_oid("1.3.6.1.2.1.1.3.0")
SYS_NAME = parse_oid("1.3.6.1.2.1.1.5.0")
IF_NUMBER = parse_oid("1.3.6.1.2.1.2.1.0")
_IF = parse_oid("1.3.6.1.2.1.2.2.1")
_IFX = parse_oid("1.3.6.1.2.1.31.1.1.1")
IF_DESCR, IF_SPEED, IF_ADMIN, IF_OPER = (*_IF, 2), (*_IF, 5), (*_IF, 7), (*_IF, 8)
IF_IN_OCTETS, IF_IN_DISCARDS, IF_IN_ERRORS = (*_IF, 10), (*_IF, 13), (*_IF, 14)
IF_OUT_OCTETS, IF_OUT_DISCARDS, IF_OUT_ERRORS = (*_IF, 16), (*_IF, 19), (*_IF, 20)
IF_NAME, IF_HC_IN, IF_HC_OUT, IF_HIGH_SPEED, IF_ALIAS = ((*_IFX, 1), (*_IFX, 6), (*_IFX, 10), (*_IFX, 15), (*_IFX, 18))
IF_MIB_COLUMNS = [
    IF_NAME,
    IF_DESCR,
    IF_ALIAS,
    IF_ADMIN,
    IF_OPER,
    IF_SPEED,
    IF_HIGH_SPEED,
    IF_HC_IN,
    IF_HC_OUT,
    IF_IN_ERRORS,
    IF_OUT_ERRORS,
    IF_IN_DISCARDS,
    IF_OUT_DISCARDS,
]
IF_MIB_COLUMNS_V1 = [c for c in IF_MIB_COLUMNS if c not in (IF_HC_IN, IF_HC_OUT)] + [IF_IN_OCTETS, IF_OUT_OCTETS]
GAUGE32_MAX = 0xFFFFFFFF

IFACE = ("interface", "alias")
METRICS = (
    MetricSpec(
        "continuity_device_up",
        "gauge",
        "1 if the SNMP device answered this run (any usable reply, whatever it holds), 0 if not; "
        "the reason is in continuity_target_errors_total.",
    ),
    MetricSpec(
        "continuity_device_uptime_seconds",
        "gauge",
        "Time since the device's SNMP agent (re)started, from sysUpTime; going back means a "
        "restart, and counters restarted with it. Absent for a device without sysUpTime.",
        "seconds",
    ),
    MetricSpec(
        "continuity_interface_up",
        "gauge",
        "1 if the interface is operationally up (ifOperStatus up), else 0.",
        labels=IFACE,
    ),
    MetricSpec(
        "continuity_interface_admin_up",
        "gauge",
        "1 if the interface is administratively up (ifAdminStatus up), else 0.",
        labels=IFACE,
    ),
    MetricSpec(
        "continuity_interface_speed_bytes_per_second",
        "gauge",
        "Interface speed as the device reports it (ifHighSpeed, or ifSpeed), in bytes per second (bit/s / 8).",
        "bytes_per_second",
        labels=IFACE,
    ),
    MetricSpec(
        "continuity_interface_receive_bytes_total",
        "counter",
        "Bytes received, as the device counts them (ifHCInOctets, or 32-bit ifInOctets).",
        "bytes",
        labels=IFACE,
    ),
    MetricSpec(
        "continuity_interface_transmit_bytes_total",
        "counter",
        "Bytes sent, as the device counts them (ifHCOutOctets, or 32-bit ifOutOctets).",
        "bytes",
        labels=IFACE,
    ),
    MetricSpec(
        "continuity_interface_errors_total",
        "counter",
        "Packets with errors (ifInErrors, ifOutErrors).",
        labels=(*IFACE, "direction"),
    ),
    MetricSpec(
        "continuity_interface_discards_total",
        "counter",
        "Packets discarded without an error, e.g. for lack of buffers (ifInDiscards, ifOutDiscards).",
        labels=(*IFACE, "direction"),
    ),
)

_EXCEPTION_REASONS = {
    ber.NO_SUCH_OBJECT: NO_SUCH_OBJECT,
    ber.NO_SUCH_INSTANCE: NO_SUCH_INSTANCE,
    ber.END_OF_MIB_VIEW: END_OF_MIB_VIEW,
}
_NUMERIC = (ber.INTEGER, ber.COUNTER32, ber.GAUGE32, ber.TIMETICKS, ber.COUNTER64)


def mapping_spec(m: OidMapping) -> MetricSpec:
    return MetricSpec(
        m.metric_name, m.type, m.help or f"SNMP OID {m.oid} (mapped in the agent config).", labels=m.labels
    )


def _text(v: tuple[int, Any] | None) -> str:
    if v is None or not isinstance(v[1], bytes):
        return ""
    return v[1].decode("utf-8", "replace").replace("\x00", "").strip()


def _num(v: tuple[int, Any] | None) -> int | None:
    if v is None or v[0] not in _NUMERIC or not isinstance(v[1], int):
        return None
    return v[1]


def _index_label(idx: OID) -> str:
    return ".".join(map(str, idx))


class SnmpCollector(Collector):
    kind = "snmp"
    config_model = SnmpTarget
    METRICS = METRICS
    REASONS = REASONS
    AUTH_TYPES = ("snmp_v1", "snmp_v2c", "snmp_v3")
    target: SnmpTarget

    def __init__(self, target: TargetBase, ctx: CollectorContext, *, interval: float, timeout: float) -> None:
        super().__init__(target, ctx, interval=interval, timeout=timeout)
        t = self.target
        self.auth: SnmpV1Auth | SnmpV2cAuth | SnmpV3Auth = ctx.auths[t.auth]
        self.v1 = isinstance(self.auth, SnmpV1Auth)
        self.sh: SnmpShared = shared(ctx.shared)
        self.sh.users += 1
        self._closed = False
        self.budget = max(0.05, timeout * 0.9 - 0.05)
        self.request_timeout = (
            t.request_timeout if t.request_timeout is not None else min(5.0, max(0.1, self.budget / (t.retries + 1)))
        )
        self.session: Session = self._make_session()
        self._filters = [
            [re.compile(p) for p in ps]
            for ps in (
                t.interfaces.include,
                t.interfaces.exclude,
                t.interfaces.alias_include,
                t.interfaces.alias_exclude,
            )
        ]
        self._scalar_maps = [m for m in t.metrics if not m.index_label]
        self._table_maps = [m for m in t.metrics if m.index_label]
        self._dynamic = [mapping_spec(m) for m in t.metrics]
        problems = check_dynamic(self._dynamic)
        if problems:  # validate_config refuses these at load; this is the last line of defence
            raise ValueError(f"{t.name}: {'; '.join(problems)}")
        self._last_uptime: float | None = None

    def dynamic_metrics(self) -> list[MetricSpec]:
        return list(self._dynamic)

    def _make_session(self) -> Session:
        t, a = self.target, self.auth
        if isinstance(a, SnmpV2cAuth) and t.v2c_engine == "builtin":
            return BuiltinV2cSession(
                self.sh, t.host, t.port, a.community.reveal().encode(), timeout=self.request_timeout, retries=t.retries
            )
        return PysnmpSession(self.sh, t, a, timeout=self.request_timeout, retries=t.retries)

    @classmethod
    def validate_config(cls, target: TargetBase, config: Any) -> list[tuple[str, str]]:
        assert isinstance(target, SnmpTarget)
        from agent.catalogue import catalogue, check_spec

        out: list[tuple[str, str]] = []
        static = catalogue()
        mine = {m.metric_name: mapping_spec(m) for m in target.metrics}
        for i, m in enumerate(target.metrics):
            spec = mine[m.metric_name]
            for p in check_spec(spec):
                out.append((f"metrics[{i}].name", p))
            if spec.name in static:
                out.append((f"metrics[{i}].name", f"{spec.name} is already an agent metric"))
            # The same mapped name on another target must mean the same metric.
            for other in config.targets:
                if other is target or getattr(other, "kind", None) != "snmp":
                    continue
                for om in other.metrics:
                    if om.metric_name == spec.name and mapping_spec(om) != spec:
                        out.append(
                            (
                                f"metrics[{i}].name",
                                f"{spec.name} is mapped differently on target {other.name!r} "
                                "(type, help and labels must match)",
                            )
                        )
                        break
        return out

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.session.close()
        self.sh.users -= 1
        if self.sh.users <= 0 and self.ctx.shared.get("snmp") is self.sh:
            self.sh.close()
            del self.ctx.shared["snmp"]

    # -- collection -----------------------------------------------------------------------------
    def _plan(self) -> tuple[list[OID], list[OID]]:
        scalars = [SYS_UPTIME, SYS_NAME]
        columns: list[OID] = []
        if "if_mib" in self.target.modules:
            scalars.append(IF_NUMBER)
            columns.extend(IF_MIB_COLUMNS_V1 if self.v1 else IF_MIB_COLUMNS)
        for m in self._scalar_maps:
            o = m.oid_tuple
            if o not in scalars:
                scalars.append(o)
        for m in self._table_maps:
            o = m.oid_tuple
            if o not in columns:
                columns.append(o)
        return scalars, columns

    async def collect(self) -> Collected:
        out = Collected()
        t = self.target
        scalars, columns = self._plan()
        self.session.new_run()
        res = WalkResult()
        fallback: WalkResult | None = None
        failure: tuple[str, str] | None = None
        try:
            async with asyncio.timeout(self.budget):
                await walk(
                    self.session,
                    scalars,
                    columns,
                    max_repetitions=t.max_repetitions,
                    max_oids=t.max_oids_per_request,
                    max_rows=t.max_interfaces,
                    rows_hint=IF_NUMBER,
                    result=res,
                )
                if res.failure is None and "if_mib" in t.modules and not self.v1 and self._needs_32bit(res):
                    fallback = WalkResult()
                    await walk(
                        self.session,
                        [],
                        [IF_IN_OCTETS, IF_OUT_OCTETS],
                        max_repetitions=t.max_repetitions,
                        max_oids=t.max_oids_per_request,
                        max_rows=t.max_interfaces,
                        rows_hint=None,
                        result=fallback,
                    )
        except TimeoutError:
            failure = ("timeout", f"no complete answer within {self.budget:.1f}s ({res.requests} request(s) answered)")
        if res.failure is not None:
            failure = (res.failure.reason, res.failure.message)
        elif fallback is not None and fallback.failure is not None:
            failure = (fallback.failure.reason, fallback.failure.message)
        self._build(out, res, fallback, failure)
        return out

    @staticmethod
    def _needs_32bit(res: WalkResult) -> bool:
        hc_in = res.tables.get(IF_HC_IN, {})
        rows = set(res.tables.get(IF_DESCR, {})) | set(res.tables.get(IF_NAME, {}))
        return bool(rows) and any(idx not in hc_in for idx in rows)

    def _build(
        self, out: Collected, res: WalkResult, fallback: WalkResult | None, failure: tuple[str, str] | None
    ) -> None:
        t = self.target
        problems: dict[str, list[str]] = defaultdict(list)
        for reason, msg in res.problems + (fallback.problems if fallback else []):
            problems[reason].append(msg)
        uptime = res.scalars.get(SYS_UPTIME)
        has_uptime = uptime is not None and uptime[0] == ber.TIMETICKS and isinstance(uptime[1], int)
        # Up means the device answered: some request got a reply the walk could use. A device
        # without sysUpTime (some DrayTek routers) is up, with its interfaces, and no uptime series.
        answered = res.requests > 0
        out.info.update(
            {
                "host": f"{t.host}:{t.port}",
                "engine": self._engine_name(),
                "requests": res.requests + (fallback.requests if fallback else 0),
                "getbulk_requests": self.session.bulk_requests,
                "varbinds": res.varbinds + (fallback.varbinds if fallback else 0),
            }
        )
        if not answered:
            out.add("continuity_device_up", 0)
            if failure is None:
                failure = (MALFORMED_REPLY, "device sent no usable reply")
            out.partial_errors.append((failure[0], f"{t.name}: {failure[1]}"))
            return
        out.add("continuity_device_up", 1)
        out.info["sys_name"] = _text(res.scalars.get(SYS_NAME))
        if has_uptime:
            assert uptime is not None
            secs = uptime[1] / 100.0
            out.add("continuity_device_uptime_seconds", secs)
            if self._last_uptime is not None and secs < self._last_uptime:
                out.info["restart_detected"] = (
                    f"sysUpTime went back from {self._last_uptime:.0f}s to {secs:.0f}s: "
                    "device or agent restarted; its counters restarted too"
                )
            self._last_uptime = secs
            out.info["uptime_seconds"] = secs
        else:
            # A property of the device, not a failure of this run: noted, not counted as an error.
            out.info["uptime_seconds"] = None
            out.info["no_uptime"] = "the device has no sysUpTime.0 (or not as TimeTicks): no uptime series"
        if failure is not None:
            problems[failure[0]].append(failure[1])
        if "if_mib" in t.modules:
            self._interfaces(out, res, fallback, problems)
        self._mapped(out, res, problems)
        for reason, msgs in problems.items():
            extra = f" (+{len(msgs) - 3} more)" if len(msgs) > 3 else ""
            out.partial_errors.append((reason, f"{t.name}: " + "; ".join(msgs[:3]) + extra))

    def _engine_name(self) -> str:
        a = self.auth
        if isinstance(self.session, BuiltinV2cSession):
            return "builtin-v2c"
        return "pysnmp-" + ("v1" if isinstance(a, SnmpV1Auth) else "v2c" if isinstance(a, SnmpV2cAuth) else "v3")

    def _interfaces(
        self, out: Collected, res: WalkResult, fallback: WalkResult | None, problems: dict[str, list[str]]
    ) -> None:
        tb = res.tables
        fb = fallback.tables if fallback else {}
        indexes: set[OID] = set()
        for col in (IF_DESCR, IF_NAME, IF_OPER, IF_ADMIN):
            indexes.update(tb.get(col, {}))
        if not indexes:
            if res.failure is None:
                problems[NO_SUCH_OBJECT].append("device reports no IF-MIB interfaces (ifTable/ifXTable empty)")
            out.info["interfaces"] = []
            return
        names: dict[OID, str] = {}
        for idx in indexes:
            names[idx] = (
                (_text(tb[IF_NAME].get(idx)) if IF_NAME in tb else "")
                or _text(tb[IF_DESCR].get(idx))
                or f"ifIndex{_index_label(idx)}"
            )
        counts: dict[str, int] = defaultdict(int)
        for n in names.values():
            counts[n] += 1
        inc, exc, ainc, aexc = self._filters
        f = self.target.interfaces
        listing: list[dict[str, Any]] = []
        for idx in sorted(indexes):
            name = names[idx]
            if counts[name] > 1:
                name = f"{name}#{_index_label(idx)}"
            alias = _text(tb.get(IF_ALIAS, {}).get(idx))
            admin = _num(tb[IF_ADMIN].get(idx)) if IF_ADMIN in tb else None
            oper = _num(tb[IF_OPER].get(idx)) if IF_OPER in tb else None
            speed = self._speed(tb, idx)
            keep = (
                (not inc or any(p.fullmatch(name) for p in inc))
                and not any(p.fullmatch(name) for p in exc)
                and (not ainc or any(p.fullmatch(alias) for p in ainc))
                and not any(p.fullmatch(alias) for p in aexc)
                and (f.include_admin_down or admin != 2)
            )
            listing.append(
                {
                    "index": _index_label(idx),
                    "interface": name,
                    "alias": alias,
                    "admin": {1: "up", 2: "down", 3: "testing"}.get(admin or 0, str(admin)),
                    "oper": _OPER.get(oper or 0, str(oper)),
                    "speed_bytes_per_second": speed,
                    "exposed": keep,
                }
            )
            if not keep:
                continue
            lb = {"interface": name, "alias": alias}
            if oper is not None:
                out.add("continuity_interface_up", 1 if oper == 1 else 0, **lb)
            if admin is not None:
                out.add("continuity_interface_admin_up", 1 if admin == 1 else 0, **lb)
            if speed is not None:
                out.add("continuity_interface_speed_bytes_per_second", speed, **lb)
            rx = _num(tb.get(IF_HC_IN, {}).get(idx))
            if rx is None:
                rx = _num(tb.get(IF_IN_OCTETS, fb.get(IF_IN_OCTETS, {})).get(idx))
            tx = _num(tb.get(IF_HC_OUT, {}).get(idx))
            if tx is None:
                tx = _num(tb.get(IF_OUT_OCTETS, fb.get(IF_OUT_OCTETS, {})).get(idx))
            if rx is not None:
                out.add("continuity_interface_receive_bytes_total", rx, **lb)
            if tx is not None:
                out.add("continuity_interface_transmit_bytes_total", tx, **lb)
            for metric, col, direction in (
                ("continuity_interface_errors_total", IF_IN_ERRORS, "in"),
                ("continuity_interface_errors_total", IF_OUT_ERRORS, "out"),
                ("continuity_interface_discards_total", IF_IN_DISCARDS, "in"),
                ("continuity_interface_discards_total", IF_OUT_DISCARDS, "out"),
            ):
                v = _num(tb.get(col, {}).get(idx))
                if v is not None:
                    out.add(metric, v, direction=direction, **lb)
        out.info["interfaces"] = listing

    @staticmethod
    def _speed(tb: dict[OID, dict[OID, tuple[int, Any]]], idx: OID) -> float | None:
        """Bytes per second from ifHighSpeed (Mbit/s), falling back to ifSpeed (bit/s); ifSpeed wins
        below 20 Mbit/s, where ifHighSpeed's rounding to whole Mbit/s loses precision (e.g. a 2 Mbit/s
        E1 or 512k DSL)."""
        high = _num(tb.get(IF_HIGH_SPEED, {}).get(idx))
        low = _num(tb.get(IF_SPEED, {}).get(idx))
        if high is not None and (high >= 20 or low is None or low == 0 or low >= GAUGE32_MAX):
            return high * 1_000_000.0 / 8.0
        if low is not None:
            return low / 8.0
        return None

    def _mapped(self, out: Collected, res: WalkResult, problems: dict[str, list[str]]) -> None:
        for m in self._scalar_maps:
            v = res.scalars.get(m.oid_tuple)
            if v is None:
                if res.failure is None:
                    problems[NO_SUCH_OBJECT].append(f"{m.oid} ({m.metric_name}) not read")
                continue
            if v[0] in ber.EXCEPTIONS:
                problems[_EXCEPTION_REASONS[v[0]]].append(
                    f"{m.oid} ({m.metric_name}): device has no such "
                    f"{'instance' if v[0] == ber.NO_SUCH_INSTANCE else 'object'}"
                )
                continue
            self._emit(out, m, v, {}, problems)
        for m in self._table_maps:
            rows = res.tables.get(m.oid_tuple, {})
            if not rows:
                if res.failure is None:
                    problems[NO_SUCH_OBJECT].append(f"{m.oid} ({m.metric_name}): walk returned no rows")
                continue
            assert m.index_label is not None
            for idx in sorted(rows):
                self._emit(out, m, rows[idx], {m.index_label: _index_label(idx)}, problems)

    @staticmethod
    def _emit(
        out: Collected, m: OidMapping, v: tuple[int, Any], labels: dict[str, str], problems: dict[str, list[str]]
    ) -> None:
        num: float | None = None
        if v[0] in _NUMERIC and isinstance(v[1], int):
            num = float(v[1])
        elif v[0] == ber.OCTET_STRING and isinstance(v[1], bytes):
            try:
                num = float(v[1].decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                num = None
        if num is None:
            problems[MALFORMED_REPLY].append(f"{m.oid} ({m.metric_name}): value is not a number")
            return
        if m.enum:
            labels = {**labels, m.enum_label: m.enum.get(int(num), str(int(num)))}
        elif m.scale is not None:
            num *= m.scale
        out.add(m.metric_name, num, **labels)


_OPER = {1: "up", 2: "down", 3: "testing", 4: "unknown", 5: "dormant", 6: "notPresent", 7: "lowerLayerDown"}
