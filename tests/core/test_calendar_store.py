"""Daily totals behind the calendar windows: a closed month is counted whole after the raw
history is pruned, the partial day comes from raw records, and an existing database is
backfilled by the migration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from exporter.core.periods import Span, last_month, month_to_date
from exporter.core.store import Schema, Store, write_records
from exporter.domains import open_store
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.records import ProbeResult
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.records import TrafficDelta


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


NOW = at("2028-03-01T00:05:00")

# Around the leap February of 2028: (started_at, success, duration).
CHECKS = [
    ("2028-01-31T23:59:59.500", False, 0.0),  # January's
    ("2028-02-01T00:00:00", True, 0.3),  # the first instant of February
    ("2028-02-15T12:00:00", False, 0.0),
    ("2028-02-29T23:59:59", True, 0.1),  # the leap day
    ("2028-03-01T00:00:00", True, 0.02),  # March's
    ("2028-03-01T00:04:00", False, 0.0),
    ("2028-03-01T00:06:00", True, 0.02),  # after now
]


def check(text: str, success: bool, duration: float, service: str = "checkout") -> ProbeResult:
    return ProbeResult(
        service, "health", at(text), duration, success, "" if success else "status", 200
    )


def delta(text: str, codes: tuple[int, int, int, int, int], batch: str = "b") -> TrafficDelta:
    buckets = tuple([sum(codes)] + [0] * len(traffic_store._BUCKET_COLS[1:]))
    return TrafficDelta("nginx", "checkout", at(text), batch, codes, buckets, 0.001, sum(codes))


DELTAS = [
    delta("2028-01-31T23:59:00", (0, 10, 0, 0, 10)),
    delta("2028-02-01T00:00:00", (0, 90, 0, 5, 5)),
    delta("2028-02-29T23:59:00", (0, 100, 0, 0, 0)),
    delta("2028-03-01T00:00:00", (0, 8, 0, 0, 2)),
    delta("2028-03-01T00:06:00", (0, 0, 0, 0, 50)),  # after now
]


def stored(tmp_path: Path) -> Store:
    store = open_store(str(tmp_path / "s.db"))
    with store.transaction() as tx:
        write_records(tx, [check(*c) for c in CHECKS])
        write_records(tx, DELTAS)
    return store


def prune_all_but(store: Store, keep: float) -> None:
    """A short retention: only the last ``keep`` seconds of raw records survive."""
    with store.transaction() as tx:
        probe_store.prune(tx, NOW - keep)
        traffic_store.prune(tx, NOW - keep)


class TestProbeDays:
    def test_last_month_counts_february_only(self, tmp_path: Path) -> None:
        counts = probe_store.span_counts(stored(tmp_path), last_month(NOW))["checkout"]
        assert (counts.checks, counts.successes) == (3, 2)
        # 0.3 s is slower than 0.25 s; 0.1 s is not.
        assert counts.slower_than(0.25) == 1
        assert counts.slower_than(0.5) == 0

    def test_month_to_date_holds_the_first_minutes_of_march_up_to_now(self, tmp_path: Path) -> None:
        counts = probe_store.span_counts(stored(tmp_path), month_to_date(NOW))["checkout"]
        assert (counts.checks, counts.successes) == (2, 1)

    def test_a_closed_month_survives_pruning_of_raw_checks(self, tmp_path: Path) -> None:
        store = stored(tmp_path)
        prune_all_but(store, 300.0)
        assert store.query_one("SELECT COUNT(*) FROM probe_results")[0] == 3  # type: ignore[index]
        counts = probe_store.span_counts(store, last_month(NOW))["checkout"]
        assert (counts.checks, counts.successes) == (3, 2)
        today = probe_store.span_counts(store, month_to_date(NOW))["checkout"]
        assert (today.checks, today.successes) == (2, 1)

    def test_a_span_with_partial_days_reads_raw_checks_for_them(self, tmp_path: Path) -> None:
        span = Span(at("2028-01-31T23:00:00"), at("2028-03-01T00:01:00"))
        counts = probe_store.span_counts(stored(tmp_path), span)["checkout"]
        assert (counts.checks, counts.successes) == (5, 3)

    def test_the_migration_fills_daily_totals_from_stored_checks(self, tmp_path: Path) -> None:
        """A database from before the daily totals: its stored checks are counted in."""
        path = tmp_path / "old.db"
        old = Store(path)
        old.migrate("probe", probe_store.MIGRATIONS[:1])
        with old.transaction() as tx:
            for text, success, duration in CHECKS:
                r = check(text, success, duration)
                tx.insert_new(
                    "probe_results",
                    {
                        "service": r.service,
                        "probe": r.probe,
                        "started_at": r.started_at,
                        "duration": r.duration_seconds,
                        "success": int(r.success),
                        "reason": r.reason,
                        "status_code": r.status_code,
                    },
                )
        old.close()
        store = open_store(str(path))
        assert store.schema_version("probe") == len(probe_store.MIGRATIONS)
        (tmp_path / "fresh").mkdir()
        fresh = stored(tmp_path / "fresh")
        assert probe_store.span_counts(store, last_month(NOW)) == probe_store.span_counts(
            fresh, last_month(NOW)
        )
        rows = store.query("SELECT day, checks, successes FROM probe_daily ORDER BY day")
        assert [tuple(r) for r in rows] == [
            ("2028-01-31", 1, 0),
            ("2028-02-01", 1, 1),
            ("2028-02-15", 1, 0),
            ("2028-02-29", 1, 1),
            ("2028-03-01", 3, 2),
        ]


class TestTrafficDays:
    def test_last_month_counts_february_only(self, tmp_path: Path) -> None:
        counts = traffic_store.span_counts(stored(tmp_path), last_month(NOW))["checkout"]
        assert counts.codes == (0, 190, 0, 5, 5)
        assert counts.latency_observations == 200

    def test_a_closed_month_survives_pruning_of_minutes(self, tmp_path: Path) -> None:
        store = stored(tmp_path)
        prune_all_but(store, 300.0)
        counts = traffic_store.span_counts(store, last_month(NOW))["checkout"]
        assert counts.codes == (0, 190, 0, 5, 5)
        today = traffic_store.span_counts(store, month_to_date(NOW))["checkout"]
        assert today.codes == (0, 8, 0, 0, 2)

    def test_a_replayed_batch_is_not_counted_twice(self, tmp_path: Path) -> None:
        store = stored(tmp_path)
        with store.transaction() as tx:
            write_records(tx, DELTAS)
        counts = traffic_store.span_counts(store, last_month(NOW))["checkout"]
        assert counts.codes == (0, 190, 0, 5, 5)

    def test_the_migration_fills_daily_counts_from_stored_minutes(self, tmp_path: Path) -> None:
        """A database written by the first traffic schema (rows by service) is migrated:
        daily counts are filled from its minutes, and its rows keep their service."""
        v1 = Store(
            str(tmp_path / "s.db"),
            schema=Schema.build([("traffic", traffic_store.MIGRATIONS[:1])], []),
        )
        with v1.transaction() as tx:
            for d in DELTAS:
                tx.execute(
                    "INSERT INTO traffic_minutes (service, source, minute, c1, c2, c3, c4, c5) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (d.service, d.source, d.minute, *d.codes),
                )
        v1.close()
        store = open_store(str(tmp_path / "s.db"))
        counts = traffic_store.span_counts(store, last_month(NOW))["checkout"]
        assert counts.codes == (0, 190, 0, 5, 5)
        assert traffic_store.attributions(store) == [("nginx", "service:checkout", "checkout")]
