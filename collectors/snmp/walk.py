"""Walk several table columns and read scalars in as few requests as possible.

With GETBULK (v2c, v3) the scalars ride along as non-repeaters of the first request and the
columns are walked side by side; a row-count hint (ifNumber) trims max-repetitions once known so
the last request does not fetch rows past the table. Without GETBULK (v1) it is GET + GETNEXT.

Every column must move forward: an agent returning an OID not greater than the previous one for
that column is cut off (``oid_not_increasing``), and a column with more than ``max_rows`` rows is
cut off (``limit_exceeded``). The number of requests is bounded too, so a misbehaving agent can
neither hang a walk nor grow memory without limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collectors.snmp import ber
from collectors.snmp.ber import OID
from collectors.snmp.session import (
    LIMIT_EXCEEDED,
    MALFORMED_REPLY,
    OID_NOT_INCREASING,
    Session,
    SnmpFailure,
)

Value = tuple[int, Any]


@dataclass
class WalkResult:
    scalars: dict[OID, Value] = field(default_factory=dict)
    tables: dict[OID, dict[OID, Value]] = field(default_factory=dict)  # column -> index suffix -> value
    problems: list[tuple[str, str]] = field(default_factory=list)
    failure: SnmpFailure | None = None  # the request that ended the walk early, if any
    requests: int = 0
    varbinds: int = 0


def _chunks(items: list[OID], n: int) -> list[list[OID]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


async def walk(
    session: Session,
    scalars: list[OID],
    columns: list[OID],
    *,
    max_repetitions: int,
    max_oids: int,
    max_rows: int,
    rows_hint: OID | None = None,
    result: WalkResult | None = None,
) -> WalkResult:
    """Fill ``result`` (or a new WalkResult) — passing one in keeps partial data if the caller's
    deadline cancels the walk."""
    res = result if result is not None else WalkResult()
    for c in columns:
        res.tables.setdefault(c, {})
    try:
        await _walk(session, res, scalars, columns, max_repetitions, max_oids, max_rows, rows_hint)
    except SnmpFailure as e:
        res.failure = e
    return res


async def _walk(
    session: Session,
    res: WalkResult,
    scalars: list[OID],
    columns: list[OID],
    max_repetitions: int,
    max_oids: int,
    max_rows: int,
    rows_hint: OID | None,
) -> None:
    active: dict[OID, OID] = {c: c for c in columns}  # column -> last OID seen
    # Instances ending in .0 can be read as GETBULK non-repeaters (GETNEXT of the parent);
    # anything else, and everything on v1, is read with GET.
    if session.bulk:
        nonrep = [s for s in scalars if s[-1] == 0 and len(s) > 2]
        gets = [s for s in scalars if not (s[-1] == 0 and len(s) > 2)]
    else:
        nonrep, gets = [], list(scalars)

    hint: int | None = None
    chunks_per_round = max(1, -(-len(columns) // max_oids))
    budget = (max_rows + 2) * chunks_per_round + len(scalars) + 8  # hard bound on requests

    def hint_from(oid: OID, tag: int, value: Any) -> None:
        nonlocal hint
        if rows_hint is not None and oid == rows_hint and tag == ber.INTEGER and isinstance(value, int):
            hint = max(0, value)

    for chunk in _chunks(gets, max_oids):
        vbs = await session.get(chunk)
        res.requests += 1
        res.varbinds += len(vbs)
        for want, (oid, tag, value) in zip(chunk, vbs, strict=False):
            if oid != want:
                raise SnmpFailure(MALFORMED_REPLY, f"GET for {ber.format_oid(want)} answered {ber.format_oid(oid)}")
            res.scalars[want] = (tag, value)
            hint_from(oid, tag, value)

    while active or nonrep:
        if res.requests >= budget:
            res.problems.append(
                (LIMIT_EXCEEDED, f"walk stopped after {res.requests} requests ({len(active)} column(s) unfinished)")
            )
            return
        nr = nonrep[: max_oids - 1] if active and max_oids > 1 else nonrep[:max_oids]
        nonrep = nonrep[len(nr) :]
        room = max_oids - len(nr)
        # Served columns move to the end of ``active``, so this takes turns through them.
        cols = list(active)[:room] if room > 0 else []
        if not session.bulk:
            await _next_round(session, res, active, cols, max_rows)
            continue
        reps = max_repetitions
        if hint is not None and cols:
            done_rows = min(len(res.tables[c]) for c in cols)
            reps = max(1, min(max_repetitions, hint - done_rows + 1))
        if not cols:
            reps = 0
        req = [s[:-1] for s in nr] + [active[c] for c in cols]
        vbs = await session.getbulk(len(nr), reps, req)
        res.requests += 1
        res.varbinds += len(vbs)
        for i, s in enumerate(nr):
            if i >= len(vbs):
                res.scalars[s] = (ber.NO_SUCH_OBJECT, None)
                continue
            oid, tag, value = vbs[i]
            if oid == s and tag not in ber.EXCEPTIONS:
                res.scalars[s] = (tag, value)
                hint_from(oid, tag, value)
            else:
                res.scalars[s] = (ber.NO_SUCH_OBJECT if tag != ber.END_OF_MIB_VIEW else tag, None)
        rest = vbs[len(nr) :]
        k = len(cols)
        if not k:
            continue
        if not rest:
            for c in cols:
                del active[c]
                res.problems.append((MALFORMED_REPLY, f"empty GETBULK reply while walking {ber.format_oid(c)}"))
            continue
        rows = -(-len(rest) // k)
        for i, col in enumerate(cols):
            _take_column(res, active, col, [rest[r * k + i] for r in range(rows) if r * k + i < len(rest)], max_rows)


async def _next_round(
    session: Session, res: WalkResult, active: dict[OID, OID], cols: list[OID], max_rows: int
) -> None:
    if not cols:
        return
    vbs = await session.getnext([active[c] for c in cols])
    res.requests += 1
    res.varbinds += len(vbs)
    for col, vb in zip(cols, vbs, strict=False):
        _take_column(res, active, col, [vb], max_rows)


def _take_column(res: WalkResult, active: dict[OID, OID], col: OID, vbs: list[Any], max_rows: int) -> None:
    n = len(col)
    table = res.tables[col]
    last = active[col]
    for oid, tag, value in vbs:
        if tag == ber.END_OF_MIB_VIEW or oid[:n] != col:
            del active[col]
            return
        if oid <= last:
            del active[col]
            res.problems.append(
                (
                    OID_NOT_INCREASING,
                    f"agent returned {ber.format_oid(oid)} after "
                    f"{ber.format_oid(last)}: OIDs not increasing, "
                    f"walk of {ber.format_oid(col)} stopped",
                )
            )
            return
        if len(table) >= max_rows:
            del active[col]
            res.problems.append(
                (LIMIT_EXCEEDED, f"{ber.format_oid(col)} has more than {max_rows} rows (max_interfaces); walk cut off")
            )
            return
        if tag not in ber.EXCEPTIONS:
            table[oid[n:]] = (tag, value)
        last = oid
    del active[col]
    active[col] = last
