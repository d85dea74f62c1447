"""Leases on PostgreSQL: one holder per source, spread over replicas, taken over after the
holder stops renewing, and a poll that lost its lease commits nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exporter.core import lease
from exporter.core.backend import PostgresTarget
from exporter.core.lease import LeaseLost, Leases, Polled
from exporter.core.store import Store
from tests.support.postgres import PostgresServer

SOURCES = [f"source{i}" for i in range(9)]


class FakeMonotonic:
    """The replicas' local clocks (the leases' expiry itself is the server's clock)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def target(postgres_server: PostgresServer) -> Iterator[PostgresTarget]:
    if postgres_server.proc is None:
        postgres_server.start()
    made = postgres_server.create_schema()
    store = Store(made)
    store.migrate("lease", lease.MIGRATIONS)
    store.close()
    yield made
    postgres_server.drop_schema(made)


def replicas(target: PostgresTarget, n: int, ttl: float = 30.0) -> list[Leases]:
    return [Leases(target, f"replica{i}", SOURCES, ttl) for i in range(n)]


def holders(target: PostgresTarget) -> dict[str, str]:
    store = Store(target)
    rows = store.query("SELECT source, holder FROM leases")
    store.close()
    return {str(r[0]): str(r[1]) for r in rows}


class TestSpread:
    def test_three_replicas_share_nine_sources_three_each(self, target: PostgresTarget) -> None:
        """Each source has one holder; once every replica has joined and renewed twice, none
        holds more than its share (3), and every source is held."""
        group = replicas(target, 3)
        for _ in range(3):
            for r in group:
                r.renew()
        held = [r.held_now() for r in group]
        assert [len(h) for h in held] == [3, 3, 3]
        assert frozenset().union(*held) == frozenset(SOURCES)
        owners = holders(target)
        assert all(owners[s] == f"replica{i}" for i, h in enumerate(held) for s in h)

    def test_the_first_replica_holds_all_until_others_join(self, target: PostgresTarget) -> None:
        """Alone, a replica polls everything; a joining one gets its share as the first
        hands extras back, and no source is held by two at any time."""
        one, two = replicas(target, 2)
        assert len(one.renew()) == 9
        two.renew()  # joins: the share is now 5; nothing free yet
        assert len(one.renew()) == 5  # hands back 4
        assert len(two.renew()) == 4
        assert one.held_now().isdisjoint(two.held_now())

    def test_a_busy_source_is_not_handed_back_mid_poll(self, target: PostgresTarget) -> None:
        one, two = replicas(target, 2)
        everything = one.renew()
        two.renew()
        kept = one.renew(busy=lambda: everything)
        assert kept == everything

    def test_a_replica_always_polling_still_hands_its_extras_back(
        self, target: PostgresTarget
    ) -> None:
        """Extras a running poll keeps drain: no new poll starts under them (they are not
        held for polling), and the round after that poll ends hands them back, so a
        replica whose polls never pause still gets down to its share."""
        one, two = replicas(target, 2)
        everything = one.renew()
        two.renew()
        one.renew(busy=lambda: everything)
        draining = everything - one.held_now()
        assert len(draining) == 4  # over the share of 5
        assert not any(one.held(s) for s in draining)
        assert len(one.renew()) == 5  # the polls ended: handed back
        assert len(two.renew()) == 4
        assert one.held_now().isdisjoint(two.held_now())


class TestTakeover:
    def test_a_dead_replicas_leases_are_taken_after_the_ttl(self, target: PostgresTarget) -> None:
        """The holder stops renewing (killed): its leases stay its own until they expire on
        the server's clock, then the survivor takes them, with a new token."""
        one, two = replicas(target, 2, ttl=1.0)
        mine = one.renew()
        assert len(mine) == 9
        assert two.renew() == frozenset()  # held, unexpired
        import time

        time.sleep(1.2)
        assert two.renew() == frozenset(SOURCES)  # alone now: all of them
        store = Store(target)
        tokens = {int(r[0]) for r in store.query("SELECT token FROM leases")}
        store.close()
        assert tokens == {2}

    def test_a_late_renewal_keeps_an_expired_lease_no_one_took(
        self, target: PostgresTarget
    ) -> None:
        """The holder's renewal comes after the expiry (its process starved of CPU) and no
        other replica took the lease meanwhile: it is still the holder's, with the same
        token, so the poll running under it commits (it is still the only poller)."""
        (one,) = replicas(target, 1, ttl=1.0)
        one.renew()
        store = Store(target)
        with one.fenced("source0"):
            import time

            time.sleep(1.2)  # expired on the server's clock; no one else is there
            assert one.renew() == frozenset(SOURCES)
            with store.transaction() as tx:
                tx.incr("polled_total", {"source": "source0"})
        tokens = {int(r[0]) for r in store.query("SELECT token FROM leases")}
        assert tokens == {1}
        assert store.counters("polled_total") == [({"source": "source0"}, 1.0)]
        store.close()

    def test_a_clean_shutdown_hands_leases_over_at_once(self, target: PostgresTarget) -> None:
        one, two = replicas(target, 2)
        one.renew()
        one.release()
        assert two.renew() == frozenset(SOURCES)


