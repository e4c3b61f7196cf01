"""YAML mappings without repeated keys. PyYAML keeps the last of two equal keys and drops the
first without a word; Go's strict YAML decoding (exporter-toolkit's web config) refuses them, and
so do the agent's loaders that use this."""

from __future__ import annotations

from typing import Any

import yaml


def construct_mapping_unique(self: Any, node: Any, deep: bool = False) -> Any:
    """``construct_mapping`` for a ``SafeLoader`` subclass: a repeated key is a ConstructorError."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = self.construct_object(key_node, deep=True)
        try:
            dup = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "mapping keys must be plain values", key_node.start_mark
            ) from None
        if dup:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.constructor.SafeConstructor.construct_mapping(self, node, deep=deep)


class UniqueKeySafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses repeated mapping keys."""


UniqueKeySafeLoader.construct_mapping = construct_mapping_unique  # type: ignore[method-assign]
