"""The state store, on SQLite and on PostgreSQL alike: migrations, idempotent writes,
persisted counters and histograms (each test runs on both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.core.backend import PostgresTarget
from exporter.core.errors import StartupError
from exporter.core.store import Store, write_records
from exporter.domains import open_store
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.records import ProbeResult

ITEMS = ("CREATE TABLE items (id TEXT PRIMARY KEY, state TEXT NOT NULL, n INTEGER);",)
State = Path | PostgresTarget


@pytest.fixture
def store(state_location: State) -> Store:
    s = Store(state_location)
    s.migrate("items", ITEMS)
    return s


def tables(store: Store) -> set[str]:
    """The names of the tables the store's database holds."""
    if store.postgres:
        sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {str(r[0]) for r in store.query(sql)}


class TestMigrations:
    def test_fresh_database_is_in_wal_mode_at_current_versions(self, tmp_path: Path) -> None:
        store = open_store(str(tmp_path / "s.db"))
        assert store.query_one("PRAGMA journal_mode")[0] == "wal"  # type: ignore[index]
        assert store.schema_version("core") == 1
        assert store.schema_version("probe") == len(probe_store.MIGRATIONS)

    def test_every_migration_runs_from_an_empty_database(self, state_location: State) -> None:
        """Every component's migrations, in order, from nothing, on either backend; a second
        open (another replica starting) finds them applied."""
        store = open_store(state_location)
        from exporter.domains import schema

        for component, migrations in schema().components:
            assert store.schema_version(component) == len(migrations), component
        assert {"cursors", "counters", "histograms", "probe_results"} <= tables(store)
        store.close()
        again = open_store(state_location)
        assert again.schema_version("core") == 1

    def test_only_new_migrations_run(self, state_location: State) -> None:
        path = state_location
        store = Store(path)
        assert store.migrate("items", ITEMS) == 1
        with store.transaction() as tx:
            tx.insert_new("items", {"id": "a", "state": "open", "n": 1})
        store.close()

        store = Store(path)
        v2 = (
            *ITEMS,
            "ALTER TABLE items ADD COLUMN owner TEXT; CREATE INDEX items_owner ON items (owner);",
        )
        assert store.migrate("items", v2) == 2
        assert store.schema_version("items") == 2
        # The old row survived and the new column exists.
        row = store.query_one("SELECT id, owner FROM items")
        assert row is not None and tuple(row) == ("a", None)
        # Running again is a no-op.
        assert store.migrate("items", v2) == 2

    def test_refuses_a_database_from_a_newer_release(self, state_location: State) -> None:
        path = state_location
        Store(path).migrate("items", (*ITEMS, "CREATE TABLE more (x TEXT);"))
        with pytest.raises(StartupError, match="refusing to downgrade") as refused:
            Store(path).migrate("items", ITEMS)
        assert refused.value.exit_code == 1  # the environment, not the config, is at fault

    def test_a_failing_migration_leaves_the_version_unchanged(self, state_location: State) -> None:
        store = Store(state_location)
        store.migrate("items", ITEMS)
        with pytest.raises(Exception, match=r"incomplete input|syntax error"):
            store.migrate("items", (*ITEMS, "CREATE TABLE ok (x TEXT); CREATE TABLE broken ("))
        assert store.schema_version("items") == 1
        assert "ok" not in tables(store)


