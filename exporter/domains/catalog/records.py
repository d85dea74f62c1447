"""The records of the service catalog: external catalogs' listings, the services seen, and
the pipeline templates CI sources report a service using.

Each record has a ``key``: its upstream identity, so that a re-poll or a restart
upserts instead of double-counting. Times are Unix seconds (UTC), durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.catalog import CatalogEntity


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


@dataclass(frozen=True, slots=True)
class CatalogServicesSeen:
    """Every service of the merged catalog, as (name, team), at ``seen_at``.

    Storing it counts each name the store has never seen as one registration
    (``platform_catalog_services_registered_total{team}``), once and for all.
    """

    seen_at: float
    services: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        return "merged-catalog"


@dataclass(frozen=True, slots=True)
class TemplateUse:
    """A finished pipeline run of a service used a pipeline definition at ``at``.

    ``kind`` is ``"workflow"`` (the run's GitHub workflow file, or a reusable
    workflow it called, as ``owner/repo/.github/workflows/x.yml@ref``) or
    ``"include"`` (a GitLab CI include). Only the latest use per (service, kind,
    ref) is kept: it is what platform template adoption is judged on.
    """

    source: str
    service: str
    kind: str
    ref: str
    at: float

    @property
    def key(self) -> str:
        return f"{self.source}/{self.service}/{self.kind}/{self.ref}"
