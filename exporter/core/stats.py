"""The small statistics every domain's KPIs share: quantiles, checked ratios and histograms.

Pure functions. ``None`` stands for "no data": a KPI over nothing is absent, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


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