class TestIdempotentWrites:
    def test_insert_new_reports_whether_the_row_was_new(self, store: Store) -> None:
        with store.transaction() as tx:
            assert tx.insert_new("items", {"id": "a", "state": "open", "n": 1}) is True
            assert tx.insert_new("items", {"id": "a", "state": "closed", "n": 2}) is False
        row = store.query_one("SELECT state, n FROM items WHERE id = 'a'")
        assert row is not None and tuple(row) == ("open", 1)  # the first write stands

    def test_upsert_says_inserted_updated_or_unchanged(self, store: Store) -> None:
        with store.transaction() as tx:
            assert tx.upsert("items", {"id": "a", "state": "open", "n": 1}, ["id"]) == "inserted"
            assert tx.upsert("items", {"id": "a", "state": "open", "n": 1}, ["id"]) == "unchanged"
            assert tx.upsert("items", {"id": "a", "state": "closed", "n": 1}, ["id"]) == "updated"
            assert tx.upsert("items", {"id": "a", "state": "closed", "n": 1}, ["id"]) == "unchanged"
        assert [tuple(r) for r in store.query("SELECT id, state FROM items")] == [("a", "closed")]

    def test_probe_results_written_twice_count_once(self, state_location: State) -> None:
        store = open_store(state_location)
        results = [
            ProbeResult("svc", "health", 100.0, 0.02, True, "", 200),
            ProbeResult("svc", "health", 130.0, 5.0, False, "timeout", None),
        ]
        for _ in range(2):  # a re-poll or a replay after restart
            with store.transaction() as tx:
                write_records(tx, results)
        counts = {
            (lb["result"], lb["reason"]): v for lb, v in store.counters(probe_store.CHECKS_TOTAL)
        }
        assert counts == {
            ("success", "none"): 1.0,
            ("failure", "timeout"): 1.0,
            ("failure", "resolve"): 0.0,
            ("failure", "connect"): 0.0,
            ("failure", "tls"): 0.0,
            ("failure", "status"): 0.0,
            ("failure", "body"): 0.0,
            ("failure", "answer"): 0.0,
        }
        ((labels, _, _, total, n),) = store.histograms(probe_store.DURATION)
        assert labels == {"service": "svc", "probe": "health"}
        assert (total, n) == (0.02, 1)
        assert probe_store.last_success(store) == {("svc", "health"): 100.0}

    def test_unknown_record_type_is_refused(self, store: Store) -> None:
        with (
            pytest.raises(TypeError, match="no store writer registered for str"),
            store.transaction() as tx,
        ):
            write_records(tx, ["not a record"])


