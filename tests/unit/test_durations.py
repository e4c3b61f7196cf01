from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("72h", 259200),
        ("3d", 259200),
        ("1w", 604800),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("P3D", 259200),
        ("PT4H", 14400),
        ("PT4H30M", 16200),
        ("P1DT1S", 86401),
        (45, 45),
        (1.5, 1.5),
    ],
)
def test_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5", "5 minutes", "m5", "1h 30m", "P", "PT", "-5s", "P1Y", True, None, -1, "5x"])
def test_reject(bad: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**8))
def test_roundtrip(n: int) -> None:
    assert parse_duration(format_duration(n)) == n


@given(st.text(max_size=20))
def test_never_raises_other_errors(s: str) -> None:
    try:
        v = parse_duration(s)
    except DurationError:
        return
    assert v >= 0
