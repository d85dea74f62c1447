"""AWS API Gateway traffic through CloudWatch ``GetMetricData`` (boto3).

Per poll, one ``GetMetricData`` call reads, for every configured API and stage, the
per-minute ``Count``, client and server errors and average ``Latency`` of the minutes
not read yet, up to ``now - delay`` (CloudWatch fills the last minutes late). REST APIs
are addressed by the dimensions ``ApiName`` and ``Stage`` with metrics ``4XXError`` and
``5XXError``; HTTP APIs by ``ApiId`` and ``Stage`` with ``4xx`` and ``5xx``. Requests
that are neither are counted as ``2xx``: CloudWatch does not split 1xx-3xx. Latency is
in milliseconds upstream and stored in seconds. The cursor ``until`` (the end of the
last minute read) is committed with the counts, so no minute is read twice.

Then, for each window in ``latency_windows``, one more call reads the percentiles in
``latency_statistics`` (``p50``, ``p95``, ``p99`` by default) of ``Latency`` over that
window, as CloudWatch computes them: percentiles cannot be added up across minutes.
Every call follows ``NextToken``.

Sample of what it feeds (see exporter/domains/traffic/metrics.py)::

    platform_service_requests_total{service="payments-api",team="payments",source="cloudwatch",code_class="5xx"} 3
    platform_service_latency_seconds{service="payments-api",team="payments",window="1h",quantile="0.95"} 0.21
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from exporter.core.errors import (
    AuthError,
    MalformedResponse,
    RateLimited,
    SourceError,
    needs_extra,
)
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.domains.catalog.store import load_catalog
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import WINDOWS
from exporter.domains.traffic.records import TrafficDelta, TrafficLatency
from exporter.domains.traffic.routes import RouteMap, pinned
from exporter.domains.traffic.settings import CloudWatchApiConfig, CloudWatchSourceConfig

NAMESPACE = "AWS/ApiGateway"
# A poll reads at most this many minutes; a longer backlog is read over several polls.
MAX_MINUTES = 1440
# botocore's "standard" retry mode: backoff on throttling, 5xx and connection errors.
MAX_ATTEMPTS = 4
METRICS = {
    "rest": {"count": "Count", "e4": "4XXError", "e5": "5XXError", "lat": "Latency"},
    "http": {"count": "Count", "e4": "4xx", "e5": "5xx", "lat": "Latency"},
}


def dimensions(api: CloudWatchApiConfig) -> list[dict[str, str]]:
    key = "ApiName" if api.type == "rest" else "ApiId"
    return [{"Name": key, "Value": api.name}, {"Name": "Stage", "Value": api.stage}]


def count_queries(apis: Sequence[CloudWatchApiConfig]) -> list[dict[str, Any]]:
    """Per-minute Count, errors (Sum) and Latency (Average) of every API: one call's queries."""
    queries = []
    for i, api in enumerate(apis):
        for short, metric in METRICS[api.type].items():
            queries.append(
                {
                    "Id": f"{short}_{i}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": NAMESPACE,
                            "MetricName": metric,
                            "Dimensions": dimensions(api),
                        },
                        "Period": 60,
                        "Stat": "Average" if short == "lat" else "Sum",
                    },
                    "ReturnData": True,
                }
            )
    return queries


def _stat_id(stat: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", stat.lower())


def percentile_queries(
    apis: Sequence[CloudWatchApiConfig], statistics: Sequence[str], period: int
) -> list[dict[str, Any]]:
    """Latency percentiles of every API over one window (one datapoint each)."""
    return [
        {
            "Id": f"q_{i}_{_stat_id(stat)}",
            "MetricStat": {
                "Metric": {
                    "Namespace": NAMESPACE,
                    "MetricName": "Latency",
                    "Dimensions": dimensions(api),
                },
                "Period": period,
                "Stat": stat,
            },
            "ReturnData": True,
        }
        for i, api in enumerate(apis)
        for stat in statistics
    ]


def quantile_of(stat: str) -> float:
    """0.95 for ``p95``, 0.999 for ``p99.9``."""
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)", stat)
    if m is None:
        raise ValueError(f"{stat!r} is not a percentile statistic such as p95")
    return float(m.group(1)) / 100.0


