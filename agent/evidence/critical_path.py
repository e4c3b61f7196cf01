"""Critical paths: through one runbook's step graph, and over the estate's dependency graph.

* **planned** — each runbook weighs its planned duration: the longest path through its own step
  graph (``after`` edges, ``expected_duration`` weights); the estate path is the longest chain of
  ``depends_on`` with those weights summed.
* **projected** — the same chain, each runbook weighing what its latest valid evidence took (first
  step start to service restored), its planned duration where it has none.
* **measured** — one exercise: latest restore minus earliest declaration.
"""

from __future__ import annotations

from agent.evidence.models import Runbook
from agent.graph import longest_path

__all__ = ["longest_path", "planned_duration"]


def planned_duration(rb: Runbook) -> tuple[float, list[str]]:
    """Longest path through the step graph: (seconds, step ids in order)."""
    found = longest_path(
        {s.id: list(s.after) for s in rb.recovery_steps}, {s.id: s.expected_duration for s in rb.recovery_steps}
    )
    if found is None:  # cycles are refused by the model; belt and braces
        raise ValueError(f"runbook {rb.id}: step graph has a cycle")
    return found
