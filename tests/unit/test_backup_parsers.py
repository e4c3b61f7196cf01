"""Backup output parsers: recorded real outputs parse to the right facts; anything malformed is
reason bad_output, never another exception (hypothesis)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.backup import parsers
from collectors.base import CollectorError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "backup"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_restic_snapshots_recorded() -> None:
    snaps = parsers.parse_restic_snapshots((FIX / "restic-snapshots.json").read_bytes())
    assert [s.id[:8] for s in snaps] == ["e224cc43", "72844641", "404b2f2d"]
    # nanoseconds: 05:57:31.367605216Z
    assert snaps[-1].time == pytest.approx(ts("2026-11-25T05:57:31.367605+00:00") + 0.000000216, abs=1e-6)
    assert parsers.parse_restic_snapshots((FIX / "restic-snapshots-empty.json").read_bytes()) == []


def test_restic_stats_and_ls_recorded() -> None:
    assert parsers.parse_restic_stats((FIX / "restic-stats.json").read_bytes()) == 100010
    nodes = parsers.parse_restic_ls((FIX / "restic-ls.jsonl").read_bytes())
    assert {n.path: n.size for n in nodes}["/data/a"] == 100000
    assert all(n.path.startswith("/data/") for n in nodes)
    assert "/data/sub/we[ir]d *name" in {n.path for n in nodes}


def test_borg_recorded() -> None:
    done, checkpoints = parsers.parse_borg_list((FIX / "borg-list.json").read_bytes())
    assert [a.name for a in done] == ["arch1"]
    assert [a.name for a in checkpoints] == ["arch2.checkpoint"]
    assert done[0].time == ts("2026-11-25T05:54:16+00:00")  # naive, printed with TZ=UTC
    assert parsers.parse_borg_info((FIX / "borg-info.json").read_bytes()) == 100006
    items = parsers.parse_borg_items((FIX / "borg-items.jsonl").read_bytes())
    assert {i.path: i.sha256 for i in items}["data/b"] == (
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    )


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-11-25T05:57:31Z", "2026-11-25T05:57:31+00:00"),
        ("2026-11-25T06:57:31+01:00", "2026-11-25T05:57:31+00:00"),
        ("2026-11-25T05:57:31.5-0030", "2026-11-25T06:27:31.5+00:00"),
        ("2026-11-25 05:57:31.000000Z", "2026-11-25T05:57:31+00:00"),
    ],
)
def test_timestamps(text: str, expected: str) -> None:
    assert parsers.parse_timestamp(text) == ts(expected)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-25T05:57:31",
        "2026-13-01T00:00:00Z",
        "yesterday",
        "2026-11-25T05:57:31+25:00",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
    ],
)
def test_bad_timestamps(text: str) -> None:
    with pytest.raises(ValueError):
        parsers.parse_timestamp(text)


def test_naive_only_when_allowed() -> None:
    assert parsers.parse_timestamp("2026-11-25T05:54:16.000000", naive_utc=True) == ts("2026-11-25T05:54:16+00:00")


def test_command_status_documented_object() -> None:
    st_ = parsers.parse_command_status(
        json.dumps(
            {
                "last_success": "2026-11-25T02:00:00+00:00",
                "last_attempt": NOW - 60,
                "size_bytes": 42,
                "ok": False,
                "snapshots": 7,
                "message": "job failed: tape full",
            }
        ).encode(),
        NOW,
    )
    assert st_ == parsers.CommandStatus(
        ts("2026-11-25T02:00:00+00:00"), NOW - 60, False, 42, 7, "job failed: tape full"
    )
    # ok describes the attempt at last_attempt
    ok = parsers.parse_command_status(b'{"ok": true, "last_attempt": 1700000000}', NOW)
    assert ok.last_success == ok.last_attempt == 1700000000
    assert parsers.parse_command_status(b'{"ok": true}', NOW).last_success is None


@pytest.mark.parametrize(
    "doc",
    [
        b"",
        b"   ",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'{"ok": 1}',
        b'{"ok": "yes"}',
        b'{"ok": true, "last_success": true}',
        b'{"ok": true, "last_success": "2026-11-25T05:00:00"}',
        b'{"ok": true, "last_success": -5}',
        b'{"ok": true, "last_success": 1e400}',
        b'{"ok": true, "last_success": NaN}',
        b'{"ok": true, "last_success": 4102444800}',
        b'{"ok": true, "size_bytes": -1}',
        b'{"ok": true, "size_bytes": 1.5}',
        b'{"ok": true, "message": 3}',
        b"[" * 100000 + b"]" * 100000,
        b'{"ok": true, "last_success": ' + b"9" * 5000 + b"}",
    ],
)
def test_command_status_malformed(doc: bytes) -> None:
    with pytest.raises(CollectorError) as ei:
        parsers.parse_command_status(doc, NOW)
    assert ei.value.reason == "bad_output"


def test_find_and_sha256sum_and_mktemp() -> None:
    out = b"1732514052.1234567890\t1024\tdump-1.sql.gz\x001732514060.5\t0\tsub/dump 2.sql.gz\x00"
    assert parsers.parse_find(out) == [
        parsers.FileEntry(1732514052.1234567890, 1024, "dump-1.sql.gz"),
        parsers.FileEntry(1732514060.5, 0, "sub/dump 2.sql.gz"),
    ]
    digest = "a" * 64
    assert parsers.parse_sha256sum(f"{digest}  ./x y\0{digest} *./z\0".encode()) == {"./x y": digest, "./z": digest}
    assert (
        parsers.parse_mktemp(b"/var/tmp/continuity-restore.AbC123\n", "/var/tmp")
        == "/var/tmp/continuity-restore.AbC123"
    )
    for bad in (b"/etc\n", b"/var/tmp/continuity-restore.\n", b"/var/tmp/continuity-restore.a/../../etc\n"):
        with pytest.raises(CollectorError):
            parsers.parse_mktemp(bad, "/var/tmp")


# -- fuzz -----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=25,
)
HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
TIMES = st.one_of(
    st.text(max_size=40),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-25T05:57:31.367605216Z", "2026-11-25T05:54:16.000000", "2026-02-30T00:00:00Z"]),
)
restic_like = st.lists(
    st.fixed_dictionaries(
        {"id": st.one_of(HEX, st.text(max_size=5), st.integers()), "time": st.one_of(TIMES, st.integers())},
        optional={"paths": json_values, "tags": json_values, "hostname": json_values},
    ),
    max_size=4,
)
borg_like = st.fixed_dictionaries(
    {
        "archives": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.one_of(st.text(max_size=20), st.integers()),
                    "id": st.one_of(HEX, st.none()),
                    "time": st.one_of(TIMES, st.none()),
                }
            ),
            max_size=4,
        )
        | json_values
    }
)
command_like = st.fixed_dictionaries(
    {},
    optional={
        "ok": json_values,
        "last_success": st.one_of(json_values, TIMES),
        "last_attempt": st.one_of(json_values, TIMES),
        "size_bytes": json_values,
        "snapshots": json_values,
        "message": json_values,
    },
)


def _dump(v: Any) -> bytes:
    return json.dumps(v, allow_nan=True).encode()


PARSERS = {
    "restic_snapshots": parsers.parse_restic_snapshots,
    "restic_stats": parsers.parse_restic_stats,
    "restic_ls": parsers.parse_restic_ls,
    "borg_list": parsers.parse_borg_list,
    "borg_info": parsers.parse_borg_info,
    "borg_items": parsers.parse_borg_items,
    "command": lambda b: parsers.parse_command_status(b, NOW),
    "find": parsers.parse_find,
    "sha256sum": parsers.parse_sha256sum,
}


def _only_bad_output(fn: Any, data: bytes) -> None:
    try:
        fn(data)
    except CollectorError as e:
        assert e.reason == "bad_output"
        assert "Traceback" not in e.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_bytes(data: bytes) -> None:
    for fn in PARSERS.values():
        _only_bad_output(fn, data)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_any_json(v: Any) -> None:
    for fn in PARSERS.values():
        _only_bad_output(fn, _dump(v))


@settings(max_examples=300, deadline=None)
@given(restic_like)
def test_fuzz_restic_shaped(v: Any) -> None:
    _only_bad_output(parsers.parse_restic_snapshots, _dump(v))
    _only_bad_output(parsers.parse_restic_ls, b"\n".join(_dump(x) for x in v))


@settings(max_examples=300, deadline=None)
@given(borg_like)
def test_fuzz_borg_shaped(v: Any) -> None:
    _only_bad_output(parsers.parse_borg_list, _dump(v))
    _only_bad_output(parsers.parse_borg_info, _dump(v))


@settings(max_examples=400, deadline=None)
@given(command_like)
def test_fuzz_command_shaped(v: Any) -> None:
    try:
        got = parsers.parse_command_status(_dump(v), NOW)
    except CollectorError as e:
        assert e.reason == "bad_output"
        return
    # what parses is sane
    assert isinstance(got.ok, bool)
    for t in (got.last_success, got.last_attempt):
        assert t is None or 0 <= t <= NOW + 86400
    assert got.size_bytes is None or got.size_bytes >= 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(sorted(PARSERS)))
def test_fuzz_mutated_recordings(noise: bytes, name: str) -> None:
    src = {
        "restic_snapshots": "restic-snapshots.json",
        "restic_stats": "restic-stats.json",
        "restic_ls": "restic-ls.jsonl",
        "borg_list": "borg-list.json",
        "borg_info": "borg-info.json",
        "borg_items": "borg-items.jsonl",
    }.get(name, "restic-snapshots.json")
    data = (FIX / src).read_bytes()
    cut = len(noise) % max(1, len(data))
    _only_bad_output(PARSERS[name], data[:cut] + noise + data[cut:])