class TestHandover:
    def test_a_taker_learns_the_previous_holders_last_poll_once(
        self, target: PostgresTarget
    ) -> None:
        """The holder records each held source's last poll at its renewal rounds (what
        changed only); the replica that takes a lease over learns it, once; a source no
        replica polled comes with none."""
        one, two = replicas(target, 2, ttl=0.5)
        one.renew()
        assert one.taken() == dict.fromkeys(SOURCES)  # free leases: no previous holder
        last = {"source0": Polled(5000.0, False), "source1": Polled(5030.0, None)}
        one.renew(polled=lambda: last)
        assert one.taken() == {}
        import time

        time.sleep(0.6)  # one stops renewing: its leases expire
        assert two.renew() == frozenset(SOURCES)
        assert two.taken() == {**dict.fromkeys(SOURCES), **last}
        assert two.taken() == {}

    def test_a_retaken_lease_keeps_the_newer_poll_of_the_replica_between(
        self, target: PostgresTarget
    ) -> None:
        """A lease that comes back to a replica carries the poll of the one that held it
        in between, not the older one the returning replica made."""
        one, two = replicas(target, 2, ttl=0.5)
        one.renew(polled=lambda: {"source0": Polled(5000.0, True)})
        one.renew(polled=lambda: {"source0": Polled(5000.0, True)})
        import time

        time.sleep(0.6)
        two.renew()
        two.renew(polled=lambda: {"source0": Polled(5600.0, False)})
        time.sleep(0.6)
        one.renew(polled=lambda: {"source0": Polled(5000.0, True)})
        assert one.taken()["source0"] == Polled(5600.0, False)


class TestFence:
    def test_a_poll_that_lost_its_lease_commits_nothing(self, target: PostgresTarget) -> None:
        """The lease moved between the poll's start and its commit: the transaction is
        rolled back (reason ``state``) and nothing of it is stored."""
        one, two = replicas(target, 2, ttl=1.0)
        one.renew()
        store = Store(target)
        with one.fenced("source0"):
            import time

            time.sleep(1.2)
            two.renew()  # takes every expired lease
            with pytest.raises(LeaseLost), store.transaction() as tx:
                tx.incr("polled_total", {"source": "source0"})
        assert store.counters("polled_total") == []
        store.close()

    def test_a_lost_lease_is_found_when_checked_with_the_histograms_read(
        self, target: PostgresTarget
    ) -> None:
        """A commit with histogram observations checks its lease with their stored rows'
        read and sends their writes with the COMMIT: a lease taken over meanwhile still
        keeps every write of the transaction out, the histogram's too."""
        one, two = replicas(target, 2)
        one.renew()
        store = Store(target)
        with store.transaction() as tx:  # the holder's lease runs out; the other takes it
            tx.execute("UPDATE leases SET expires_at = 0 WHERE source = 'source0'")
        two.renew()
        # The holder still believes it holds the lease (it renews only every third of the TTL).
        with one.fenced("source0"), pytest.raises(LeaseLost), store.transaction() as tx:
            tx.incr("polled_total", {"source": "source0"})
            tx.observe("poll_seconds", {"source": "source0"}, 2.0, [1.0, 5.0])
        assert store.counters("polled_total") == []
        assert store.histograms("poll_seconds") == []
        store.close()

    def test_a_poll_under_its_lease_commits_its_histograms(self, target: PostgresTarget) -> None:
        (one,) = replicas(target, 1)
        one.renew()
        store = Store(target)
        with one.fenced("source0"), store.transaction() as tx:
            tx.observe("poll_seconds", {"source": "source0"}, 2.0, [1.0, 5.0])
            tx.observe("poll_seconds", {"source": "source0"}, 0.5, [1.0, 5.0])
        assert store.histograms("poll_seconds") == [
            ({"source": "source0"}, [1.0, 5.0], [1, 2], 2.5, 2)
        ]
        store.close()

    def test_a_poll_under_its_lease_commits(self, target: PostgresTarget) -> None:
        (one,) = replicas(target, 1)
        one.renew()
        store = Store(target)
        with one.fenced("source0"), store.transaction() as tx:
            tx.incr("polled_total", {"source": "source0"})
        assert store.counters("polled_total") == [({"source": "source0"}, 1.0)]
        store.close()

    def test_a_source_never_leased_commits_nothing(self, target: PostgresTarget) -> None:
        one, two = replicas(target, 2)
        one.renew()
        store = Store(target)
        with two.fenced("source0"), pytest.raises(LeaseLost), store.transaction() as tx:
            tx.incr("polled_total", {})
        store.close()
