"""Delivery: CI/CD runs, deployments, commits and incidents; the four DORA keys and time
to production."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.domain import Domain, Parts, SourceRef, Tables

if TYPE_CHECKING:
    from exporter.core.source import Source


def _parts() -> Parts:
    from exporter.domains.catalog.records import CatalogListing
    from exporter.domains.delivery import attribution, metrics
    from exporter.domains.delivery.settings import DeliverySection, DeliveryServiceFields
    from exporter.domains.delivery.webhooks.endpoints import endpoints

    return Parts(
        service_fields=DeliveryServiceFields,
        section=DeliverySection,
        provider=metrics.collect,
        # At start and after every catalog poll: stored records follow their repo's service
        # (see delivery.attribution); a database from before the rollups gets them built.
        refresh=attribution.refresh,
        refresh_after=frozenset({CatalogListing}),
        webhooks=endpoints,
    )


def _tables() -> Tables:
    from exporter.domains.delivery import store
    from exporter.domains.delivery.webhooks import store as webhook_store

    return Tables(
        migrations={"delivery": store.MIGRATIONS},
        writers={**store.WRITERS, **webhook_store.WRITERS},
    )


def _github() -> type[Source]:
    from exporter.domains.delivery.sources.github import GitHubSource

    return GitHubSource


def _gitlab() -> type[Source]:
    from exporter.domains.delivery.sources.gitlab import GitLabSource

    return GitLabSource


def _jenkins() -> type[Source]:
    from exporter.domains.delivery.sources.jenkins import JenkinsSource

    return JenkinsSource


DOMAIN = Domain(
    name="delivery",
    parts=_parts,
    tables=_tables,
    keys=("delivery",),
    service_keys=("ci",),
    refs=(
        SourceRef("github", _github),
        SourceRef("gitlab", _gitlab),
        SourceRef("jenkins", _jenkins),
    ),
    # The incident domain's writers store the on-call incidents among delivery's.
    reads=frozenset({"delivery", "catalog", "incident"}),
    sandbox=(
        "exporter.domains.delivery.sandbox.github",
        "exporter.domains.delivery.sandbox.gitlab",
        "exporter.domains.delivery.sandbox.jenkins",
    ),
)
