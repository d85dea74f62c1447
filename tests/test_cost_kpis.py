"""Cost KPI functions on hand-checked data: allocation, windows, shared split,
cost per transaction across a UTC day boundary, and budget forecasts."""

from __future__ import annotations

from datetime import date

import pytest

from exporter.kpis.cost import (
    UNALLOCATED,
    Allocator,
    ServiceRule,
    budget_status,
    cost_by_window,
    cost_per_transaction,
    split_shared,
    window_bounds,
)

RULES = [
    ServiceRule("checkout", "payments", tags={"service": "checkout"}),
    ServiceRule("payments-api", "payments", tags={"app": "payments"}, accounts=["1111*"]),
    ServiceRule("search", "discovery", resources=["arn:aws:es:*:domain/search-*"]),
    ServiceRule("platform", "platform", tags={"service": "platform"}, shared=True),
]


class TestAllocation:
    def test_a_matching_tag_claims_the_line(self) -> None:
        assert Allocator(RULES).allocate({"service": "checkout"}) == ("checkout", "payments")

    def test_tags_win_over_resource_and_account_patterns(self) -> None:
        """A line tagged for checkout in payments' account is checkout's."""
        alloc = Allocator(RULES)
        assert alloc.allocate({"service": "checkout"}, "111122223333", "x") == (
            "checkout",
            "payments",
        )

    def test_resource_pattern_then_account_pattern(self) -> None:
        alloc = Allocator(RULES)
        arn = "arn:aws:es:eu-west-1:1:domain/search-prod"
        assert alloc.allocate({}, "111122223333", arn) == ("search", "discovery")
        assert alloc.allocate({}, "111122223333", "i-123") == ("payments-api", "payments")

    def test_the_first_service_in_catalog_order_wins_among_tags(self) -> None:
        alloc = Allocator(RULES)
        assert alloc.allocate({"app": "payments", "service": "checkout"}) == (
            "checkout",
            "payments",
        )

    def test_unmatched_cost_is_unallocated_never_dropped(self) -> None:
        alloc = Allocator(RULES)
        assert alloc.allocate({}) == (UNALLOCATED, UNALLOCATED)
        assert alloc.allocate({"service": "unknown"}, "999", "i-1") == (UNALLOCATED, UNALLOCATED)

    def test_tag_values_are_matched_exactly(self) -> None:
        assert Allocator(RULES).allocate({"service": "Checkout"})[0] == UNALLOCATED

    def test_the_fingerprint_changes_with_the_rules(self) -> None:
        assert Allocator(RULES).fingerprint != Allocator(RULES[:2]).fingerprint
        assert Allocator(RULES).fingerprint == Allocator(list(RULES)).fingerprint


class TestWindows:
    def test_windows_end_on_the_last_closed_day(self) -> None:
        w = window_bounds(date(2026, 11, 22))
        assert w == {
            "1d": ("2026-11-21", "2026-11-21"),
            "7d": ("2026-11-15", "2026-11-21"),
            "30d": ("2026-10-23", "2026-11-21"),
            "mtd": ("2026-11-01", "2026-11-21"),
        }

    def test_month_to_date_is_absent_on_the_first(self) -> None:
        assert "mtd" not in window_bounds(date(2026, 12, 1))

    def test_sums_per_window_and_never_across_currencies(self) -> None:
        rows = [
            ("2026-11-21", "checkout", "payments", "aws", "Compute", "USD", 5.0),
            ("2026-11-20", "checkout", "payments", "aws", "Compute", "USD", 7.0),
            ("2026-11-01", "checkout", "payments", "aws", "Compute", "USD", 1.0),
            ("2026-11-21", "checkout", "payments", "azure", "Compute", "EUR", 3.0),
            ("2026-11-22", "checkout", "payments", "aws", "Compute", "USD", 100.0),  # today
        ]
        out = cost_by_window(rows, window_bounds(date(2026, 11, 22)))
        usd = ("checkout", "payments", "aws", "Compute", "USD")
        assert out[("1d", *usd)] == 5.0
        assert out[("7d", *usd)] == 12.0
        assert out[("mtd", *usd)] == 13.0
        assert out[("30d", *usd)] == 13.0
        assert out[("1d", "checkout", "payments", "azure", "Compute", "EUR")] == 3.0


