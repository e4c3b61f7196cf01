"""``get_kv`` reads through the state writer's pending writes: while a real SQLite database is
locked by another process, a value set meanwhile -- waiting in the outbox, or in the batch the
writer is trying to commit -- is what ``get_kv`` returns (the newest one), never the older value in
the database nor nothing; once the lock is gone the database holds the same."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import agent.state as state
from agent.state import StateStore
from tests.helpers.common import wait_until
from tests.unit.test_state_outage_memory import locked


def test_a_value_waiting_for_a_locked_database_is_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "BUSY_TIMEOUT", 0.2)
    monkeypatch.setattr(state, "RETRY_SECONDS", 0.05)
    store = StateStore(tmp_path)
    try:
        store.set_kv("a", {"n": 0})
        store.flush()
        with locked(tmp_path / "state.db"):
            store.set_kv("b", "first")
            wait_until(lambda: not store.db_healthy, 10, what="the writer to give up on the lock")
            store.set_kv("a", {"n": 1})
            store.set_kv("b", "second")
            for _ in range(20):  # across the writer's retries, whatever it is doing now
                assert store.get_kv("a") == {"n": 1}
                assert store.get_kv("b") == "second"
                assert store.get_kv("missing") is None
                time.sleep(0.02)
        wait_until(lambda: store.db_healthy, 10, what="the store to write again")
        store.flush()
        assert (store.get_kv("a"), store.get_kv("b")) == ({"n": 1}, "second")
    finally:
        store.close()
    reopened = StateStore(tmp_path)  # and they are in the database
    try:
        assert (reopened.get_kv("a"), reopened.get_kv("b")) == ({"n": 1}, "second")
    finally:
        reopened.close()


def test_a_value_the_writer_is_committing_is_read_back_and_a_newer_one_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer waits up to BUSY_TIMEOUT for the lock with the batch in hand: the value is in
    neither the outbox nor the database meanwhile."""
    monkeypatch.setattr(state, "BUSY_TIMEOUT", 30.0)
    store = StateStore(tmp_path)
    try:
        store.set_kv("a", 0)
        store.flush()
        with locked(tmp_path / "state.db"):
            store.set_kv("a", 1)

            def taken() -> bool:
                with store._wake:
                    return store._outbox.empty() and not store._writer_idle

            wait_until(taken, 10, what="the writer to take the batch")
            assert store.db_healthy  # still waiting for the lock, not failed
            assert store.get_kv("a") == 1
            store.set_kv("a", 2)  # queued behind the batch in hand: the newest wins
            assert store.get_kv("a") == 2
        store.flush()
        assert store.db_healthy and store.get_kv("a") == 2
    finally:
        store.close()
