"""Stored results keep their samples compactly and read back the same."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from agent.plugin import Sample
from agent.samples import SampleTable, compact
from agent.state import Result, StateStore


def _samples() -> list[Sample]:
    out = []
    for i in range(50):
        lb = {"interface": f"Gi0/{i}", "alias": 'a "quoted"\nalias'}
        out += [
            Sample("continuity_interface_up", 1.0, lb),
            Sample("continuity_interface_receive_bytes_total", i * 1e9, lb),
        ]
        out.append(Sample("continuity_interface_errors_total", 2.0, {**lb, "direction": "in"}))
    out.append(Sample("continuity_device_up", 1, {}))
    return out


def _result(samples: list[Sample]) -> Result:
    return Result(target="r1", task="", kind="snmp", site="hq", started=1.0, duration=0.5, ok=True, samples=samples)


def test_put_stores_a_table_that_reads_back_the_same() -> None:
    samples = _samples()
    store = StateStore(None)
    store.put(_result(list(samples)))
    got = store.latest("r1")
    assert got is not None
    assert isinstance(got.samples, SampleTable)
    assert got.samples == samples and list(got.samples) == samples
    assert len(got.samples) == len(samples)
    assert got.samples[-1] == Sample("continuity_device_up", 1.0, {})
    assert got.samples[1:3] == samples[1:3]
    assert got.samples[-2].labels == {"interface": "Gi0/49", "alias": 'a "quoted"\nalias', "direction": "in"}
    assert compact(got.samples) is got.samples


def test_label_sets_are_stored_once_per_result() -> None:
    table = SampleTable(_samples())
    # 50 interfaces: one label set for up/receive, one for errors, plus the empty one.
    assert len({id(lb) for lb in table._labels}) == 101
    assert len({id(n) for n in table._names}) == 4


def test_table_is_smaller_than_the_samples() -> None:
    def deep(objs: list[object]) -> int:
        seen: set[int] = set()
        total = 0
        stack = list(objs)
        while stack:
            o = stack.pop()
            if id(o) in seen or isinstance(o, type):
                continue
            seen.add(id(o))
            total += sys.getsizeof(o)
            if isinstance(o, dict):
                stack += [*o.keys(), *o.values()]
            elif isinstance(o, list | tuple):
                stack += list(o)
            elif isinstance(o, Sample):
                stack += [o.name, o.value, o.labels]
            elif isinstance(o, SampleTable):
                stack += [o._names, o._values, o._labels]
        return total

    samples = [Sample(s.name, s.value, dict(s.labels)) for s in _samples()]  # one dict each, as collectors make
    gc.collect()
    assert deep([SampleTable(samples)]) * 2 < deep([samples])


def test_unfit_samples_stay_as_they_are(tmp_path: Path) -> None:
    odd = [Sample("continuity_device_up", "not a number", {})]  # type: ignore[arg-type]
    assert compact(odd) is odd
    store = StateStore(tmp_path)
    store.put(_result(_samples()))
    store.flush()
    store.close()
    again = StateStore(tmp_path)  # restart: loaded results are compact too
    got = again.latest("r1")
    assert got is not None and isinstance(got.samples, SampleTable) and got.samples == _samples()
    again.close()
