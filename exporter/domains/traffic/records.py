"""The records gateway sources produce and the traffic store keeps.

Each record has a ``key``: its upstream identity, so that a re-poll or a restart
upserts instead of double-counting. Times are Unix seconds (UTC), durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TrafficDelta:
    """Requests a gateway served under one identity (route, host and path) in one UTC
    minute, as read by one poll.

    Deltas add up: the store sums every delta of an (identity, source, minute). ``batch``
    names the read that produced it (a log offset, a poll's end time), so the same read
    is never counted twice. ``latency_buckets`` are non-cumulative counts per bound of
    :data:`exporter.domains.traffic.kpis.LATENCY_BUCKETS` plus one overflow count, or ``None``
    when the gateway gives no distribution (CloudWatch, Prometheus queries).
    """

    source: str
    service: str
    minute: float
    batch: str
    # Requests by status class 1xx, 2xx, 3xx, 4xx, 5xx.
    codes: tuple[int, int, int, int, int]
    latency_buckets: tuple[int, ...] | None = None
    latency_sum: float = 0.0
    latency_count: int = 0
    # The gateway identity the requests were counted under (see
    # :mod:`exporter.domains.traffic.attribution`); ``service`` is what it resolved to
    # when read. Empty: the source named the service itself (pinned).
    ident: str = ""

    @property
    def key(self) -> str:
        return f"{self.source}/{self.batch}/{self.ident or self.service}/{self.minute:.0f}"


@dataclass(frozen=True, slots=True)
class TrafficLatency:
    """A latency quantile a gateway computed itself over a window, in seconds."""

    source: str
    service: str
    window: str
    quantile: float
    seconds: float
    at: float
    ident: str = ""  # as for TrafficDelta: resolved to a service when read

    @property
    def key(self) -> str:
        return f"{self.source}/{self.ident or self.service}/{self.window}/{self.quantile:g}"


@dataclass(frozen=True, slots=True)
class ConsumerSeen:
    """An API consumer (Kong consumer, API key from a log) that sent traffic to a service.

    ``consumer`` is a digest of the upstream identity, never a metric label.
    """

    source: str
    service: str
    consumer: str
    at: float
    ident: str = ""  # as for TrafficDelta

    @property
    def key(self) -> str:
        return f"{self.source}/{self.ident or self.service}/{self.consumer}"
