"""The cached /metrics renderer against the reference (prometheus_client over StateCollector.collect):
the same state gives the same bytes, in both formats, through cache hits, changes and staleness."""

from __future__ import annotations

import gzip
import subprocess
import zlib
from collections.abc import Iterable

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from agent.exposition import AgentStatus, Chunk, StateRegistry, gzip_join, make_registry, metrics_body
from agent.plugin import MetricSpec, Sample
from agent.state import Result, StateStore
from tests.helpers.common import need

TEXT = "text/plain; version=0.0.4"
ACCEPTS = [
    "",
    TEXT,
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",  # what Prometheus sends
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",  # served by the reference path
]

# Label values as devices and tools send them: quotes, backslashes, newlines, escapes that look
# like escapes, control characters, replacement characters from undecodable bytes, RTL and
# zero-width marks, astral characters, an empty string, a long one.
HOSTILE = [
    'say "hi"',
    "C:\\backup\\",
    "line1\nline2",
    '\\n is not a newline, \\" is not a quote',
    "tab\there\r\x00nul\x1b[31mred",
    "caf\u00e9 \ufffd\ufffd \u202eevil\u202c \u200b",
    "\U0001f4a9 \u0080\u009f",
    "",
    "}{,=\"'" * 3,
    "x" * 2000,
]
VALUES = [0.0, -0.0, 1.0, 0.1, 1e21, 123456789.0, 2.5e-9, -7.25, float("inf"), float("-inf"), float("nan"), 2**53]


def _status(targets: dict[str, tuple[str, str]]) -> AgentStatus:
    return AgentStatus(site='h"q\\', start_time=1000.25, reload_ok=False, reload_success_time=999.5, targets=targets)


def _result(
    target: str, kind: str, samples: list[Sample], *, task: str = "", ok: bool = True, at: float = 2000.0
) -> Result:
    return Result(
        target=target,
        task=task,
        kind=kind,
        site="ignored",
        started=at,
        duration=0.125,
        ok=ok,
        reason=None if ok else "timeout",
        message=None if ok else f"{target}: timed out",
        samples=samples,
    )


def _interfaces(n: int, offset: float = 0.0) -> list[Sample]:
    out = []
    for i in range(n):
        alias = HOSTILE[i % len(HOSTILE)]
        labels = {"interface": f"Gi0/{i}", "alias": alias}
        # Families interleave within a result (one interface's columns, then the next's).
        out.append(Sample("continuity_interface_up", float(i % 2), labels))
        out.append(Sample("continuity_interface_receive_bytes_total", VALUES[i % len(VALUES)] + offset, labels))
        out.append(Sample("continuity_interface_transmit_bytes_total", float(i * 1000) + offset, labels))
        out.append(
            Sample("continuity_interface_errors_total", float(i), {**labels, "direction": "in" if i % 2 else "out"})
        )
    return out


def _filesystems(n: int) -> list[Sample]:
    return [
        Sample(
            "continuity_host_filesystem_free_bytes",
            VALUES[i % len(VALUES)],
            {"mountpoint": HOSTILE[i % len(HOSTILE)], "fstype": "ext4", "device": f"/dev/vd{i}"},
        )
        for i in range(n)
    ]


class _Extra:
    """An extra collector as reports and exercises register one."""

    def collect(self) -> Iterable[Metric]:
        g = GaugeMetricFamily("continuity_report_last_duration_seconds", "How long.", labels=["report"], unit="seconds")
        g.add_metric(['weekly "dr"\n'], 1.5)
        return [g]


def _both(reg: StateRegistry, accept: str) -> tuple[bytes, bytes]:
    encoder, content_type = choose_encoder(accept)
    reference = encoder(reg)
    body, ct, headers = metrics_body(reg, accept, "")
    assert ct == content_type
    assert headers == {}
    return reference, body


def _assert_same(reg: StateRegistry) -> bytes:
    text = b""
    for accept in ACCEPTS:
        reference, body = _both(reg, accept)
        assert body == reference, accept
        if accept == TEXT:
            text = body
    return text


