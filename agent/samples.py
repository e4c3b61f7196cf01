"""A stored result's samples in compact form.

A collector hands over a list of :class:`Sample` objects, each with its own labels dict: about a
kilobyte per series once the dicts, floats and strings are counted. The state keeps the latest
result of every target for as long as it is current, so :meth:`agent.state.StateStore.put` swaps
that list for a :class:`SampleTable`: one tuple of metric-name references, one array of doubles
and one tuple of label-set references, where each distinct label set is stored once per result
(an interface's eight columns share one). Readers (outcomes, reports, standards, the renderer)
still see a sequence of :class:`Sample`; each is built when read and dropped after.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from agent.plugin import Sample


class SampleTable(Sequence[Sample]):
    __slots__ = ("_labels", "_names", "_values")

    def __init__(self, samples: Iterable[Sample]) -> None:
        names: list[str] = []
        values = array("d")
        labels: list[tuple[str, ...]] = []
        seen_names: dict[str, str] = {}
        seen_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        for s in samples:
            values.append(s.value)
            names.append(seen_names.setdefault(s.name, s.name))
            flat = tuple(x for kv in s.labels.items() for x in kv)  # k1, v1, k2, v2, ...
            labels.append(seen_sets.setdefault(flat, flat))
        self._names = tuple(names)
        self._values = values
        self._labels = tuple(labels)

    def __len__(self) -> int:
        return len(self._names)

    def _sample(self, i: int) -> Sample:
        flat = self._labels[i]
        return Sample(self._names[i], self._values[i], dict(zip(flat[::2], flat[1::2], strict=True)))

    @overload
    def __getitem__(self, i: int) -> Sample: ...
    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...
    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        if isinstance(i, slice):
            return [self._sample(j) for j in range(*i.indices(len(self)))]
        return self._sample(range(len(self))[i])

    def rows(self) -> Iterator[tuple[str, float, tuple[str, ...]]]:
        """(name, value, labels as k1, v1, k2, v2, ...) without building a Sample per row; equal
        label sets are the same tuple object."""
        return zip(self._names, self._values, self._labels, strict=True)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self._names)):
            yield self._sample(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SampleTable | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SampleTable({list(self)!r})"


def rows(samples: Sequence[Sample]) -> Iterator[tuple[str, float, tuple[str, ...]]]:
    """:meth:`SampleTable.rows` of any sequence of samples."""
    if isinstance(samples, SampleTable):
        return samples.rows()
    return ((s.name, s.value, tuple(x for kv in s.labels.items() for x in kv)) for s in samples)


def compact(samples: Sequence[Sample]) -> Sequence[Sample]:
    """``samples`` as a :class:`SampleTable`; unchanged if already one or if a sample does not fit
    (a value that is not a number, an unhashable label value: a collector bug the renderer reports)."""
    if isinstance(samples, SampleTable):
        return samples
    try:
        return SampleTable(samples)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return samples
