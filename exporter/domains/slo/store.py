"""Read queries behind the SLO metrics: good and bad events per window from stored history.

No tables of its own: probe SLIs read the probe domain's rollups (whole buckets) and
raw results (the window's edges), and request SLIs read the traffic domain's counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.core.periods import Span, rolling
from exporter.core.store import Store
from exporter.domains.probe import store as probe_store
from exporter.domains.slo.kpis import EventCounts
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import LATENCY_BUCKETS, WindowCounts


@dataclass
class ProbeWindows:
    """Every service's probe checks per rolling window ending at ``now``: each window is
    read once per render, for all SLOs, from the probe rollups plus exact raw edges
    (:func:`exporter.domains.probe.store.span_counts`)."""

    store: Store
    now: float
    _counts: dict[float, dict[str, probe_store.ProbeCounts]] = field(default_factory=dict)

    def counts(self, service: str, seconds: float) -> probe_store.ProbeCounts | None:
        """``service``'s checks started in (now - seconds, now]; None without any."""
        if seconds not in self._counts:
            span = rolling(self.now, seconds)
            self._counts[seconds] = probe_store.span_counts(self.store, span, self.now)
        return self._counts[seconds].get(service)


def probe_availability_events(
    probes: ProbeWindows, service: str, windows: Mapping[str, float]
) -> dict[str, EventCounts]:
    """Checks and failed checks of ``service`` started in (now - window, now], per window."""
    out = {}
    for name, seconds in windows.items():
        c = probes.counts(service, seconds)
        out[name] = EventCounts(c.checks, c.checks - c.successes) if c else EventCounts(0, 0)
    return out


def probe_latency_events(
    probes: ProbeWindows, service: str, windows: Mapping[str, float], threshold: float
) -> dict[str, EventCounts]:
    """Successful checks, and those slower than ``threshold``, per window.

    A check is fast when its duration is at most the threshold (a bucket bound of
    the duration histogram): the same test as the ``le`` bucket the recording rules read.
    """
    out = {}
    for name, seconds in windows.items():
        c = probes.counts(service, seconds)
        out[name] = EventCounts(c.successes, c.slower_than(threshold)) if c else EventCounts(0, 0)
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
    now: float | None = None  # what the render sees as now (default: the store's clock)
    _probe: dict[Span, dict[str, probe_store.ProbeCounts]] = field(default_factory=dict)
    _traffic: dict[Span, dict[str, WindowCounts]] = field(default_factory=dict)

    def events(self, sli: str, service: str, span: Span, threshold: float | None) -> EventCounts:
        """Events of ``service``'s ``sli`` (``probe-availability``, ``probe-latency``,
        ``requests-availability`` or ``requests-latency``) in ``span``."""
        if sli.startswith("probe-"):
            if span not in self._probe:
                self._probe[span] = probe_store.span_counts(self.store, span, self.now)
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