def _hostile_state() -> tuple[StateStore, dict[str, tuple[str, str]]]:
    targets = {
        "r1": ("snmp", "depot"),
        "r0": ("snmp", 'si"te\\\n'),  # sorts before r1; hostile site
        "srv": ("host", "hq"),
        "web": ("probe", "hq"),
        "never-ran": ("probe", "hq"),
        "nas": ("backup", "hq"),
    }
    store = StateStore(None)
    store.put(_result("r1", "snmp", _interfaces(25)))
    store.put(_result("r0", "snmp", _interfaces(7, offset=0.5)))
    store.put(_result("srv", "host", _filesystems(30)))
    store.put(_result("web", "probe", [Sample("continuity_probe_success", 1.0, {})]))
    store.put(_result("web", "probe", [], ok=False, at=2060.0))  # failed: its values disappear
    backup = [
        Sample("continuity_backup_state", 1.0, {"backup": 'nas "daily"', "kind": "restic", "state": "ok"}),
        Sample("continuity_backup_state", 0.0, {"backup": 'nas "daily"', "kind": "restic", "state": "stale"}),
        Sample("continuity_backup_size_bytes", 1e12, {"backup": 'nas "daily"', "kind": "restic"}),
    ]
    store.put(_result("nas", "backup", backup))
    check = [Sample("continuity_backup_integrity_ok", 0.0, {"backup": "nas\\x", "kind": "restic"})]
    store.put(_result("nas", "backup", check, task="check", ok=True, at=1900.0))
    failed_check = _result("nas", "backup", check, task="check", ok=False, at=2100.0)
    store.put(failed_check)  # a failed run with samples: the finding stays visible
    store.put(_result("gone", "probe", [Sample("continuity_probe_success", 1.0, {})]))  # not configured
    store.count_skipped("srv", "still_running")
    store.count_skipped("srv", "late", 3)
    return store, targets


def test_same_bytes_as_reference_with_hostile_labels_and_values() -> None:
    store, targets = _hostile_state()
    reg = make_registry(store, lambda: _status(targets))
    reg.register(_Extra())  # type: ignore[arg-type]
    text = _assert_same(reg)
    # The state really is in there: interleaved families, staleness, hostile escaping.
    assert text.count(b"# HELP continuity_interface_up ") == 1
    assert text.count(b"# TYPE continuity_interface_receive_bytes_total counter") == 1
    assert b'alias="line1\\\\nline2"' in text  # terminal-safe \\n, its backslash escaped
    assert b'alias="C:\\\\backup\\\\"' in text
    assert b'alias="say \\"hi\\""' in text
    assert b"continuity_probe_success" not in text  # web failed, gone is not configured
    assert b'continuity_target_up{collector="probe",site="hq",target="web"} 0.0' in text
    assert b"never-ran" in text  # skipped counter at 0 for a target that has not run yet
    assert b'continuity_backup_integrity_ok{backup="nas\\\\x"' in text
    assert b'target="r0"' in text and text.index(b'target="r0"') < text.index(b'target="r1"')
    # Cache hits give the same bytes again; the cached blocks are shared, not rebuilt.
    r1 = store.latest("r1")
    assert r1 is not None
    before = r1.rendered["samples"][1]
    _assert_same(reg)
    assert r1.rendered["samples"][1] is before


def test_changes_reach_the_cached_output() -> None:
    store, targets = _hostile_state()
    status = _status(targets)
    reg = make_registry(store, lambda: status)
    _assert_same(reg)
    # A new result, a failure (values disappear), a skipped run, a new error reason, a target
    # moved to another site and kind, a target dropped from the config.
    store.put(_result("r1", "snmp", _interfaces(3, offset=7.0), at=2200.0))
    store.put(_result("srv", "host", [], ok=False, at=2200.0))
    store.count_skipped("web", "late")
    r0 = store.latest("r0")
    assert r0 is not None
    r0.partial_errors.append(("snmp_timeout", "r0: slow"))
    store.put(r0)  # same result object stored again with a partial error counted
    targets["r0"] = ("link", "elsewhere")
    del targets["nas"]
    text = _assert_same(reg)
    assert b'continuity_target_up{collector="host",site="hq",target="srv"} 0.0' in text
    assert b"continuity_host_filesystem_free_bytes" not in text
    assert b'site="elsewhere",target="r0"' in text
    assert b'target="nas"' not in text
    store.put(_result("srv", "host", _filesystems(2), at=2300.0))  # back
    assert b"continuity_host_filesystem_free_bytes" in _assert_same(reg)


def test_config_defined_metric_redeclared_rerenders() -> None:
    name = "continuity_snmp_test_cache_redeclared"
    declared = {name: MetricSpec(name, "gauge", "First.", labels=("oid",))}
    store = StateStore(None)
    store.put(_result("r1", "snmp", [Sample(name, 1.0, {"oid": "1.3"})]))
    reg = make_registry(store, lambda: _status({"r1": ("snmp", "hq")}), lambda: declared)
    assert f"{name}{{oid=".encode() in _assert_same(reg)
    # After a reload declares the metric with other labels, the stored sample no longer fits.
    declared = {name: MetricSpec(name, "gauge", "Second.", labels=("index",))}
    text = _assert_same(reg)
    assert f"{name}{{".encode() not in text
    declared = {}  # and with no declaration at all, it is dropped
    assert name.encode() not in _assert_same(reg)


