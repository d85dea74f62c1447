"""Traffic: API gateway requests, errors and latency per service (Kong, NGINX, CloudWatch,
Prometheus)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.domain import Domain, Parts, SourceRef, Tables

if TYPE_CHECKING:
    from exporter.core.source import Source


def _parts() -> Parts:
    from exporter.domains.catalog.records import CatalogListing
    from exporter.domains.traffic import attribution, metrics
    from exporter.domains.traffic.records import ConsumerSeen, TrafficDelta, TrafficLatency
    from exporter.domains.traffic.settings import TrafficSection, TrafficServiceFields

    return Parts(
        service_fields=TrafficServiceFields,
        section=TrafficSection,
        provider=metrics.collect,
        # Stored traffic follows the catalog: re-resolved after every catalog or gateway poll.
        refresh=attribution.refresh,
        refresh_after=frozenset({CatalogListing, TrafficDelta, TrafficLatency, ConsumerSeen}),
    )


def _tables() -> Tables:
    from exporter.domains.traffic import store

    return Tables(
        migrations={"traffic": store.MIGRATIONS},
        writers=store.WRITERS,
        views={store.DAYS_OVER: store.DAYS_OVER_TABLES},
    )


def _kong() -> type[Source]:
    from exporter.domains.traffic.sources.kong import KongSource

    return KongSource


def _nginx() -> type[Source]:
    from exporter.domains.traffic.sources.nginx import NginxSource

    return NginxSource


def _cloudwatch() -> type[Source]:
    from exporter.domains.traffic.sources.cloudwatch import CloudWatchSource

    return CloudWatchSource


def _prometheus() -> type[Source]:
    from exporter.domains.traffic.sources.prometheus import PrometheusSource

    return PrometheusSource


DOMAIN = Domain(
    name="traffic",
    parts=_parts,
    tables=_tables,
    service_keys=("routes",),
    refs=(
        SourceRef("kong", _kong),
        SourceRef("nginx", _nginx),
        SourceRef("cloudwatch", _cloudwatch),
        SourceRef("prometheus", _prometheus),
    ),
    reads=frozenset({"traffic", "catalog"}),
    sandbox=("exporter.domains.traffic.sandbox",),
)
