"""Traffic KPIs: request rate, error ratios, availability and latency quantiles, from counts.

Pure functions over the per-minute counts the gateway sources store (see docs/kpis.md):

* request rate over W = requests in W / W seconds;
* error ratio over W = requests of class 5xx (or 4xx) / all requests in W;
* availability over W = 1 - 5xx ratio;
* latency quantile over W = ``histogram_quantile`` over the summed latency buckets of W
  (linear interpolation inside the bucket, as Prometheus does), so it is exact to
  within one bucket;
* daily requests = the requests of one closed UTC day.

No data in a window gives ``None``, never 0.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Latency histogram bounds in seconds, for every gateway. SLO latency thresholds must be
# one of them. 25 ms, 50 ms, 100 ms, 1 s, 2 s, 5 s, 10 s, 30 s and 60 s are bucket bounds
# of both Kong 2.x and 3.x, so Kong histograms convert exactly there.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
)

# KPI windows, in seconds.
WINDOWS: dict[str, float] = {
    "5m": 300.0,
    "1h": 3600.0,
    "1d": 86400.0,
    "7d": 7 * 86400.0,
    "30d": 30 * 86400.0,
}
QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
CODE_CLASSES: tuple[str, ...] = ("1xx", "2xx", "3xx", "4xx", "5xx")
UNMAPPED = "unmapped"
# The error classes reported as ratios, in exposition order, with their index in the codes.
ERROR_CLASSES: tuple[tuple[str, int], ...] = (("5xx", 4), ("4xx", 3))
# Consumers count as active when seen within this long.
ACTIVE_CONSUMER_WINDOW = 86400.0
# Quantiles a gateway computed are shown while fresher than this.
GATEWAY_LATENCY_MAX_AGE = 3600.0


@dataclass(frozen=True)
class WindowCounts:
    """What a service's gateways served in one window."""

    codes: tuple[int, int, int, int, int]
    # Non-cumulative latency counts per bound, plus overflow; all 0 without a distribution.
    buckets: tuple[int, ...]

    @property
    def requests(self) -> int:
        return sum(self.codes)

    @property
    def latency_observations(self) -> int:
        return sum(self.buckets)


@dataclass(frozen=True)
class WindowKpis:
    """A service's traffic KPIs over one window; ``None`` and absent keys mean no data."""

    requests: int
    rate: float | None
    error_ratios: dict[str, float]  # code class -> ratio, in ERROR_CLASSES order
    availability: float | None
    latency_observations: int
    latency: dict[float, float]  # quantile -> seconds, in QUANTILES order


def ratios(c: WindowCounts) -> tuple[dict[str, float], float | None]:
    """The 5xx and 4xx ratios and the availability of one window's counts."""
    codes, n = c.codes, c.requests
    errors = {cls: r for cls, idx in ERROR_CLASSES if (r := error_ratio(codes[idx], n)) is not None}
    return errors, availability(codes[4], n)


def window_kpis(
    c: WindowCounts | None, seconds: float | None, gateway: Mapping[float, float]
) -> WindowKpis:
    """The KPIs of one window from its counts (None: no traffic row) and the quantiles a
    gateway computed (used where the counts have no latency distribution). ``seconds``
    None (a calendar window) gives no rate and no latency."""
    n = c.requests if c else 0
    errors, avail = ratios(c) if c is not None else ({}, None)
    rate = request_rate(n, seconds) if c is not None and seconds is not None else None
    observed = c.latency_observations if c else 0
    latency: dict[float, float] = {}
    if seconds is not None:
        found = {}
        if c is not None and observed:
            found = histogram_quantiles(
                QUANTILES, LATENCY_BUCKETS, c.buckets[:-1], overflow=c.buckets[-1]
            )
        for q in QUANTILES:
            value = found.get(q, gateway.get(q))
            if value is not None:
                latency[q] = value
    return WindowKpis(n, rate, errors, avail, observed, latency)


def traffic_services(
    routed: Iterable[str], measured: Iterable[str], known: Iterable[str]
) -> list[str]:
    """The services traffic families report, sorted: those the config gives routes or a
    gateway measured, among the ``known`` ones."""
    return sorted((set(routed) | set(measured)) & set(known))


def active_since(now: float) -> float:
    """Where the window of active consumers starts."""
    return now - ACTIVE_CONSUMER_WINDOW


def gateway_latency_since(now: float) -> float:
    """The oldest gateway-computed quantile still shown."""
    return now - GATEWAY_LATENCY_MAX_AGE


