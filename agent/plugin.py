"""The collector contract: one class per kind, one instance per target. It lives in the agent
(collectors import it; the agent never imports a collector module except through
:mod:`agent.registry`).

A collector:

* declares ``kind``, its target config model (a :class:`TargetBase` subclass with
  ``kind: Literal["<kind>"]``), the metrics it may emit (``METRICS``) and the failure
  reasons it may report (``REASONS``);
* implements ``async collect() -> Collected``; blocking libraries run in
  ``ctx.run_blocking`` with their own timeouts;
* raises :class:`CollectorError` with a reason for failures the user can fix. Anything else
  is a bug: the runner logs it with a traceback and records reason ``internal``.

Exposition adds the ``target`` and ``site`` labels to every sample, so samples carry only
their own labels.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import Field, model_validator

from agent.configtypes import NAME_RE, Duration, StrictModel

MetricType = Literal["gauge", "counter", "info", "stateset"]

# Reasons every collector may report.
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
AUTH = "auth"
BAD_REPLY = "bad_reply"
INTERNAL = "internal"
CORE_REASONS: tuple[str, ...] = (TIMEOUT, UNREACHABLE, AUTH, BAD_REPLY, INTERNAL)


@dataclass(frozen=True)
class MetricSpec:
    """One metric, declared once. ``labels`` excludes ``target``/``site``, which exposition adds
    when ``target_labels`` is true."""

    name: str
    type: MetricType
    help: str
    unit: str = ""
    labels: tuple[str, ...] = ()
    target_labels: bool = True


@dataclass(frozen=True)
class Sample:
    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskOutcome:
    """A result for another task of the same target that a run produced on the way, e.g. the link
    burst's ``reachability`` record (whether the far end answered at all). The runner turns it into
    a stored result beside the run's own; collectors never write to the store themselves."""

    task: str
    started: float  # Unix time
    duration: float
    ok: bool
    reason: str | None = None
    message: str | None = None


@dataclass
class Collected:
    """What one run produced: samples, plus errors for parts that failed while the rest worked."""

    samples: list[Sample] = field(default_factory=list)
    partial_errors: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)
    info: dict[str, Any] = field(default_factory=dict)  # extra detail for status page / collect-once
    # (reason, message) when the run completed and what it found is a failure: a check task whose
    # check found a corrupt repository, a restore test that did not verify or could not run. The
    # samples are kept and exposed (they are the finding), but the run is not a success: the
    # task's last-success timestamp stays put and the reason is counted. docs/backups.md.
    failure: tuple[str, str] | None = None
    outcomes: list[TaskOutcome] = field(default_factory=list)  # results for other tasks of the target

    def add(self, name: str, value: float, **labels: str) -> None:
        self.samples.append(Sample(name, float(value), labels))


class CollectorError(Exception):
    """A failure with a reason the operator can act on. The message must name the target and
    never contain a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def describe_oserror(e: OSError, where: str = "") -> str:
    """'Connection refused (127.0.0.1:8080)' rather than asyncio's 'Connect call failed (...)'."""
    import os

    text = os.strerror(e.errno) if e.errno else (e.strerror or str(e) or type(e).__name__)
    return f"{text} ({where})" if where else text


class TargetBase(StrictModel):
    """Keys every target has. Collectors subclass it and add ``kind: Literal[...]``."""

    name: str = Field(pattern=NAME_RE, description="Unique name; the `target` label of its metrics.")
    kind: str = Field(description="Which collector runs it (the sections below).")
    site: str | None = Field(default=None, description="Defaults to the agent's own site.")
    interval: Duration | None = Field(default=None, description="Defaults to defaults.interval.")
    timeout: Duration | None = Field(default=None, description="Defaults to defaults.timeout.")

    @model_validator(mode="before")
    @classmethod
    def _no_labels(cls, data: Any) -> Any:
        # `labels` used to be accepted and then ignored: a key that does nothing is refused instead.
        if isinstance(data, dict) and "labels" in data:
            raise ValueError(
                "labels: targets take no extra labels (they never reached a series); add static labels "
                "in Prometheus's scrape config (static_configs labels or relabel_configs) instead"
            )
        return data


T = TypeVar("T")


# -- the agent as a collector sees it ----------------------------------------------------------------
# Protocols, so the contract names no runtime module: agent.state.StateStore and
# agent.config.AgentConfig satisfy them (mypy checks it where the agent builds the context).


