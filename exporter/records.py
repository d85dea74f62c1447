"""Normalised, immutable records that sources produce and the store keeps.

A source turns upstream JSON into these records and nothing else; every KPI is
computed from them. Each record has a ``key``: its upstream identity, so that a
re-poll or a restart upserts instead of double-counting. Times are Unix seconds
(UTC), durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One synthetic HTTP check of one service's endpoint."""

    service: str
    probe: str
    started_at: float
    duration_seconds: float
    success: bool
    # "" on success; otherwise one of exporter.kpis.uptime.FAILURE_REASONS.
    reason: str
    status_code: int | None = None

    @property
    def key(self) -> str:
        # A probe never starts twice at the same instant, so this is unique.
        return f"{self.service}/{self.probe}/{self.started_at:.6f}"


@dataclass(frozen=True, slots=True)
class CatalogEntity:
    """One entity of an external service catalog (a Backstage Component, System or Group).

    ``team`` is the name part of the owner's entity ref; ``repos`` are
    ``github:owner/repo`` or ``gitlab:group/project``; ``routes`` and
    ``cost_tags`` come from the configured annotation keys.
    """

    source: str
    kind: str  # "component", "system" or "group"
    namespace: str
    name: str
    team: str
    system: str = ""
    type: str = ""
    lifecycle: str = ""
    tags: tuple[str, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    repos: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    cost_tags: tuple[str, ...] = ()
    registered_at: float | None = None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.kind}:{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class CatalogListing:
    """Everything one catalog source lists at ``listed_at``: the whole set, not a delta.

    Storing it replaces that source's entities, so an entity that left the
    catalog leaves the store (and ``/metrics``) in the same transaction.
    """

    source: str
    listed_at: float
    entities: tuple[CatalogEntity, ...]

    @property
    def key(self) -> str:
        return self.source
