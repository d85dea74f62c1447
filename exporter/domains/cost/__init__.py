"""Cost: billing exports and cost APIs allocated to services; cost per transaction, budgets."""

from exporter.core.domain import Domain
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.cost import alerts, attribution, metrics, store
from exporter.domains.cost.records import CostContribution
from exporter.domains.cost.settings import CostSection, CostServiceFields
from exporter.domains.cost.sources.aws_cost import AwsCostSource
from exporter.domains.cost.sources.azure_cost import AzureCostSource
from exporter.domains.cost.sources.focus import FocusSource
from exporter.domains.cost.sources.request_totals import RequestTotalsSource

DOMAIN = Domain(
    name="cost",
    service_fields=CostServiceFields,
    section=CostSection,
    sources=(FocusSource, AwsCostSource, AzureCostSource, RequestTotalsSource),
    migrations={"cost": store.MIGRATIONS},
    writers=store.WRITERS,
    provider=metrics.collect,
    # Of the traffic, only the totals of days already over (cost per transaction).
    reads=frozenset({"cost", "catalog", "traffic_days_over"}),
    # Stored cost follows the catalog: its keys are re-resolved after every catalog or
    # cost poll (the refresh writes cost_idents, so the provider is rendered again).
    refresh=attribution.refresh,
    refresh_after=frozenset({CatalogListing, CostContribution}),
    alerts=alerts.rules,
    sandbox=("exporter.domains.cost.sandbox.billing",),
)
