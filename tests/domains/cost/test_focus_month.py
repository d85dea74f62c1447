"""A FOCUS month shaped like a real bill, read by the real FOCUS and request-totals
sources, with every cost KPI checked against totals worked out by hand.

The bill is April 2027 for one service (checkout, team payments), seen at
2027-04-20 10:00 UTC, so yesterday is the 19th. Per day it holds, in USD:

* on-demand usage, one line per day: billed 10, effective 10;
* usage covered by a Savings Plan, one line per day: billed 0, effective 3 (the
  amortisation of the plan's upfront purchase, 1, and of its recurring fee, 2);
* a support fee (``ChargeCategory=Usage``) from the 1st to the next 1st: 30, i.e. 1 a day;
* the plan's recurring fee (``Purchase``, ``Recurring``) over the month: billed 60
  (2 a day), effective 0 (its amortisation is in the covered usage);
* the plan's upfront purchase (``Purchase``, ``One-Time``) in the first hour of the
  1st: billed 360, effective 0;
* tax over the month: 15, i.e. 0.5 a day;
* a credit of -5 on the 10th.

Effective cost is then 14.5 a day (9.5 on the 10th), billed cost 13.5 a day (plus
360 on the 1st, minus 5 on the 10th). Requests are 1000 a day, the 19th included.

Phase 1: the 19th's usage has not arrived, although the spread fees and the tax
reach it. The data end is the end of the 18th, and no KPI counts the 19th.
Phase 2: a second file brings the 19th's usage and a correction of -2 for the 5th
(which proves nothing about the day it arrives on).

FOCUS column meanings: https://learn.microsoft.com/en-us/cloud-computing/finops/focus/metadata
(BilledCost excludes the amortisation of upfront charges; EffectiveCost includes it).
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.domains.cost.sources import focus_reader
from tests.domains.cost.test_cost_per_transaction import prometheus_fake
from tests.domains.cost.test_focus_source import HEADER as SOURCE_HEADER
from tests.support.exposition import Exposition

NOW = datetime(2027, 4, 20, 10, 0, tzinfo=UTC).timestamp()
# The FOCUS source tests' columns, and ChargeFrequency.
HEADER = [*SOURCE_HEADER, "ChargeFrequency"]
TAGS = json.dumps({"service": "checkout"})
MONTH = ("2027-04-01T00:00:00Z", "2027-05-01T00:00:00Z")
BUDGET = 3000.0
REQUESTS = 1000.0


def row(
    billed: float,
    effective: float,
    period: tuple[str, str],
    category: str = "Usage",
    frequency: str = "Usage-Based",
    charge_class: str = "",
    service_category: str = "Compute",
) -> list[str]:
    return [
        str(billed),
        str(effective),
        "USD",
        *period,
        category,
        charge_class,
        "AWS",
        "Amazon EC2",
        service_category,
        "111122223333",
        "eu-west-1",
        "i-checkout",
        TAGS,
        frequency,
    ]


def day(n: int) -> tuple[str, str]:
    """The UTC day April ``n`` as a charge period."""
    start = datetime(2027, 4, n, tzinfo=UTC)
    end = datetime.fromtimestamp(start.timestamp() + 86400, UTC)
    return (start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ"))


def usage(n: int) -> Iterator[list[str]]:
    yield row(10, 10, day(n))
    yield row(0, 3, day(n))  # covered by the Savings Plan


def first_file() -> list[list[str]]:
    """Usage of the 1st to the 18th, and every charge of the month known on the 20th."""
    rows = [r for n in range(1, 19) for r in usage(n)]
    rows += [
        row(30, 30, MONTH, service_category="Support"),
        row(60, 0, MONTH, category="Purchase", frequency="Recurring"),
        row(
            360,
            0,
            ("2027-04-01T00:00:00Z", "2027-04-01T01:00:00Z"),
            category="Purchase",
            frequency="One-Time",
        ),
        row(15, 15, MONTH, category="Tax", frequency="Recurring", service_category="Other"),
        row(-5, -5, day(10), category="Credit", frequency="One-Time"),
    ]
    return rows


def second_file() -> list[list[str]]:
    """The 19th's usage and a correction of the 5th."""
    return [*usage(19), row(-2, -2, day(5), charge_class="Correction")]


