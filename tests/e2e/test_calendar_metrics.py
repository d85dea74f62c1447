"""The calendar windows as exposed, at the five fixed instants: cost, budget, uptime,
request availability and the SLO month, from one small hand-checked history.

History, for every day from two months before the instant through its day:
10 USD of checkout cost (today's partial cost included: it must not count), one probe
check at 12:00 UTC and one gateway minute at 12:00 UTC (100 requests). On the 1st of
each month the check fails and the minute has 10 answers 5xx; on other days the check
succeeds and one answer of the 100 is 5xx. The budget is 1000 USD a month.

With L the days of last month, C the closed days of this month and D its length:
``platform_cost`` is 10 L and 10 C, the used ratios 10 L / 1000 and 10 C / 1000, the
forecast 10 D (the daily rate is 10 in either month), last month's uptime (L - 1) / L and
its availability 1 - (L - 1 + 10) / 100 L.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from exporter.config import Config
from exporter.core.store import write_records
from exporter.domains import open_store, render_context
from exporter.domains.cost import metrics as cost_metrics
from exporter.domains.cost.records import CostContribution, CostDay
from exporter.domains.probe import metrics as probe_metrics
from exporter.domains.probe.records import ProbeResult
from exporter.domains.slo import metrics as slo_metrics
from exporter.domains.traffic import metrics as traffic_metrics
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.records import TrafficDelta
from tests.support.exposition import Exposition
from tests.support.instants import INSTANTS

# instant: (L, C, D, checks so far this month); the check and the minute at 12:00 of today
# count once 12:00 has come (at the leap day's 12:00, exactly).
CASES = {
    "first-of-month": (28, 0, 31, 0),  # February 2027; nothing of March has closed
    "end-of-30-day-month": (31, 29, 30, 30),  # March; April 1-29 closed, 30 checks
    "leap-day": (31, 28, 29, 29),  # January; Feb 1-28 closed, 29 checks (12:00 is now)
    "new-years-eve": (30, 30, 31, 31),  # November; Dec 1-30 closed, 31 checks
    "mid-month": (30, 13, 31, 13),  # June; July 1-13 closed, 13 checks (09:30)
}


def history(now: float) -> list[object]:
    today = datetime.fromtimestamp(now, UTC).date()
    first = (today.replace(day=1) - timedelta(days=40)).replace(day=1)
    days, d = [], first
    while d <= today:
        days.append(d)
        d += timedelta(days=1)
    cost = CostContribution(
        "focus",
        "export.csv",
        "sig",
        tuple(
            CostDay(x.isoformat(), "checkout", "payments", "aws", "Compute", "USD", 10.0, 10.0)
            for x in days
        ),
        # Daily usage lines: each day's usage has arrived, today's too (today never counts).
        covered_days=tuple(x.isoformat() for x in days),
    )
    out: list[object] = [cost]
    for x in days:
        noon = datetime(x.year, x.month, x.day, 12, tzinfo=UTC).timestamp()
        bad = x.day == 1
        out.append(ProbeResult("checkout", "health", noon, 0.05, not bad, "status" if bad else ""))
        codes = (0, 90, 0, 0, 10) if bad else (0, 99, 0, 0, 1)
        buckets = (100, *([0] * (len(traffic_store._BUCKET_COLS) - 1)))
        out.append(TrafficDelta("nginx", "checkout", noon, x.isoformat(), codes, buckets, 1.0, 100))
    return out


def config(tmp_path: Path) -> Config:
    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {
                "name": "checkout",
                "team": "payments",
                "routes": ["shop.example.com/checkout"],
                "probes": [{"name": "health", "url": "http://checkout.test/health"}],
                "cost": {"tags": {"service": "checkout"}},
                "slo": {"availability": {"objective": 99}},
            }
        ],
        sources={"focus": {"paths": [str(tmp_path)]}},
        cost={
            "budgets": [{"scope": "team", "name": "payments", "monthly": 1000, "currency": "USD"}]
        },
    )


def exposed(tmp_path: Path, now: float) -> Exposition:
    cfg = config(tmp_path)
    store = open_store(str(cfg.state.path))
    with store.transaction() as tx:
        write_records(tx, history(now))
    ctx = render_context(cfg, store, now)
    families: Iterable[Metric] = [
        f
        for module in (cost_metrics, probe_metrics, traffic_metrics, slo_metrics)
        for f in module.collect(ctx)
    ]
    exp = Exposition({f.name: f for f in families})
    store.close()
    return exp


@pytest.mark.parametrize("name", list(CASES))
class TestAtEachInstant:
    def test_cost_and_budget(self, tmp_path: Path, name: str) -> None:
        last, closed, days, _checks = CASES[name]
        exp = exposed(tmp_path, INSTANTS[name])
        assert exp.value("platform_cost", service="checkout", window="last_month") == 10 * last
        mtd = exp.value("platform_cost", service="checkout", window="mtd")
        assert mtd == (10 * closed if closed else None)  # absent on the 1st, never 0
        used = {lb["window"]: v for lb, v in exp.samples("platform_budget_used_ratio")}
        assert used["last_month"] == pytest.approx(10 * last / 1000)
        assert used.get("mtd") == (pytest.approx(10 * closed / 1000) if closed else None)
        samples = {lb["window"]: v for lb, v in exp.samples("platform_budget_samples")}
        assert samples == {"mtd": closed, "last_month": last}
        # One budget only (team payments), so its series need no `name` match.
        assert exp.value("platform_budget_forecast", team="payments") == pytest.approx(10 * days)
        ratio = exp.value("platform_budget_forecast_ratio", team="payments")
        assert ratio == pytest.approx(10 * days / 1000)

    def test_uptime_and_availability(self, tmp_path: Path, name: str) -> None:
        last, _closed, _days, checks = CASES[name]
        exp = exposed(tmp_path, INSTANTS[name])
        uptime = {lb["window"]: v for lb, v in exp.samples("platform_service_uptime_ratio")}
        assert uptime["last_month"] == pytest.approx((last - 1) / last)
        assert uptime.get("mtd") == (pytest.approx((checks - 1) / checks) if checks else None)
        samples = {lb["window"]: v for lb, v in exp.samples("platform_service_uptime_samples")}
        assert (samples["last_month"], samples["mtd"]) == (last, checks)

        avail = {lb["window"]: v for lb, v in exp.samples("platform_service_availability_ratio")}
        assert avail["last_month"] == pytest.approx(1 - (last - 1 + 10) / (100 * last))
        want = 1 - (checks - 1 + 10) / (100 * checks) if checks else None
        assert avail.get("mtd") == (pytest.approx(want) if want is not None else None)
        requests = {lb["window"]: v for lb, v in exp.samples("platform_service_request_samples")}
        assert (requests["last_month"], requests["mtd"]) == (100 * last, 100 * checks)

    def test_slo_calendar_month(self, tmp_path: Path, name: str) -> None:
        """Objective 99%: one failed check in a month of L spends 1 / L of the checks
        against a budget of 0.01."""
        last, _closed, _days, checks = CASES[name]
        exp = exposed(tmp_path, INSTANTS[name])
        remaining = {
            lb["window"]: v
            for lb, v in exp.samples(
                "platform_slo_error_budget_remaining_ratio", slo="availability"
            )
        }
        assert remaining["last_month"] == pytest.approx(1 - (1 / last) / 0.01)
        if checks:
            assert remaining["month"] == pytest.approx(1 - (1 / checks) / 0.01)
        else:
            assert "month" not in remaining  # the month has no event yet: no budget figure
        assert exp.value("platform_slo_samples", slo="availability", window="month") == checks


def test_the_cases_are_the_instants_months() -> None:
    """The table covers every fixed instant, and its L, C and D are the calendar's (a check
    on the hand-written table)."""
    assert set(CASES) == set(INSTANTS)
    for name, (last, closed, days, _checks) in CASES.items():
        today = datetime.fromtimestamp(INSTANTS[name], UTC).date()
        previous = today.replace(day=1) - timedelta(days=1)
        assert last == calendar.monthrange(previous.year, previous.month)[1]
        assert days == calendar.monthrange(today.year, today.month)[1]
        assert closed == (today - date(today.year, today.month, 1)).days
