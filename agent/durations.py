"""Durations as operators write them: ``30s``, ``5m``, ``72h``, ``1h30m``, ``3d``, ``P3D``, ``PT4H``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIMPLE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_ISO = re.compile(
    r"P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


class DurationError(ValueError):
    pass


def parse_duration(value: object) -> float:
    """Return seconds. Accepts ``30s``/``5m``/``72h``/``3d``/``1w``, combinations (``1h30m``),
    ISO 8601 durations (``P3D``, ``PT4H30M``) and plain non-negative numbers of seconds."""
    if isinstance(value, bool):
        raise DurationError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise DurationError(f"duration must not be negative, got {value}")
        return float(value)
    if not isinstance(value, str):
        raise DurationError(f"invalid duration {value!r}: expected a string like 30s, 5m, 72h or P3D")
    text = value.strip()
    if text.upper().startswith("P"):
        m = _ISO.fullmatch(text.upper())
        if not m or text.upper() in ("P", "PT") or text.upper().endswith("T"):
            raise DurationError(f"invalid ISO 8601 duration {value!r}")
        parts = {k: float(v) for k, v in m.groupdict().items() if v}
        return (
            parts.get("w", 0) * 604800
            + parts.get("d", 0) * 86400
            + parts.get("h", 0) * 3600
            + parts.get("m", 0) * 60
            + parts.get("s", 0)
        )
    pos = 0
    total = 0.0
    if not text:
        raise DurationError("empty duration")
    for m in _SIMPLE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise DurationError(f"invalid duration {value!r}: expected a string like 30s, 5m, 72h, 1h30m or P3D")
    return total


def format_duration(seconds: float) -> str:
    """Compact human form: ``72h``, ``1h30m``, ``45s``, ``2d4h``."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:.0f}ms"
    s = round(seconds)
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out.append(f"{s // size}{unit}")
            s %= size
    return "".join(out) or "0s"


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d*(?:\.\d*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(value: object) -> float:
    """Seconds from a duration as Go's ``time.ParseDuration`` reads it (``1s``, ``1m30s``,
    ``500ms``, ``-2h``, ``0``), for files shared with Go programs. As Go's YAML decoder does for a
    ``time.Duration``, a YAML integer is a number of nanoseconds."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise DurationError(f"invalid duration {value!r}")
    if isinstance(value, int):
        return value * 1e-9
    text = value
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _GO_PART.finditer(body):
        if m.start() != pos or m.group(1) in ("", "."):
            break
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise DurationError(f"invalid duration {value!r}: expected a Go duration like 1s, 500ms or 1m30s")
    return sign * total
