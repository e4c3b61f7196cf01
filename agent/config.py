"""The agent's YAML config: loaded once into frozen models, every error reported at once."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import Field, GetCoreSchemaHandler, ValidationError, create_model, field_validator, model_validator
from pydantic_core import CoreSchema

from agent.configtypes import NAME_RE, Duration, StrictModel
from agent.exercises.config import ExercisesConfig
from agent.plugin import TargetBase
from agent.registry import AUTH_TYPES, KINDS, auth_model, collector
from agent.reports.config import ReportsConfig
from agent.standards.types import Site, SiteClass
from agent.standards.types import check_config as check_standards
from agent.yamlfile import FileInputError, FileIssue, load_yaml, validation_issues

DEFAULT_LISTEN = "127.0.0.1:9072"
MAX_CONFIG_BYTES = 16 * 2**20  # a config is a few KiB; a huge one is a mistake or an attack


# One problem in the config file (``file: key: message``): the shared loader's issue type.
ConfigIssue = FileIssue


class ConfigError(FileInputError):
    """The config cannot be used; carries every problem found."""


class AgentSection(StrictModel):
    site: str = Field(pattern=NAME_RE, description="The site this agent itself sits at (its own targets' default).")
    listen_address: str = Field(
        default=DEFAULT_LISTEN,
        description="HOST:PORT for /metrics, the status page and the API (--web.listen-address overrides).",
    )
    state_dir: Path = Field(default=Path("state"), description="SQLite results and history.")
    retention: Duration = Field(default=400 * 86400.0, description="How long result history is kept.")
    max_workers: int = Field(
        default=32, ge=1, le=512, description="Worker threads for blocking collector work (SSH, hashing, psutil)."
    )
    secret_file_mode: Literal["warn", "refuse"] = Field(
        default="warn",
        description="Secret files readable by group or others: warn (default) or refuse to start.",
    )

    @field_validator("listen_address")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen_address(v)
        return v

    @property
    def refuses_loose_secret_files(self) -> bool:
        return self.secret_file_mode == "refuse"  # noqa: S105 - a policy, not a password


class Defaults(StrictModel):
    interval: Duration = Field(default=60.0, description="How often a target is collected, unless it says.")
    timeout: Duration = Field(default=10.0, description="How long one collection may take, unless the target says.")
    start_jitter: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="Spread first runs over this fraction of each interval so targets do not all fire together.",
    )


def parse_listen_address(v: str) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) < 65536):
        raise ValueError(f"listen address {v!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _target_union(kinds: Iterable[str]) -> Any:
    models = tuple(collector(k).config_model for k in kinds)
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007


def _auth_union(tags: Iterable[str]) -> Any:
    models = tuple(auth_model(t) for t in tags)
    if not models:
        return dict[str, Any]
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


class _AnyTarget:
    """A target of any kind: the union over every kind, built (and every collector module imported)
    only when a model using it is first validated (config models defer building)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(_target_union(KINDS))


