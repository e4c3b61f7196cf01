"""/metrics from a state snapshot: no I/O, never raises for bad data.

Two renderers of the same exposition. :class:`StateCollector` is the prometheus_client Collector
(the reference: ``generate_latest(make_registry(...))``). :meth:`StateCollector.render` is what a
scrape uses: each result's sample lines are rendered once, on the first scrape after the result
was stored, and kept on the result (:attr:`Result.rendered`); a scrape joins the cached blocks per
family in the same order the reference produces, with each family's ``# HELP``/``# TYPE`` once,
plus the agent's own small families rendered fresh. ``tests/unit/test_exposition_cache.py`` proves
both give the same bytes for the same state. gzip bodies reuse each large block's deflate stream.
"""

from __future__ import annotations

import functools
import logging
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.registry import Collector as PromCollector
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from agent import __version__
from agent.catalogue import SKIP_REASONS, exposed_labels, running_catalogue, spec_for
from agent.escape import terminal
from agent.plugin import MetricSpec
from agent.samples import rows
from agent.state import Result, Snapshot, StateStore

log = logging.getLogger(__name__)


@dataclass
class AgentStatus:
    site: str = ""
    start_time: float = field(default_factory=time.time)
    reload_ok: bool = True
    reload_success_time: float = 0.0
    targets: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (kind, site)


def _family(spec: MetricSpec) -> Metric:
    name = spec.name
    if spec.type == "counter":
        name = name[: -len("_total")]
    elif spec.type == "info":
        name = name[: -len("_info")]
    mtype = "gauge" if spec.type == "stateset" else spec.type
    unit = spec.unit if spec.unit and name.endswith("_" + spec.unit) else ""
    return Metric(name, spec.help, mtype, unit)


def _no_dynamic() -> Mapping[str, MetricSpec]:
    return {}


