"""A state database of the previous release upgrades in place, on SQLite and on PostgreSQL.

"The previous release" is every component one migration behind (each component's last
migration not applied yet), holding a history: the hand-checked one of the weekly review
(tests/report/seed.py), stored by this release and copied, column by column, into the
tables the previous release had (what the last migrations add or fill starts empty, as it
was then). Opened by this release, every component is migrated to its current version,
and the stored history reports the same KPIs as the same history stored by this release,
before and after the rollups' backfills have run.
"""

from __future__ import annotations

from pathlib import Path

from exporter.core.backend import PostgresTarget
from exporter.core.clock import FixedClock
from exporter.core.rollups import backfill_batches, backfill_pending
from exporter.core.store import Schema, Store, write_records
from exporter.domains import domains, open_store, schema
from exporter.domains.traffic import rollup as traffic_rollup
from exporter.report import report_of
from tests.core.test_store import tables
from tests.report import seed

State = Path | PostgresTarget


def previous_release() -> Schema:
    """Every component with its last migration left out."""
    return Schema(tuple((c, m[:-1]) for c, m in schema().components), {})


def _tables(store: Store) -> list[str]:
    skip = {"schema_version", "sqlite_sequence", "sqlite_stat1"}
    return sorted(tables(store) - skip)


def _columns(store: Store, table: str) -> list[str]:
    if store.postgres:
        sql = (
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = ? ORDER BY ordinal_position"
        )
    else:
        sql = "SELECT name FROM pragma_table_info(?)"
    # PostgreSQL's emulated rowid is the table's own (SQLite's is no column).
    return [str(r[0]) for r in store.query(sql, (table,)) if r[0] != "rowid"]


# Tables whose columns a last migration replaced (not only added to): this release's rows
# as the previous release kept them, as a query per table. None now: every last migration
# adds (a column, an index). (The upgrade from cost kept per service to cost kept per
# attribution key is tested in tests/domains/cost/test_cost_attribution.py.)
PREVIOUS_SHAPE: dict[str, str] = {}


def copy_history(source: Store, old: Store) -> int:
    """Copy every row of ``source`` into the tables ``old`` has, in the columns it has;
    the number of rows copied."""
    copied = 0
    with old.transaction() as tx:
        for table in _tables(old):
            shape = PREVIOUS_SHAPE.get(table)
            have = set(_columns(old if shape else source, table))
            columns = [c for c in _columns(old, table) if c in have]
            if not columns:
                continue
            listed = ", ".join(columns)
            marks = ", ".join("?" for _ in columns)
            # A backfill's progress belongs to the migration that started it: the previous
            # release has those of the migrations it ran, and no others.
            where = " WHERE source <> 'rollups'" if table == "cursors" else ""
            rows = f"({shape}) AS r" if shape else table
            for row in source.query(f"SELECT {listed} FROM {rows}{where}"):
                sql = f"INSERT INTO {table} ({listed}) VALUES ({marks})"
                copied += tx.execute(sql, tuple(row)).rowcount
    return copied


def test_a_database_of_the_previous_release_upgrades_and_reports_the_same(
    tmp_path: Path, state_location: State
) -> None:
    reference = open_store(tmp_path / "reference.db", FixedClock(seed.AS_OF))
    old = Store(state_location, FixedClock(seed.AS_OF), previous_release())
    try:
        with reference.transaction() as tx:
            write_records(tx, seed.records())
        assert copy_history(reference, old) > 20
        for component, migrations in previous_release().components:
            assert old.schema_version(component) == len(migrations), component
    finally:
        old.close()
    upgraded = open_store(state_location, FixedClock(seed.AS_OF))
    try:
        for component, migrations in schema().components:
            assert upgraded.schema_version(component) == len(migrations), component
        backfills = [b for d in domains() for b in d.backfills]
        assert any(backfill_pending(upgraded, b.name) for b in backfills)  # raw rows read
        config = seed.config(tmp_path)
        want, failed = report_of(config, reference, seed.AS_OF)
        assert failed == []
        got, failed = report_of(config, upgraded, seed.AS_OF)
        assert failed == []
        assert "platform_cost{" in want.text.decode()
        assert got.text.decode() == want.text.decode()
        # Then the start-up work of a daemon: each domain's refresh (the delivery rollups'
        # catch-up, a traffic backfill batch) and the rollup backfills, to their end.
        for _ in range(10):
            for domain in domains():
                if domain.refresh is not None:
                    domain.refresh(config, upgraded, seed.AS_OF)
            if backfill_batches(upgraded, backfills) and not traffic_rollup.backfill_pending(
                upgraded
            ):
                break
        assert not any(backfill_pending(upgraded, b.name) for b in backfills)
        assert not traffic_rollup.backfill_pending(upgraded)
        after, failed = report_of(config, upgraded, seed.AS_OF)
        assert failed == []
        assert after.text.decode() == want.text.decode()
    finally:
        upgraded.close()
        reference.close()
