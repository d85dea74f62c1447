"""Traffic KPIs on hand-checked numbers, route mapping, and the traffic store (on SQLite
and on PostgreSQL: tests/conftest.py's ``state_location``)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.core.backend import PostgresTarget
from exporter.core.periods import is_closed_day, utc_minute
from exporter.core.store import write_records
from exporter.domains import open_store
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import (
    LATENCY_BUCKETS,
    UNMAPPED,
    WindowCounts,
    availability,
    code_class_index,
    counter_delta,
    error_ratio,
    histogram_quantile,
    histogram_quantiles,
    rebucket,
    request_rate,
    traffic_services,
    window_kpis,
)
from exporter.domains.traffic.records import ConsumerSeen, TrafficDelta
from exporter.domains.traffic.routes import RouteMap

NB = len(LATENCY_BUCKETS)
DAY = datetime(2026, 3, 2, tzinfo=UTC).timestamp()

State = Path | PostgresTarget  # where a store test keeps its state, on either backend


def delta(
    service: str, minute: float, codes: tuple[int, int, int, int, int], batch: str = "b1"
) -> TrafficDelta:
    buckets = [0] * (NB + 1)
    buckets[4] = sum(codes)  # every request in (0.05, 0.1]
    return TrafficDelta(
        "nginx", service, minute, batch, codes, tuple(buckets), 0.08 * sum(codes), sum(codes)
    )


class TestRatios:
    def test_rate_is_requests_over_window_seconds(self) -> None:
        assert request_rate(600, 300) == 2.0
        assert request_rate(0, 300) is None

    def test_error_ratio_and_availability(self) -> None:
        """1000 requests with 5 x 5xx: ratio 0.005, availability 0.995."""
        assert error_ratio(5, 1000) == 0.005
        assert availability(5, 1000) == pytest.approx(0.995)
        assert error_ratio(0, 0) is None
        assert availability(0, 0) is None
        with pytest.raises(ValueError):
            error_ratio(11, 10)

    def test_status_classes(self) -> None:
        assert [code_class_index(s) for s in (100, 204, 301, 404, 503)] == [0, 1, 2, 3, 4]
        assert code_class_index(600) is None
        assert code_class_index(42) is None


class TestHistogramQuantile:
    def test_interpolates_inside_the_bucket(self) -> None:
        """Bounds 0.1, 0.2, 0.4 with counts 2, 6, 2: p50 is rank 5, 3 of 6 into (0.1, 0.2]."""
        assert histogram_quantile(0.5, [0.1, 0.2, 0.4], [2, 6, 2]) == pytest.approx(0.15)
        # p95: rank 9.5, 1.5 of 2 into (0.2, 0.4] -> 0.35
        assert histogram_quantile(0.95, [0.1, 0.2, 0.4], [2, 6, 2]) == pytest.approx(0.35)
        # p10: rank 1 of 2 in (0, 0.1] -> 0.05
        assert histogram_quantile(0.1, [0.1, 0.2, 0.4], [2, 6, 2]) == pytest.approx(0.05)

    def test_overflow_gives_the_highest_bound(self) -> None:
        assert histogram_quantile(0.99, [0.1, 0.2], [1, 0], overflow=9) == 0.2

    def test_no_observations_no_value(self) -> None:
        assert histogram_quantile(0.5, [0.1], [0]) is None

    @pytest.mark.parametrize(
        ("counts", "overflow"),
        [([2, 6, 2], 0), ([0, 0, 5], 0), ([1, 0, 0], 9), ([0, 3, 0], 0), ([0, 0, 0], 0)],
    )
    def test_several_quantiles_in_one_walk_are_each_histogram_quantile(
        self, counts: list[int], overflow: int
    ) -> None:
        """Ranks in one bucket, in empty buckets' neighbours, in the overflow, at 0 and 1."""
        bounds = [0.1, 0.2, 0.4]
        qs = (0.0, 0.1, 0.5, 0.95, 0.99, 1.0)
        got = histogram_quantiles(qs, bounds, counts, overflow)
        want = {
            q: v for q in qs if (v := histogram_quantile(q, bounds, counts, overflow)) is not None
        }
        assert got == want