class StateCollector(PromCollector):
    def __init__(
        self,
        store: StateStore,
        status: Callable[[], AgentStatus],
        dynamic: Callable[[], Mapping[str, MetricSpec]] = _no_dynamic,
    ) -> None:
        self.store = store
        self.status = status
        self.dynamic = dynamic  # the running targets' config-defined metrics (Collector.dynamic_metrics)
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        with self._warn_lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.error(msg, *args)

    def collect(self) -> Iterable[Metric]:
        cat = running_catalogue()
        dyn = self.dynamic()
        snap = self.store.snapshot()
        st = self.status()
        fams: dict[str, Metric] = {}

        def fam(name: str) -> Metric:
            m = fams.get(name)
            if m is None:
                m = fams[name] = _family(cat.get(name) or spec_for(name, dyn))  # type: ignore[arg-type]
            return m

        fam("continuity_agent_info").add_sample("continuity_agent_info", {"version": __version__, "site": st.site}, 1.0)
        fam("continuity_agent_start_time_seconds").add_sample("continuity_agent_start_time_seconds", {}, st.start_time)
        fam("continuity_config_last_reload_successful").add_sample(
            "continuity_config_last_reload_successful", {}, 1.0 if st.reload_ok else 0.0
        )
        fam("continuity_config_last_reload_success_timestamp_seconds").add_sample(
            "continuity_config_last_reload_success_timestamp_seconds", {}, st.reload_success_time
        )
        fam("continuity_state_db_healthy").add_sample("continuity_state_db_healthy", {}, float(snap.db_healthy))
        fam("continuity_state_db_errors_total").add_sample(
            "continuity_state_db_errors_total", {}, float(snap.db_errors)
        )

        for target, (kind, site) in sorted(st.targets.items()):
            tl = {"collector": kind, "target": target, "site": site}
            main = snap.latest.get((target, ""))
            if main is not None:
                fam("continuity_target_up").add_sample("continuity_target_up", tl, 1.0 if main.ok else 0.0)
                fam("continuity_target_collection_duration_seconds").add_sample(
                    "continuity_target_collection_duration_seconds", tl, main.duration
                )
            ok = snap.last_success.get((target, ""))
            if ok is not None:
                fam("continuity_target_last_success_timestamp_seconds").add_sample(
                    "continuity_target_last_success_timestamp_seconds", tl, ok.finished
                )
            for reason in SKIP_REASONS:
                fam("continuity_target_skipped_runs_total").add_sample(
                    "continuity_target_skipped_runs_total",
                    {**tl, "reason": reason},
                    snap.skipped.get((target, reason), 0.0),
                )

        for (target, reason), count in sorted(snap.errors.items()):
            if target not in st.targets:
                continue
            kind, site = st.targets[target]
            fam("continuity_target_errors_total").add_sample(
                "continuity_target_errors_total",
                {"collector": kind, "target": target, "site": site, "reason": reason},
                count,
            )

        for target, kind, site, res, task_success in _results(snap, st):
            if task_success is not None:
                name = "continuity_task_last_success_timestamp_seconds"
                fam(name).add_sample(name, *task_success)
            if not res.ok and not res.samples:
                continue  # stale values disappear; up/errors say why
            # A failed run with samples completed and found a failure (Collected.failure): its
            # samples are the finding and stay visible.
            for s in res.samples:
                spec = cat.get(s.name) or spec_for(s.name, dyn)
                if spec is None:
                    self._warn_once(s.name, "collector %s emitted undeclared metric %s; dropped", kind, s.name)
                    continue
                # Label values from devices are hostile: control characters become visible
                # escapes (ESC -> \x1b), so /metrics is safe to read in a terminal.
                labels = {k: terminal(v) for k, v in s.labels.items()}
                if spec.target_labels:
                    labels["target"] = target
                    labels["site"] = labels.get("site", site) if "site" in spec.labels else site
                if set(labels) != set(exposed_labels(spec)):
                    self._warn_once(
                        s.name + "/labels",
                        "metric %s from %s has labels %s, catalogue says %s; dropped",
                        s.name,
                        kind,
                        sorted(labels),
                        sorted(exposed_labels(spec)),
                    )
                    continue
                sample_name = s.name
                fam(s.name).add_sample(sample_name, labels, s.value)
        return list(fams.values())

    # -- the cached renderer ---------------------------------------------------------------------
    def render(self, openmetrics_format: bool) -> list[bytes | Chunk]:
        """This collector's part of the exposition (without OpenMetrics' ``# EOF``), as pieces
        to join: the same bytes ``generate_latest`` makes from :meth:`collect`."""
        snap = self.store.snapshot()
        st = self.status()
        dyn = self.dynamic()
        fams: dict[str, list[bytes | Chunk]] = {}

        def add(block: Iterable[tuple[str, bytes | Chunk]]) -> None:
            for name, data in block:
                parts = fams.get(name)
                if parts is None:
                    fams[name] = [data]
                else:
                    parts.append(data)

        add(_agent_block(snap, st))
        for target, (kind, site) in sorted(st.targets.items()):
            add(self._target_block(target, kind, site, snap))
        add(_errors_block(snap, st))
        for target, kind, site, res, task_success in _results(snap, st):
            if task_success is not None:
                name = "continuity_task_last_success_timestamp_seconds"
                add(((name, _line(name, *task_success).encode("utf-8", "replace")),))
            if not res.ok and not res.samples:
                continue  # stale values disappear; up/errors say why
            add(self._samples_block(res, target, kind, site, dyn))
        out: list[bytes | Chunk] = []
        for name, parts in fams.items():
            out.append(_header(spec_for(name, dyn), openmetrics_format))  # type: ignore[arg-type]
            out.extend(parts)
        return out

    def _target_block(self, target: str, kind: str, site: str, snap: Snapshot) -> list[tuple[str, bytes | Chunk]]:
        main = snap.latest.get((target, ""))
        ok = snap.last_success.get((target, ""))
        skipped = tuple(snap.skipped.get((target, reason), 0.0) for reason in SKIP_REASONS)
        stamp = (target, kind, site, None if ok is None else ok.finished, skipped)
        if main is not None:
            cached = main.rendered.get("target")
            if cached is not None and cached[0] == stamp:
                return cached[1]  # type: ignore[no-any-return]
        tl = {"collector": kind, "target": target, "site": site}
        lines: list[tuple[str, str]] = []
        if main is not None:
            lines.append(("continuity_target_up", _line("continuity_target_up", tl, 1.0 if main.ok else 0.0)))
            name = "continuity_target_collection_duration_seconds"
            lines.append((name, _line(name, tl, main.duration)))
        if ok is not None:
            name = "continuity_target_last_success_timestamp_seconds"
            lines.append((name, _line(name, tl, ok.finished)))
        name = "continuity_target_skipped_runs_total"
        for reason, n in zip(SKIP_REASONS, skipped, strict=True):
            lines.append((name, _line(name, {**tl, "reason": reason}, n)))
        block = _group(lines)
        if main is not None:
            main.rendered["target"] = (stamp, block)
        return block

    def _samples_block(
        self, res: Result, target: str, kind: str, site: str, dyn: Mapping[str, MetricSpec]
    ) -> list[tuple[str, bytes | Chunk]]:
        # The block depends on the target's kind and site and on the declarations of the
        # config-defined metrics in force (a reload replaces that mapping).
        stamp = (target, kind, site)
        cached = res.rendered.get("samples")
        if cached is not None and cached[0] == stamp and (cached[2] is dyn or cached[2] == dyn):
            return cached[1]  # type: ignore[no-any-return]
        lines: list[tuple[str, str]] = []
        # Per metric name: its declaration's shape, or None if undeclared. Per (shape, label set):
        # the rendered "{...}" or None if the labels do not fit. An interface's label set is
        # rendered once for all the metrics of that shape.
        shapes: dict[str, tuple[bool, bool, frozenset[str]] | None] = {}
        label_strs: dict[tuple[tuple[bool, bool, frozenset[str]], tuple[str, ...]], str | None] = {}
        esc: dict[str, str] = {}
        for name, value, flat in rows(res.samples):
            shape = shapes.get(name, _MISSING)
            if shape is _MISSING:
                spec = spec_for(name, dyn)
                shape = shapes[name] = (
                    None
                    if spec is None
                    else (spec.target_labels, "site" in spec.labels, frozenset(exposed_labels(spec)))
                )
            if shape is None:
                self._warn_once(name, "collector %s emitted undeclared metric %s; dropped", kind, name)
                continue
            try:
                try:
                    key: Any = (shape, flat)
                    labelstr = label_strs.get(key, _MISSING)
                except TypeError:  # an unhashable label value (a collector bug): rendered, not cached
                    key, labelstr = None, _MISSING
                if labelstr is _MISSING:
                    labelstr = _label_str(shape, flat, target, site, esc)
                    if key is not None:
                        label_strs[key] = labelstr
                if labelstr is None:
                    labels = dict(zip(flat[::2], flat[1::2], strict=True))
                    if shape[0]:
                        labels.update(target=target, site=site)
                    self._warn_once(
                        name + "/labels",
                        "metric %s from %s has labels %s, catalogue says %s; dropped",
                        name,
                        kind,
                        sorted(labels),
                        sorted(shape[2]),
                    )
                    continue
                lines.append((name, f"{name}{labelstr} {_go_float(value)}\n"))
            except (TypeError, ValueError, AttributeError) as e:
                self._warn_once(
                    name + "/value", "metric %s from %s has a bad value or label: %s; dropped", name, kind, e
                )
        block = _group(lines)
        res.rendered["samples"] = (stamp, block, dyn)
        return block


