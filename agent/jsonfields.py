"""A dataclass as a JSON object, field by field in declaration order, so a new field cannot be
forgotten in one hand-written ``to_json`` while the others list it."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def fields_json(
    obj: DataclassInstance, *, rename: Mapping[str, str] | None = None, omit: Collection[str] = ()
) -> dict[str, Any]:
    """``obj``'s fields but those in ``omit``, each under its name or ``rename[name]``; tuples
    become lists and dicts are copied (one level), other values are kept as they are."""
    names = rename or {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in omit:
            continue
        v = getattr(obj, f.name)
        if isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, dict):
            v = dict(v)
        out[names.get(f.name, f.name)] = v
    return out
