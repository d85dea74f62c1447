"""Uptime, the pure KPI function (docs/kpis.md, Probes): successes over all checks of a
window. Probe latency quantiles are :func:`exporter.core.stats.quantile` (tests/core/test_stats.py).
"""

from __future__ import annotations

import pytest

from exporter.domains.probe.kpis import CheckCounts, uptime_ratio


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
