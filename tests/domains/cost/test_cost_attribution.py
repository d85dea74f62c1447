"""Cost follows a catalog change at the next refresh, not at the cost source's next poll.

Cost is stored under the attribution key of its billing lines (the values of the tag keys
the rules use, the account, the resource patterns matched) and resolved to a service when
the KPIs are computed. The platform: the config lists checkout (cost tag
``service=checkout``); Backstage lists the groups payments and finance and the component
ledger (owner finance), with or without the cost tag annotation ``service=ledger``.

The FOCUS export of every test, hand-checked (the clock is mid-month, 2027-07-14 09:30
UTC, so the last closed day is the 13th):

* ``service=checkout``: 4 on the 13th, 10 on the 11th -> 1d 4, 7d 14;
* ``service=ledger``: 6 on the 13th, 3 on the 9th -> 1d 6, 7d 9;
* ``service=orphan`` (nobody claims it): 2 on the 13th;
* untagged: 1 on the 13th.

Every tagged line also carries ``env=prod``. Each test runs on SQLite and on PostgreSQL
(tests/conftest.py's ``state_location``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.backend import PostgresTarget
from exporter.core.catalog import CatalogEntity
from exporter.core.clock import FixedClock, wall_datetime
from exporter.core.store import Store, write_records
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.catalog.sandbox import TOKEN, FakeCatalog, backstage_app
from exporter.domains.cost import store as cost_store
from exporter.domains.cost.records import RequestTotal
from exporter.domains.cost.sources import focus as focus_module
from tests.domains.cost.test_focus_source import line, write_csv
from tests.support.exposition import Exposition
from tests.support.instants import at
from tests.support.state import state_block

NOW = at("mid-month")
BASE = "http://backstage.test/api/catalog"
COST_TAGS = "platform-kpi-exporter/cost-tags"
CHECKOUT = {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}}

EXPORT = [
    line(4, 4, "2027-07-13", service="checkout"),
    line(10, 10, "2027-07-11", service="checkout"),
    line(6, 6, "2027-07-13", service="ledger"),
    line(3, 3, "2027-07-09", service="ledger"),
    line(2, 2, "2027-07-13", service="orphan"),
    line(1, 1, "2027-07-13"),
]

State = Path | PostgresTarget  # where a test keeps its state, on either backend


def group(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Group",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-group-{name}"},
        "spec": {"type": "team", "children": []},
    }


def component(name: str, cost_tags: str | None = None) -> dict[str, Any]:
    """A Component owned by finance, as the catalog lists it (descriptor format:
    https://backstage.io/docs/features/software-catalog/descriptor-format)."""
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "uid-component-ledger",
            "annotations": {COST_TAGS: cost_tags} if cost_tags else {},
        },
        "spec": {"type": "service", "lifecycle": "production", "owner": "group:default/finance"},
    }


class Platform:
    """Backstage (the documented fake), a directory of FOCUS exports and one daemon keeping
    its state at ``state`` (either backend)."""

    def __init__(
        self,
        tmp_path: Path,
        state: Path | PostgresTarget,
        *entities: dict[str, Any],
        interval: float = 60,
    ) -> None:
        self.exports = tmp_path / "exports"
        self.exports.mkdir(exist_ok=True)
        self.catalog = FakeCatalog([group("payments"), group("finance"), *entities])
        self.config = Config(
            state=state_block(state),
            services=[CHECKOUT],
            sources={
                "backstage": {"base_url": BASE, "token": TOKEN, "interval": interval},
                "focus": {"paths": [str(self.exports)], "interval": interval},
            },
        )
        transport = backstage_app(self.catalog).transport()
        self.daemon = Daemon(self.config, transport=transport, clock=FixedClock(NOW))
        if self.daemon.leases is not None:
            self.daemon.renew_leases()  # PostgreSQL: the polls' commits need their leases

    def list(self, *entities: dict[str, Any]) -> None:
        """Backstage lists these components now (the whole listing is replaced)."""
        self.catalog.entities = [group("payments"), group("finance"), *entities]

    def poll(self, kind: str) -> Exposition:
        src = next(s for s in self.daemon.sources if s.kind == kind)
        assert asyncio.run(self._closing(self.daemon.poll(src)))
        return self.metrics()

    async def _closing(self, work: Any) -> bool:
        try:
            return bool(await work)
        finally:
            for client in self.daemon.clients.values():
                await client.aclose()
            self.daemon.clients.clear()

    def metrics(self) -> Exposition:
        return Exposition.parse(self.daemon.holder.current.text)

    def close(self) -> None:
        if self.daemon.leases is not None:
            self.daemon.leases.release()
            self.daemon.leases.close()
        self.daemon.store.close()


