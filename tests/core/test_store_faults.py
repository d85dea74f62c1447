"""A failed transaction leaves the store exactly as it was, whatever step failed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exporter.core.errors import StateError, classify
from exporter.core.store import Store


def store_with_a_deferred_check(path: Path) -> Store:
    """A store with a foreign key checked only at COMMIT, so the COMMIT itself can fail."""
    store = Store(path)
    with store.transaction() as tx:
        tx.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        tx.execute(
            "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER "
            "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    # On the connection that writes (reads have their own); a pragma outside a transaction.
    store._conn.execute("PRAGMA foreign_keys=ON")
    return store


class TestFailedTransactions:
    def test_a_failed_commit_is_rolled_back(self, tmp_path: Path) -> None:
        """When COMMIT fails, nothing of the transaction stays visible to the next read,
        and the next transaction starts normally."""
        store = store_with_a_deferred_check(tmp_path / "state.db")
        # A constraint violation is a bug, not the environment: raised as it is.
        with pytest.raises(sqlite3.IntegrityError), store.transaction() as tx:
            tx.incr("events_total", {"service": "a"}, 5)
            tx.execute("INSERT INTO child (id, parent) VALUES (1, 42)")
        assert store.counters("events_total") == []
        with store.transaction() as tx:
            tx.incr("events_total", {"service": "a"}, 1)
        assert store.counters("events_total") == [({"service": "a"}, 1.0)]
        store.close()

    def test_a_failing_statement_rolls_back_the_whole_transaction(self, tmp_path: Path) -> None:
        store = Store(tmp_path / "state.db")
        with pytest.raises(sqlite3.OperationalError), store.transaction() as tx:
            tx.incr("events_total", {"service": "a"}, 5)
            tx.execute("INSERT INTO no_such_table VALUES (1)")
        assert store.counters("events_total") == []
        store.close()

    def test_a_lock_held_elsewhere_fails_after_the_busy_timeout(self, tmp_path: Path) -> None:
        """Another connection's write transaction makes ours fail with reason ``state``."""
        store = Store(tmp_path / "state.db", busy_timeout=0.05)
        other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StateError, match="locked") as caught, store.transaction() as tx:
            tx.incr("events_total", {"service": "a"})
        assert classify(caught.value) == "state"
        other.execute("ROLLBACK")
        other.close()
        with store.transaction() as tx:
            tx.incr("events_total", {"service": "a"})
        assert store.counters("events_total") == [({"service": "a"}, 1.0)]
        store.close()

    def test_other_exceptions_roll_back_and_pass_through_unchanged(self, tmp_path: Path) -> None:
        store = Store(tmp_path / "state.db")
        with pytest.raises(KeyError), store.transaction() as tx:
            tx.incr("events_total", {"service": "a"})
            raise KeyError("bug")
        assert store.counters("events_total") == []
        store.close()

    def test_only_environment_failures_of_sqlite_are_classified_as_state(self) -> None:
        """Disk full, locked, I/O errors are ``state``; bad SQL stays ``internal``."""
        full = sqlite3.OperationalError("database or disk is full")
        full.sqlite_errorcode = 13  # SQLITE_FULL
        ioerr = sqlite3.OperationalError("disk I/O error")
        ioerr.sqlite_errorcode = 10 | (4 << 8)  # SQLITE_IOERR_SHORT_READ
        syntax = sqlite3.OperationalError('near "(": syntax error')
        syntax.sqlite_errorcode = 1  # SQLITE_ERROR
        assert [classify(e) for e in (full, ioerr, syntax)] == ["state", "state", "internal"]
