"""Requests, errors, latency and availability of services, from the API gateways.

Sample::

    platform_service_requests_total{service="checkout",team="payments",source="kong",code_class="5xx"} 12
    platform_service_request_duration_seconds_bucket{service="checkout",team="payments",source="nginx",le="0.1"} 950
    platform_service_request_rate{service="checkout",team="payments",window="5m"} 41.3
    platform_service_request_samples{service="checkout",team="payments",window="5m"} 12390
    platform_service_error_ratio{service="checkout",team="payments",window="1h",code_class="5xx"} 0.004
    platform_service_availability_ratio{service="checkout",team="payments",window="30d"} 0.9993
    platform_service_availability_ratio{service="checkout",team="payments",window="last_month"} 0.9995
    platform_service_latency_seconds{service="checkout",team="payments",window="1h",quantile="0.95"} 0.23
    platform_service_latency_samples{service="checkout",team="payments",window="1h"} 2400
    platform_service_active_consumers{service="checkout",team="payments"} 17
    platform_service_daily_requests{service="checkout",team="payments"} 3.1e6

Traffic no catalog service claims is reported as ``service="unmapped"``, team
``unknown``. HELP strings name the sources, since several gateways feed these families.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric

from exporter.core.periods import CALENDAR_WINDOWS, calendar_span, latest_closed_day
from exporter.core.provider import RenderContext, le_label
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import (
    LATENCY_BUCKETS,
    QUANTILES,
    UNMAPPED,
    WINDOWS,
    availability,
    error_ratio,
    histogram_quantile,
    request_rate,
)

KINDS = ("kong", "nginx", "cloudwatch", "prometheus")
# Consumers count as active when seen within this long.
ACTIVE_CONSUMER_WINDOW = 86400.0
# Quantiles a gateway computed are shown while fresher than this.
GATEWAY_LATENCY_MAX_AGE = 3600.0


def _help(text: str, ctx: RenderContext) -> str:
    polled = [f"{k} every {iv:g}s" for k in KINDS if (iv := ctx.interval_of(k)) is not None]
    every = ", ".join(polled) if polled else "the gateway sources"
    return f"{text} Cached by the exporter; refreshed after each poll of {every}."


def _team(ctx: RenderContext, service: str) -> str:
    return ctx.team_of(service)


def _known(ctx: RenderContext) -> set[str]:
    return {s.name for s in ctx.config.services} | {UNMAPPED}


def collect(ctx: RenderContext) -> Iterator[Metric]:
    known = _known(ctx)

    requests = CounterMetricFamily(
        "platform_service_requests",
        _help("Requests served through the API gateways, by status class.", ctx),
        labels=["service", "team", "source", "code_class"],
    )
    for labels, total_requests in sorted(
        ctx.store.counters(traffic_store.REQUESTS_TOTAL), key=lambda x: sorted(x[0].items())
    ):
        if labels["service"] in known:
            requests.add_metric(
                [
                    labels["service"],
                    _team(ctx, labels["service"]),
                    labels["source"],
                    labels["code_class"],
                ],
                total_requests,
            )
    yield requests

    hist = HistogramMetricFamily(
        "platform_service_request_duration_seconds",
        _help(
            "Request latency through the API gateways (NGINX and Kong; CloudWatch and "
            "Prometheus sources give no distribution).",
            ctx,
        ),
        labels=["service", "team", "source"],
    )
    for labels, bounds, cumulative, total, n in sorted(
        ctx.store.histograms(traffic_store.DURATION), key=lambda x: sorted(x[0].items())
    ):
        if labels["service"] not in known:
            continue
        buckets = [(le_label(b), float(c)) for b, c in zip(bounds, cumulative, strict=True)]
        buckets.append(("+Inf", float(n)))
        hist.add_metric(
            [labels["service"], _team(ctx, labels["service"]), labels["source"]], buckets, total
        )
    yield hist

    rate = GaugeMetricFamily(
        "platform_service_request_rate",
        _help("Requests per second over the window, from stored per-minute counts.", ctx),
        labels=["service", "team", "window"],
    )
    samples = GaugeMetricFamily(
        "platform_service_request_samples",
        _help("Requests behind the window's rate, error ratios and availability.", ctx),
        labels=["service", "team", "window"],
    )
    errors = GaugeMetricFamily(
        "platform_service_error_ratio",
        _help("Share of requests answered 5xx (or 4xx) over the window.", ctx),
        labels=["service", "team", "window", "code_class"],
    )
    avail = GaugeMetricFamily(
        "platform_service_availability_ratio",
        _help("Request-based availability over the window: 1 - the 5xx ratio.", ctx),
        labels=["service", "team", "window"],
    )
    # Typed summary (quantiles only) rather than gauge: promtool rejects a "quantile"
    # label on any other type; in PromQL the series are the same.
    latency = Metric(
        "platform_service_latency_seconds",
        _help(
            "Request latency quantiles over the window: from the latency histogram where a "
            "gateway gives one (exact to within a bucket), else as the gateway computed them.",
            ctx,
        ),
        "summary",
    )
    lat_samples = GaugeMetricFamily(
        "platform_service_latency_samples",
        _help("Requests in the latency histogram behind platform_service_latency_seconds.", ctx),
        labels=["service", "team", "window"],
    )
    counts = traffic_store.window_counts(ctx.store, ctx.now, WINDOWS)
    gateway_q = traffic_store.gateway_latencies(ctx.store, ctx.now - GATEWAY_LATENCY_MAX_AGE)
    services = sorted({s for s, _ in counts} | {s for s, _, _ in gateway_q})
    traffic_services = {s.name for s in ctx.config.services if s.routes} | set(services)
    for service in sorted(traffic_services & known):
        team = _team(ctx, service)
        for window, seconds in WINDOWS.items():
            c = counts.get((service, window))
            n = c.requests if c else 0
            samples.add_metric([service, team, window], n)
            if c is not None:
                r = request_rate(n, seconds)
                if r is not None:
                    rate.add_metric([service, team, window], r)
                _add_ratios(errors, avail, [service, team, window], c)
            observed = c.latency_observations if c else 0
            lat_samples.add_metric([service, team, window], observed)
            for q in QUANTILES:
                seconds_q: float | None = None
                if c is not None and observed:
                    seconds_q = histogram_quantile(
                        q, LATENCY_BUCKETS, c.buckets[:-1], overflow=c.buckets[-1]
                    )
                if seconds_q is None:
                    seconds_q = gateway_q.get((service, window, q))
                if seconds_q is not None:
                    latency.add_sample(
                        "platform_service_latency_seconds",
                        {"service": service, "team": team, "window": window, "quantile": f"{q:g}"},
                        seconds_q,
                    )
    _calendar_windows(ctx, sorted(traffic_services & known), samples, errors, avail)
    yield rate
    yield samples
    yield errors
    yield avail
    yield latency
    yield lat_samples

    consumers = GaugeMetricFamily(
        "platform_service_active_consumers",
        _help(
            "Distinct API consumers (Kong consumers, or consumer keys from access logs) "
            "that sent requests to the service in the last 24h.",
            ctx,
        ),
        labels=["service", "team"],
    )
    for service, n in sorted(
        traffic_store.active_consumers(ctx.store, ctx.now - ACTIVE_CONSUMER_WINDOW).items()
    ):
        if service in known:
            consumers.add_metric([service, _team(ctx, service)], n)
    yield consumers

    daily = GaugeMetricFamily(
        "platform_service_daily_requests",
        _help("Requests served on the last closed UTC day (yesterday), over every gateway.", ctx),
        labels=["service", "team"],
    )
    day = latest_closed_day(ctx.now)
    for (service, d), n in sorted(traffic_store.daily_totals(ctx.store, day).items()):
        if d == day and service in known:
            daily.add_metric([service, _team(ctx, service)], n)
    yield daily

    yield from _gateway_health(ctx)


def _calendar_windows(
    ctx: RenderContext,
    services: list[str],
    samples: GaugeMetricFamily,
    errors: GaugeMetricFamily,
    avail: GaugeMetricFamily,
) -> None:
    """Requests, error ratios and availability over ``mtd`` and ``last_month`` (whole
    days from the daily counts, kept beyond the retention)."""
    for window in CALENDAR_WINDOWS:
        counts = traffic_store.span_counts(ctx.store, calendar_span(window, ctx.now))
        for service in services:
            team = _team(ctx, service)
            c = counts.get(service)
            samples.add_metric([service, team, window], c.requests if c else 0)
            if c is not None:
                _add_ratios(errors, avail, [service, team, window], c)


def _add_ratios(
    errors: GaugeMetricFamily,
    avail: GaugeMetricFamily,
    labels: list[str],
    c: traffic_store.WindowCounts,
) -> None:
    """The 5xx and 4xx ratios and the availability of one window's counts."""
    for cls, idx in (("5xx", 4), ("4xx", 3)):
        ratio = error_ratio(c.codes[idx], c.requests)
        if ratio is not None:
            errors.add_metric([*labels, cls], ratio)
    a = availability(c.codes[4], c.requests)
    if a is not None:
        avail.add_metric(labels, a)


