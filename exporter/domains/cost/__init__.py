"""Cost: billing exports and cost APIs allocated to services; cost per transaction, budgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.domain import Domain, Parts, SourceRef, Tables

if TYPE_CHECKING:
    from exporter.core.source import Source


def _parts() -> Parts:
    from exporter.domains.catalog.records import CatalogListing
    from exporter.domains.cost import alerts, attribution, metrics
    from exporter.domains.cost.records import CostContribution
    from exporter.domains.cost.settings import CostSection, CostServiceFields

    return Parts(
        service_fields=CostServiceFields,
        section=CostSection,
        provider=metrics.collect,
        # Stored cost follows the catalog: its keys are re-resolved after every catalog or
        # cost poll (the refresh writes cost_idents, so the provider is rendered again).
        refresh=attribution.refresh,
        refresh_after=frozenset({CatalogListing, CostContribution}),
        alerts=alerts.rules,
    )


def _tables() -> Tables:
    from exporter.domains.cost import store

    return Tables(migrations={"cost": store.MIGRATIONS}, writers=store.WRITERS)


def _focus() -> type[Source]:
    from exporter.domains.cost.sources.focus import FocusSource

    return FocusSource


def _aws_cost() -> type[Source]:
    from exporter.domains.cost.sources.aws_cost import AwsCostSource

    return AwsCostSource


def _azure_cost() -> type[Source]:
    from exporter.domains.cost.sources.azure_cost import AzureCostSource

    return AzureCostSource


def _request_totals() -> type[Source]:
    from exporter.domains.cost.sources.request_totals import RequestTotalsSource

    return RequestTotalsSource


DOMAIN = Domain(
    name="cost",
    parts=_parts,
    tables=_tables,
    keys=("cost",),
    service_keys=("cost",),
    refs=(
        SourceRef("focus", _focus),
        SourceRef("aws_cost", _aws_cost),
        SourceRef("azure_cost", _azure_cost),
        SourceRef("request_totals", _request_totals),
    ),
    # Of the traffic, only the totals of days already over (cost per transaction).
    reads=frozenset({"cost", "catalog", "traffic_days_over"}),
    sandbox=("exporter.domains.cost.sandbox.billing",),
)