_MISSING: Any = object()
CHUNK_CACHE_MIN = 4096  # blocks at least this long keep their deflate stream for gzip scrapes


class Chunk:
    """A cached block of exposition lines and, once a gzip scrape needed it, its deflate stream."""

    __slots__ = ("data", "deflated")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.deflated: bytes | None = None

    def __len__(self) -> int:
        return len(self.data)


_go_float: Callable[[float], str] = floatToGoString
_text_latest: Callable[[Any], bytes] = generate_latest
_om_latest: Callable[[Any], bytes] = om_exposition.generate_latest


def _escape(value: str) -> str:
    if "\\" not in value and "\n" not in value and '"' not in value:
        return value
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_str(
    shape: tuple[bool, bool, frozenset[str]], flat: tuple[str, ...], target: str, site: str, esc: dict[str, str]
) -> str | None:
    """A sample's ``{...}`` as prometheus_client writes it, with the target labels the sample's
    declaration adds (as :meth:`StateCollector.collect` adds them); None if the labels do not fit.
    ``esc``: escaped values already seen in this block."""
    target_labels, site_declared, exposed = shape
    # As the reference: label values from devices shown terminal-safe (agent.escape.terminal),
    # target and site as configured.
    labels = {k: terminal(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
    if target_labels:
        labels["target"] = target
        labels["site"] = labels.get("site", site) if site_declared else site
    if labels.keys() != exposed:
        return None
    if not labels:
        return ""
    parts = []
    for k, v in sorted(labels.items()):
        e = esc.get(v)
        if e is None:
            e = esc[v] = _escape(v)
        parts.append(f'{k}="{e}"')
    return "{" + ",".join(parts) + "}"


def _line(name: str, labels: Mapping[str, str], value: float) -> str:
    """One sample line exactly as prometheus_client writes it (labels sorted, values escaped)."""
    if labels:
        inner = ",".join([f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())])
        return f"{name}{{{inner}}} {_go_float(value)}\n"
    return f"{name} {_go_float(value)}\n"


def _group(lines: list[tuple[str, str]]) -> list[tuple[str, bytes | Chunk]]:
    """Lines grouped per family, families in order of first appearance, each family's lines in
    their order: what the reference renderer's per-family sample lists hold for this block."""
    by_fam: dict[str, list[str]] = {}
    for name, text in lines:
        fam = by_fam.get(name)
        if fam is None:
            by_fam[name] = [text]
        else:
            fam.append(text)
    out: list[tuple[str, bytes | Chunk]] = []
    for name, texts in by_fam.items():
        data = "".join(texts).encode("utf-8", "replace")
        out.append((name, Chunk(data) if len(data) >= CHUNK_CACHE_MIN else data))
    return out


def _agent_block(snap: Snapshot, st: AgentStatus) -> list[tuple[str, bytes | Chunk]]:
    lines = [
        ("continuity_agent_info", _line("continuity_agent_info", {"version": __version__, "site": st.site}, 1.0)),
        ("continuity_agent_start_time_seconds", _line("continuity_agent_start_time_seconds", {}, st.start_time)),
        (
            "continuity_config_last_reload_successful",
            _line("continuity_config_last_reload_successful", {}, 1.0 if st.reload_ok else 0.0),
        ),
        (
            "continuity_config_last_reload_success_timestamp_seconds",
            _line("continuity_config_last_reload_success_timestamp_seconds", {}, st.reload_success_time),
        ),
        ("continuity_state_db_healthy", _line("continuity_state_db_healthy", {}, float(snap.db_healthy))),
        ("continuity_state_db_errors_total", _line("continuity_state_db_errors_total", {}, float(snap.db_errors))),
    ]
    return _group(lines)


def _results(
    snap: Snapshot, st: AgentStatus
) -> Iterator[tuple[str, str, str, Result, tuple[dict[str, str], float] | None]]:
    """(target, kind, site, result, task success) of every stored result of a configured target, in
    order; a secondary task's result comes with the labels and time of that task's last success
    (``continuity_task_last_success_timestamp_seconds``), if it has one."""
    for (target, task), res in sorted(snap.latest.items()):
        if target not in st.targets:
            continue
        kind, site = st.targets[target]
        last = snap.last_success.get((target, task)) if task else None
        if last is None:
            yield target, kind, site, res, None
        else:
            labels = {"collector": kind, "target": target, "site": site, "task": task}
            yield target, kind, site, res, (labels, last.finished)


def _errors_block(snap: Snapshot, st: AgentStatus) -> list[tuple[str, bytes | Chunk]]:
    lines = []
    for (target, reason), count in sorted(snap.errors.items()):
        if target not in st.targets:
            continue
        kind, site = st.targets[target]
        labels = {"collector": kind, "target": target, "site": site, "reason": reason}
        lines.append(("continuity_target_errors_total", _line("continuity_target_errors_total", labels, count)))
    return _group(lines)


class _Families:
    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterable[Metric]:
        return self.metrics


@functools.lru_cache(maxsize=4096)
def _header(spec: MetricSpec, openmetrics_format: bool) -> bytes:
    """``# HELP``/``# TYPE`` (and ``# UNIT``) of a family, written by prometheus_client itself."""
    fams = _Families([_family(spec)])
    if openmetrics_format:
        return _om_latest(fams)[: -len(_EOF)]
    return _text_latest(fams)


_EOF = b"# EOF\n"


class StateRegistry(CollectorRegistry):
    """The agent's registry: the state collector first, then the extra collectors (reports,
    exercises). :func:`metrics_body` serves it from the state collector's cached blocks."""

    def __init__(self, state: StateCollector) -> None:
        super().__init__(auto_describe=False)
        self.state = state
        self.extras: list[PromCollector] = []
        self.register(state)

    def register(self, collector: PromCollector) -> None:
        super().register(collector)
        if collector is not self.state:
            self.extras.append(collector)

    def unregister(self, collector: PromCollector) -> None:
        super().unregister(collector)
        if collector in self.extras:
            self.extras.remove(collector)

    def render(self, openmetrics_format: bool) -> list[bytes | Chunk]:
        out = self.state.render(openmetrics_format)
        if self.extras:
            extra = _Families(m for c in list(self.extras) for m in c.collect())
            if openmetrics_format:
                out.append(_om_latest(extra)[: -len(_EOF)])
            else:
                out.append(_text_latest(extra))
        if openmetrics_format:
            out.append(_EOF)
        return out


M_MMAP_THRESHOLD = -3  # glibc mallopt parameters
M_ARENA_MAX = -8
LARGE_BLOCK = 256 * 1024
MALLOC_ARENAS = 2


def _mallopt() -> Callable[[int, int], int]:
    """glibc's ``int mallopt(int param, int value)``, called through ``_ctypes``, the C half of
    :mod:`ctypes`: its Python half (0.2 MiB of classes the agent never uses otherwise) need not load
    for two calls at start. Raises OSError off glibc."""
    import _ctypes

    class CInt(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_int
        _type_ = "i"

    class Mallopt(_ctypes.CFuncPtr):  # ctypes.CFUNCTYPE(c_int, c_int, c_int)
        _flags_ = _ctypes.FUNCFLAG_CDECL
        _restype_ = CInt
        _argtypes_ = (CInt, CInt)

    libc = _ctypes.dlopen("libc.so.6", _ctypes.RTLD_LOCAL)
    return Mallopt(_ctypes.dlsym(libc, "mallopt"))  # type: ignore[no-any-return]


def return_large_blocks() -> bool:
    """Have glibc serve blocks of ``LARGE_BLOCK`` bytes and more with mmap, always. By default it
    raises that threshold (up to 32 MiB) after freeing such a block, and then a multi-megabyte
    /metrics body comes from the heap arena of the HTTP worker thread that built it, which keeps the
    memory after the body is freed: with 16 workers, RSS grows by up to 16 bodies, in proportion to
    the series exposed. Mapped blocks go back to the system when freed.

    Also cap glibc's heap arenas at ``MALLOC_ARENAS``: by default each thread that allocates gets
    an arena of its own, up to 8 per core, and each keeps pages it touched; the agent's threads (16
    HTTP workers, the worker pool, the state writer) mostly wait, and hold the GIL when they do
    allocate, so sharing costs nothing measurable and saves about 1 MiB idle
    (docs/PERFORMANCE.md). Called before the agent starts any thread. Nothing off glibc. True when
    glibc took both settings."""
    try:
        mallopt = _mallopt()
        return bool(mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)) & bool(mallopt(M_ARENA_MAX, MALLOC_ARENAS))
    except (OSError, AttributeError):
        return False


def make_registry(
    store: StateStore,
    status: Callable[[], AgentStatus],
    dynamic: Callable[[], Mapping[str, MetricSpec]] = _no_dynamic,
) -> StateRegistry:
    return StateRegistry(StateCollector(store, status, dynamic))


# Escapings under which a valid legacy name prints as itself: the cached blocks serve them.
_PLAIN_ESCAPINGS = (om_exposition.UNDERSCORES, om_exposition.ALLOWUTF8, om_exposition.VALUES)
GZIP_MIN = 1024  # smaller bodies go uncompressed (as agent.http does for every other page)


def _cached_format(encoder: Callable[..., bytes]) -> bool | None:
    """True for OpenMetrics, False for the text format, None when the cached blocks cannot serve
    the encoding chosen (a name escaping that rewrites valid names, such as ``dots``)."""
    func = getattr(encoder, "func", encoder)
    escaping = getattr(encoder, "keywords", {}).get("escaping", om_exposition.UNDERSCORES)
    if escaping not in _PLAIN_ESCAPINGS:
        return None
    if func is generate_latest:
        return False
    if func is om_exposition.generate_latest:
        return True
    return None


def metrics_body(registry: CollectorRegistry, accept: str, accept_encoding: str) -> tuple[bytes, str, dict[str, str]]:
    """(body, content type, extra headers) of a /metrics response: the format the Accept header
    asks for (as prometheus_client negotiates it), gzip-compressed when the client accepts it."""
    encoder, content_type = choose_encoder(accept)
    fmt = _cached_format(encoder) if isinstance(registry, StateRegistry) else None
    parts: list[bytes | Chunk]
    if fmt is None or not isinstance(registry, StateRegistry):
        parts = [encoder(registry)]
    else:
        parts = registry.render(fmt)
    size = sum(len(p) for p in parts)
    if size > GZIP_MIN and "gzip" in accept_encoding:
        return gzip_join(parts), content_type, {"Content-Encoding": "gzip"}
    return b"".join(p.data if isinstance(p, Chunk) else p for p in parts), content_type, {}


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, unknown OS
GZIP_LEVEL = 1


def _deflate(data: bytes) -> bytes:
    """A raw deflate stream of ``data`` that ends byte-aligned and not final, so that streams
    made this way can be concatenated into one."""
    z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)


def gzip_join(parts: Iterable[bytes | Chunk]) -> bytes:
    """One gzip member (RFC 1952) of the parts joined: large cached blocks contribute the deflate
    stream they keep (made on the first gzip scrape after they were rendered), the small pieces
    between them are compressed now."""
    out = [_GZIP_HEADER]
    crc = 0
    size = 0
    pending: list[bytes] = []
    for p in parts:
        data = p.data if isinstance(p, Chunk) else p
        crc = zlib.crc32(data, crc)
        size += len(data)
        if isinstance(p, Chunk):
            if pending:
                out.append(_deflate(b"".join(pending)))
                pending = []
            if p.deflated is None:
                p.deflated = _deflate(data)
            out.append(p.deflated)
        else:
            pending.append(data)
    if pending:
        out.append(_deflate(b"".join(pending)))
    out.append(zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15).flush())  # the final, empty block
    out.append(struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
    return b"".join(out)