def test_lone_surrogate_and_control_characters_render_like_the_reference() -> None:
    """A label value decoded with surrogateescape, with escape sequences and NULs: shown
    terminal-safe (agent.escape.terminal) by both renderers, byte for byte."""
    store = StateStore(None)
    bad = b"eth\xff0\x1b[2J\x00".decode("utf-8", "surrogateescape")
    store.put(
        _result(
            "srv",
            "host",
            [Sample("continuity_host_filesystem_free_bytes", 1.0, {"mountpoint": bad, "fstype": "x", "device": "d"})],
        )
    )
    reg = make_registry(store, lambda: _status({"srv": ("host", "hq")}))
    text = _assert_same(reg)
    assert b'mountpoint="eth\\\\udcff0\\\\x1b[2J\\\\x00"' in text


def test_gzip_is_one_member_of_the_same_bytes() -> None:
    store, targets = _hostile_state()
    store.put(_result("big", "host", _filesystems(400)))
    targets["big"] = ("host", "hq")
    reg = make_registry(store, lambda: _status(targets))
    for accept in ACCEPTS:
        plain, ct, _ = metrics_body(reg, accept, "")
        for _ in range(2):  # the second time from the cached deflate streams
            body, ct2, headers = metrics_body(reg, accept, "gzip, deflate")
            assert ct2 == ct
            assert headers == {"Content-Encoding": "gzip"}
            d = zlib.decompressobj(wbits=31)
            assert d.decompress(body) == plain
            assert d.eof and d.unused_data == b""  # one gzip member, as every client reads it
            assert gzip.decompress(body) == plain
    big = store.latest("big")
    assert big is not None
    chunks = [p for _, p in big.rendered["samples"][1] if isinstance(p, Chunk)]
    assert chunks and all(c.deflated is not None for c in chunks)
    tiny = CollectorRegistry(auto_describe=False)
    tiny.register(_Extra())  # type: ignore[arg-type]
    small, _ct, headers = metrics_body(tiny, TEXT, "gzip")
    assert headers == {} and small.startswith(b"# HELP")  # under a kilobyte: not worth compressing


def test_gzip_join_of_nothing_and_of_pieces() -> None:
    assert gzip.decompress(gzip_join([])) == b""
    pieces: list[bytes | Chunk] = [b"a" * 10, Chunk(b"b" * 5000), b"c", Chunk(b"d" * 5000), Chunk(b"e" * 4096)]
    assert gzip.decompress(gzip_join(pieces)) == b"a" * 10 + b"b" * 5000 + b"c" + b"d" * 5000 + b"e" * 4096


def test_promtool_accepts_the_cached_exposition() -> None:
    promtool = need("promtool")
    store, targets = _hostile_state()
    reg = make_registry(store, lambda: _status(targets))
    body, _ct, _h = metrics_body(reg, TEXT, "")
    p = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stdout == b"" and p.stderr == b"", p.stdout + p.stderr


def test_odd_label_values_like_the_reference_and_a_bad_value_dropped() -> None:
    """Label values that are not strings (a collector bug) print as the reference prints them; a
    value that is not a number fails the reference's whole scrape, the cached renderer drops that
    one sample and serves the rest."""
    store = StateStore(None)
    odd = [
        *_filesystems(2),
        Sample("continuity_host_filesystem_free_bytes", 1.0, {"mountpoint": 3, "fstype": "x", "device": "d"}),  # type: ignore[dict-item]
        Sample("continuity_host_filesystem_free_bytes", 1.0, {"mountpoint": ["x"], "fstype": "x", "device": "e"}),  # type: ignore[dict-item]
    ]
    store.put(_result("srv", "host", list(odd)))
    reg = make_registry(store, lambda: _status({"srv": ("host", "hq")}))
    assert _assert_same(reg).count(b"continuity_host_filesystem_free_bytes{") == 4
    bad = Sample("continuity_host_filesystem_free_bytes", "many", {"mountpoint": "/m", "fstype": "x", "device": "f"})  # type: ignore[arg-type]
    store.put(_result("srv", "host", [*odd, bad]))
    with pytest.raises(ValueError):
        choose_encoder(TEXT)[0](reg)
    body, _ct, _h = metrics_body(reg, TEXT, "")
    assert body.count(b"continuity_host_filesystem_free_bytes{") == 4
    assert b'device="f"' not in body
