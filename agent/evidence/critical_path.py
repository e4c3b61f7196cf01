"""Critical paths: through one runbook's step graph, and over the estate's dependency graph.

* **planned** — each runbook weighs its planned duration: the longest path through its own step
  graph (``after`` edges, ``expected_duration`` weights); the estate path is the longest chain of
  ``depends_on`` with those weights summed.
* **projected** — the same chain, each runbook weighing what its latest valid evidence took (first
  step start to service restored), its planned duration where it has none.
* **measured** — one exercise: latest restore minus earliest declaration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.evidence.models import Runbook


def planned_duration(rb: Runbook) -> tuple[float, list[str]]:
    """Longest path through the step graph: (seconds, step ids in order)."""
    steps = {s.id: s for s in rb.recovery_steps}
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}

    def visit(sid: str, depth: int = 0) -> float:
        if sid in finish:
            return finish[sid]
        if depth > len(steps):  # cycles are refused by the model; belt and braces
            raise ValueError(f"runbook {rb.id}: step graph has a cycle")
        s = steps[sid]
        best, best_dep = 0.0, None
        for a in s.after:
            if a in steps:
                f = visit(a, depth + 1)
                if f > best or best_dep is None:
                    best, best_dep = f, a
        finish[sid] = best + s.expected_duration
        via[sid] = best_dep
        return finish[sid]

    for sid in steps:
        visit(sid)
    end = max(steps, key=lambda k: (finish[k], k))
    path: list[str] = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = via[cur]
    return finish[end], path[::-1]


def longest_path(graph: Mapping[str, Sequence[str]], weights: Mapping[str, float]) -> tuple[float, list[str]] | None:
    """Longest weighted chain in a DAG ``node -> [nodes it needs first]``, as (total seconds,
    nodes from the first recovered to the last). None when the graph has a cycle. Edges to nodes
    not in ``graph`` are ignored."""
    finish: dict[str, float] = {}
    via: dict[str, str | None] = {}
    state: dict[str, int] = {}

    for root in sorted(graph):
        if root in finish:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, i = stack[-1]
            deps = [d for d in graph[node] if d in graph]
            if i < len(deps):
                stack[-1] = (node, i + 1)
                d = deps[i]
                if state.get(d) == 1:
                    return None
                if d not in finish:
                    state[d] = 1
                    stack.append((d, 0))
                continue
            best, best_dep = 0.0, None
            for d in deps:
                if best_dep is None or finish[d] > best:
                    best, best_dep = finish[d], d
            finish[node] = best + weights.get(node, 0.0)
            via[node] = best_dep
            state[node] = 2
            stack.pop()
    if not finish:
        return 0.0, []
    end = max(finish, key=lambda k: (finish[k], k))
    path: list[str] = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = via[cur]
    return finish[end], path[::-1]
