"""The statistics every domain shares (exporter/core/stats.py), on hand-checked values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.stats import LogBins, add_counts, cumulative_counts, histogram, quantile, share


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


class TestShare:
    def test_is_the_part_over_the_total(self) -> None:
        assert share(1, 4, "bad events") == 0.25

    def test_nothing_happened_is_absent(self) -> None:
        assert share(0, 0, "bad events") is None

    @pytest.mark.parametrize("part", [5, -1])
    def test_a_part_outside_the_total_names_what_it_counts(self, part: int) -> None:
        with pytest.raises(ValueError, match=f"^bad events {part} outside 0..4$"):
            share(part, 4, "bad events")


class TestHistogram:
    def test_buckets_count_values_at_or_below_each_bound(self) -> None:
        """[0.1, 0.5, 0.5, 3] over bounds 0.1, 0.5, 1: 1, 3 and 3 (3 is in +Inf only)."""
        assert cumulative_counts([0.5, 3.0, 0.1, 0.5], [0.1, 0.5, 1.0]) == [1, 3, 3]

    def test_histogram_adds_the_sum_and_the_count(self) -> None:
        counts, total, n = histogram(iter([0.5, 3.0, 0.1, 0.5]), [0.1, 0.5, 1.0])
        assert (counts, total, n) == ([1, 3, 3], pytest.approx(4.1), 4)

    def test_no_values_is_empty_buckets(self) -> None:
        assert histogram([], [1.0, 2.0]) == ([0, 0], 0, 0)


class TestLogBins:
    """Fixed logarithmic bins: quantiles within 1 % of the exact ones, merged by adding."""

    def test_hand_checked_quantiles_are_within_one_percent(self) -> None:
        """0.1, 0.2, 0.3, 0.4 s: exact p50 0.25 s and p95 0.385 s; from the bins 0.2490 s
        and 0.3868 s."""
        bins = LogBins(alpha=0.01)
        counts: dict[int, int] = {}
        add_counts(counts, ((bins.index(v), 1) for v in (0.1, 0.2, 0.3, 0.4)))
        assert round(bins.quantile(counts, 0.5) or 0, 4) == 0.2490
        assert round(bins.quantile(counts, 0.95) or 0, 4) == 0.3868
        assert bins.quantile({}, 0.5) is None

    @settings(max_examples=200, derandomize=True, deadline=None, database=None)
    @given(st.floats(min_value=1.0000001e-6, max_value=1e4, allow_nan=False))
    def test_every_value_is_within_alpha_of_its_bin(self, value: float) -> None:
        bins = LogBins(alpha=0.01)
        assert abs(bins.value(bins.index(value)) - value) <= 0.01 * value * (1 + 1e-9)

    def test_values_up_to_the_floor_share_one_bin_below_the_others(self) -> None:
        bins = LogBins(alpha=0.01, floor=1e-6)
        assert bins.index(0.0) == bins.index(1e-6) < bins.index(1.0000001e-6)
        assert bins.value(bins.index(0.0)) == 1e-6

    def test_merged_bins_give_the_quantiles_of_all_values(self) -> None:
        bins = LogBins()
        a = {bins.index(v): 1 for v in (0.01, 0.02)}
        b = {bins.index(v): 1 for v in (0.03, 0.04)}
        merged = add_counts(dict(a), b.items())
        whole = add_counts({}, ((bins.index(v), 1) for v in (0.01, 0.02, 0.03, 0.04)))
        assert merged == whole
        assert bins.quantile(merged, 1.0) == bins.value(bins.index(0.04))

    def test_several_quantiles_at_once_are_each_quantile(self) -> None:
        """The hand-checked bins above: p50 0.2490 s and p95 0.3868 s in one pass; none empty."""
        bins = LogBins(alpha=0.01)
        counts = add_counts({}, ((bins.index(v), 1) for v in (0.1, 0.2, 0.3, 0.4)))
        got = bins.quantiles(counts, (0.5, 0.95, 0.0, 1.0))
        assert {q: round(v, 4) for q, v in got.items()} == {
            0.5: 0.2490,
            0.95: 0.3868,
            0.0: round(bins.value(bins.index(0.1)), 4),
            1.0: round(bins.value(bins.index(0.4)), 4),
        }
        assert got == {q: bins.quantile(counts, q) for q in (0.5, 0.95, 0.0, 1.0)}
        assert bins.quantiles({}, (0.5,)) == {}
