"""The view ``traffic_days_over`` (the daily totals of days already over, which cost per
transaction reads) changes only when a commit changes those totals: a gateway poll of
today's traffic leaves it as it is, a late minute of yesterday or a moved identity
changes it. On SQLite and on PostgreSQL (tests/conftest.py's ``state_location``)."""

from __future__ import annotations

from pathlib import Path

from exporter.core.backend import PostgresTarget
from exporter.core.changes import writing_for
from exporter.core.clock import FixedClock
from exporter.core.store import Store, write_records
from exporter.domains import open_store
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import LATENCY_BUCKETS
from exporter.domains.traffic.records import TrafficDelta
from tests.support.instants import at

NOW = at("mid-month")  # 09:30 UTC
MIDNIGHT = NOW - NOW % 86400

State = Path | PostgresTarget  # where a store test keeps its state, on either backend


def delta(minute: float, batch: str) -> TrafficDelta:
    buckets = (0,) * (len(LATENCY_BUCKETS) + 1)
    return TrafficDelta("nginx", "checkout", minute, batch, (0, 5, 0, 0, 0), buckets, 0.0, 0)


def poll(store: Store, *deltas: TrafficDelta) -> dict[str, int]:
    """Commit ``deltas`` as a gateway poll does; how much each input's version moved."""
    before = dict(store.versions())
    with writing_for({"traffic"}), store.transaction() as tx:
        write_records(tx, list(deltas))
    after = store.versions()
    return {k: after.get(k, 0) - before.get(k, 0) for k in ("traffic", traffic_store.DAYS_OVER)}


def test_a_poll_of_todays_traffic_changes_traffic_but_not_the_days_over(
    state_location: State,
) -> None:
    store = open_store(state_location, FixedClock(NOW))
    assert poll(store, delta(NOW - 60, "a")) == {"traffic": 1, traffic_store.DAYS_OVER: 0}
    assert poll(store, delta(MIDNIGHT, "b")) == {"traffic": 1, traffic_store.DAYS_OVER: 0}


def test_a_late_minute_of_yesterday_changes_the_days_over(state_location: State) -> None:
    store = open_store(state_location, FixedClock(NOW))
    changed = poll(store, delta(NOW - 60, "a"), delta(MIDNIGHT - 60, "a"))
    assert changed == {"traffic": 1, traffic_store.DAYS_OVER: 1}


def test_a_batch_already_counted_changes_nothing(state_location: State) -> None:
    store = open_store(state_location, FixedClock(NOW))
    poll(store, delta(MIDNIGHT - 60, "a"))
    assert poll(store, delta(MIDNIGHT - 60, "a")) == {"traffic": 0, traffic_store.DAYS_OVER: 0}


def test_an_identity_moved_to_another_service_changes_the_days_over(state_location: State) -> None:
    store = open_store(state_location, FixedClock(NOW))
    poll(store, delta(NOW - 60, "a"))
    ((source, ident, _),) = traffic_store.attributions(store)
    before = store.versions().get(traffic_store.DAYS_OVER, 0)
    with writing_for({"traffic"}):
        traffic_store.reattribute(store, [(source, ident, "search")])
    assert store.versions().get(traffic_store.DAYS_OVER, 0) == before + 1
