"""Config models for the ``snmp`` collector: auths (v1, v2c, v3 USM), targets and OID mappings."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.configtypes import Duration, Secret, StrictModel
from collectors.base import TargetBase
from collectors.snmp.ber import OID, parse_oid

METRIC_PREFIX = "continuity_snmp_"
_SUFFIX_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_LABEL_RE = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED_LABELS = frozenset({"target", "site", "collector", "job", "instance", "le", "quantile"})

AuthProtocol = Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
# AES192/AES256 are the Blumenthal draft (net-snmp's AES-192/AES-256); AES192C/AES256C the
# Reeder key extension used by Cisco — same names as prometheus/snmp_exporter.
PrivProtocol = Literal["DES", "AES", "AES128", "AES192", "AES256", "AES192C", "AES256C"]


class SnmpV1Auth(StrictModel):
    type: Literal["snmp_v1"] = Field(description="Selects this auth type: `snmp_v1`.")
    community: Secret = Field(description="Community string (secret: `${ENV}` or community_file).")


class SnmpV2cAuth(StrictModel):
    type: Literal["snmp_v2c"] = Field(description="Selects this auth type: `snmp_v2c`.")
    community: Secret = Field(description="Community string (secret: `${ENV}` or community_file).")


class SnmpV3Auth(StrictModel):
    type: Literal["snmp_v3"] = Field(description="Selects this auth type: `snmp_v3` (USM).")
    username: str = Field(min_length=1, max_length=32, description="USM user name.")
    security_level: Literal["noAuthNoPriv", "authNoPriv", "authPriv"] = Field(
        default="authPriv",
        description="USM security level; authNoPriv and authPriv need auth_password, authPriv also priv_password.",
    )
    auth_protocol: AuthProtocol = Field(default="SHA", description="Authentication protocol.")
    auth_password: Secret | None = Field(default=None, description="Authentication passphrase (secret).")
    priv_protocol: PrivProtocol = Field(default="AES", description="Privacy (encryption) protocol.")
    priv_password: Secret | None = Field(default=None, description="Privacy passphrase (secret).")
    context_name: str = Field(default="", description="SNMPv3 context name.")

    @model_validator(mode="after")
    def _levels(self) -> SnmpV3Auth:
        if self.security_level in ("authNoPriv", "authPriv"):
            if self.auth_password is None:
                raise ValueError(f"security_level {self.security_level} needs auth_password (or auth_password_file)")
            if len(self.auth_password.reveal()) < 8:
                raise ValueError("auth_password must be at least 8 characters (RFC 3414)")
        if self.security_level == "authPriv":
            if self.priv_password is None:
                raise ValueError("security_level authPriv needs priv_password (or priv_password_file)")
            if len(self.priv_password.reveal()) < 8:
                raise ValueError("priv_password must be at least 8 characters (RFC 3414)")
        return self


SnmpAuth = SnmpV1Auth | SnmpV2cAuth | SnmpV3Auth


class InterfaceFilter(StrictModel):
    """Regular expressions are matched against the whole interface name (ifName, else ifDescr)
    or alias (ifAlias). An interface is kept when it matches ``include`` (if given), does not
    match ``exclude``, and likewise for the alias patterns."""

    include: list[str] = Field(
        default_factory=list,
        description="Regexes on the whole interface name; when given, only interfaces matching one are kept.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Regexes on the whole interface name; an interface matching one is left out."
    )
    alias_include: list[str] = Field(
        default_factory=list,
        description="Regexes on the whole ifAlias; when given, only interfaces matching one are kept.",
    )
    alias_exclude: list[str] = Field(
        default_factory=list, description="Regexes on the whole ifAlias; an interface matching one is left out."
    )
    include_admin_down: bool = Field(
        default=False, description="Keep administratively down interfaces, which are left out by default."
    )

    @field_validator("include", "exclude", "alias_include", "alias_exclude")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"bad regular expression {p!r}: {e}") from None
        return v


class OidMapping(StrictModel):
    """One OID -> metric. Without ``index_label`` the OID is read as a single instance (e.g.
    ``1.3.6.1.2.1.33.1.2.3.0``); with it, the OID is walked as a table column and the row index
    (the OID suffix) becomes that label."""

    oid: str = Field(description="Numeric OID: an instance (e.g. `…3.0`), or a table column when `index_label` is set.")
    name: str = Field(description="lower_snake_case metric name: the metric is `continuity_snmp_<name>`.")
    type: Literal["gauge", "counter"] = Field(
        default="gauge", description="Metric type; a counter's name must end in `_total`, a gauge's must not."
    )
    help: str = Field(
        default="", description="HELP text of the metric; empty: `SNMP OID <oid> (mapped in the agent config).`"
    )
    scale: float | None = Field(
        default=None, description="Multiply the value by this (e.g. `60` for minutes to seconds); not with `enum`."
    )
    index_label: str | None = Field(
        default=None, description="Walk the OID as a table column; the row index (OID suffix) becomes this label."
    )
    enum: dict[int, str] = Field(
        default_factory=dict, description="`{int: name}`: adds a label with the name of the value; the value is kept."
    )
    enum_label: str = Field(default="state", description="Name of the label `enum` adds.")

    @field_validator("oid")
    @classmethod
    def _oid(cls, v: str) -> str:
        parse_oid(v)
        return v.strip().lstrip(".")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v.startswith(METRIC_PREFIX):
            v = v[len(METRIC_PREFIX) :]
        if not _SUFFIX_RE.match(v) or len(v) > 100:
            raise ValueError(f"metric name {v!r} must be lower_snake_case (a-z, 0-9, _), starting with a letter")
        return v

    @field_validator("index_label", "enum_label")
    @classmethod
    def _label(cls, v: str | None) -> str | None:
        if v is not None and (not _LABEL_RE.match(v) or v in RESERVED_LABELS):
            raise ValueError(f"label name {v!r} must be lower_snake_case and not one of {sorted(RESERVED_LABELS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> OidMapping:
        full = self.metric_name
        if self.type == "counter" and not full.endswith("_total"):
            raise ValueError(f"counter metric {full} must end in _total")
        if self.type == "gauge" and full.endswith("_total"):
            raise ValueError(f"gauge metric {full} must not end in _total")
        if self.enum and self.scale is not None:
            raise ValueError("enum and scale cannot be combined")
        if self.enum and self.index_label == self.enum_label:
            raise ValueError("index_label and enum_label must differ")
        return self

    @property
    def metric_name(self) -> str:
        return METRIC_PREFIX + self.name

    @property
    def oid_tuple(self) -> OID:
        return parse_oid(self.oid)

    @property
    def labels(self) -> tuple[str, ...]:
        out: list[str] = []
        if self.index_label:
            out.append(self.index_label)
        if self.enum:
            out.append(self.enum_label)
        return tuple(out)


_DEFAULT_MODULES: tuple[Literal["if_mib"], ...] = ("if_mib",)


class SnmpTarget(TargetBase):
    kind: Literal["snmp"] = Field(description="Selects this collector: `snmp`.")
    host: str = Field(min_length=1, description="Device name or address.")
    port: int = Field(default=161, ge=1, le=65535, description="SNMP UDP port.")
    auth: str = Field(description="Name of an snmp_v1, snmp_v2c or snmp_v3 auth.")
    context_name: str | None = Field(default=None, description="Overrides the auth's context_name (v3).")
    modules: list[Literal["if_mib"]] = Field(
        default_factory=lambda: list(_DEFAULT_MODULES),
        description="Built-in modules to walk (`if_mib`: the interface table); `[]` for `metrics` only.",
    )
    interfaces: InterfaceFilter = Field(
        default=InterfaceFilter(), description="Which interfaces of the `if_mib` module are exported."
    )
    metrics: list[OidMapping] = Field(default_factory=list, description="Further OIDs read and exported as metrics.")
    # Limits
    retries: int = Field(default=1, ge=0, le=10, description="Retries of a request that got no reply.")
    request_timeout: Duration | None = Field(
        default=None,
        description="Per request; default: the target's budget / (retries + 1), <= 5s.",
    )
    max_repetitions: int = Field(default=25, ge=1, le=1000, description="GETBULK max-repetitions (rows per request).")
    max_oids_per_request: int = Field(default=20, ge=1, le=200, description="Most varbinds in one request.")
    max_interfaces: int = Field(
        default=1000, ge=1, le=100_000, description="Rows per column before the walk is cut off (`limit_exceeded`)."
    )
    v2c_engine: Literal["builtin", "pysnmp"] = Field(
        default="builtin",
        description="V2c walks use the agent's own BER codec; \"pysnmp\" sends them through pysnmp instead.",
    )

    @model_validator(mode="after")
    def _mappings(self) -> SnmpTarget:
        names = [m.name for m in self.metrics]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"metrics: name(s) {', '.join(dups)} used more than once")
        if not self.modules and not self.metrics:
            raise ValueError("nothing to read: give modules or metrics")
        return self
