"""Catalog: the services and teams of external service catalogs (Backstage), merged with
the config's services; the platform templates services use."""

from exporter.core.domain import Domain
from exporter.domains.catalog import metrics, store
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.catalog.settings import CatalogSection, CatalogServiceFields
from exporter.domains.catalog.sources.backstage import BackstageSource

DOMAIN = Domain(
    name="catalog",
    service_fields=CatalogServiceFields,
    section=CatalogSection,
    sources=(BackstageSource,),
    migrations={"catalog": store.MIGRATIONS},
    writers=store.WRITERS,
    provider=metrics.collect,
    reads=frozenset({"catalog"}),
    time_driven=False,
    refresh=store.record_services,
    refresh_after=frozenset({CatalogListing}),
    load_catalog=store.load_catalog,
    sandbox=("exporter.domains.catalog.sandbox",),
)