class _AnyAuth:
    """Credentials of any type, built like :class:`_AnyTarget`."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(_auth_union(AUTH_TYPES))


if TYPE_CHECKING:
    TargetConfig = TargetBase
    AuthConfig = Any
else:
    TargetConfig = _AnyTarget
    AuthConfig = _AnyAuth


class AgentConfig(StrictModel):
    agent: AgentSection = Field(description="The agent itself: its site, listen address, state and limits.")
    defaults: Defaults = Field(default=Defaults(), description="Schedule of every target that does not set its own.")
    sites: list[Site] = Field(
        default_factory=list, description="The sites of the estate; none: the agent's own site is the only one."
    )
    site_classes: dict[str, SiteClass] = Field(
        default_factory=dict, description="Connection standards by class name, which sites name with `class:`."
    )
    auths: dict[str, AuthConfig] = Field(
        default_factory=dict, description="Credentials, referenced by name from targets (`auth: <name>`)."
    )
    targets: list[TargetConfig] = Field(
        default_factory=list, description="What the agent monitors: each target's `kind` names its collector."
    )
    reports: ReportsConfig | None = Field(default=None, description="DR test reports (agent/reports, docs/reports.md).")
    exercises: ExercisesConfig | None = Field(
        default=None,
        description="DR exercise board and metrics (agent/exercises, docs/exercises.md).",
    )

    @model_validator(mode="after")
    def _cross_check(self) -> AgentConfig:
        errors: list[str] = []
        site_names = [s.name for s in self.sites]
        dup_sites = {n for n in site_names if site_names.count(n) > 1}
        for n in sorted(dup_sites):
            errors.append(f"sites: site {n!r} is defined more than once")
        known_sites = set(site_names) or {self.agent.site}
        if self.sites and self.agent.site not in known_sites:
            errors.append(f"agent.site: site {self.agent.site!r} is not in sites")
        seen: set[str] = set()
        for i, t in enumerate(self.targets):
            key = f"targets[{i}]"
            if t.name in seen:
                errors.append(f"{key}.name: target name {t.name!r} is used more than once")
            seen.add(t.name)
            if t.site is not None and t.site not in known_sites:
                errors.append(f"{key}.site: site {t.site!r} is not in sites")
            auth = getattr(t, "auth", None)
            cls = collector(t.kind)
            if auth is not None:
                if auth not in self.auths:
                    errors.append(f"{key}.auth: auth {auth!r} is not in auths")
                elif self.auths[auth].type not in cls.AUTH_TYPES:
                    errors.append(
                        f"{key}.auth: auth {auth!r} has type {self.auths[auth].type!r}; "
                        f"{t.kind} targets take {', '.join(cls.AUTH_TYPES) or 'no auth'}"
                    )
            for k, msg in cls.validate_config(t, self):
                errors.append(f"{key}.{k}: {msg}" if k else f"{key}: {msg}")
        errors.extend(check_standards(self))
        if errors:
            raise ValueError("\n".join(errors))
        return self

    # -- helpers -------------------------------------------------------------------------------
    def site_of(self, target: TargetBase) -> str:
        return target.site or self.agent.site

    def site_class(self, site: str) -> str:
        for s in self.sites:
            if s.name == site:
                return s.class_
        return "default"

    def interval_of(self, target: TargetBase) -> float:
        return target.interval if target.interval is not None else self.defaults.interval

    def timeout_of(self, target: TargetBase) -> float:
        t = target.timeout if target.timeout is not None else self.defaults.timeout
        return min(t, self.interval_of(target))

    def target(self, name: str) -> TargetBase | None:
        for t in self.targets:
            if t.name == name:
                return t
        return None


# Padding for a union of one kind or auth type (see _config_model): light modules.
_PAD_KINDS = ("standards", "probe")
_PAD_AUTHS = ("http_basic", "ssh")


def _padded(used: frozenset[str], pad: tuple[str, ...]) -> tuple[str, ...]:
    if len(used) != 1:
        return tuple(sorted(used))
    return (*used, next(p for p in pad if p not in used))


@cache
def _config_model(kinds: frozenset[str], auth_types: frozenset[str]) -> type[AgentConfig]:
    """``AgentConfig`` with the target and auth unions of only these kinds and auth types: a config
    that uses them validates exactly as with every kind (a tagged union validates only the member
    its tag names), without importing or building the others. One kind or type is padded to two,
    so the union still puts the tag in error locations (which format_loc expects); none (no
    targets, no auths) leaves an empty list or mapping to validate."""
    fields = AgentConfig.model_fields
    auth: Any = _auth_union(_padded(auth_types, _PAD_AUTHS)) if auth_types else Any
    target: Any = _target_union(_padded(kinds, _PAD_KINDS)) if kinds else Any
    model: type[AgentConfig] = create_model(
        "AgentConfig",
        __base__=AgentConfig,
        __module__=__name__,
        auths=(dict[str, auth], Field(default_factory=dict, description=fields["auths"].description)),
        targets=(list[target], Field(default_factory=list, description=fields["targets"].description)),
    )
    return model


def _tags_used(items: Any, tag: str, known: Iterable[str]) -> frozenset[str] | None:
    """The kinds (or auth types) a config's raw entries name, or None when an entry is not a
    mapping with a known tag (then the full union gives the error that lists every tag)."""
    values = items.values() if isinstance(items, dict) else items
    out = set()
    for item in values:
        value = item.get(tag) if isinstance(item, dict) else None
        if not isinstance(value, str) or value not in known:
            return None
        out.add(value)
    return frozenset(out)


def _model_for(data: dict[str, Any]) -> type[AgentConfig]:
    """The config model for this raw config: built for the kinds and auth types it uses."""
    targets, auths = data.get("targets", []), data.get("auths", {})
    if not isinstance(targets, list) or not isinstance(auths, dict):
        return AgentConfig
    kinds, auth_types = _tags_used(targets, "kind", KINDS), _tags_used(auths, "type", AUTH_TYPES)
    if kinds is None or auth_types is None:
        return AgentConfig
    return _config_model(kinds, auth_types)


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    config: AgentConfig
    sha256: str
    warnings: tuple[str, ...] = ()


def _context(p: Path, mode: Any) -> dict[str, Any]:
    return {"base_dir": str(p.parent.resolve()), "secret_file_mode": mode if mode in ("warn", "refuse") else None}


def _issues(e: ValidationError, fname: str, tags: frozenset[str]) -> list[ConfigIssue]:
    return validation_issues(e, AgentConfig, fname, tags, ("auths",))


# The tags of the target and auth unions, dropped from error locations (agent.yamlfile.format_loc).
TAGS = frozenset(KINDS) | frozenset(AUTH_TYPES)


def _cross_check_remainder(
    data: dict[str, Any], e: ValidationError, p: Path, mode: Any, fname: str, tags: frozenset[str], seen: set[str]
) -> list[ConfigIssue]:
    """The checks that run once every field is valid (names, sites, auths, each collector's and the
    standards' cross-checks, runbook ids) are run again on the config without the entries that
    failed, so that one run of check-config lists the problems of every stage."""
    bad_targets: set[int] = set()
    bad_sites: set[int] = set()
    bad_auths: set[str] = set()
    for err in e.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        if len(loc) < 2:
            return []  # the whole config or a whole section is unusable: nothing more to learn
        head, item = loc[0], loc[1]
        if head == "targets" and isinstance(item, int):
            bad_targets.add(item)
        elif head == "sites" and isinstance(item, int):
            bad_sites.add(item)
        elif head == "auths" and isinstance(item, str):
            bad_auths.add(item)
        else:
            return []
    pruned = dict(data)
    keep: list[int] = []
    if isinstance(data.get("targets"), list):
        keep = [i for i in range(len(data["targets"])) if i not in bad_targets]
        pruned["targets"] = [data["targets"][i] for i in keep]
    if isinstance(data.get("sites"), list):
        pruned["sites"] = [s for i, s in enumerate(data["sites"]) if i not in bad_sites]
    if isinstance(data.get("auths"), dict):
        pruned["auths"] = {k: v for k, v in data["auths"].items() if k not in bad_auths}
    try:
        _model_for(pruned).model_validate(pruned, context=_context(p, mode))
    except ValidationError as e2:
        more = _issues(e2, fname, tags)
    except (RecursionError, ValueError, TypeError):
        return []
    else:
        return []
    dropped_names = {repr(a) for a in bad_auths}
    out: list[ConfigIssue] = []
    for issue in more:
        key = issue.key
        m = re.match(r"targets\[(\d+)\]", key)
        if m:  # back to the target's index in the file
            key = f"targets[{keep[int(m.group(1))]}]" + key[m.end() :]
        about_dropped = any(f"auth {n} " in issue.message for n in dropped_names) or (
            bad_sites and "is not in sites" in issue.message
        )
        if key in seen or about_dropped:
            continue
        out.append(ConfigIssue(issue.file, key, issue.message))
    return out


def _reports_overlap(cfg: AgentConfig, config_path: Path) -> str | None:
    """Reports are written to and served from ``reports.output_dir``: it must not be, or contain,
    the state directory or the config's directory (state.db, tokens and the config next to the
    reports). A sub-directory of either is fine."""
    if cfg.reports is None:
        return None
    out = cfg.reports.output_dir.resolve()
    for what, d in (("the state directory", cfg.agent.state_dir), ("the config file's directory", config_path.parent)):
        d = d.resolve()
        if out == d or out in d.parents:
            return f"{out} is or contains {what} ({d}); give the reports a directory of their own"
    return None


def load_config(path: str | Path) -> LoadedConfig:
    """Load and validate a config file. Raises :class:`ConfigError` listing every problem."""
    from agent import configtypes

    p = Path(path)
    fname = str(p)
    try:  # the agent's one bounded YAML loader (size, depth, alias expansion)
        data, raw_bytes = load_yaml(p, fname, aliases=True, max_bytes=MAX_CONFIG_BYTES)
    except FileInputError as e:
        raise ConfigError(e.issues) from None
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(fname, "", "config must be a YAML mapping with an 'agent' section")])
    configtypes.secret_file_warnings.clear()
    tags = TAGS
    agent_raw = data.get("agent")
    mode = agent_raw.get("secret_file_mode") if isinstance(agent_raw, dict) else None
    try:
        cfg = _model_for(data).model_validate(data, context=_context(p, mode))
    except RecursionError:
        raise ConfigError([ConfigIssue(fname, "", "refused: nested too deeply")]) from None
    except MemoryError:
        raise ConfigError([ConfigIssue(fname, "", "refused: out of memory while validating")]) from None
    except ValidationError as e:
        issues = _issues(e, fname, tags)
        issues += _cross_check_remainder(data, e, p, mode, fname, tags, {i.key for i in issues})
        raise ConfigError(issues) from None
    state_dir = cfg.agent.state_dir
    if not state_dir.is_absolute():
        cfg = cfg.model_copy(
            update={"agent": cfg.agent.model_copy(update={"state_dir": (p.parent / state_dir).resolve()})}
        )
    overlap = _reports_overlap(cfg, p)
    if overlap:
        raise ConfigError([ConfigIssue(fname, "reports.output_dir", overlap)])
    return LoadedConfig(
        path=p,
        config=cfg,
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        warnings=tuple(configtypes.secret_file_warnings),
    )


def dump_config(cfg: AgentConfig) -> str:
    """The effective config as YAML, secrets masked."""
    return yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
