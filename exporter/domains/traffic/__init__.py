"""Traffic: API gateway requests, errors and latency per service (Kong, NGINX, CloudWatch,
Prometheus)."""

from exporter.core.domain import Domain
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.traffic import attribution, metrics, store
from exporter.domains.traffic.records import ConsumerSeen, TrafficDelta, TrafficLatency
from exporter.domains.traffic.settings import TrafficSection, TrafficServiceFields
from exporter.domains.traffic.sources.cloudwatch import CloudWatchSource
from exporter.domains.traffic.sources.kong import KongSource
from exporter.domains.traffic.sources.nginx import NginxSource
from exporter.domains.traffic.sources.prometheus import PrometheusSource

DOMAIN = Domain(
    name="traffic",
    service_fields=TrafficServiceFields,
    section=TrafficSection,
    sources=(KongSource, NginxSource, CloudWatchSource, PrometheusSource),
    migrations={"traffic": store.MIGRATIONS},
    writers=store.WRITERS,
    provider=metrics.collect,
    reads=frozenset({"traffic", "catalog"}),
    views={store.DAYS_OVER: store.DAYS_OVER_TABLES},
    # Stored traffic follows the catalog: re-resolved after every catalog or gateway poll.
    refresh=attribution.refresh,
    refresh_after=frozenset({CatalogListing, TrafficDelta, TrafficLatency, ConsumerSeen}),
    sandbox=("exporter.domains.traffic.sandbox",),
)
