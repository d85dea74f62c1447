"""The demo's billing: the sandbox writes FOCUS exports and serves request totals
and an Azure fake; the real sources read them and the cost KPIs come out as the
scenario says, at each of the suite's fixed instants (tests/support/instants.py).

The sandbox and the daemon share one :class:`~exporter.core.clock.FixedClock`, so
"today" is the instant's UTC day whatever the machine's date is. Which windows
have closed days at an instant is the product's documented rule
(:func:`~exporter.domains.cost.kpis.window_bounds`): on the 1st no day of the month has
closed, so month-to-date cost and the budget ratios are absent, not 0.
"""

from __future__ import annotations

import asyncio
import calendar
import gzip
from datetime import date, timedelta
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.core.clock import FixedClock, utc_datetime
from exporter.core.sandbox.scenario import Scenario
from exporter.daemon import Daemon
from exporter.domains.cost.kpis import window_bounds
from exporter.domains.cost.sandbox import billing
from exporter.sandbox import platform
from tests.support.exposition import Exposition
from tests.support.instants import at, each_instant
from tests.support.prometheus import promtool_check_metrics

COST_SOURCES = {"focus", "request_totals", "azure_cost"}
# The demo's USD budget of team payments (exporter/domains/cost/sandbox/billing.py configure).
PAYMENTS_TEAM = ("checkout", "payments-api")
PAYMENTS_BUDGET = 6000.0


def days_of(window: tuple[str, str]) -> list[date]:
    first, last = (date.fromisoformat(d) for d in window)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def expected_cost(scenario: Scenario, service: str, days: list[date], today: date) -> float:
    """What the bill says ``service`` cost on ``days``: its daily lines, and checkout's
    correction of -12 three days before today (search's credit is in another service)."""
    total = sum(
        billing.daily_cost(scenario, service, category, d)
        for d in days
        for _, category, _ in billing.DAILY_COST[service]
    )
    if service == "checkout" and today - timedelta(days=3) in days:
        total -= 12.0
    return total


def poll_cost_sources(scenario: Scenario, tmp_path: Path, clock: FixedClock) -> Exposition:
    """The demo config's catalog, then its cost sources, polled once each at ``clock``; the exposition after."""
    server = platform.start(scenario)
    try:
        config = Config(**platform.demo_config(server.url, tmp_path, scenario, 0))
        daemon = Daemon(config, clock=clock)
        mine = [s for s in daemon.sources if s.kind in COST_SOURCES]
        assert {s.kind for s in mine} == COST_SOURCES
        # The catalog first, as the daemon orders first polls: cost attributes to its services.
        mine = [s for s in daemon.sources if s.is_catalog] + mine

        async def poll() -> None:
            try:
                for src in mine:
                    assert await daemon.poll(src), daemon.health[src.name].last_error
            finally:
                # The HTTP clients belong to this event loop: close them in it.
                await daemon.shutdown()

        asyncio.run(poll())
        text = daemon.holder.current.text
        assert promtool_check_metrics(text) == ""
        return Exposition.parse(text)
    finally:
        server.stop()


