"""Catalog: the services and teams of external service catalogs (Backstage), merged with
the config's services; the platform templates services use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.domain import Domain, Parts, SourceRef, Tables

if TYPE_CHECKING:
    from exporter.core.source import Source


def _parts() -> Parts:
    from exporter.domains.catalog import metrics, store
    from exporter.domains.catalog.records import CatalogListing
    from exporter.domains.catalog.settings import CatalogSection, CatalogServiceFields

    return Parts(
        service_fields=CatalogServiceFields,
        section=CatalogSection,
        provider=metrics.collect,
        refresh=store.record_services,
        refresh_after=frozenset({CatalogListing}),
        load_catalog=store.load_catalog,
    )


def _tables() -> Tables:
    from exporter.domains.catalog import store

    return Tables(migrations={"catalog": store.MIGRATIONS}, writers=store.WRITERS)


def _backstage() -> type[Source]:
    from exporter.domains.catalog.sources.backstage import BackstageSource

    return BackstageSource


DOMAIN = Domain(
    name="catalog",
    parts=_parts,
    tables=_tables,
    keys=("catalog",),
    service_keys=("registered_at", "tags", "annotations"),
    refs=(SourceRef("backstage", _backstage),),
    always=True,  # it provides the catalog every other domain joins on
    reads=frozenset({"catalog"}),
    time_driven=False,
    sandbox=("exporter.domains.catalog.sandbox",),
)
