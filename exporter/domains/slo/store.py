"""Read queries behind the SLO metrics: good and bad events per window from stored history.

No tables of its own: probe SLIs read ``probe_results`` (the probe domain), and
request SLIs read the traffic domain's per-minute counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.core.periods import Span
from exporter.core.store import Store
from exporter.domains.probe import store as probe_store
from exporter.domains.slo.kpis import EventCounts
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import LATENCY_BUCKETS, WindowCounts


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
    from exporter.domains.traffic.store import window_counts

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


@dataclass
class SpanEvents:
    """Good and bad events of the built-in SLIs over calendar spans (month to date, last
    month), reading each span's probe and traffic counts once for every SLO."""

    store: Store
    _probe: dict[Span, dict[str, probe_store.ProbeCounts]] = field(default_factory=dict)
    _traffic: dict[Span, dict[str, WindowCounts]] = field(default_factory=dict)

    def events(self, sli: str, service: str, span: Span, threshold: float | None) -> EventCounts:
        """Events of ``service``'s ``sli`` (``probe-availability``, ``probe-latency``,
        ``requests-availability`` or ``requests-latency``) in ``span``."""
        if sli.startswith("probe-"):
            if span not in self._probe:
                self._probe[span] = probe_store.span_counts(self.store, span)
            p = self._probe[span].get(service)
            if p is None:
                return EventCounts(0, 0)
            if sli == "probe-availability":
                return EventCounts(p.checks, p.checks - p.successes)
            assert threshold is not None
            return EventCounts(p.successes, p.slower_than(threshold))
        if span not in self._traffic:
            self._traffic[span] = traffic_store.span_counts(self.store, span)
        t = self._traffic[span].get(service)
        if t is None:
            return EventCounts(0, 0)
        if sli == "requests-availability":
            return EventCounts(t.requests, t.codes[4])
        assert threshold is not None
        upto = next(i for i, b in enumerate(LATENCY_BUCKETS) if abs(b - threshold) < 1e-9)
        total = t.latency_observations
        return EventCounts(total, total - sum(t.buckets[: upto + 1]))