def code_class_index(status: int) -> int | None:
    """0..4 for a status 100..599 (1xx..5xx); None for anything else."""
    if 100 <= status <= 599:
        return status // 100 - 1
    return None


def bucket_index(seconds: float) -> int:
    """Index of the first bound >= ``seconds``; ``len(LATENCY_BUCKETS)`` is the overflow."""
    return bisect.bisect_left(LATENCY_BUCKETS, seconds)


def request_rate(requests: float, window_seconds: float) -> float | None:
    """Requests per second over the window; None when nothing was served."""
    if window_seconds <= 0:
        raise ValueError("window must be positive")
    if requests <= 0:
        return None
    return requests / window_seconds


def error_ratio(errors: float, requests: float) -> float | None:
    """errors / requests; None when there were no requests."""
    if requests <= 0:
        return None
    if not 0 <= errors <= requests:
        raise ValueError(f"errors {errors} outside 0..{requests}")
    return errors / requests


def availability(errors_5xx: float, requests: float) -> float | None:
    """1 - the 5xx ratio; None when there were no requests."""
    ratio = error_ratio(errors_5xx, requests)
    return None if ratio is None else 1.0 - ratio


def histogram_quantile(
    q: float, bounds: Sequence[float], counts: Sequence[float], overflow: float = 0.0
) -> float | None:
    """The q-quantile from non-cumulative bucket ``counts`` (one per bound) and ``overflow``.

    Linear interpolation inside the bucket that holds the rank, the lowest bucket
    starting at 0, as PromQL's ``histogram_quantile``. A rank in the overflow bucket
    returns the highest bound. None without observations.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within [0, 1]")
    if len(bounds) != len(counts):
        raise ValueError("one count per bound")
    total = float(sum(counts)) + overflow
    if total <= 0:
        return None
    rank = q * total
    cumulative = 0.0
    lower = 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count > 0 and cumulative + count >= rank:
            return lower + (bound - lower) * (rank - cumulative) / count
        cumulative += count
        lower = bound
    return float(bounds[-1])


def histogram_quantiles(
    qs: Sequence[float], bounds: Sequence[float], counts: Sequence[float], overflow: float = 0.0
) -> dict[float, float]:
    """:func:`histogram_quantile` of each of ``qs`` (q -> seconds; empty without
    observations), in one walk over the buckets."""
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise ValueError("q must be within [0, 1]")
    if len(bounds) != len(counts):
        raise ValueError("one count per bound")
    total = float(sum(counts)) + overflow
    if total <= 0:
        return {}
    pending = sorted((q, q * total) for q in qs)
    out: dict[float, float] = {}
    j = 0
    cumulative = 0.0
    lower = 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count > 0:
            # The first bucket holding a rank is the one histogram_quantile picks for it.
            while j < len(pending) and cumulative + count >= pending[j][1]:
                q, rank = pending[j]
                out[q] = lower + (bound - lower) * (rank - cumulative) / count
                j += 1
        if j == len(pending):
            break
        cumulative += count
        lower = bound
    for q, _ in pending[j:]:
        out[q] = float(bounds[-1])
    return out


def rebucket(
    src_bounds: Sequence[float], src_cumulative: Sequence[float], total: float
) -> list[float]:
    """Cumulative counts at :data:`LATENCY_BUCKETS` from another histogram's cumulative counts.

    Exact where a bound is shared; between two source bounds the count is interpolated
    linearly (the assumption ``histogram_quantile`` makes). ``total`` is the +Inf count.
    """
    points = [(0.0, 0.0), *zip(src_bounds, src_cumulative, strict=True)]
    out: list[float] = []
    for bound in LATENCY_BUCKETS:
        i = bisect.bisect_left([p[0] for p in points], bound)
        if i < len(points) and math.isclose(points[i][0], bound):
            out.append(float(points[i][1]))
        elif i >= len(points):
            # Past the source's last finite bound: only what it counted there is known.
            out.append(float(points[-1][1]))
        else:
            (x0, y0), (x1, y1) = points[i - 1], points[i]
            out.append(y0 + (y1 - y0) * (bound - x0) / (x1 - x0))
    return [min(c, total) for c in out]


def counter_delta(previous: float | None, current: float) -> float:
    """The increase of a counter between two reads; a decrease means it was reset.

    After a reset (a gateway restart) the counter restarted from 0, so everything it
    now shows is new. With no previous read, nothing is known to be new: 0.
    """
    if previous is None:
        return 0.0
    if current < previous:
        return current
    return current - previous
