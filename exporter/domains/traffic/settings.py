"""Settings of the traffic domain: a service's gateway routes and the gateway sources."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from exporter.core.settings import (
    ConfigBase,
    Duration,
    HttpEndpoint,
    HttpUrl,
    Name,
    Secret,
    Section,
    ServiceFields,
    SourceConfig,
    StrictModel,
)


class KongSourceConfig(SourceConfig):
    """Kong: the Prometheus plugin's exposition plus the Admin API's services, routes, consumers."""

    interval: Duration = 30.0
    # Where the exposition is served: the Status API (``http://kong:8100``) or the Admin API.
    status_url: HttpUrl
    metrics_path: str = "/metrics"
    # The Admin API (``http://kong:8001``); without it, Kong service names map directly.
    admin_url: HttpUrl | None = None
    admin_token: Secret | None = None
    page_size: int = Field(default=1000, ge=1, le=1000)
    # At most this many series (samples of the counters and histograms read) are kept
    # from the exposition; past it, series not seen before are left out and counted.
    max_series: int = Field(default=20_000, ge=1, le=10_000_000)


class NginxSourceConfig(SourceConfig):
    """NGINX: a JSON access log tailed incrementally, and optionally ``stub_status``."""

    interval: Duration = 15.0
    access_log: Path
    stub_status_url: HttpEndpoint | None = None
    # JSON field holding an API key or consumer id, for active-consumer counts.
    consumer_field: str | None = None
    # A poll reads at most this many bytes (and commits them in chunks); the rest waits.
    max_bytes_per_poll: int = Field(default=256 * 1024 * 1024, ge=4096)
    # Traffic is stored under its host and this many leading path segments, so a route
    # claimed later (up to this deep) takes over the traffic already stored.
    attribution_depth: int = Field(default=2, ge=0, le=16)


class CloudWatchApiConfig(StrictModel):
    """One AWS API Gateway API and stage."""

    # REST APIs are named by ``ApiName``; HTTP APIs by ``ApiId``.
    type: Literal["rest", "http"] = "rest"
    name: str = Field(min_length=1)
    stage: str = Field(min_length=1)
    # The catalog service; by default the API name is looked up in ``services[].routes``.
    service: Name | None = None


class CloudWatchSourceConfig(SourceConfig):
    """AWS API Gateway metrics through CloudWatch ``GetMetricData`` (boto3)."""

    interval: Duration = 300.0
    region: str = "us-east-1"
    endpoint_url: HttpUrl | None = None
    apis: list[CloudWatchApiConfig] = Field(min_length=1)
    # CloudWatch data for the last minutes is incomplete: only minutes older than this are read.
    delay: Duration = 300.0
    # How far back the first poll reads.
    backfill: Duration = 3600.0
    # Latency percentiles CloudWatch computes over each window (an empty list skips them).
    latency_statistics: list[str] = Field(default_factory=lambda: ["p50", "p95", "p99"])
    latency_windows: list[Literal["5m", "1h", "1d", "30d"]] = ["5m", "1h", "1d", "30d"]

    @field_validator("latency_statistics")
    @classmethod
    def _percentiles(cls, value: list[str]) -> list[str]:
        for stat in value:
            if not re.fullmatch(r"p(\d{1,2}(\.\d+)?|100)", stat):
                raise ValueError(f"{stat!r} is not a percentile statistic such as p95")
        return value

    def service_refs(self) -> list[tuple[str, str]]:
        return [
            (f"apis[{i}].service", api.service)
            for i, api in enumerate(self.apis)
            if api.service is not None
        ]


class PrometheusQueriesConfig(StrictModel):
    """PromQL per service; ``$window`` is replaced by a range such as ``5m`` or ``300s``,
    ``$quantile`` by 0.5, 0.95 or 0.99. Each must return one series per service label."""

    requests: str
    errors_5xx: str
    errors_4xx: str | None = None
    latency_seconds: str | None = None


class PrometheusSourceConfig(SourceConfig):
    """Any Prometheus (or compatible API) that already scrapes a gateway or mesh."""

    interval: Duration = 60.0
    url: HttpUrl
    bearer_token: Secret | None = None
    service_label: str = "service"
    # The service a scalar result belongs to (a query that returns one number).
    scalar_service: Name | None = None
    queries: PrometheusQueriesConfig
    latency_windows: list[Literal["5m", "1h", "1d", "30d"]] = ["5m", "1h", "1d", "30d"]
    # Each poll evaluates the counts in steps of at most this long, and at most
    # max_catch_up back: a longer outage of the exporter is skipped (and logged).
    max_step: Duration = 3600.0
    max_catch_up: Duration = 86400.0
    # At most this many series are read from one query's answer (Prometheus is asked for
    # no more, with `limit`); the rest are left out and counted.
    max_series: int = Field(default=10_000, ge=1, le=1_000_000)

    def service_refs(self) -> list[tuple[str, str]]:
        return [] if self.scalar_service is None else [("scalar_service", self.scalar_service)]


class TrafficServiceFields(ServiceFields):
    """A service's gateway identities."""

    # Gateway identities of this service: a Kong service or route name, an API Gateway
    # API name or id, a Prometheus label value, or an NGINX ``host``, ``host/path-prefix``
    # or ``/path-prefix``. Traffic matching none of any service is ``unmapped``.
    routes: list[str] = Field(default_factory=list)

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: list[str]) -> list[str]:
        for route in value:
            if not route or any(c.isspace() for c in route):
                raise ValueError(f"route {route!r} must be non-empty and contain no spaces")
        return value

    def catalog_fields(self) -> dict[str, object]:
        return {**super().catalog_fields(), "routes": tuple(self.routes)}


class TrafficSection(Section):
    """No keys of its own: the check that no route is claimed by two services."""

    @model_validator(mode="after")
    def _unique_routes(self) -> Self:
        assert isinstance(self, ConfigBase)
        owner: dict[str, str] = {}
        for svc in self.services:
            for route in TrafficServiceFields.of(svc).routes:
                if owner.setdefault(route, svc.name) != svc.name:
                    raise ValueError(
                        f"route {route!r} is claimed by both {owner[route]} and {svc.name}"
                    )
        return self