class ResultView(Protocol):
    """One stored run of a target's task (agent.state.Result)."""

    @property
    def target(self) -> str: ...
    @property
    def task(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def ok(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...
    @property
    def samples(self) -> Sequence[Sample]: ...
    @property
    def finished(self) -> float: ...


class SnapshotView(Protocol):
    """A consistent copy of the store's latest results (agent.state.Snapshot)."""

    @property
    def latest(self) -> Mapping[tuple[str, str], ResultView]: ...
    @property
    def last_success(self) -> Mapping[tuple[str, str], ResultView]: ...


class StoreView(Protocol):
    """What a collector may read from and write to the agent's state store."""

    def get_kv(self, key: str) -> Any: ...
    def set_kv(self, key: str, value: Any) -> None: ...
    def latest(self, target: str, task: str = "") -> ResultView | None: ...
    def snapshot(self) -> SnapshotView: ...
    def history(self, target: str, since: float, until: float, task: str = "") -> list[tuple[float, float, bool]]: ...
    def put(self, r: Any) -> None: ...


class SiteView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def class_(self) -> str: ...
    @property
    def contracted_download(self) -> float | None: ...
    @property
    def contracted_upload(self) -> float | None: ...


class AgentView(Protocol):
    """The loaded agent config as a collector sees it (agent.config.AgentConfig)."""

    @property
    def targets(self) -> Sequence[TargetBase]: ...
    @property
    def sites(self) -> Sequence[SiteView]: ...
    def site_of(self, target: TargetBase) -> str: ...
    def site_class(self, site: str) -> str: ...
    def interval_of(self, target: TargetBase) -> float: ...
    def timeout_of(self, target: TargetBase) -> float: ...


@dataclass
class CollectorContext:
    """What the agent lends a collector: resolved auths, helpers and shared resources."""

    auths: Mapping[str, Any]
    executor: ThreadPoolExecutor
    state_dir: Path
    clock: Callable[[], float] = time.time
    shared: dict[str, Any] = field(default_factory=dict)  # per-kind shared resources (e.g. SnmpEngine)
    store: StoreView | None = None  # the agent's state store, for collectors that read history
    config: AgentView | None = None  # the loaded agent config

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)


@dataclass(frozen=True)
class Task:
    """A scheduled unit of work for a target. The main task has ``name == ""``; collectors with
    slower side work (integrity checks, throughput tests) add named tasks."""

    name: str
    interval: float
    timeout: float
    run: Callable[[], Awaitable[Collected]]
    cron: str | None = None


class Collector(ABC):
    kind: ClassVar[str]
    config_model: ClassVar[type[TargetBase]]
    METRICS: ClassVar[Sequence[MetricSpec]] = ()
    REASONS: ClassVar[Sequence[str]] = ()
    # Auth types this collector accepts in `auth:` (auths[].type values); empty = no auth.
    AUTH_TYPES: ClassVar[Sequence[str]] = ()

    def __init__(self, target: TargetBase, ctx: CollectorContext, *, interval: float, timeout: float) -> None:
        self.target = target
        self.ctx = ctx
        self.interval = interval
        self.timeout = timeout

    @abstractmethod
    async def collect(self) -> Collected: ...

    def tasks(self) -> list[Task]:
        return [Task("", self.interval, self.timeout, self.collect)]

    def dynamic_metrics(self) -> Sequence[MetricSpec]:
        """Metrics this target declares from its config (e.g. SNMP OID mappings), beside the
        kind's static ``METRICS``. The agent gathers them from the collectors it has built, so a
        reload drops the ones no target declares any more."""
        return ()

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called on reload and shutdown."""

    @classmethod
    def http_routes(cls, agent: Any) -> list[Route]:
        """Routes this kind adds to the agent's HTTP server (``agent`` is agent.service.Agent)."""
        return []

    @classmethod
    def validate_config(cls, target: TargetBase, config: AgentView) -> list[tuple[str, str]]:
        """Cross-checks needing the whole config, without network calls. Returns (key, message)."""
        return []


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # without query string
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client: str
    # On a route with ``stream=True``: the body, read as the handler asks for it (``body`` is
    # empty); it ends after Content-Length bytes, and raises OSError (TimeoutError) on a client
    # that stops sending or sends too slowly.
    stream: BodyStream | None = None


class BodyStream(Protocol):
    length: int  # the Content-Length

    def read(self, n: int, /) -> bytes: ...


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """An HTTP route a collector kind adds to the agent (e.g. the backup push endpoint). Handlers
    run on the HTTP server's threads and must be quick and thread-safe."""

    method: str
    prefix: str
    handler: Callable[[HttpRequest], HttpResponse]
    # The handler checks its own credentials (e.g. the backup push token): the web config's basic
    # auth is not asked for. Failed attempts (401/403 with an Authorization header, 404) are rate
    # limited per client on this route only (WebApp.own_auth_limiter).
    own_auth: bool = False
    # The handler reads the body itself from HttpRequest.stream (an upload), with no size limit
    # but its own: the server hands the request over once its head is in (a body of at most
    # MAX_BODY: once it is all in), after authentication.
    stream: bool = False