class TestRebucket:
    def test_shared_bounds_are_exact_and_others_interpolated(self) -> None:
        """Kong 3.x request_latency_ms bounds 25, 50, 80, 100, 250 ms (cumulative 1, 3, 4, 8, 10)."""
        src = [0.025, 0.05, 0.08, 0.1, 0.25]
        cum = [1, 3, 4, 8, 10]
        out = dict(zip(LATENCY_BUCKETS, rebucket(src, cum, total=12), strict=True))
        assert out[0.025] == 1
        assert out[0.05] == 3
        assert out[0.1] == 8
        assert out[0.25] == 10
        assert out[0.01] == pytest.approx(0.4)  # 1 * 10/25 of the first bucket
        # Above the source's last bound only its last count is known.
        assert out[60.0] == 10


class TestCounterDelta:
    def test_increase_between_reads(self) -> None:
        assert counter_delta(10, 15) == 5

    def test_a_reset_counts_everything_since_the_restart(self) -> None:
        assert counter_delta(1000, 7) == 7

    def test_first_read_is_a_baseline(self) -> None:
        assert counter_delta(None, 1000) == 0


class TestWindowKpis:
    """One window's KPIs from its counts, and the gateway's quantiles where counts have none."""

    def test_rate_ratios_availability_and_quantiles_from_counts(self) -> None:
        # 300 requests in 5 min: 6 x 4xx, 3 x 5xx; 200 in (0.05, 0.1], 100 in (0.1, 0.25].
        buckets = [0] * (NB + 1)
        buckets[4], buckets[5] = 200, 100
        c = WindowCounts((0, 291, 0, 6, 3), tuple(buckets))
        k = window_kpis(c, 300.0, {0.5: 9.0})
        assert k.requests == 300 and k.rate == pytest.approx(1.0)
        assert list(k.error_ratios) == ["5xx", "4xx"]
        assert k.error_ratios["5xx"] == pytest.approx(0.01)
        assert k.error_ratios["4xx"] == pytest.approx(0.02)
        assert k.availability == pytest.approx(0.99)
        assert k.latency_observations == 300
        # median: rank 150 of 200 in (0.05, 0.1] -> 0.05 + 0.05 * 150/200 = 0.0875; the
        # histogram wins over the gateway's own 9.0.
        assert k.latency[0.5] == pytest.approx(0.0875)
        # p95: rank 285, 85 of 100 into (0.1, 0.25] -> 0.1 + 0.15 * 0.85 = 0.2275
        assert k.latency[0.95] == pytest.approx(0.2275)

    def test_without_a_distribution_the_gateway_quantiles_are_used(self) -> None:
        c = WindowCounts((0, 10, 0, 0, 0), (0,) * (NB + 1))
        k = window_kpis(c, 60.0, {0.95: 0.4})
        assert k.latency == {0.95: 0.4}
        assert k.latency_observations == 0

    def test_no_row_is_no_data_but_zero_samples(self) -> None:
        k = window_kpis(None, 300.0, {0.99: 1.5})
        assert k.requests == 0
        assert k.rate is None and k.availability is None and k.error_ratios == {}
        assert k.latency == {0.99: 1.5}

    def test_a_calendar_window_has_no_rate_and_no_latency(self) -> None:
        c = WindowCounts((0, 90, 0, 0, 10), (0, 100, *([0] * (NB - 1))))
        k = window_kpis(c, None, {0.5: 1.0})
        assert k.rate is None and k.latency == {}
        assert k.availability == pytest.approx(0.9)

    def test_traffic_services_are_routed_or_measured_and_known(self) -> None:
        got = traffic_services(["checkout"], ["search", "ghost", "search"], {"checkout", "search"})
        assert got == ["checkout", "search"]


