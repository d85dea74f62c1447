"""The small statistics every domain's KPIs share: quantiles, checked ratios, histograms,
and fixed logarithmic bins (a quantile sketch that merges by adding counts).

Pure functions. ``None`` stands for "no data": a KPI over nothing is absent, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile with linear interpolation between closest ranks; None if empty.

    Same definition as numpy's default (``method="linear"``).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within [0, 1]")
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def share(part: int, total: int, what: str) -> float | None:
    """``part / total``; None when ``total`` is 0 (nothing happened). ``what`` names the
    part in the error raised when it lies outside ``0..total``."""
    if total <= 0:
        return None
    if not 0 <= part <= total:
        raise ValueError(f"{what} {part} outside 0..{total}")
    return part / total


def cumulative_counts(values: Sequence[float], bounds: Sequence[float]) -> list[int]:
    """For each bound, how many values are at or below it (a histogram's ``le`` buckets)."""
    return [sum(1 for v in values if v <= b) for b in bounds]


def histogram(values: Iterable[float], bounds: Sequence[float]) -> tuple[list[int], float, int]:
    """Cumulative bucket counts for ``bounds``, the sum and the count."""
    vals = list(values)
    return cumulative_counts(vals, bounds), sum(vals), len(vals)


@dataclass(frozen=True, slots=True)
class LogBins:
    """Fixed logarithmic bins for positive values (durations): a mergeable quantile sketch.

    Bin ``i`` holds the values in ``(gamma**(i-1), gamma**i]`` with
    ``gamma = (1 + alpha) / (1 - alpha)``, and stands for ``2 gamma**i / (gamma + 1)``,
    which is within ``alpha`` (relative) of every value in it: DDSketch's mapping with
    fixed bins. Values at or below ``floor`` share one bin that stands for ``floor``
    (within ``floor`` absolute). Counts per bin add, so buckets merge by summing them in
    SQL. :meth:`quantile` interpolates between closest ranks as
    :func:`exporter.core.stats.quantile` does, so it is within ``alpha`` relative of the
    exact value (each of the two interpolated values is).
    """

    alpha: float = 0.01
    floor: float = 1e-6

    @property
    def gamma(self) -> float:
        return (1 + self.alpha) / (1 - self.alpha)

    def _log_index(self, value: float) -> int:
        return math.ceil(math.log(value) / math.log(self.gamma) - 1e-12)

    def index(self, value: float) -> int:
        """The bin holding ``value``: one below every other bin for values up to ``floor``."""
        if value <= self.floor:
            return self._log_index(self.floor) - 1
        return self._log_index(value)

    def value(self, index: int) -> float:
        """The value bin ``index`` stands for."""
        return _bin_value(self, index)

    def quantile(self, counts: Mapping[int, int], q: float) -> float | None:
        """The q-quantile of the values counted in ``counts`` (bin -> count); None if empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be within [0, 1]")
        n = sum(counts.values())
        if n <= 0:
            return None
        pos = (n - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        v_lo = v_hi = None
        seen = 0
        for index in sorted(counts):
            seen += counts[index]
            if v_lo is None and seen > lo:
                v_lo = self.value(index)
            if seen > hi:
                v_hi = self.value(index)
                break
        assert v_lo is not None and v_hi is not None
        return v_lo + (v_hi - v_lo) * (pos - lo)

    def quantiles(self, counts: Mapping[int, int], qs: Sequence[float]) -> dict[float, float]:
        """:meth:`quantile` of each of ``qs`` (none if nothing is counted), the bins sorted
        once for all of them."""
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise ValueError("q must be within [0, 1]")
        n = sum(counts.values())
        if n <= 0:
            return {}
        # Each q interpolates between the values of two ranks (0-based, in sorted order).
        ranks = sorted({r for q in qs for r in (math.floor((n - 1) * q), math.ceil((n - 1) * q))})
        at: dict[int, float] = {}
        seen, i = 0, 0
        for index in sorted(counts):
            seen += counts[index]
            while i < len(ranks) and ranks[i] < seen:
                at[ranks[i]] = self.value(index)
                i += 1
            if i == len(ranks):
                break
        out: dict[float, float] = {}
        for q in qs:
            pos = (n - 1) * q
            lo, hi = math.floor(pos), math.ceil(pos)
            out[q] = at[lo] + (at[hi] - at[lo]) * (pos - lo)
        return out


@cache
def _bin_value(bins: LogBins, index: int) -> float:
    # Computed once per bin: a render reads a few thousand quantiles from a few hundred
    # bins, and the logarithm and power each time were a good part of it.
    if index < bins._log_index(bins.floor):
        return bins.floor
    return 2 * bins.gamma**index / (bins.gamma + 1)


def add_counts(into: dict[int, int], rows: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Add (bin, count) pairs into ``into``; returns it."""
    for index, n in rows:
        into[index] = into.get(index, 0) + n
    return into
