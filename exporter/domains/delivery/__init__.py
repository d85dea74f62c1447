"""Delivery: CI/CD runs, deployments, commits and incidents; the four DORA keys and time
to production."""

from exporter.core.domain import Domain
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.delivery import attribution, metrics, store
from exporter.domains.delivery.settings import DeliverySection, DeliveryServiceFields
from exporter.domains.delivery.sources.github import GitHubSource
from exporter.domains.delivery.sources.gitlab import GitLabSource
from exporter.domains.delivery.sources.jenkins import JenkinsSource
from exporter.domains.delivery.webhooks import store as webhook_store
from exporter.domains.delivery.webhooks.endpoints import endpoints

DOMAIN = Domain(
    name="delivery",
    service_fields=DeliveryServiceFields,
    section=DeliverySection,
    sources=(GitHubSource, GitLabSource, JenkinsSource),
    migrations={"delivery": store.MIGRATIONS},
    writers={**store.WRITERS, **webhook_store.WRITERS},
    provider=metrics.collect,
    # The incident domain's writers store the on-call incidents among delivery's.
    reads=frozenset({"delivery", "catalog", "incident"}),
    # At start and after every catalog poll: stored records follow their repo's service
    # (see delivery.attribution); a database from before the rollups gets them built.
    refresh=attribution.refresh,
    refresh_after=frozenset({CatalogListing}),
    webhooks=endpoints,
    sandbox=(
        "exporter.domains.delivery.sandbox.github",
        "exporter.domains.delivery.sandbox.gitlab",
        "exporter.domains.delivery.sandbox.jenkins",
    ),
)