def write(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(rows)


def config(tmp_path: Path, amount: str = "effective") -> Config:
    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}}
        ],
        sources={
            "focus": {"paths": [str(tmp_path / "exports")]},
            "request_totals": {"url": "http://prometheus.test", "lookback_days": 25},
        },
        cost={
            "amount": amount,
            "budgets": [{"scope": "team", "name": "payments", "monthly": BUDGET}],
        },
    )


class Month:
    """The daemon over the month's exports, polled at NOW."""

    def __init__(self, tmp_path: Path, amount: str = "effective") -> None:
        self.exports = tmp_path / "exports"
        self.exports.mkdir()
        write(self.exports / "2027-04-a.csv", first_file())
        totals = {f"2027-04-{n:02d}": {"checkout": REQUESTS} for n in range(1, 20)}
        app = prometheus_fake(totals, [])
        self.daemon = Daemon(config(tmp_path, amount), transport=app.transport(), clock=lambda: NOW)

    def poll(self) -> Exposition:
        asyncio.run(self.daemon.poll_all())
        return Exposition.parse(self.daemon.holder.current.text)

    def arrive(self) -> Exposition:
        write(self.exports / "2027-04-b.csv", second_file())
        return self.poll()

    def close(self) -> None:
        asyncio.run(self.daemon.shutdown())


def cost(exp: Exposition, window: str) -> float | None:
    """platform_cost of checkout over ``window``, summed over categories; None if absent."""
    found = exp.samples("platform_cost", service="checkout", window=window, currency="USD")
    return sum(v for _, v in found) if found else None


def cpt(exp: Exposition, window: str) -> float | None:
    return exp.value(
        "platform_cost_per_transaction", service="checkout", window=window, currency="USD"
    )


