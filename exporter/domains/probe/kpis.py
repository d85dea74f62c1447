"""Uptime and latency of services from synthetic probe checks.

Definitions (see docs/kpis.md):

* uptime ratio over a window = successful checks / all checks started in the
  window, over all of a service's probes; no checks -> no value.
* probe latency quantile over a window = the q-quantile (linear interpolation
  between closest ranks) of the durations of successful checks in the window, read
  from their latency bins (:data:`BINS`): within 1 % relative of the exact value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.core.stats import LogBins, quantile, share

# The failure reasons a probe can report, bounded so they can be a label: past the
# deadline; the name did not resolve; the connection failed or broke; the TLS handshake
# failed; an unexpected HTTP status; the body (or a TCP answer) did not match; a DNS
# answer was not the one expected.
FAILURE_REASONS = ("timeout", "resolve", "connect", "tls", "status", "body", "answer")
# The phases a probe's duration is cut into, as blackbox_exporter names them.
PHASES = ("resolve", "connect", "tls", "processing", "transfer")

# The windows uptime is reported over, in seconds.
UPTIME_WINDOWS: dict[str, float] = {
    "1h": 3600.0,
    "24h": 86400.0,
    "7d": 7 * 86400.0,
    "30d": 30 * 86400.0,
}
LATENCY_WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86400.0}
LATENCY_QUANTILES = (0.5, 0.95, 0.99)

# Histogram bounds for probe durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Successful check durations are rolled up in these bins for latency quantiles: a
#: quantile read from them is within 1 % (relative) of the exact one, or 1 µs below 1 µs.
BINS = LogBins(alpha=0.01, floor=1e-6)


@dataclass(frozen=True, slots=True)
class CheckCounts:
    """How many checks ran in a window, and how many succeeded."""

    total: int
    successes: int


def uptime_ratio(counts: CheckCounts) -> float | None:
    """Successful checks / all checks; None when nothing ran."""
    return share(counts.successes, counts.total, "successes")


def latency_quantiles(durations: Sequence[float]) -> dict[float, float]:
    """q -> the q-quantile of successful check durations, for each of
    :data:`LATENCY_QUANTILES` that has a value (none without checks)."""
    out: dict[float, float] = {}
    for q in LATENCY_QUANTILES:
        value = quantile(durations, q)
        if value is not None:
            out[q] = value
    return out


def binned_latency_quantiles(bins: Mapping[int, int]) -> dict[float, float]:
    """:func:`latency_quantiles` from the durations' counts per bin of :data:`BINS`,
    within its error bound."""
    return BINS.quantiles(bins, LATENCY_QUANTILES)