def _gateway_health(ctx: RenderContext) -> Iterator[Metric]:
    """NGINX stub_status and access-log tailing health."""
    import json

    from exporter.domains.traffic.sources.nginx import MALFORMED_TOTAL, ROTATIONS_TOTAL

    malformed = CounterMetricFamily(
        "platform_exporter_access_log_malformed_lines",
        _help("Access-log lines that could not be parsed and were skipped.", ctx),
        labels=["source"],
    )
    for labels, value in sorted(ctx.store.counters(MALFORMED_TOTAL), key=lambda x: x[0]["source"]):
        malformed.add_metric([labels["source"]], value)
    yield malformed

    reopens = CounterMetricFamily(
        "platform_exporter_access_log_reopens",
        _help("Times the access log was found rotated or truncated and read anew.", ctx),
        labels=["source", "reason"],
    )
    for labels, value in sorted(
        ctx.store.counters(ROTATIONS_TOTAL), key=lambda x: sorted(x[0].items())
    ):
        reopens.add_metric([labels["source"], labels["reason"]], value)
    yield reopens

    raw = ctx.store.get_cursor("nginx", "stub_status")
    connections = GaugeMetricFamily(
        "platform_gateway_connections",
        _help("Client connections of the gateway by state, from NGINX stub_status.", ctx),
        labels=["source", "state"],
    )
    handled = CounterMetricFamily(
        "platform_gateway_requests",
        _help(
            "Requests the gateway handled since it started, from NGINX stub_status "
            "(resets when NGINX restarts).",
            ctx,
        ),
        labels=["source"],
    )
    if raw:
        stub = json.loads(raw)
        for state in ("active", "reading", "writing", "waiting"):
            connections.add_metric(["nginx", state], float(stub[state]))
        handled.add_metric(["nginx"], float(stub["requests"]))
    yield connections
    yield handled

    from exporter.domains.traffic.sources.prometheus import WARNINGS_TOTAL

    warned = CounterMetricFamily(
        "platform_exporter_prometheus_query_warnings",
        _help("Warnings Prometheus attached to the answers of the configured queries.", ctx),
        labels=["source"],
    )
    for labels, value in sorted(ctx.store.counters(WARNINGS_TOTAL), key=lambda x: x[0]["source"]):
        warned.add_metric([labels["source"]], value)
    yield warned

    registered = GaugeMetricFamily(
        "platform_gateway_consumers",
        _help("API consumers registered in Kong (Admin API /consumers).", ctx),
        labels=["source"],
    )
    raw_consumers = ctx.store.get_cursor("kong", "consumers_registered")
    if raw_consumers:
        registered.add_metric(["kong"], float(json.loads(raw_consumers)["count"]))
    yield registered
