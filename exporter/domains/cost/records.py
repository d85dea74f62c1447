"""The records cost sources produce and the cost store keeps.

Each record has a ``key``: its upstream identity, so that a re-poll or a restart
upserts instead of double-counting. Times are Unix seconds (UTC), durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CostDay:
    """Cost of one UTC day for one (attribution key, provider, category, currency).

    Amounts are sums over billing lines and may be negative (credits, corrections).
    ``ident`` is the lines' attribution key (:meth:`CostKey.text
    <exporter.domains.cost.allocation.CostKey.text>`), stored with the cost and resolved
    to a service when the KPIs are computed; ``service`` and ``team`` are what it
    resolved to when read. Without an ``ident`` the cost is pinned to ``service``.
    """

    day: str  # YYYY-MM-DD, UTC
    service: str
    team: str
    provider: str
    category: str
    currency: str
    billed: float
    effective: float
    lines: int = 1
    ident: str = ""

    @property
    def key(self) -> str:
        return "/".join(
            (self.day, self.ident or self.service, self.provider, self.category, self.currency)
        )


@dataclass(frozen=True, slots=True)
class CostContribution:
    """Everything one billing origin says, replacing what it said before.

    An origin is one export file, or one (account, day) answer of a cost API. Re-reading
    an origin replaces its rows, so a changed file or a settled day never double-counts.
    ``final`` origins are never asked for again (each Cost Explorer request is paid).
    """

    source: str
    origin: str
    signature: str
    days: tuple[CostDay, ...]
    final: bool = False
    rows_read: int = 0
    rows_rejected: int = 0
    # Days the origin proves arrived (YYYY-MM-DD): one-day usage lines, or a day a cost API
    # answered with cost. Only these advance the source's data end.
    covered_days: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.source}/{self.origin}"


@dataclass(frozen=True, slots=True)
class RequestTotal:
    """Requests a service served on one closed UTC day."""

    service: str
    day: str  # YYYY-MM-DD, UTC
    requests: float
    source: str

    @property
    def key(self) -> str:
        return f"{self.service}/{self.day}"
