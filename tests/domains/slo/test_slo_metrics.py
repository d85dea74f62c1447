"""The exporter's SLO metrics: error ratios, burn rates and budget left from stored history.

Hand-checked tables. Probe SLIs read stored probe results; request SLIs read the
gateway minutes of the traffic domain. No events in a window: no ratio, and
``platform_slo_samples`` says 0.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.core.store import write_records
from exporter.domains import open_store, render_context
from exporter.domains.probe.records import ProbeResult
from exporter.domains.slo import metrics as slo_metrics
from exporter.domains.slo.kpis import EventCounts, budget_remaining, burn_rate, error_ratio
from exporter.domains.traffic.kpis import LATENCY_BUCKETS
from exporter.domains.traffic.records import TrafficDelta

NOW = 1_800_000_000.0
HOUR = 3600.0


class TestBudgetMaths:
    def test_error_ratio_is_bad_over_all(self) -> None:
        assert error_ratio(EventCounts(60, 3)) == 0.05

    def test_no_events_means_no_ratio(self) -> None:
        assert error_ratio(EventCounts(0, 0)) is None

    def test_more_bad_than_total_is_a_bug(self) -> None:
        with pytest.raises(ValueError):
            error_ratio(EventCounts(2, 3))

    def test_burn_rate_and_budget_left(self) -> None:
        # 0.05 with a 99.9% objective burns 50x; 43 bad of 86 400 leaves 0.502 of the budget.
        assert burn_rate(0.05, 0.999) == pytest.approx(50.0)
        assert budget_remaining(43 / 86400, 0.999) == pytest.approx(0.50231, abs=1e-5)
        assert budget_remaining(0.002, 0.999) == pytest.approx(-1.0)


def _config(tmp_path: Path, slo: dict[str, object]) -> Config:
    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {
                "name": "checkout",
                "team": "payments",
                "probes": [{"name": "health", "url": "http://checkout.test/health"}],
                "slo": slo,
            }
        ],
    )


def _collect(
    config: Config, records: list[object], now: float = NOW
) -> dict[str, dict[tuple[str, ...], float]]:
    store = open_store(str(config.state.path))
    if records:
        with store.transaction() as tx:
            write_records(tx, records)
    ctx = render_context(config, store, now)
    out = {
        family.name: {
            tuple(s.labels[k] for k in ("slo", "window") if k in s.labels): s.value
            for s in family.samples
        }
        for family in slo_metrics.collect(ctx)
    }
    store.close()
    return out


def _requests_config(tmp_path: Path) -> Config:
    """checkout with request-based availability (99%) and latency (95% under 0.5 s) SLOs."""
    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {
                "name": "checkout",
                "team": "payments",
                "slo": {
                    "availability": {"objective": 99, "sli": "requests"},
                    "latency": {"objective": 95, "threshold": "500ms", "sli": "requests"},
                },
            }
        ],
    )


def _check(at: float, ok: bool, duration: float = 0.05) -> ProbeResult:
    return ProbeResult("checkout", "health", at, duration, ok, "" if ok else "status")


class TestProbeSLOs:
    def test_windows_count_checks_started_inside_them(self, tmp_path: Path) -> None:
        """Checks every minute for two hours; the last 3 of the last hour failed; one check
        in the first hour took 0.3s."""
        records: list[object] = []
        for i in range(120):
            at = NOW - i * 60 - 30
            records.append(_check(at, ok=i >= 3, duration=0.3 if i == 100 else 0.05))
        config = _config(
            tmp_path,
            {
                "availability": {"objective": 99.9},
                "latency": {"objective": 99, "threshold": "250ms"},
            },
        )
        got = _collect(config, records)
        ratio = got["platform_slo_sli_error_ratio"]
        assert ratio[("availability", "5m")] == pytest.approx(3 / 5)
        assert ratio[("availability", "1h")] == pytest.approx(3 / 60)
        assert ratio[("availability", "30d")] == pytest.approx(3 / 120)
        assert ratio[("latency", "1h")] == 0.0
        assert ratio[("latency", "2h")] == pytest.approx(1 / 117)
        assert got["platform_slo_burn_rate"][("availability", "1h")] == pytest.approx(50.0)
        # NOW is mid-January 2027: the month so far holds all the checks, December none.
        assert got["platform_slo_error_budget_remaining_ratio"] == {
            ("availability", "30d"): pytest.approx(1 - (3 / 120) / 0.001),
            ("latency", "30d"): pytest.approx(1 - (1 / 117) / 0.01),
            ("availability", "month"): pytest.approx(1 - (3 / 120) / 0.001),
            ("latency", "month"): pytest.approx(1 - (1 / 117) / 0.01),
        }
        assert got["platform_slo_samples"][("availability", "last_month")] == 0
        assert got["platform_slo_samples"][("availability", "1h")] == 60
        assert got["platform_slo_samples"][("latency", "1h")] == 57  # successful checks only
        assert got["platform_slo_objective_ratio"] == {
            ("availability",): 0.999,
            ("latency",): 0.99,
        }

    def test_no_checks_means_no_ratio_and_zero_samples(self, tmp_path: Path) -> None:
        got = _collect(_config(tmp_path, {"availability": {"objective": 99.9}}), [])
        assert got["platform_slo_sli_error_ratio"] == {}
        assert got["platform_slo_burn_rate"] == {}
        assert got["platform_slo_error_budget_remaining_ratio"] == {}
        assert got["platform_slo_samples"][("availability", "30d")] == 0


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class TestCalendarWindows:
    """Every SLO is also judged over the calendar month so far and the previous month."""

    def leap_february(self) -> list[object]:
        """A check an hour through February 2028 (29 days: 696), 7 of them failed; one at
        00:00:00 on March 1 (failed) and one at 00:04 (ok) belong to March."""
        records: list[object] = []
        start = at("2028-02-01T00:00:00")
        for i in range(29 * 24):
            records.append(_check(start + i * HOUR, ok=i % 100 != 0))
        records.append(_check(at("2028-03-01T00:00:00"), ok=False))
        records.append(_check(at("2028-03-01T00:04:00"), ok=True))
        return records

    @pytest.mark.parametrize("window", ["30d", "month"])
    def test_at_00_05_on_the_first_the_month_holds_five_minutes(
        self, tmp_path: Path, window: str
    ) -> None:
        config = _config(tmp_path, {"window": window, "availability": {"objective": 99}})
        got = _collect(config, self.leap_february(), at("2028-03-01T00:05:00"))
        ratio = got["platform_slo_sli_error_ratio"]
        assert ratio[("availability", "month")] == 0.5
        assert ratio[("availability", "last_month")] == pytest.approx(7 / 696)
        assert got["platform_slo_samples"][("availability", "last_month")] == 696
        remaining = got["platform_slo_error_budget_remaining_ratio"]
        assert remaining[("availability", "last_month")] == pytest.approx(1 - (7 / 696) / 0.01)
        assert remaining[("availability", "month")] == pytest.approx(1 - 50.0)

    def test_a_month_slo_has_no_rolling_period_window(self, tmp_path: Path) -> None:
        config = _config(tmp_path, {"window": "month", "availability": {"objective": 99}})
        got = _collect(config, self.leap_february(), at("2028-02-29T12:00:00"))
        windows = {w for _slo, w in got["platform_slo_samples"]}
        assert windows == {"5m", "30m", "1h", "2h", "6h", "1d", "3d", "month", "last_month"}
        # February up to 12:00 on the 29th: 28 x 24 + 13 checks (00:00 to 12:00), 7 failed.
        assert got["platform_slo_samples"][("availability", "month")] == 28 * 24 + 13
        assert got["platform_slo_sli_error_ratio"][("availability", "month")] == pytest.approx(
            7 / (28 * 24 + 13)
        )
        # January 2028 had no checks: no last_month ratio, and 0 samples say so.
        assert got["platform_slo_samples"][("availability", "last_month")] == 0
        assert ("availability", "last_month") not in got["platform_slo_sli_error_ratio"]

    def test_request_slis_over_the_closed_month(self, tmp_path: Path) -> None:
        """New Year's Day 2028: December's minutes (one at 23:59 on Dec 31) count, the
        first minute of 2028 does not."""
        i_fast = LATENCY_BUCKETS.index(0.5)
        fast = [0] * (len(LATENCY_BUCKETS) + 1)
        fast[i_fast], fast[i_fast + 1] = 90, 10

        def minute(when: str, batch: str, codes: tuple[int, int, int, int, int]) -> TrafficDelta:
            return TrafficDelta("kong", "checkout", at(when), batch, codes, tuple(fast), 1.0, 100)

        deltas: list[object] = [
            minute("2027-12-01T00:00:00", "a", (0, 99, 0, 0, 1)),
            minute("2027-12-31T23:59:00", "b", (0, 97, 0, 0, 3)),
            minute("2028-01-01T00:00:00", "c", (0, 0, 0, 0, 100)),
        ]
        config = _requests_config(tmp_path)
        got = _collect(config, deltas, at("2028-01-01T00:00:30"))
        ratio = got["platform_slo_sli_error_ratio"]
        assert ratio[("availability", "last_month")] == pytest.approx(4 / 200)
        assert ratio[("latency", "last_month")] == pytest.approx(20 / 200)
        assert ratio[("availability", "month")] == 1.0


class TestRequestSLOs:
    def test_request_availability_and_latency_from_gateway_minutes(self, tmp_path: Path) -> None:
        """Two minutes in the last 5m: 100 requests with 2 5xx, then 100 with 8 5xx; of the
        200 timed requests, 10 were slower than 0.5s."""
        i_fast = LATENCY_BUCKETS.index(0.5)
        fast = [0] * (len(LATENCY_BUCKETS) + 1)
        fast[i_fast] = 95
        fast[i_fast + 1] = 5
        deltas: list[object] = [
            TrafficDelta(
                "kong", "checkout", NOW - 120, "a", (0, 98, 0, 0, 2), tuple(fast), 10.0, 100
            ),
            TrafficDelta(
                "kong", "checkout", NOW - 60, "b", (0, 92, 0, 0, 8), tuple(fast), 10.0, 100
            ),
        ]
        config = _requests_config(tmp_path)
        got = _collect(config, deltas)
        ratio = got["platform_slo_sli_error_ratio"]
        assert ratio[("availability", "5m")] == pytest.approx(10 / 200)
        assert ratio[("latency", "5m")] == pytest.approx(10 / 200)
        assert got["platform_slo_burn_rate"][("availability", "5m")] == pytest.approx(5.0)
        assert got["platform_slo_samples"][("availability", "30d")] == 200