class TestRouteMap:
    def config(self) -> Config:
        return Config(
            services=[
                {
                    "name": "checkout",
                    "team": "payments",
                    "routes": ["shop.test/checkout", "co-route"],
                },
                {"name": "search", "team": "discovery", "routes": ["/search", "search.test"]},
                {"name": "accounts", "team": "identity", "routes": ["shop.test/checkout/account"]},
            ]
        )

    def test_names_map_exactly_and_catalog_names_map_to_themselves(self) -> None:
        routes = RouteMap(self.config())
        assert routes.by_name("co-route") == "checkout"
        assert routes.by_name("search") == "search"
        assert routes.by_name("nope", None, "co-route") == "checkout"
        assert routes.by_name("nope") == UNMAPPED

    def test_requests_map_by_longest_prefix_then_host(self) -> None:
        routes = RouteMap(self.config())
        assert routes.by_request("shop.test", "/checkout/cart?x=1") == "checkout"
        assert routes.by_request("shop.test", "/checkout/account/me") == "accounts"
        assert routes.by_request("shop.test:8080", "/checkout") == "checkout"
        assert routes.by_request("other.test", "/search/q") == "search"
        assert routes.by_request("search.test", "/anything") == "search"
        assert routes.by_request("shop.test", "/checkoutx") == UNMAPPED
        assert routes.by_request("other.test", "/") == UNMAPPED

    def test_a_route_claimed_twice_is_a_config_error(self) -> None:
        with pytest.raises(ValueError, match="claimed by both"):
            Config(
                services=[
                    {"name": "a", "team": "t", "routes": ["r"]},
                    {"name": "b", "team": "t", "routes": ["r"]},
                ]
            )