def _series(results: Sequence[dict[str, Any]]) -> dict[str, dict[float, float]]:
    """Query id -> {timestamp: value} over one or more pages of MetricDataResults."""
    out: dict[str, dict[float, float]] = defaultdict(dict)
    for r in results:
        try:
            for ts, value in zip(r["Timestamps"], r["Values"], strict=True):
                stamp = ts.timestamp() if isinstance(ts, datetime) else float(ts)
                out[str(r["Id"])][stamp] = float(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponse(f"unexpected GetMetricData result: {exc}") from None
    return out


def minute_deltas(
    apis: Sequence[CloudWatchApiConfig],
    services: Sequence[str],
    results: Sequence[dict[str, Any]],
    batch: str,
    idents: Sequence[str] | None = None,
) -> list[TrafficDelta]:
    """Per (API, minute) counts and latency from the count queries' results, stored under
    each API's identity in ``idents`` (by default, its service, pinned)."""
    series = _series(results)
    out = []
    for i, (api, service) in enumerate(zip(apis, services, strict=True)):
        counts = series.get(f"count_{i}", {})
        for minute, count in sorted(counts.items()):
            total = round(count)
            if total <= 0:
                continue
            e4 = min(round(series.get(f"e4_{i}", {}).get(minute, 0.0)), total)
            e5 = min(round(series.get(f"e5_{i}", {}).get(minute, 0.0)), total - e4)
            avg_ms = series.get(f"lat_{i}", {}).get(minute)
            latency_sum = avg_ms / 1000.0 * total if avg_ms is not None else 0.0
            out.append(
                TrafficDelta(
                    source="cloudwatch",
                    service=service,
                    minute=float(minute),
                    batch=f"{batch}:{api.type}:{api.name}:{api.stage}",
                    codes=(0, total - e4 - e5, 0, e4, e5),
                    latency_buckets=None,
                    latency_sum=latency_sum,
                    latency_count=total if avg_ms is not None else 0,
                    ident=idents[i] if idents is not None else "",
                )
            )
    return out


def window_latencies(
    apis: Sequence[CloudWatchApiConfig],
    services: Sequence[str],
    statistics: Sequence[str],
    window: str,
    results: Sequence[dict[str, Any]],
    at: float,
    idents: Sequence[str] | None = None,
) -> list[TrafficLatency]:
    """The latest percentile datapoint of each API over ``window``, in seconds, under
    each API's identity in ``idents`` (by default, its service, pinned)."""
    series = _series(results)
    out = []
    for i, service in enumerate(services):
        for stat in statistics:
            points = series.get(f"q_{i}_{_stat_id(stat)}", {})
            if not points:
                continue
            value_ms = points[max(points)]
            if math.isnan(value_ms):
                continue
            out.append(
                TrafficLatency(
                    "cloudwatch",
                    service,
                    window,
                    quantile_of(stat),
                    value_ms / 1000.0,
                    at,
                    idents[i] if idents is not None else "",
                )
            )
    return out


def _classify_client_error(exc: Exception) -> SourceError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    message = f"CloudWatch GetMetricData failed: {exc}"
    if code in ("Throttling", "ThrottlingException", "LimitExceeded"):
        return RateLimited(message)
    if code in (
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "SignatureDoesNotMatch",
    ):
        return AuthError(message)
    err = SourceError(message)
    status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    err.reason = "http_5xx" if status >= 500 else "http_4xx"
    return err


class CloudWatchSource(Source):
    """Reads API Gateway metrics from CloudWatch; see the module docstring."""

    attributes_to_services = True

    kind = "cloudwatch"
    settings_model = CloudWatchSourceConfig
    produces = (TrafficDelta, TrafficLatency)

    def __init__(self, config: ConfigBase, settings: CloudWatchSourceConfig) -> None:
        super().__init__(config, settings)
        self.cw = settings
        routes = RouteMap(config)
        self.apis = list(settings.apis)
        # An API's stored identity: its configured service (pinned), else its name.
        self.idents = [
            pinned(api.service) if api.service else routes.name_key(api.name)[0]
            for api in self.apis
        ]
        self.services = [routes.resolve(i) for i in self.idents]
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            with needs_extra("aws", "the cloudwatch source"):
                import boto3
                from botocore.config import Config as BotoConfig

            self._client = boto3.session.Session().client(
                "cloudwatch",
                region_name=self.cw.region,
                endpoint_url=self.cw.endpoint_url,
                config=BotoConfig(
                    connect_timeout=self.cw.timeout,
                    read_timeout=self.cw.timeout,
                    retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
                ),
            )
        return self._client

    def get_metric_data(
        self, ctx: PollContext, queries: list[dict[str, Any]], start: float, end: float
    ) -> list[dict[str, Any]]:
        """Every page of one GetMetricData request (runs in a worker thread)."""
        from botocore.exceptions import BotoCoreError, ClientError

        results: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "MetricDataQueries": queries,
                "StartTime": datetime.fromtimestamp(start, UTC),
                "EndTime": datetime.fromtimestamp(end, UTC),
                "ScanBy": "TimestampAscending",
            }
            if token:
                kwargs["NextToken"] = token
            try:
                page = self.client().get_metric_data(**kwargs)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "error")
                ctx.health.count_request(status)
                raise _classify_client_error(exc) from None
            except BotoCoreError as exc:
                ctx.health.count_request("error")
                raise ConnectionError(f"CloudWatch unreachable: {exc}") from None
            ctx.health.count_request(200)
            results.extend(page.get("MetricDataResults", []))
            token = page.get("NextToken")
            if not token:
                return results

    async def poll(self, ctx: PollContext) -> None:
        # The merged catalog may have gained (or lost) Backstage services and routes.
        routes = RouteMap(self.config, load_catalog(self.config, ctx.store))
        self.services = [routes.resolve(i) for i in self.idents]
        now = ctx.now()
        end = math.floor((now - self.cw.delay) / 60.0) * 60.0
        raw = ctx.cursor("until")
        start = float(raw) if raw else math.floor((end - self.cw.backfill) / 60.0) * 60.0
        end = min(end, start + MAX_MINUTES * 60.0)
        records: list[Any] = []
        cursors: dict[str, str] = {}
        if end > start:
            results = await asyncio.to_thread(
                self.get_metric_data, ctx, count_queries(self.apis), start, end
            )
            records.extend(
                minute_deltas(self.apis, self.services, results, f"{end:.0f}", self.idents)
            )
            cursors["until"] = f"{end:.0f}"
        stats = list(self.cw.latency_statistics)
        if stats:
            for window in self.cw.latency_windows:
                seconds = WINDOWS[window]
                results = await asyncio.to_thread(
                    self.get_metric_data,
                    ctx,
                    percentile_queries(self.apis, stats, int(seconds)),
                    end - seconds,
                    end,
                )
                records.extend(
                    window_latencies(
                        self.apis, self.services, stats, window, results, now, self.idents
                    )
                )
        await ctx.commit(records, cursors)
        await ctx.write(
            traffic_store.prune_if_due, ctx.store, ctx.now(), self.config.state.retention
        )