class TestSharedSplit:
    def test_shared_cost_follows_request_share_per_day(self) -> None:
        rows = [
            ("2026-11-21", "platform", "platform", "aws", "Compute", "USD", 30.0),
            ("2026-11-21", "checkout", "payments", "aws", "Compute", "USD", 1.0),
        ]
        requests = {("checkout", "2026-11-21"): 200.0, ("search", "2026-11-21"): 100.0}
        out = split_shared(
            rows,
            {"platform": "platform"},
            requests,
            {"checkout": "payments", "search": "discovery"},
        )
        assert sorted(out) == [
            ("2026-11-21", "checkout", "payments", "aws", "Compute", "USD", 1.0),
            ("2026-11-21", "checkout", "payments", "aws", "Compute", "USD", 20.0),
            ("2026-11-21", "search", "discovery", "aws", "Compute", "USD", 10.0),
        ]

    def test_a_day_without_requests_keeps_the_shared_cost(self) -> None:
        rows = [("2026-11-20", "platform", "platform", "aws", "Compute", "USD", 30.0)]
        assert split_shared(rows, {"platform": "platform"}, {}, {"checkout": "payments"}) == rows


class TestCostPerTransaction:
    """Cost and requests line up on UTC days; a day counts only if both are known."""

    WINDOWS = window_bounds(date(2026, 11, 22))  # last closed day: 2026-11-21

    def rows(self, *items: tuple[str, float]) -> list[tuple[str, str, str, str, str, str, float]]:
        return [(d, "checkout", "payments", "aws", "Compute", "USD", v) for d, v in items]

    def test_traffic_on_a_day_without_cost_data_is_not_divided_into_older_cost(self) -> None:
        """Requests of the 21st (cost not in yet) stay out: 10 USD / 1000 requests of the 20th."""
        requests = {("checkout", "2026-11-20"): 1000.0, ("checkout", "2026-11-21"): 500.0}
        out = cost_per_transaction(
            self.rows(("2026-11-20", 10.0)), requests, self.WINDOWS, "2026-11-20"
        )
        assert out[("7d", "checkout", "USD")].value == pytest.approx(0.01)
        assert out[("7d", "checkout", "USD")].days == 1
        assert ("1d", "checkout", "USD") not in out  # the 21st has no cost data yet

    def test_once_the_cost_arrives_both_days_count(self) -> None:
        requests = {("checkout", "2026-11-20"): 1000.0, ("checkout", "2026-11-21"): 500.0}
        rows = self.rows(("2026-11-20", 10.0), ("2026-11-21", 2.0))
        out = cost_per_transaction(rows, requests, self.WINDOWS, "2026-11-21")
        assert out[("1d", "checkout", "USD")].value == pytest.approx(2.0 / 500)
        assert out[("7d", "checkout", "USD")].value == pytest.approx(12.0 / 1500)

    def test_cost_on_a_day_without_traffic_is_left_out(self) -> None:
        """Cost on the 19th with no request total for it is not divided by the 20th's requests."""
        requests = {("checkout", "2026-11-20"): 400.0}
        rows = self.rows(("2026-11-19", 50.0), ("2026-11-20", 4.0))
        out = cost_per_transaction(rows, requests, self.WINDOWS, "2026-11-21")
        assert out[("7d", "checkout", "USD")].value == pytest.approx(0.01)

    def test_todays_partial_requests_never_count(self) -> None:
        requests = {("checkout", "2026-11-21"): 100.0, ("checkout", "2026-11-22"): 1e9}
        rows = self.rows(("2026-11-21", 1.0), ("2026-11-22", 1.0))
        out = cost_per_transaction(rows, requests, self.WINDOWS, "2026-11-22")
        assert out[("1d", "checkout", "USD")].value == pytest.approx(0.01)
        assert out[("30d", "checkout", "USD")].value == pytest.approx(0.01)

    def test_no_requests_means_no_value_not_zero(self) -> None:
        rows = self.rows(("2026-11-21", 1.0))
        assert cost_per_transaction(rows, {}, self.WINDOWS, "2026-11-21") == {}
        zero = {("checkout", "2026-11-21"): 0.0}
        assert cost_per_transaction(rows, zero, self.WINDOWS, "2026-11-21") == {}

    def test_no_cost_data_at_all_means_no_value(self) -> None:
        requests = {("checkout", "2026-11-21"): 100.0}
        assert cost_per_transaction([], requests, self.WINDOWS, None) == {}


class TestBudget:
    def test_linear_run_rate_over_complete_days(self) -> None:
        """Nov 22nd, data through the 20th: 20 days x 10 = 200 spent; 200 / 20 x 30 = 300."""
        daily = {f"2026-11-{d:02d}": 10.0 for d in range(1, 22)}
        status = budget_status(daily, 400.0, date(2026, 11, 22), "2026-11-20")
        assert status is not None
        assert status.days == 20
        assert status.spent == pytest.approx(200.0)
        assert status.forecast == pytest.approx(300.0)
        assert status.used_ratio == pytest.approx(0.5)

    def test_no_complete_day_this_month_means_no_forecast(self) -> None:
        assert budget_status({"2026-11-30": 5.0}, 100.0, date(2026, 12, 1), "2026-11-30") is None
        assert budget_status({}, 100.0, date(2026, 11, 22), None) is None