class TestStore:
    def test_daily_requests_sum_a_utc_day_over_sources(self, state_location: State) -> None:
        store = open_store(state_location)
        with store.transaction() as tx:
            write_records(
                tx,
                [
                    delta("checkout", DAY - 60, (0, 5, 0, 0, 0)),  # the previous day
                    delta("checkout", DAY, (0, 10, 1, 2, 3)),
                    delta("checkout", DAY + 86340, (0, 4, 0, 0, 0)),  # last minute of the day
                    delta("search", DAY, (0, 1, 0, 0, 0)),
                ],
            )
        assert traffic_store.daily_requests(store, "checkout", date(2026, 3, 2)) == 20
        assert traffic_store.daily_requests(store, "checkout", date(2026, 3, 1)) == 5
        assert traffic_store.daily_requests(store, "checkout", date(2026, 3, 3)) is None
        assert traffic_store.daily_requests(store, "checkout", date(2026, 3, 2), "kong") is None
        store.close()

    def test_a_batch_is_counted_once(self, state_location: State) -> None:
        store = open_store(state_location)
        d = delta("checkout", DAY, (0, 10, 0, 0, 2))
        for _ in range(2):
            with store.transaction() as tx:
                write_records(tx, [d])
        counters = {lab["code_class"]: v for lab, v in store.counters(traffic_store.REQUESTS_TOTAL)}
        assert counters == {"2xx": 10, "5xx": 2}
        ((labels, _bounds, counts, total, n),) = store.histograms(traffic_store.DURATION)
        assert labels == {"service": "checkout", "source": "nginx"}
        assert n == 12 and total == pytest.approx(0.96)
        assert counts[3] == 0 and counts[4] == 12 and counts[-1] == 12
        store.close()

    def test_windows_hold_whole_minutes(self, state_location: State) -> None:
        store = open_store(state_location)
        now = DAY + 3600
        with store.transaction() as tx:
            write_records(
                tx,
                [
                    delta("checkout", utc_minute(now), (0, 3, 0, 0, 1)),
                    delta("checkout", now - 600, (0, 6, 0, 0, 0)),
                    delta("checkout", now - 7200, (0, 100, 0, 0, 0)),
                ],
            )
        got = traffic_store.window_counts(store, now, {"5m": 300, "1h": 3600, "1d": 86400})
        assert got[("checkout", "5m")].codes == (0, 3, 0, 0, 1)
        assert got[("checkout", "1h")].requests == 10
        assert got[("checkout", "1d")].requests == 110
        store.close()

    def test_gateway_readings_are_kept_per_source(self, state_location: State) -> None:
        store = open_store(state_location)
        stub = {"active": 3, "reading": 0, "writing": 1, "waiting": 2, "requests": 40, "at": 5}
        traffic_store.record_stub_status(store, "nginx", stub)
        with store.transaction() as tx:
            tx.set_cursor("kong", traffic_store.CONSUMERS_REGISTERED, '{"count": 7, "at": 1.0}')
        assert traffic_store.stub_statuses(store) == {"nginx": stub}
        assert traffic_store.registered_consumers(store) == {"kong": 7}
        store.close()

    def test_a_counted_commit_is_one_transaction_and_adds_only_a_positive_count(
        self, state_location: State
    ) -> None:
        store = open_store(state_location)
        labels = {"source": "nginx"}
        cursor = {("nginx", "file"): "c1"}
        traffic_store.commit_counted(store, [], traffic_store.MALFORMED_TOTAL, labels, 0, cursor)
        assert store.counters(traffic_store.MALFORMED_TOTAL) == []
        traffic_store.commit_counted(
            store,
            [delta("checkout", DAY, (0, 1, 0, 0, 0))],
            traffic_store.MALFORMED_TOTAL,
            labels,
            2,
            {("nginx", "file"): "c2"},
        )
        assert store.counters(traffic_store.MALFORMED_TOTAL) == [(labels, 2.0)]
        assert store.get_cursor("nginx", "file") == "c2"
        assert traffic_store.daily_requests(store, "checkout", date(2026, 3, 2)) == 1
        traffic_store.record_reopen(store, "nginx", "rotated", "c3")
        assert store.counters(traffic_store.ROTATIONS_TOTAL) == [
            ({"source": "nginx", "reason": "rotated"}, 1.0)
        ]
        assert store.get_cursor("nginx", "file") == "c3"
        store.close()

    def test_distinct_consumers_count_each_gateway_consumer_once(
        self, state_location: State
    ) -> None:
        store = open_store(state_location)
        with store.transaction() as tx:
            write_records(
                tx,
                [
                    ConsumerSeen("kong", "checkout", "alice", DAY),
                    ConsumerSeen("kong", "search", "alice", DAY),
                    ConsumerSeen("nginx", "search", "alice", DAY),
                    ConsumerSeen("kong", "search", "bob", DAY - 10),
                ],
            )
        assert traffic_store.distinct_consumers(store, DAY) == 2
        assert traffic_store.distinct_consumers(store, DAY - 10) == 3
        store.close()

    def test_closed_days(self) -> None:
        assert is_closed_day(date(2026, 3, 1), DAY)
        assert not is_closed_day(date(2026, 3, 2), DAY + 10)


class TestPrune:
    def test_old_minutes_go_and_daily_totals_and_counters_stay(self, state_location: State) -> None:
        store = open_store(state_location)
        with store.transaction() as tx:
            write_records(
                tx,
                [
                    delta("checkout", DAY - 40 * 86400, (0, 7, 0, 0, 0), "old"),
                    delta("checkout", DAY, (0, 3, 0, 0, 0), "new"),
                ],
            )
        traffic_store._last_prune[0] = float("-inf")
        traffic_store.prune_if_due(store, DAY + 60, 35 * 86400)
        assert store.query_one("SELECT COUNT(*) FROM traffic_minutes")[0] == 1  # type: ignore[index]
        old_day = datetime.fromtimestamp(DAY - 40 * 86400, UTC).date()
        assert traffic_store.daily_requests(store, "checkout", old_day) == 7
        ((_, total),) = store.counters(traffic_store.REQUESTS_TOTAL)
        assert total == 10
        store.close()
