"""Hostile iperf3 output: whatever ``iperf3 -J`` prints (or a hostile server makes it print), the
parser returns a result or raises IperfBusy / CollectorError with a one-line message, never
anything else, and never a non-finite or negative throughput."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.base import CollectorError
from collectors.link import IperfBusy, IperfResult, parse_iperf3

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "link"

_num = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
)
_json = st.recursive(
    _num, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=10
)
_sum = st.one_of(
    _json,
    st.fixed_dictionaries({}, optional={"bits_per_second": _num, "bytes": _num, "seconds": _num, "retransmits": _num}),
)
_shaped = st.fixed_dictionaries(
    {},
    optional={
        "end": st.one_of(_json, st.fixed_dictionaries({}, optional={"sum_received": _sum, "sum_sent": _sum})),
        "error": st.one_of(st.text(max_size=40), _json, st.sampled_from(["the server is busy running a test",
                                                                           "unable to connect to server"])),
    },
)


def _check(text: str) -> None:
    try:
        r = parse_iperf3(text, "link-x")
    except IperfBusy:
        return
    except CollectorError as e:
        assert e.message.startswith("link-x: ") and "\n" not in e.message
        return
    assert isinstance(r, IperfResult)
    assert math.isfinite(r.bits_per_second) and r.bits_per_second >= 0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v=_shaped)
def test_iperf3_shaped_json(v: Any) -> None:
    _check(json.dumps(v, allow_nan=True))


@settings(max_examples=300, deadline=None)
@given(v=_json)
def test_any_json(v: Any) -> None:
    _check(json.dumps(v, allow_nan=True))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_any_text(text: str) -> None:
    _check(text)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(min_value=0, max_value=5000), noise=st.binary(max_size=20))
def test_truncated_and_mutated_recording(cut: int, noise: bytes) -> None:
    rec = (FIXTURES / "iperf3_download_ok.json").read_text()
    _check(rec[:cut] + noise.decode("latin-1") + rec[cut + len(noise):])
