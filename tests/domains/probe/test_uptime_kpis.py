"""Uptime and probe latency, the pure KPI functions (docs/kpis.md, Probes).

Hand-checked values: the ratio is successes over all checks of a window, and a
quantile interpolates linearly between closest ranks (numpy's default).
"""

from __future__ import annotations

import pytest

from exporter.kpis.uptime import CheckCounts, quantile, uptime_ratio


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


class TestQuantile:
    @pytest.mark.parametrize(("q", "expected"), [(0.0, 1.0), (0.5, 2.5), (0.9, 3.7), (1.0, 4.0)])
    def test_interpolates_between_closest_ranks(self, q: float, expected: float) -> None:
        """On [1, 2, 3, 4]: position (n - 1) * q, so q=0.5 is 2.5 and q=0.9 is 3 + 0.7."""
        assert quantile([4.0, 1.0, 3.0, 2.0], q) == pytest.approx(expected)

    def test_one_value_is_every_quantile(self) -> None:
        assert quantile([0.2], 0.5) == 0.2
        assert quantile([0.2], 0.99) == 0.2

    def test_no_values_is_absent(self) -> None:
        assert quantile([], 0.5) is None

    @pytest.mark.parametrize("q", [-0.1, 1.5])
    def test_a_quantile_outside_zero_to_one_is_refused(self, q: float) -> None:
        with pytest.raises(ValueError, match=r"q must be within \[0, 1\]"):
            quantile([1.0, 2.0], q)
