"""Dependency graphs, one module for every walk: runbook step order (``after``), the estate's
``depends_on``, critical paths and the report's layered layout.

A graph is ``node -> [nodes it needs first]``; edges to nodes not in the graph are ignored.
Ordering and longest paths use the standard library's :mod:`graphlib`.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping, Sequence

Graph = Mapping[str, Sequence[str]]


def _known(graph: Graph) -> dict[str, list[str]]:
    return {n: [d for d in deps if d in graph] for n, deps in graph.items()}


def topological_order(graph: Graph) -> list[str] | None:
    """Every node after the nodes it needs, or None when the graph has a cycle."""
    try:
        return list(graphlib.TopologicalSorter(_known(graph)).static_order())
    except graphlib.CycleError:
        return None


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle as a list ending where it started (``a -> b -> a`` when a needs b and b needs a),
    or None. Deterministic: roots are tried in sorted order, edges in the order given, so the same
    input always names the same cycle."""
    if topological_order(graph) is not None:
        return None
    edges = _known(graph)
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for root in sorted(edges):
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            node, i = stack[-1]
            if i < len(edges[node]):
                stack[-1] = (node, i + 1)
                nxt = edges[node][i]
                if colour[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if colour[nxt] == white:
                    colour[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return None  # pragma: no cover - graphlib found a cycle, so the walk does too


def longest_path(graph: Graph, weights: Mapping[str, float]) -> tuple[float, list[str]] | None:
    """Longest weighted chain, as (total weight, nodes from the first needed to the last), or None
    when the graph has a cycle. Ties go to the dependency listed first, then to the larger node
    id at the end."""
    order = topological_order(graph)
    if order is None:
        return None
    edges = _known(graph)
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for node in order:
        best, best_dep = 0.0, None
        for d in edges[node]:
            if best_dep is None or finish[d] > best:
                best, best_dep = finish[d], d
        finish[node] = best + weights.get(node, 0.0)
        via[node] = best_dep
    if not finish:
        return 0.0, []
    end = max(finish, key=lambda k: (finish[k], k))
    path: list[str] = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = via[cur]
    return finish[end], path[::-1]


def depths(nodes: Iterable[str], graph: Graph) -> dict[str, int]:
    """Each node's layer: 0 for a node that needs nothing, else one below its deepest need.
    Tolerates cycles (a back edge is ignored), for drawing what the verifier reports as broken."""
    ids = sorted(set(nodes))
    known = set(ids)
    deps = {n: [d for d in graph.get(n, ()) if d in known and d != n] for n in ids}
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def depth(n: str) -> int:
        if n in layer:
            return layer[n]
        if n in visiting:  # cycle: do not recurse further
            return -1
        visiting.add(n)
        d = max((depth(m) for m in deps[n]), default=-1) + 1
        visiting.discard(n)
        layer[n] = d
        return d

    for n in ids:
        depth(n)
    return layer