async def until(done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (polling every 20 ms) until ``done()``; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not done():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


class HeldOnly:
    """Leases as a replica holding only ``names`` sees them."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def held(self, name: str) -> bool:
        return name in self.names


def cost(m: Exposition, service: str, window: str) -> float | None:
    """The USD cost of ``service`` over ``window`` (None: no series)."""
    found = m.samples("platform_cost", service=service, window=window, currency="USD")
    return sum(v for _, v in found) if found else None


def teams(m: Exposition, service: str) -> set[str]:
    return {labels["team"] for labels, _ in m.samples("platform_cost", service=service)}


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The export files the FOCUS source reads, in order."""
    seen: list[str] = []
    real = focus_module.read_file

    def counted(path: Path, *args: Any, **kwargs: Any) -> Any:
        seen.append(path.name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(focus_module, "read_file", counted)
    return seen


class TestATagClaimedAfterItsCostArrived:
    def test_moves_that_cost_to_the_service_at_the_next_refresh_without_a_poll(
        self,
        tmp_path: Path,
        state_location: State,
        reads: list[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        p = Platform(tmp_path, state_location, component("ledger"))
        write_csv(p.exports / "july.csv", EXPORT)
        try:
            p.poll("backstage")
            with p.daemon.store.transaction() as tx:
                write_records(tx, [RequestTotal("ledger", "2027-07-13", 1200.0, "requests")])
            before = p.poll("focus")
            assert reads == ["july.csv"]
            assert cost(before, "checkout", "1d") == 4 and cost(before, "checkout", "7d") == 14
            assert cost(before, "ledger", "1d") is None
            # ledger 6 + orphan 2 + untagged 1; over the week ledger's 3 of the 9th too.
            assert cost(before, "unallocated", "1d") == pytest.approx(9.0)
            assert cost(before, "unallocated", "7d") == pytest.approx(12.0)
            assert before.samples("platform_cost_per_transaction", service="ledger") == []

            p.list(component("ledger", cost_tags="service=ledger"))
            with caplog.at_level(logging.INFO, logger="exporter.cost"):
                after = p.poll("backstage")
            assert reads == ["july.csv"]  # the bill was not read again
            assert cost(after, "ledger", "1d") == pytest.approx(6.0)
            assert cost(after, "ledger", "7d") == pytest.approx(9.0)
            assert cost(after, "ledger", "30d") == pytest.approx(9.0)
            assert cost(after, "ledger", "mtd") == pytest.approx(9.0)
            assert teams(after, "ledger") == {"finance"}
            # What nobody claims stays unallocated: orphan 2 and the untagged 1.
            assert cost(after, "unallocated", "1d") == pytest.approx(3.0)
            assert cost(after, "unallocated", "7d") == pytest.approx(3.0)
            assert cost(after, "checkout", "1d") == 4 and cost(after, "checkout", "7d") == 14
            # Cost per transaction reads the same rows: 6 / 1200 requests on the 13th.
            assert after.value(
                "platform_cost_per_transaction", service="ledger", window="1d"
            ) == pytest.approx(0.005)
            assert any(
                "cost re-attributed after a catalog change" in r.message
                and "unallocated -> ledger/finance" in r.message
                for r in caplog.records
            )
        finally:
            p.close()

    def test_a_restart_keeps_the_claim_and_reads_nothing_again(
        self, tmp_path: Path, state_location: State, reads: list[str]
    ) -> None:
        p = Platform(tmp_path, state_location, component("ledger"))
        write_csv(p.exports / "july.csv", EXPORT)
        p.poll("backstage")
        p.poll("focus")
        p.list(component("ledger", cost_tags="service=ledger"))
        p.poll("backstage")
        asyncio.run(p.daemon.shutdown())
        again = Platform(tmp_path, state_location, component("ledger", cost_tags="service=ledger"))
        try:
            m = again.metrics()  # rendered at start, before any poll
            assert cost(m, "ledger", "7d") == pytest.approx(9.0)
            again.poll("focus")
            assert reads == ["july.csv"]  # unchanged file, unchanged key space
        finally:
            again.close()


class TestACatalogChange:
    def test_a_renamed_service_takes_its_cost_and_a_removed_one_gives_it_back(
        self, tmp_path: Path, state_location: State
    ) -> None:
        p = Platform(tmp_path, state_location, component("ledger", cost_tags="service=ledger"))
        write_csv(p.exports / "july.csv", EXPORT)
        try:
            p.poll("backstage")
            assert cost(p.poll("focus"), "ledger", "7d") == pytest.approx(9.0)

            p.list(component("ledger-v2", cost_tags="service=ledger"))
            m = p.poll("backstage")
            assert cost(m, "ledger-v2", "1d") == pytest.approx(6.0)
            assert cost(m, "ledger-v2", "7d") == pytest.approx(9.0)
            assert cost(m, "ledger", "7d") is None

            p.list()
            m = p.poll("backstage")
            assert cost(m, "ledger-v2", "7d") is None
            assert cost(m, "unallocated", "7d") == pytest.approx(12.0)
        finally:
            p.close()

    def test_a_claim_by_a_tag_key_no_rule_used_reads_the_bill_again_at_once(
        self, tmp_path: Path, reads: list[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Keys hold only the tag keys the rules used when the bill was read: a claim of
        ``env=prod`` cannot be resolved from them. So the catalog poll that brings it has
        the FOCUS source poll at once (both poll hourly here), and that poll reads the file
        again (its signature holds the key space): then ledger takes every env=prod line
        checkout does not claim first, ledger's 6 and orphan's 2 on the 13th."""
        p = Platform(tmp_path, tmp_path / "state.db", component("ledger"), interval=3600)
        write_csv(p.exports / "july.csv", EXPORT)

        def idle() -> bool:
            return all(h.running_since is None for h in p.daemon.health.values())

        async def run() -> Exposition:
            scheduler = p.daemon.start_scheduler()  # first polls at once: backstage, focus
            try:
                await until(lambda: reads == ["july.csv"])
                await until(idle)
                p.list(component("ledger", cost_tags="env=prod"))
                scheduler.modify_job("backstage", next_run_time=wall_datetime())
                await until(lambda: len(reads) == 2)
                await until(idle)
                await p.daemon.refresh()
                return p.metrics()
            finally:
                await p.daemon.shutdown()

        with caplog.at_level(logging.INFO, logger="exporter.daemon"):
            m = asyncio.run(run())
        assert reads == ["july.csv", "july.csv"]
        assert cost(m, "ledger", "1d") == pytest.approx(8.0)
        assert cost(m, "ledger", "7d") == pytest.approx(11.0)
        assert cost(m, "checkout", "7d") == pytest.approx(14.0)
        assert cost(m, "unallocated", "1d") == pytest.approx(1.0)
        assert any(
            r.getMessage() == "source focus: polled now, as what it stored is out of date"
            for r in caplog.records
        )

    def test_a_claim_by_a_tag_value_reads_nothing_again(
        self, tmp_path: Path, state_location: State
    ) -> None:
        """Only a change of what keys are made of asks for a read: a new value of a tag key
        the rules already use is resolved from the stored keys."""
        p = Platform(tmp_path, state_location, component("ledger", cost_tags="service=ledger"))
        write_csv(p.exports / "july.csv", EXPORT)
        try:
            p.poll("backstage")
            p.poll("focus")
            focus = next(s for s in p.daemon.sources if s.kind == "focus")
            p.list(component("ledger", cost_tags="service=orphan"))
            p.poll("backstage")
            assert not focus.stale_after(p.daemon.store, frozenset({CatalogListing}))
            p.list(component("ledger", cost_tags="env=prod"))
            p.poll("backstage")
            assert focus.stale_after(p.daemon.store, frozenset({CatalogListing}))
            # Nothing but a catalog listing can change the key space.
            assert not focus.stale_after(p.daemon.store, frozenset({RequestTotal}))
        finally:
            p.close()

    def test_with_replicas_a_peers_catalog_poll_is_seen_at_the_cadence_refresh(
        self, tmp_path: Path
    ) -> None:
        """This replica holds the FOCUS source's lease and a peer holds Backstage's: the
        peer's listing claiming ``env=prod`` arrives as another connection's commit, and the
        next cadence refresh finds the FOCUS source out of date and has it poll at once."""
        p = Platform(tmp_path, tmp_path / "state.db", component("ledger"))
        write_csv(p.exports / "july.csv", EXPORT)
        try:
            p.poll("backstage")
            p.poll("focus")
            p.daemon.leases = HeldOnly({"focus"})  # type: ignore[assignment]
            assert p.daemon._stale_after_peers() == []  # nothing new from a peer
            ledger = CatalogEntity(
                "backstage", "component", "default", "ledger", "finance",
                lifecycle="production", cost_tags=("env=prod",),
            )  # fmt: skip
            with p.daemon.store.transaction() as tx:  # a commit whose inputs are unknown
                write_records(tx, [CatalogListing("backstage", NOW, (ledger,))])
            assert p.daemon._stale_after_peers() == ["focus"]
            assert p.daemon._stale_after_peers() == []  # asked once per peer commit
        finally:
            p.daemon.leases = None
            p.close()

    def test_keys_no_cost_is_under_any_more_are_pruned(
        self, tmp_path: Path, state_location: State
    ) -> None:
        """Read again under the key space with ``env``, every line's key gains its env
        value: the keys of the first read hold no cost any more and are dropped. (Every
        line of the export is of the account 111122223333.)"""
        p = Platform(tmp_path, state_location, component("ledger"))
        write_csv(p.exports / "july.csv", EXPORT)
        try:
            p.poll("backstage")
            p.poll("focus")
            before = {ident for ident, _, _ in cost_store.attributions(p.daemon.store)}
            assert before == {
                '{"a":"111122223333","t":[["service","checkout"]]}',
                '{"a":"111122223333","t":[["service","ledger"]]}',
                '{"a":"111122223333","t":[["service","orphan"]]}',
                '{"a":"111122223333"}',
            }
            p.list(component("ledger", cost_tags="env=prod"))
            p.poll("backstage")
            p.poll("focus")
            after = {ident for ident, _, _ in cost_store.attributions(p.daemon.store)}
            stored = {str(r[0]) for r in p.daemon.store.query("SELECT ident FROM cost_daily")}
            assert (
                after
                == stored
                == {
                    '{"a":"111122223333","t":[["env","prod"],["service","checkout"]]}',
                    '{"a":"111122223333","t":[["env","prod"],["service","ledger"]]}',
                    '{"a":"111122223333","t":[["env","prod"],["service","orphan"]]}',
                    '{"a":"111122223333"}',
                }
            )
        finally:
            p.close()


class TestAnUpgradedDatabase:
    """A state written before cost was stored by key: one origin, rows per service."""

    def seed_old_state(self, where: Path | PostgresTarget, export: Path) -> None:
        old = Store(where, FixedClock(NOW))
        old.migrate("cost", cost_store.MIGRATIONS[:2])
        origin = str(export.resolve())
        st = export.stat()
        rows = [
            # checkout's team was renamed between two days: both rows are checkout's.
            ("2027-07-13", "checkout", "payments", 4.0),
            ("2027-07-11", "checkout", "shop", 10.0),
            ("2027-07-13", "unallocated", "unallocated", 9.0),
            ("2027-07-09", "unallocated", "unallocated", 3.0),
        ]
        with old.transaction() as tx:
            tx.execute(
                "INSERT INTO cost_origins (source, origin, signature, final, rows_read, "
                "rows_rejected) VALUES ('focus', ?, ?, 0, 6, 0)",
                (origin, f"{st.st_size}:{st.st_mtime_ns}|alloc=0123456789abcdef|provider="),
            )
            for day, service, team, amount in rows:
                tx.execute(
                    "INSERT INTO cost_daily (source, origin, day, service, team, provider, "
                    "category, currency, billed, effective, lines) "
                    "VALUES ('focus', ?, ?, ?, ?, 'aws', 'Compute', 'USD', ?, ?, 1)",
                    (origin, day, service, team, amount, amount),
                )
            for day in ("2027-07-09", "2027-07-11", "2027-07-13"):
                tx.execute(
                    "INSERT INTO cost_coverage (source, origin, day) VALUES ('focus', ?, ?)",
                    (origin, day),
                )
        old.close()

    def test_old_rows_are_pinned_with_the_same_totals_then_keyed_at_the_next_read(
        self, tmp_path: Path, state_location: State, reads: list[str]
    ) -> None:
        exports = tmp_path / "exports"
        exports.mkdir()
        export = write_csv(exports / "july.csv", EXPORT)
        self.seed_old_state(state_location, export)
        p = Platform(tmp_path, state_location, component("ledger", cost_tags="service=ledger"))
        try:
            m = p.metrics()  # rendered at start from the migrated rows
            assert cost(m, "checkout", "7d") == pytest.approx(14.0)
            assert teams(m, "checkout") == {"payments"}  # pinned: its team is the catalog's
            assert cost(m, "unallocated", "7d") == pytest.approx(12.0)
            assert cost(m, "ledger", "7d") is None  # pinned rows cannot tell ledger's share

            p.poll("backstage")
            m = p.poll("focus")  # the signature is not a keyed one: read once more
            assert reads == ["july.csv"]
            assert cost(m, "checkout", "7d") == pytest.approx(14.0)
            assert cost(m, "ledger", "7d") == pytest.approx(9.0)
            assert cost(m, "unallocated", "7d") == pytest.approx(3.0)
        finally:
            p.close()

    def test_the_migration_sums_a_service_rows_into_one_pinned_key(
        self, tmp_path: Path, state_location: Path | PostgresTarget
    ) -> None:
        """On both backends; the cost read through the join is the old rows' cost."""
        exports = tmp_path / "exports"
        exports.mkdir()
        self.seed_old_state(state_location, write_csv(exports / "july.csv", EXPORT))
        store = open_store(state_location, FixedClock(NOW))
        try:
            assert cost_store.attributions(store) == [
                ("service:checkout", "checkout", "shop"),  # one of its teams, until a refresh
                ("service:unallocated", "unallocated", "unallocated"),
            ]
            rows = store.query("SELECT day, ident, effective FROM cost_daily ORDER BY day, ident")
            assert [tuple(r) for r in rows] == [
                ("2027-07-09", "service:unallocated", 3.0),
                ("2027-07-11", "service:checkout", 10.0),
                ("2027-07-13", "service:checkout", 4.0),
                ("2027-07-13", "service:unallocated", 9.0),
            ]
            assert sorted(cost_store.daily_costs(store, "2027-07-01", "2027-07-13", "billed")) == [
                ("2027-07-09", "unallocated", "unallocated", "aws", "Compute", "USD", 3.0),
                ("2027-07-11", "checkout", "shop", "aws", "Compute", "USD", 10.0),
                ("2027-07-13", "checkout", "shop", "aws", "Compute", "USD", 4.0),
                ("2027-07-13", "unallocated", "unallocated", "aws", "Compute", "USD", 9.0),
            ]
        finally:
            store.close()
