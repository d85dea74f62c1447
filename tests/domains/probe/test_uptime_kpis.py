"""Uptime, the pure KPI function (docs/kpis.md, Probes): successes over all checks of a
window. Probe latency quantiles are :func:`exporter.core.stats.quantile` (tests/core/test_stats.py).
"""

from __future__ import annotations

import pytest

from exporter.domains.probe.kpis import CheckCounts, latency_quantiles, uptime_ratio


class TestUptimeRatio:
    def test_is_successful_checks_over_all_checks(self) -> None:
        """Three successes out of four checks is 0.75."""
        assert uptime_ratio(CheckCounts(total=4, successes=3)) == 0.75

    def test_every_check_failing_is_zero_not_absent(self) -> None:
        assert uptime_ratio(CheckCounts(total=2, successes=0)) == 0.0

    def test_no_checks_is_absent(self) -> None:
        """A window with no checks has no uptime: None, never 0 (the metric is left out)."""
        assert uptime_ratio(CheckCounts(total=0, successes=0)) is None

    @pytest.mark.parametrize("successes", [5, -1])
    def test_successes_outside_the_total_are_refused(self, successes: int) -> None:
        with pytest.raises(ValueError, match=f"successes {successes} outside 0..4"):
            uptime_ratio(CheckCounts(total=4, successes=successes))


class TestLatencyQuantiles:
    def test_median_p95_p99_of_successful_durations(self) -> None:
        """Five durations 0.1..0.5 s: ranks at 4q, so the median is 0.3, p95 is
        0.4 + 0.1 * 0.8 = 0.48 and p99 is 0.4 + 0.1 * 0.96 = 0.496."""
        got = latency_quantiles([0.5, 0.1, 0.3, 0.2, 0.4])
        assert list(got) == [0.5, 0.95, 0.99]
        assert got[0.5] == pytest.approx(0.3)
        assert got[0.95] == pytest.approx(0.48)
        assert got[0.99] == pytest.approx(0.496)

    def test_no_successful_check_has_no_quantile(self) -> None:
        assert latency_quantiles([]) == {}
