"""DR exercises recorded as they happen: a hash-chained journal per exercise, its status against
the runbooks' dependency graph and the estate objective, and the sealed evidence records it
becomes (``continuity-agent exercise ...``, the ``/exercise/`` board)."""