class TestBillingScenario:
    def test_exports_hold_a_correction_a_credit_and_untagged_lines(self, tmp_path: Path) -> None:
        files = billing.write_exports(Scenario(clock=FixedClock(at("mid-month"))), tmp_path)
        text = "".join(gzip.decompress(f.read_bytes()).decode() for f in files)
        assert ",Correction," in text
        assert ",Credit," in text
        assert ",AWS Data Transfer,Networking," in text

    @each_instant
    def test_the_bill_covers_the_previous_month_and_this_one(
        self, tmp_path: Path, instant: float
    ) -> None:
        """Every day from the 1st of the previous month (or 40 days back) to today is billed."""
        today = utc_datetime(instant).date()
        days = billing.billed_days(today)
        previous = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
        assert days[0] == min(previous, today - timedelta(days=billing.DAYS))
        assert days[-1] == today
        assert len(days) == (today - days[0]).days + 1
        files = billing.write_exports(Scenario(clock=FixedClock(instant)), tmp_path)
        months = sorted(f.parent.name.removeprefix("billing_period=") for f in files)
        assert months[0] == days[0].strftime("%Y-%m")
        assert months[-1] == today.strftime("%Y-%m")

    @each_instant
    def test_the_demo_shows_cost_and_cost_per_transaction(
        self, tmp_path: Path, instant: float
    ) -> None:
        clock = FixedClock(instant)
        scenario = Scenario(clock=clock)
        exp = poll_cost_sources(scenario, tmp_path, clock)
        today = utc_datetime(instant).date()
        windows = window_bounds(today)

        week = days_of(windows["7d"])
        cost = expected_cost(scenario, "checkout", week, today)
        requests = sum(billing.daily_requests(scenario, "checkout", d) for d in week)
        assert exp.value(
            "platform_cost_per_transaction", service="checkout", window="7d", currency="USD"
        ) == pytest.approx(cost / requests, rel=1e-6)
        got = sum(v for _, v in exp.samples("platform_cost", service="checkout", window="7d"))
        assert got == pytest.approx(cost, rel=1e-6)
        assert exp.value(
            "platform_cost", service="unallocated", window="1d", currency="USD"
        ) == pytest.approx(billing.UNTAGGED_NETWORK)
        # Recommendations also runs on Azure, billed in EUR: its own series.
        assert exp.samples("platform_cost", service="recommendations", currency="EUR")
        self.check_the_months(exp, scenario, windows, today)

    @staticmethod
    def check_the_months(
        exp: Exposition, scenario: Scenario, windows: dict[str, tuple[str, str]], today: date
    ) -> None:
        """Month to date and last month, in cost and in the budget.

        Month to date has values once a day of the month has closed, and nothing at all
        (not 0) before; last month is there at every instant. The last-month budget counts
        the month's days every cost source covers (platform_budget_samples says how many:
        the Azure source reads 31 days back); the forecast extends this month's run rate,
        or last month's while no day of this month has closed.
        """

        def payments(days: list[date]) -> float:
            return sum(expected_cost(scenario, s, days, today) for s in PAYMENTS_TEAM)

        def used(window: str) -> float | None:
            return exp.value(
                "platform_budget_used_ratio", scope="team", team="payments", window=window
            )

        previous = days_of(windows["last_month"])
        checkout = sum(
            v for _, v in exp.samples("platform_cost", service="checkout", window="last_month")
        )
        assert checkout == pytest.approx(
            expected_cost(scenario, "checkout", previous, today), rel=1e-6
        )
        covered = exp.value(
            "platform_budget_samples", scope="team", team="payments", window="last_month"
        )
        assert covered is not None and 1 <= covered <= len(previous)
        complete = previous[len(previous) - int(covered) :]
        assert used("last_month") == pytest.approx(payments(complete) / PAYMENTS_BUDGET, rel=1e-6)

        days_in_month = calendar.monthrange(today.year, today.month)[1]
        forecast = exp.value("platform_budget_forecast_ratio", scope="team", team="payments")
        if "mtd" not in windows:
            assert today.day == 1
            assert exp.samples("platform_cost", window="mtd") == []
            assert used("mtd") is None
            run_rate = payments(complete) / len(complete)
            assert forecast == pytest.approx(run_rate * days_in_month / PAYMENTS_BUDGET, rel=1e-6)
            return
        month = days_of(windows["mtd"])
        checkout = sum(v for _, v in exp.samples("platform_cost", service="checkout", window="mtd"))
        assert checkout == pytest.approx(
            expected_cost(scenario, "checkout", month, today), rel=1e-6
        )
        assert used("mtd") == pytest.approx(payments(month) / PAYMENTS_BUDGET, rel=1e-6)
        run_rate = payments(month) / len(month)
        assert forecast == pytest.approx(run_rate * days_in_month / PAYMENTS_BUDGET, rel=1e-6)
