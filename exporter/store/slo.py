"""Read queries behind the SLO metrics: good and bad events per window from stored history.

No tables of its own: probe SLIs read ``probe_results`` (the probe domain), and
request SLIs read the traffic domain's per-minute counts.
"""

from __future__ import annotations

from collections.abc import Mapping

from exporter.kpis.slo import EventCounts
from exporter.store.core import Store


def probe_availability_events(
    store: Store, service: str, now: float, windows: Mapping[str, float]
) -> dict[str, EventCounts]:
    """Checks and failed checks of ``service`` started in (now - window, now], per window."""
    return _probe_events(store, service, now, windows, "1", "NOT success")


def probe_latency_events(
    store: Store, service: str, now: float, windows: Mapping[str, float], threshold: float
) -> dict[str, EventCounts]:
    """Successful checks, and those slower than ``threshold``, per window.

    A check is fast when its duration is at most the threshold: the same test as the
    histogram's ``le`` bucket the recording rules read.
    """
    return _probe_events(
        store, service, now, windows, "success", "success AND duration > :threshold", threshold
    )


def _probe_events(
    store: Store,
    service: str,
    now: float,
    windows: Mapping[str, float],
    counted: str,
    bad: str,
    threshold: float = 0.0,
) -> dict[str, EventCounts]:
    names = list(windows)
    cols = ", ".join(
        f"SUM(started_at > :s{i} AND {counted}), SUM(started_at > :s{i} AND {bad})"
        for i in range(len(names))
    )
    params: dict[str, float | str] = {f"s{i}": now - windows[n] for i, n in enumerate(names)}
    params.update(service=service, oldest=now - max(windows.values()), now=now, threshold=threshold)
    row = store.query_one(
        f"SELECT {cols} FROM probe_results "
        "WHERE service = :service AND started_at > :oldest AND started_at <= :now",
        params,
    )
    out = {}
    for i, name in enumerate(names):
        total = int(row[2 * i] or 0) if row else 0
        out[name] = EventCounts(total, int(row[2 * i + 1] or 0) if row else 0)
    return out


def request_events(
    store: Store, now: float, windows: Mapping[str, float], threshold: float | None = None
) -> dict[tuple[str, str], EventCounts]:
    """Per (service, window): requests and 5xx answers, or, with ``threshold``, requests
    in the latency histogram and those slower than the threshold (a bucket bound)."""
    from exporter.kpis.traffic import LATENCY_BUCKETS
    from exporter.store.traffic import window_counts

    out = {}
    fast_upto = None
    if threshold is not None:
        fast_upto = next(i for i, b in enumerate(LATENCY_BUCKETS) if abs(b - threshold) < 1e-9)
    for key, counts in window_counts(store, now, windows).items():
        if fast_upto is None:
            out[key] = EventCounts(counts.requests, counts.codes[4])
        else:
            total = counts.latency_observations
            out[key] = EventCounts(total, total - sum(counts.buckets[: fast_upto + 1]))
    return out