class TestCountersAndHistograms:
    def test_counters_add_up_per_label_set(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.incr("m_total", {"b": "2", "a": "1"})
            tx.incr("m_total", {"a": "1", "b": "2"}, 2.5)  # label order does not matter
            tx.incr("m_total", {"a": "x"})
        got = sorted((sorted(lb.items()), v) for lb, v in store.counters("m_total"))
        assert got == [([("a", "1"), ("b", "2")], 3.5), ([("a", "x")], 1.0)]

    def test_labels_and_bounds_read_are_the_callers_own(self, store: Store) -> None:
        # Reads decode each label set once and hand out copies: changing one changes
        # neither the store's next answer nor another caller's.
        with store.transaction() as tx:
            tx.incr("m_total", {"a": "1"})
            tx.observe("h", {"s": "a"}, 0.2, (0.1, 1.0))
        ((labels, _),) = store.counters("m_total")
        labels["a"] = "changed"
        ((hist_labels, bounds, *_),) = store.histograms("h")
        hist_labels["s"] = "changed"
        bounds.append(9.0)
        assert store.counters("m_total") == [({"a": "1"}, 1.0)]
        ((hist_labels, bounds, *_),) = store.histograms("h")
        assert (hist_labels, bounds) == ({"s": "a"}, [0.1, 1.0])

    def test_counters_never_go_down(self, store: Store) -> None:
        with pytest.raises(ValueError, match="only go up"), store.transaction() as tx:
            tx.incr("m_total", {}, -1)

    def test_histogram_counts_are_cumulative(self, store: Store) -> None:
        bounds = (0.1, 0.5, 1.0)
        with store.transaction() as tx:
            for value in (0.05, 0.1, 0.3, 0.7, 3.0):
                tx.observe("h", {"s": "a"}, value, bounds)
        ((labels, got_bounds, counts, total, n),) = store.histograms("h")
        assert labels == {"s": "a"}
        assert got_bounds == [0.1, 0.5, 1.0]
        assert counts == [2, 3, 4]  # le=0.1 includes 0.1 itself; 3.0 is only in +Inf
        assert n == 5
        assert total == pytest.approx(4.15)

    def test_changed_bucket_layout_starts_afresh(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.observe("h", {}, 0.2, (0.1, 1.0))
            tx.observe("h", {}, 0.2, (0.5, 1.0))
        ((_, bounds, counts, total, n),) = store.histograms("h")
        assert (bounds, counts, total, n) == ([0.5, 1.0], [1, 1], 0.2, 1)

    def test_values_survive_reopening(self, state_location: State) -> None:
        path = state_location
        store = Store(path)
        with store.transaction() as tx:
            tx.incr("m_total", {"a": "1"}, 4)
            tx.set_cursor("src", "since", "2024-01-01T00:00:00Z")
        store.close()
        again = Store(path)
        assert again.counters("m_total") == [({"a": "1"}, 4.0)]
        assert again.get_cursor("src", "since") == "2024-01-01T00:00:00Z"


class TestTransactions:
    def test_an_exception_rolls_back_records_counters_and_cursors(self, store: Store) -> None:
        class Boom(Exception):
            pass

        with pytest.raises(Boom), store.transaction() as tx:
            tx.insert_new("items", {"id": "a", "state": "open", "n": 1})
            tx.incr("m_total", {})
            tx.set_cursor("src", "page", "2")
            raise Boom
        assert store.query("SELECT * FROM items") == []
        assert store.counters("m_total") == []
        assert store.get_cursor("src", "page") is None

    def test_committed_work_is_visible_to_another_connection(
        self, store: Store, state_location: State
    ) -> None:
        with store.transaction() as tx:
            tx.insert_new("items", {"id": "a", "state": "open", "n": 1})
            tx.set_cursor("src", "page", "3")
        other = Store(state_location)  # another process, or another replica
        assert [tuple(r) for r in other.query("SELECT id FROM items")] == [("a",)]
        assert [tuple(r) for r in other.query("SELECT value FROM cursors")] == [("3",)]
        other.close()

    def test_cursors_overwrite_and_are_per_source(self, store: Store) -> None:
        with store.transaction() as tx:
            tx.set_cursor("a", "since", "1")
            tx.set_cursor("a", "since", "2")
            tx.set_cursor("b", "since", "9")
        assert store.cursors("a") == {"since": "2"}
        assert store.get_cursor("b", "since") == "9"
        assert store.get_cursor("c", "since") is None


class TestProbeQueries:
    def test_check_counts_per_window_include_the_upper_edge_only(
        self, state_location: State
    ) -> None:
        store = open_store(state_location)
        now = 10_000.0
        with store.transaction() as tx:
            write_records(
                tx,
                [
                    ProbeResult("s", "p", now, 0.1, True, ""),  # at now: inside
                    ProbeResult("s", "p", now - 100, 0.1, False, "status", 500),
                    ProbeResult("s", "p", now - 1000, 0.1, True, ""),  # exactly at the edge: out
                    ProbeResult("s", "p", now + 1, 0.1, True, ""),  # the future: out
                ],
            )
        counts = probe_store.check_counts(store, now, {"short": 1000.0, "long": 2000.0})
        assert (counts[("s", "short")].total, counts[("s", "short")].successes) == (2, 1)
        assert (counts[("s", "long")].total, counts[("s", "long")].successes) == (3, 2)

    def test_prune_drops_raw_rows_but_keeps_counters(self, state_location: State) -> None:
        store = open_store(state_location)
        with store.transaction() as tx:
            write_records(
                tx,
                [ProbeResult("s", "p", t, 0.1, True, "") for t in (1.0, 2.0, 3.0)],
            )
        with store.transaction() as tx:
            assert probe_store.prune(tx, 2.5) == 2
        assert len(store.query("SELECT * FROM probe_results")) == 1
        counts = {lb["result"]: v for lb, v in store.counters(probe_store.CHECKS_TOTAL) if v}
        assert counts == {"success": 3.0}
