"""Cost KPI functions on hand-checked data: allocation, windows, shared split,
cost per transaction across a UTC day boundary, and budget forecasts."""

from __future__ import annotations

from datetime import date

import pytest

from exporter.domains.cost.allocation import Allocator, CostKey, ServiceRule, parse_key
from exporter.domains.cost.kpis import (
    UNALLOCATED,
    budget_forecast,
    budget_used,
    cost_by_window,
    cost_per_transaction,
    month_days,
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

    def test_a_key_keeps_the_rules_tag_keys_the_account_and_the_matched_patterns(self) -> None:
        """Tag keys no rule uses (env) are left out, and so is the resource itself: the
        key holds the patterns it matched."""
        arn = "arn:aws:es:eu-west-1:1:domain/search-prod"
        key = Allocator(RULES).key_of({"service": "x", "env": "prod"}, "1111", arn)
        assert key == CostKey((("service", "x"),), "1111", ("arn:aws:es:*:domain/search-*",))
        assert parse_key(key.text()) == key
        assert key.text() == (
            '{"a":"1111","r":["arn:aws:es:*:domain/search-*"],"t":[["service","x"]]}'
        )
        assert parse_key("service:checkout") == "checkout"  # pinned

    def test_a_stored_key_follows_a_new_claim_and_a_rename(self) -> None:
        key = Allocator(RULES).key_of({"service": "ledger"}, "999")
        assert Allocator(RULES).resolve(key) == (UNALLOCATED, UNALLOCATED)
        claimed = [*RULES, ServiceRule("ledger", "finance", tags={"service": "ledger"})]
        assert Allocator(claimed).resolve(key) == ("ledger", "finance")
        renamed = [ServiceRule("ledger-v2", "finance", tags={"service": "ledger"}), *RULES]
        assert Allocator(renamed).resolve(key) == ("ledger-v2", "finance")

    def test_a_resource_key_resolves_by_its_patterns_in_catalog_order(self) -> None:
        arn = "arn:aws:es:eu-west-1:1:domain/search-prod"
        key = Allocator(RULES).key_of({}, "111122223333", arn)
        moved = [ServiceRule("search-v2", "discovery", resources=["arn:aws:es:*:domain/search-*"])]
        assert Allocator(moved + RULES).resolve(key) == ("search-v2", "discovery")
        # Without a resource rule the account claims it.
        assert Allocator(RULES[:2]).resolve(key) == ("payments-api", "payments")

    def test_the_key_fingerprint_changes_with_what_keys_hold_not_with_who_claims(self) -> None:
        """A new tag key or resource pattern changes what a key must hold (the bill is
        read again); a new value, service, team or order does not."""
        fingerprint = Allocator(RULES).key_fingerprint
        claim = ServiceRule("ledger", "finance", tags={"service": "ledger"})
        assert Allocator([*RULES, claim]).key_fingerprint == fingerprint
        assert Allocator(list(reversed(RULES))).key_fingerprint == fingerprint
        by_account = ServiceRule("ledger", "finance", accounts=["2222*"])
        assert Allocator([*RULES, by_account]).key_fingerprint == fingerprint
        new_key = ServiceRule("ledger", "finance", tags={"cost-center": "42"})
        assert Allocator([*RULES, new_key]).key_fingerprint != fingerprint
        new_pattern = ServiceRule("ledger", "finance", resources=["arn:aws:rds:*"])
        assert Allocator([*RULES, new_pattern]).key_fingerprint != fingerprint


class TestWindows:
    def test_windows_end_on_the_last_closed_day(self) -> None:
        w = window_bounds(date(2026, 11, 22))
        assert w == {
            "1d": ("2026-11-21", "2026-11-21"),
            "7d": ("2026-11-15", "2026-11-21"),
            "30d": ("2026-10-23", "2026-11-21"),
            "mtd": ("2026-11-01", "2026-11-21"),
            "last_month": ("2026-10-01", "2026-10-31"),
        }

    def test_month_to_date_is_absent_on_the_first_and_last_month_is_there(self) -> None:
        w = window_bounds(date(2026, 12, 1))
        assert "mtd" not in w
        assert w["last_month"] == ("2026-11-01", "2026-11-30")

    @pytest.mark.parametrize(
        ("today", "mtd", "last_month"),
        [
            # 00:05 on the 1st: no closed day this month; February 2027 has 28 days.
            (date(2027, 3, 1), None, ("2027-02-01", "2027-02-28")),
            # The last day of a 30-day month.
            (date(2027, 4, 30), ("2027-04-01", "2027-04-29"), ("2027-03-01", "2027-03-31")),
            # February 29: the leap day itself is not closed yet.
            (date(2028, 2, 29), ("2028-02-01", "2028-02-28"), ("2028-01-01", "2028-01-31")),
            # The day after: the closed month is the 29-day February.
            (date(2028, 3, 1), None, ("2028-02-01", "2028-02-29")),
            # New Year's Eve, and New Year's Day: last month crosses into the previous year.
            (date(2027, 12, 31), ("2027-12-01", "2027-12-30"), ("2027-11-01", "2027-11-30")),
            (date(2028, 1, 1), None, ("2027-12-01", "2027-12-31")),
            (date(2027, 7, 15), ("2027-07-01", "2027-07-14"), ("2027-06-01", "2027-06-30")),
        ],
    )
    def test_calendar_windows_at_the_edges_of_months(
        self, today: date, mtd: tuple[str, str] | None, last_month: tuple[str, str]
    ) -> None:
        w = window_bounds(today)
        assert w.get("mtd") == mtd
        assert w["last_month"] == last_month

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

    def test_last_month_sums_the_closed_month_only(self) -> None:
        """On 2026-12-01: November's 5 + 7 + 1, not October's 50 nor December's 100."""
        rows = [
            ("2026-10-31", "checkout", "payments", "aws", "Compute", "USD", 50.0),
            ("2026-11-01", "checkout", "payments", "aws", "Compute", "USD", 1.0),
            ("2026-11-20", "checkout", "payments", "aws", "Compute", "USD", 7.0),
            ("2026-11-30", "checkout", "payments", "aws", "Compute", "USD", 5.0),
            ("2026-12-01", "checkout", "payments", "aws", "Compute", "USD", 100.0),  # today
        ]
        out = cost_by_window(rows, window_bounds(date(2026, 12, 1)))
        usd = ("checkout", "payments", "aws", "Compute", "USD")
        assert out[("last_month", *usd)] == 13.0
        assert ("mtd", *usd) not in out

    def test_a_window_without_rows_has_no_value_not_zero(self) -> None:
        rows = [("2026-11-30", "checkout", "payments", "aws", "Compute", "USD", 5.0)]
        out = cost_by_window(rows, window_bounds(date(2027, 1, 15)))
        assert out == {}


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

    def test_last_month_divides_the_closed_month_on_the_first(self) -> None:
        """At 00:05 on 2027-03-01, cost through Feb 27 (Feb 28's not in yet): February's
        aligned days are the 1st to the 27th; Feb 28's requests stay out."""
        windows = window_bounds(date(2027, 3, 1))
        requests = {("checkout", f"2027-02-{d:02d}"): 100.0 for d in range(1, 29)}
        rows = self.rows(*((f"2027-02-{d:02d}", 2.0) for d in range(1, 29)))
        out = cost_per_transaction(rows, requests, windows, "2027-02-27")
        got = out[("last_month", "checkout", "USD")]
        assert (got.cost, got.requests, got.days) == (54.0, 2700.0, 27)
        assert got.value == pytest.approx(0.02)

    def test_days_before_every_cost_source_has_data_are_not_aligned(self) -> None:
        """Requests from Feb 1 but cost history from Feb 15: only Feb 15-28 divide."""
        windows = window_bounds(date(2027, 3, 10))
        requests = {("checkout", f"2027-02-{d:02d}"): 100.0 for d in range(1, 29)}
        rows = self.rows(*((f"2027-02-{d:02d}", 3.0) for d in range(15, 29)))
        out = cost_per_transaction(rows, requests, windows, "2027-03-08", "2027-02-15")
        got = out[("last_month", "checkout", "USD")]
        assert (got.cost, got.requests, got.days) == (42.0, 1400.0, 14)

    def test_no_cost_data_at_all_means_no_value(self) -> None:
        requests = {("checkout", "2026-11-21"): 100.0}
        assert cost_per_transaction([], requests, self.WINDOWS, None) == {}


def daily_of(first: date, last: date, amount: float) -> dict[str, float]:
    """``amount`` on every day from ``first`` to ``last``."""
    out, d = {}, first
    while d <= last:
        out[d.isoformat()] = amount
        d = date.fromordinal(d.toordinal() + 1)
    return out


class TestBudget:
    def test_linear_run_rate_over_complete_days(self) -> None:
        """Nov 22nd, data through the 20th: 20 days x 10 = 200 spent; 200 / 20 x 30 = 300."""
        daily = daily_of(date(2026, 10, 1), date(2026, 11, 21), 10.0)
        days = month_days(date(2026, 11, 22), "2026-10-01", "2026-11-20")
        used = budget_used(daily, 400.0, days["mtd"])
        assert used is not None
        assert (used.days, used.spent, used.used_ratio) == (20, 200.0, 0.5)
        ahead = budget_forecast(daily, date(2026, 11, 22), days)
        assert ahead is not None
        assert (ahead.basis, ahead.days) == ("mtd", 20)
        assert ahead.forecast == pytest.approx(300.0)

    @pytest.mark.parametrize(
        ("today", "cost_end", "last_days", "forecast"),
        [
            # 00:05 on 2027-03-01, February complete: 28 x 10 = 280; 10 a day x 31 = 310.
            (date(2027, 3, 1), "2027-02-28", 28, 310.0),
            # 2028-03-01: the leap February, complete: 290 over 29 days; March has 31.
            (date(2028, 3, 1), "2028-02-29", 29, 310.0),
            # The 2nd, cost one day late: still no complete day of March.
            (date(2028, 3, 2), "2028-02-29", 29, 310.0),
            # 2027-05-01, April (30 days) complete; May has 31.
            (date(2027, 5, 1), "2027-04-30", 30, 310.0),
            # 2028-01-01: December 2027 complete.
            (date(2028, 1, 1), "2027-12-31", 31, 310.0),
        ],
    )
    def test_first_days_forecast_at_the_previous_months_run_rate(
        self, today: date, cost_end: str, last_days: int, forecast: float
    ) -> None:
        """Before any day of the month is complete, the forecast extends last month's
        daily run rate over this month's days, and last month's final ratio is there."""
        daily = daily_of(date(2026, 1, 1), today, 10.0)
        days = month_days(today, "2026-01-01", cost_end)
        assert days["mtd"] is None
        assert budget_used(daily, 600.0, days["mtd"]) is None
        closed = budget_used(daily, 600.0, days["last_month"])
        assert closed is not None
        assert (closed.days, closed.spent) == (last_days, 10.0 * last_days)
        assert closed.used_ratio == pytest.approx(10.0 * last_days / 600.0)
        ahead = budget_forecast(daily, today, days)
        assert ahead is not None
        assert (ahead.basis, ahead.days) == ("last_month", last_days)
        assert ahead.forecast == pytest.approx(forecast)

    def test_a_late_closed_month_is_not_final_yet(self) -> None:
        """2028-03-01 with cost through Feb 27: 27 of February's 29 days are complete."""
        daily = daily_of(date(2028, 1, 1), date(2028, 2, 29), 10.0)
        days = month_days(date(2028, 3, 1), "2028-01-01", "2028-02-27")
        closed = budget_used(daily, 600.0, days["last_month"])
        assert closed is not None
        assert (closed.days, closed.spent) == (27, 270.0)

    def test_once_a_day_of_the_month_is_complete_the_month_rate_takes_over(self) -> None:
        """On Mar 3 with Mar 1 and 2 in: (20 + 40) / 2 x 31 = 930, not February's rate."""
        daily = {**daily_of(date(2027, 2, 1), date(2027, 2, 28), 10.0)}
        daily.update({"2027-03-01": 20.0, "2027-03-02": 40.0})
        days = month_days(date(2027, 3, 3), "2027-02-01", "2027-03-02")
        ahead = budget_forecast(daily, date(2027, 3, 3), days)
        assert ahead is not None
        assert (ahead.basis, ahead.days, ahead.forecast) == ("mtd", 2, 930.0)

    def test_history_starting_mid_month_counts_only_its_days(self) -> None:
        """Cost data from Feb 15: last month's complete days are Feb 15-28 (14)."""
        daily = daily_of(date(2027, 2, 15), date(2027, 3, 9), 10.0)
        days = month_days(date(2027, 3, 10), "2027-02-15", "2027-03-08")
        closed = budget_used(daily, 600.0, days["last_month"])
        assert closed is not None
        assert (closed.days, closed.spent) == (14, 140.0)

    def test_no_cost_data_means_no_ratio_and_no_forecast(self) -> None:
        days = month_days(date(2026, 11, 22), None, None)
        assert days == {"mtd": None, "last_month": None}
        assert budget_used({}, 100.0, days["mtd"]) is None
        assert budget_forecast({}, date(2026, 11, 22), days) is None

    def test_no_complete_day_in_either_month_means_no_forecast(self) -> None:
        """History that starts today: nothing closed, nothing to extend."""
        days = month_days(date(2026, 12, 1), "2026-12-01", "2026-11-30")
        assert days == {"mtd": None, "last_month": None}
        assert budget_forecast({"2026-12-01": 5.0}, date(2026, 12, 1), days) is None


class TestWhatTheCostMetricsShow:
    """The small rules the cost families are shaped with, each on a few hand-made rows."""

    def test_day_end_is_the_next_midnight_utc(self) -> None:
        from exporter.domains.cost import kpis

        assert kpis.day_end("2027-03-01") == 1803945600.0  # 2027-03-02T00:00:00Z

    def test_window_range_spans_every_window(self) -> None:
        from exporter.domains.cost import kpis

        windows = {"1d": ("2027-02-28", "2027-02-28"), "last_month": ("2027-01-01", "2027-01-31")}
        assert kpis.window_range(windows) == ("2027-01-01", "2027-02-28")

    def test_coverage_is_the_days_every_source_has(self) -> None:
        """focus covers Jan 3..Feb 27, aws Jan 1..Feb 28: together Jan 3..Feb 27; no source, none."""
        from exporter.domains.cost import kpis

        starts = {"focus": "2027-01-03", "aws": "2027-01-01"}
        ends = {"focus": "2027-02-27", "aws": "2027-02-28"}
        assert kpis.coverage(starts, ends) == ("2027-01-03", "2027-02-27")
        assert kpis.coverage({}, {}) == (None, None)

    def test_gateway_day_counts_once_settled_and_own_totals_win(self) -> None:
        """Feb 27 ended at 1803686400; it counts from 900 s later. Feb 28 is past ``last``.
        The request_totals source's value replaces the gateway's for its day."""
        from exporter.domains.cost import kpis

        gateway = {
            ("web", date(2027, 2, 26)): 10,
            ("web", date(2027, 2, 27)): 20,
            ("web", date(2027, 2, 28)): 30,
        }
        own = {("web", "2027-02-26"): 11.0}
        end_27 = kpis.day_end("2027-02-27")
        early = kpis.requests_per_day(gateway, own, "2027-02-27", end_27 + 899)
        assert early == {("web", "2027-02-26"): 11.0}
        settled = kpis.requests_per_day(gateway, own, "2027-02-27", end_27 + 900)
        assert settled == {("web", "2027-02-26"): 11.0, ("web", "2027-02-27"): 20.0}

    def test_aligned_requests_only_on_days_with_cost_data(self) -> None:
        """Window Feb 1..28, cost data Feb 2..27: the requests of Feb 2 and 27 count, not Feb 1
        nor 28; without cost data no day is aligned."""
        from exporter.domains.cost import kpis

        requests = {
            ("web", "2027-02-01"): 5.0,
            ("web", "2027-02-02"): 7.0,
            ("web", "2027-02-27"): 3.0,
            ("web", "2027-02-28"): 9.0,
            ("api", "2027-02-02"): 100.0,
        }
        window = ("2027-02-01", "2027-02-28")
        assert kpis.aligned_requests(requests, "web", window, "2027-02-02", "2027-02-27") == (
            2,
            10.0,
        )
        assert kpis.aligned_requests(requests, "web", window, None, None) == (0, 0)

    def test_budget_spend_by_owner_and_currency_without_unallocated(self) -> None:
        from exporter.domains.cost import kpis

        rows = [
            ("2027-02-01", "checkout", "payments", "aws", "Compute", "USD", 2.0),
            ("2027-02-01", "payments-api", "payments", "aws", "Compute", "USD", 3.0),
            ("2027-02-02", "checkout", "payments", "aws", "Compute", "EUR", 7.0),
            ("2027-02-02", UNALLOCATED, "payments", "aws", "Compute", "USD", 9.0),
        ]
        assert kpis.budget_spend(rows, "team", "payments", "USD") == {"2027-02-01": 5.0}
        assert kpis.budget_spend(rows, "service", "checkout", "EUR") == {"2027-02-02": 7.0}

    def test_budget_outlook_divides_the_forecast_by_the_budget(self) -> None:
        """10 a day over Feb 1..10 forecasts 280 for February: 0.28 of a 1,000 budget; a
        budget of 0 has no outlook."""
        from exporter.domains.cost import kpis

        daily = {f"2027-02-{d:02d}": 10.0 for d in range(1, 11)}
        days = kpis.month_days(date(2027, 2, 11), "2027-01-01", "2027-02-10")
        outlook = kpis.budget_outlook(daily, 1000.0, date(2027, 2, 11), days)
        assert outlook is not None
        assert outlook[0].forecast == pytest.approx(280.0)
        assert outlook[1] == pytest.approx(0.28)
        assert kpis.budget_outlook(daily, 0.0, date(2027, 2, 11), days) is None

    def test_cost_view_splits_shared_cost_only_when_asked(self) -> None:
        from exporter.domains.cost import kpis

        rows = [("2027-02-01", "platform", "platform", "aws", "Compute", "USD", 10.0)]
        requests = {("web", "2027-02-01"): 3.0, ("api", "2027-02-01"): 1.0}
        catalog = {"web": "a", "api": "b", "platform": "platform"}
        shared = {"platform": "platform"}
        assert kpis.cost_view(rows, shared, requests, catalog, False) == rows
        split = kpis.cost_view(rows, shared, requests, catalog, True)
        assert sorted((r[1], r[6]) for r in split) == [("api", 2.5), ("web", 7.5)]