def budget(exp: Exposition, metric: str, **labels: str) -> float | None:
    """The team budget's sample of ``metric`` (``name`` is a label here); None if absent."""
    found = [
        v
        for found_labels, v in exp.samples(metric, scope="team", team="payments", **labels)
        if found_labels["name"] == "payments"
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def data_end(exp: Exposition) -> float | None:
    return exp.value("platform_cost_data_end_timestamp_seconds", source="focus")


def midnight(n: int) -> float:
    return datetime(2027, 4, n, tzinfo=UTC).timestamp()


@pytest.fixture(params=["arrow", "stdlib"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both CSV paths: pyarrow's grouped batches and the stdlib row-by-row reader."""
    if request.param == "stdlib":
        monkeypatch.setattr(focus_reader, "_read_csv", _stdlib)
    return str(request.param)


def _stdlib(path: Path, gzipped: bool, agg: Any) -> None:
    focus_reader._read_csv_stdlib(path, gzipped, agg)


class TestARealMonth:
    def test_yesterday_missing_then_arrived(self, tmp_path: Path, reader: str) -> None:
        """Effective cost (the default). Phase 1, data through the 18th:
        7d = the 13th..18th = 6 x 14.5 = 87; 30d = mtd = 18 x 14.5 - 5 = 256;
        1d (the 19th) and last_month (no March data) are absent; cost per transaction
        divides by the requests of the same days only; the forecast is 256 / 18 x 30.
        Phase 2, data through the 19th: 1d = 14.5; 7d = 7 x 14.5 = 101.5;
        30d = mtd = 19 x 14.5 - 5 - 2 = 268.5; forecast 268.5 / 19 x 30."""
        month = Month(tmp_path)
        exp = month.poll()
        assert data_end(exp) == midnight(19)
        assert cost(exp, "1d") is None
        assert cost(exp, "7d") == pytest.approx(87.0)
        assert cost(exp, "30d") == pytest.approx(256.0)
        assert cost(exp, "mtd") == pytest.approx(256.0)
        assert cost(exp, "last_month") is None
        assert cpt(exp, "1d") is None
        assert cpt(exp, "7d") == pytest.approx(87.0 / 6000)
        assert cpt(exp, "30d") == pytest.approx(256.0 / 18000)
        assert cpt(exp, "mtd") == pytest.approx(256.0 / 18000)
        assert cpt(exp, "last_month") is None
        assert budget(exp, "platform_budget_used_ratio", window="mtd") == pytest.approx(
            256.0 / BUDGET
        )
        assert budget(exp, "platform_budget_samples", window="mtd") == 18
        assert budget(exp, "platform_budget_used_ratio", window="last_month") is None
        assert budget(exp, "platform_budget_forecast") == pytest.approx(256.0 / 18 * 30)

        exp = month.arrive()
        assert data_end(exp) == midnight(20)
        assert cost(exp, "1d") == pytest.approx(14.5)
        assert cost(exp, "7d") == pytest.approx(101.5)
        assert cost(exp, "30d") == pytest.approx(268.5)
        assert cost(exp, "mtd") == pytest.approx(268.5)
        assert cpt(exp, "1d") == pytest.approx(14.5 / 1000)
        assert cpt(exp, "7d") == pytest.approx(101.5 / 7000)
        assert cpt(exp, "30d") == pytest.approx(268.5 / 19000)
        assert cpt(exp, "mtd") == pytest.approx(268.5 / 19000)
        assert budget(exp, "platform_budget_used_ratio", window="mtd") == pytest.approx(
            268.5 / BUDGET
        )
        assert budget(exp, "platform_budget_samples", window="mtd") == 19
        assert budget(exp, "platform_budget_forecast") == pytest.approx(268.5 / 19 * 30)
        month.close()

    def test_billed_cost_counts_the_purchase_once_and_no_amortisation(self, tmp_path: Path) -> None:
        """``cost.amount: billed``: the upfront 360 on the 1st and the recurring fee's 2 a
        day, never the amortisation in EffectiveCost. Phase 1: 7d = 6 x 13.5 = 81;
        mtd = 18 x 13.5 + 360 - 5 = 598. Phase 2: 1d = 13.5;
        mtd = 19 x 13.5 + 360 - 5 - 2 = 609.5; forecast 609.5 / 19 x 30."""
        month = Month(tmp_path, amount="billed")
        exp = month.poll()
        assert cost(exp, "1d") is None
        assert cost(exp, "7d") == pytest.approx(81.0)
        assert cost(exp, "mtd") == pytest.approx(598.0)
        assert cpt(exp, "7d") == pytest.approx(81.0 / 6000)
        exp = month.arrive()
        assert cost(exp, "1d") == pytest.approx(13.5)
        assert cost(exp, "mtd") == pytest.approx(609.5)
        assert cpt(exp, "mtd") == pytest.approx(609.5 / 19000)
        assert budget(exp, "platform_budget_forecast") == pytest.approx(609.5 / 19 * 30)
        month.close()

    def test_only_one_day_usage_lines_prove_a_day(self, tmp_path: Path) -> None:
        """A file of fees, tax, a purchase, a credit and a correction alone proves no day:
        the source has no data end and every cost KPI is absent."""
        exports = tmp_path / "exports"
        exports.mkdir()
        rows = [r for r in first_file() if r[5] != "Usage" or r[3:5] == list(MONTH)]  # fees etc.
        rows.append(row(-2, -2, day(18), charge_class="Correction"))
        write(exports / "fees.csv", rows)
        app = prometheus_fake({}, [])
        daemon = Daemon(config(tmp_path), transport=app.transport(), clock=lambda: NOW)
        asyncio.run(daemon.poll_all())
        exp = Exposition.parse(daemon.holder.current.text)
        assert data_end(exp) is None
        assert exp.samples("platform_cost") == []
        assert exp.samples("platform_cost_per_transaction") == []
        assert budget(exp, "platform_budget_used_ratio", window="mtd") is None
        assert budget(exp, "platform_budget_forecast") is None
        asyncio.run(daemon.shutdown())
