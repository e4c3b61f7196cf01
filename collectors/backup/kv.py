"""Small persistent records the backup collector keeps between runs and across restarts: push
events, integrity and restore-test outcomes, size history. Kept in memory (shared with the push
endpoint's HTTP threads through ``ctx.shared``/``agent.shared``) and written through to the state
store's key-value table."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

_CREATE_LOCK = threading.Lock()
SHARED_KEY = "backup.kv"


class BackupKV:
    def __init__(self, store: Any) -> None:
        self.store = store  # agent.state.StateStore or None
        self._mem: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, shared: MutableMapping[str, Any], store: Any) -> BackupKV:
        with _CREATE_LOCK:
            kv = shared.get(SHARED_KEY)
            if not isinstance(kv, BackupKV) or (store is not None and kv.store is not store):
                kv = shared[SHARED_KEY] = BackupKV(store)
            return kv

    def _load(self, key: str) -> Any:
        if key not in self._mem:
            value = self.store.get_kv(key) if self.store is not None else None
            self._mem[key] = value if isinstance(value, dict) else None
        return self._mem[key]

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._load(key)
            return copy.deepcopy(value) if value is not None else None

    def update(self, key: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Read-modify-write one record atomically; returns the new record."""
        with self._lock:
            current = copy.deepcopy(self._load(key)) or {}
            new = fn(current)
            self._mem[key] = new
            if self.store is not None:
                self.store.set_kv(key, new)
            return copy.deepcopy(new)


def key(target: str, what: str) -> str:
    return f"backup/{target}/{what}"
