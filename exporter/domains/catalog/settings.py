"""Settings of the catalog domain: a service's catalog keys, which external components
count as services (``catalog:``), and the Backstage source."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field, field_validator

from exporter.core.settings import (
    Duration,
    HttpUrl,
    Secret,
    Section,
    ServiceFields,
    SourceConfig,
    StrictModel,
)


class CatalogServiceFields(ServiceFields):
    """When a service entered the catalog, and its catalog tags and annotations."""

    # When the service entered the catalog (new services per month, onboarding time).
    registered_at: datetime | None = None
    # Catalog tags and annotations; capability rules of kind "catalog" read them.
    tags: list[str] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("registered_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-01-31T00:00:00Z")
        return value

    def catalog_fields(self) -> dict[str, object]:
        return {
            **super().catalog_fields(),
            "tags": frozenset(t.lower() for t in self.tags),
            "annotations": dict(self.annotations),
            "registered_at": self.registered_at.timestamp() if self.registered_at else None,
        }


class BackstageAnnotationsConfig(StrictModel):
    """Which entity annotations map a Backstage entity to its repos, routes and cost tags.

    Each list is tried in order; values may hold several items separated by commas.
    """

    github_repos: list[str] = Field(default_factory=lambda: ["github.com/project-slug"])
    gitlab_projects: list[str] = Field(default_factory=lambda: ["gitlab.com/project-slug"])
    gateway_routes: list[str] = Field(
        default_factory=lambda: ["platform-kpi-exporter/gateway-routes"]
    )
    cost_tags: list[str] = Field(default_factory=lambda: ["platform-kpi-exporter/cost-tags"])
    # An ISO 8601 time: when the service entered the catalog.
    registered_at: list[str] = Field(
        default_factory=lambda: ["platform-kpi-exporter/registered-at"]
    )


class BackstageSourceConfig(SourceConfig):
    """The Backstage software catalog: components, systems and groups by
    ``GET {base_url}/entities/by-query`` with cursor pagination."""

    # The catalog backend, usually the Backstage backend URL plus /api/catalog.
    base_url: HttpUrl
    token: Secret | None = None
    interval: Duration = 300.0
    page_size: int = Field(default=200, ge=1, le=1000)
    # Component spec.type values that count as services; empty means every component.
    component_types: list[str] = Field(default_factory=list)
    # Only entities in these namespaces; empty means all.
    namespaces: list[str] = Field(default_factory=list)
    annotations: BackstageAnnotationsConfig = Field(default_factory=BackstageAnnotationsConfig)

    # The catalog's services join those of `services[]`.
    adds_services: ClassVar[bool] = True


class CatalogSettings(StrictModel):
    """Which components of an external catalog count, and how long others wait for it."""

    # Components whose spec.lifecycle is one of these count as services (lower case;
    # empty: every lifecycle). Deprecated components are left out by default: they are
    # on their way out, and counting them would hold adoption ratios down.
    lifecycles: list[str] = Field(default_factory=lambda: ["production", "experimental"])
    # Entity kinds whose owner refs name a team. A component owned by another kind
    # (a user, by default) or by nobody is a service without owner: it counts as a
    # service, in no team's figures.
    owner_kinds: list[str] = Field(default_factory=lambda: ["group"])
    # How long sources that attribute records to services (gateways, CI/CD, cost) wait
    # for the catalog's first load before their first poll; past it they go ahead
    # with the config's services, and their stored records are re-attributed later.
    first_load_timeout: Duration = 60.0

    @field_validator("lifecycles", "owner_kinds")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value if v.strip()]


class CatalogSection(Section):
    """The top-level ``catalog:`` key."""

    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
