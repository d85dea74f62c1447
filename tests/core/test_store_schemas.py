"""Stores that share one PostgreSQL server, and stores opened without a domain's tables.

Replicas of different deployments may keep their states in different schemas of one
database: each schema's migrations are serialised among its own replicas only. And a
store opened with the core's schema only (no domain's tables) reads the catalog and
traffic stores as empty, on either backend, instead of failing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.core import store as store_module
from exporter.core.backend import PostgresTarget
from exporter.core.errors import StartupError
from exporter.core.store import Store
from exporter.domains.catalog import store as catalog_store
from exporter.domains.traffic import store as traffic_store
from tests.support.postgres import PostgresServer


@pytest.fixture
def two_schemas(postgres_server: PostgresServer) -> Iterator[tuple[PostgresTarget, PostgresTarget]]:
    if postgres_server.proc is None:
        postgres_server.start()
    made = postgres_server.create_schema(), postgres_server.create_schema()
    yield made
    for target in made:
        postgres_server.drop_schema(target)


class TestTheMigrationLock:
    def test_is_per_schema(self, two_schemas: tuple[PostgresTarget, PostgresTarget]) -> None:
        """While a replica of schema a migrates (holds the lock), a replica of schema b of
        the same database opens and migrates at once; another of schema a waits until the
        lock is released."""
        a, b = two_schemas
        first = Store(a)
        opened: list[Store] = []
        with first._migrating():
            other = Store(b, busy_timeout=0.5)
            assert other.schema_version("core") == 1
            other.close()
            waiting = threading.Thread(target=lambda: opened.append(Store(a)))
            waiting.start()
            waiting.join(timeout=0.5)
            assert waiting.is_alive() and opened == []
        waiting.join(timeout=5)
        assert len(opened) == 1
        opened[0].close()
        first.close()


    def test_a_replica_waits_past_its_lock_timeout_for_anothers_migrations(
        self, two_schemas: tuple[PostgresTarget, PostgresTarget]
    ) -> None:
        """Migrations of a large state may hold the lock for minutes: a replica whose lock
        timeout is 0.5 s still waits for them (1.5 s here) and then opens."""
        a, _ = two_schemas
        first = Store(a)
        opened: list[Store] = []
        with first._migrating():
            waiting = threading.Thread(target=lambda: opened.append(Store(a, busy_timeout=0.5)))
            waiting.start()
            waiting.join(timeout=1.5)
            assert waiting.is_alive()
        waiting.join(timeout=5)
        assert len(opened) == 1
        opened[0].close()
        first.close()

    def test_past_the_migration_wait_it_is_one_line_naming_state_url(
        self, two_schemas: tuple[PostgresTarget, PostgresTarget], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        a, _ = two_schemas
        monkeypatch.setattr(store_module, "MIGRATION_WAIT", 0.5)
        first = Store(a)
        try:
            with first._migrating(), pytest.raises(StartupError) as refused:
                Store(a)
        finally:
            first.close()
        message = str(refused.value)
        assert message.startswith("state.url: ") and "\n" not in message
        assert "another replica has been migrating the schema for over 0.5s" in message


class TestAStoreWithoutTheDomainsTables:
    def test_reads_no_catalog_and_no_traffic_attribution(
        self, state_location: Path | PostgresTarget
    ) -> None:
        """The core's schema only: no entities, listings, template uses or attributions,
        on SQLite and on PostgreSQL (where a missing table is an error of its own)."""
        store = Store(state_location)
        assert catalog_store.entities(store) == []
        assert catalog_store.listings(store) == {}
        assert catalog_store.template_uses(store, 0.0) == []
        assert traffic_store.attributions(store) == []
        store.close()
