"""Absent, never 0: a cost KPI over days without a cost line has no value at all.

Pure KPI functions on hand-made rows, seen on 2027-04-20 (yesterday is the 19th).
"""

from __future__ import annotations

from datetime import date

import pytest

from exporter.domains.cost.freshness import clip_windows
from exporter.domains.cost.kpis import (
    CostRow,
    budget_forecast,
    budget_used,
    cost_by_window,
    cost_per_transaction,
    month_days,
    window_bounds,
)

TODAY = date(2027, 4, 20)
WINDOWS = window_bounds(TODAY)


def usd(day: int, amount: float) -> CostRow:
    return (f"2027-04-{day:02d}", "checkout", "payments", "aws", "Compute", "USD", amount)


def eur(day: int, amount: float) -> CostRow:
    return (f"2027-04-{day:02d}", "checkout", "payments", "azure", "Compute", "EUR", amount)


# USD every day from the 1st to the 19th; EUR only on the 2nd (and 0.0 on the 15th).
ROWS = [usd(d, 10.0) for d in range(1, 20)] + [eur(2, 40.0)]
REQUESTS = {("checkout", f"2027-04-{d:02d}"): 100.0 for d in range(1, 20)}


class TestCostPerTransactionPerCurrency:
    def test_a_currency_without_a_line_in_the_window_has_no_value(self) -> None:
        """EUR has a line on the 2nd only: a 30d and mtd value (40 / 1900), none for
        7d or 1d, where it would have read 0."""
        out = cost_per_transaction(ROWS, REQUESTS, WINDOWS, "2027-04-19", "2027-04-01")
        assert out[("7d", "checkout", "USD")].value == pytest.approx(70.0 / 700)
        assert ("7d", "checkout", "EUR") not in out
        assert ("1d", "checkout", "EUR") not in out
        assert out[("mtd", "checkout", "EUR")].value == pytest.approx(40.0 / 1900)
        assert out[("30d", "checkout", "EUR")].value == pytest.approx(40.0 / 1900)

    def test_a_line_of_zero_is_a_value_of_zero(self) -> None:
        """A line that is there with 0 (usage covered by a commitment, billed view) is
        a cost of 0, not an absence."""
        rows = [*ROWS, eur(15, 0.0)]
        out = cost_per_transaction(rows, REQUESTS, WINDOWS, "2027-04-19", "2027-04-01")
        assert out[("7d", "checkout", "EUR")].value == 0.0
        assert ("1d", "checkout", "EUR") not in out

    def test_no_requests_no_value(self) -> None:
        out = cost_per_transaction(ROWS, {}, WINDOWS, "2027-04-19", "2027-04-01")
        assert out == {}


class TestCostWindows:
    def test_days_past_the_data_end_are_not_counted_and_empty_windows_are_absent(
        self,
    ) -> None:
        """Data through the 18th: 1d (the 19th) has no day left, so no series; 7d is the
        13th..18th."""
        windows = clip_windows(WINDOWS, "2027-04-18")
        assert "1d" not in windows
        assert windows["7d"] == ("2027-04-13", "2027-04-18")
        out = cost_by_window(ROWS, windows)
        assert out[("7d", "checkout", "payments", "aws", "Compute", "USD")] == 60.0
        assert not any(k[0] == "1d" for k in out)
        # last_month (March) has no line: no series.
        assert not any(k[0] == "last_month" for k in out)

    def test_no_data_end_means_no_window(self) -> None:
        assert clip_windows(WINDOWS, None) == {}


class TestBudgets:
    def test_a_budget_without_a_line_on_its_complete_days_is_absent(self) -> None:
        """Complete days exist (the 1st..19th) but the budget's owner has no line on
        them: no used ratio and no forecast, rather than 0."""
        days = month_days(TODAY, "2027-04-01", "2027-04-19")
        assert budget_used({}, 1000.0, days["mtd"]) is None
        assert budget_forecast({}, TODAY, days) is None

    def test_a_budget_with_lines(self) -> None:
        """190 over 19 complete days of a 30-day month: used 0.19, forecast 300."""
        daily = {f"2027-04-{d:02d}": 10.0 for d in range(1, 20)}
        days = month_days(TODAY, "2027-04-01", "2027-04-19")
        status = budget_used(daily, 1000.0, days["mtd"])
        assert status is not None and status.used_ratio == pytest.approx(0.19)
        forecast = budget_forecast(daily, TODAY, days)
        assert forecast is not None and forecast.forecast == pytest.approx(300.0)
