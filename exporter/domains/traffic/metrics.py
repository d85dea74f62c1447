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
``unknown``. The windowed families attribute stored traffic under the catalog as it is
at the refresh (see :mod:`exporter.domains.traffic.attribution`); the counter and the
histogram keep the service of the moment the traffic was read. HELP strings name the sources, since several gateways feed these families.
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
from exporter.core.provider import (
    RenderContext,
    label_order,
    stored_histogram_samples,
    streamed,
    tabular,
)
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import (
    UNMAPPED,
    WINDOWS,
    WindowKpis,
    active_since,
    gateway_latency_since,
    traffic_services,
    window_kpis,
)
from exporter.domains.traffic.records import TrafficDelta

STUB_STATES = ("active", "reading", "writing", "waiting")


def _help(text: str, ctx: RenderContext) -> str:
    gateways = ctx.kinds(producing=TrafficDelta, enabled_only=False)
    polled = [f"{k} every {iv:g}s" for k in gateways if (iv := ctx.interval_of(k)) is not None]
    every = ", ".join(polled) if polled else "the gateway sources"
    return f"{text} Cached by the exporter; refreshed after each poll of {every}."


def _known(ctx: RenderContext) -> set[str]:
    """The services of the merged catalog (config and external catalogs), and unmapped."""
    return set(ctx.known_services()) | {UNMAPPED}


def collect(ctx: RenderContext) -> Iterator[Metric]:
    known = _known(ctx)
    yield _requests(ctx, known)
    yield _durations(ctx, known)
    yield from _windows(ctx, known)
    yield _consumers(ctx, known)
    yield _daily(ctx, known)
    yield from _gateway_health(ctx)


def _requests(ctx: RenderContext, known: set[str]) -> Metric:
    labels = ["service", "team", "source", "code_class"]
    family = CounterMetricFamily(
        "platform_service_requests",
        _help("Requests served through the API gateways, by status class.", ctx),
        labels=labels,
    )
    rows = _sorted_counters(ctx, traffic_store.REQUESTS_TOTAL)
    return tabular(family, labels, lambda: _request_rows(ctx, known, rows), "_total")


def _request_rows(
    ctx: RenderContext, known: set[str], rows: list[tuple[dict[str, str], float]]
) -> Iterator[tuple[tuple[str, ...], float]]:
    for labels, value in rows:
        service = labels["service"]
        if service in known:
            yield (service, ctx.team_of(service), labels["source"], labels["code_class"]), value


def _durations(ctx: RenderContext, known: set[str]) -> Metric:
    family = HistogramMetricFamily(
        "platform_service_request_duration_seconds",
        _help(
            "Request latency through the API gateways (NGINX and Kong; CloudWatch and "
            "Prometheus sources give no distribution).",
            ctx,
        ),
        labels=["service", "team", "source"],
    )
    rows = sorted(ctx.store.histograms(traffic_store.DURATION), key=lambda x: label_order(x[0]))

    def series(labels: dict[str, str]) -> dict[str, str] | None:
        service = labels["service"]
        if service not in known:
            return None
        return {"service": service, "team": ctx.team_of(service), "source": labels["source"]}

    return streamed(family, lambda: stored_histogram_samples(family.name, rows, series))


# A (service, team, window) and its KPIs: requests, rate, error ratios, availability,
# latency observations and quantiles. One series of each windowed family; a tuple of
# strings, numbers and dicts of them rather than a WindowKpis, so that the rows kept
# through a render are fewer objects for the garbage collector to walk.
_Row = tuple[
    tuple[str, str, str], int, float | None, dict[str, float], float | None, int, dict[float, float]
]


def _row(service: str, team: str, window: str, k: WindowKpis) -> _Row:
    return (
        (service, team, window),
        k.requests,
        k.rate,
        k.error_ratios,
        k.availability,
        k.latency_observations,
        k.latency,
    )


class _WindowFamilies:
    """The families of the per-window KPIs, their rows of label values made as they are
    written (see :class:`~exporter.core.provider.Rows`) from the rows of rolling
    windows (every family) and of calendar windows (no rate or latency): at 2,000
    services they hold a hundred thousand samples."""

    def __init__(self, ctx: RenderContext, rolling: list[_Row], calendar: list[_Row]) -> None:
        by_window = ["service", "team", "window"]
        rows = [*rolling, *calendar]
        self.rate = tabular(
            GaugeMetricFamily(
                "platform_service_request_rate",
                _help("Requests per second over the window, from stored per-minute counts.", ctx),
                labels=by_window,
            ),
            by_window,
            lambda: _rates(rows),
        )
        self.samples = tabular(
            GaugeMetricFamily(
                "platform_service_request_samples",
                _help("Requests behind the window's rate, error ratios and availability.", ctx),
                labels=by_window,
            ),
            by_window,
            lambda: _requests_of(rows),
        )
        self.errors = tabular(
            GaugeMetricFamily(
                "platform_service_error_ratio",
                _help("Share of requests answered 5xx (or 4xx) over the window.", ctx),
                labels=[*by_window, "code_class"],
            ),
            [*by_window, "code_class"],
            lambda: _error_ratios(rows),
        )
        self.avail = tabular(
            GaugeMetricFamily(
                "platform_service_availability_ratio",
                _help("Request-based availability over the window: 1 - the 5xx ratio.", ctx),
                labels=by_window,
            ),
            by_window,
            lambda: _availabilities(rows),
        )
        # Typed summary (quantiles only) rather than gauge: promtool rejects a "quantile"
        # label on any other type; in PromQL the series are the same.
        self.latency = tabular(
            Metric(
                "platform_service_latency_seconds",
                _help(
                    "Request latency quantiles over the window: from the latency histogram "
                    "where a gateway gives one (exact to within a bucket), else as the gateway "
                    "computed them.",
                    ctx,
                ),
                "summary",
            ),
            [*by_window, "quantile"],
            lambda: _latencies(rolling),
        )
        self.lat_samples = tabular(
            GaugeMetricFamily(
                "platform_service_latency_samples",
                _help(
                    "Requests in the latency histogram behind platform_service_latency_seconds.",
                    ctx,
                ),
                labels=by_window,
            ),
            by_window,
            lambda: _observations(rolling),
        )

    def families(self) -> Iterator[Metric]:
        yield from (self.rate, self.samples, self.errors, self.avail)
        yield from (self.latency, self.lat_samples)


def _rates(rows: list[_Row]) -> Iterator[tuple[tuple[str, ...], float]]:
    for key, _, rate, *_ in rows:
        if rate is not None:
            yield key, rate


def _requests_of(rows: list[_Row]) -> Iterator[tuple[tuple[str, ...], float]]:
    for key, requests, *_ in rows:
        yield key, requests


def _error_ratios(rows: list[_Row]) -> Iterator[tuple[tuple[str, ...], float]]:
    for key, _, _, errors, *_ in rows:
        for cls, ratio in errors.items():
            yield (*key, cls), ratio


def _availabilities(rows: list[_Row]) -> Iterator[tuple[tuple[str, ...], float]]:
    for key, _, _, _, availability, *_ in rows:
        if availability is not None:
            yield key, availability


def _latencies(rows: list[_Row]) -> Iterator[tuple[tuple[str, ...], float]]:
    for key, *_, latency in rows:
        for q, seconds in latency.items():
            yield (*key, _q(q)), seconds


def _observations(rows: list[_Row]) -> Iterator[tuple[tuple[str, ...], float]]:
    for key, *_, observed, _ in rows:
        yield key, observed


# A quantile as its label ("0.95"), formatted once per quantile rather than per sample.
_QUANTILE_LABELS: dict[float, str] = {}


def _q(q: float) -> str:
    label = _QUANTILE_LABELS.get(q)
    if label is None:
        label = _QUANTILE_LABELS[q] = f"{q:g}"
    return label


def _windows(ctx: RenderContext, known: set[str]) -> Iterator[Metric]:
    """Rate, samples, error ratios, availability and latency over the rolling windows,
    then samples, ratios and availability over ``mtd`` and ``last_month`` (whole days
    from the daily counts, kept beyond the retention)."""
    calendar = {w: calendar_span(w, ctx.now) for w in CALENDAR_WINDOWS}
    counts = traffic_store.counts_by_window(ctx.store, ctx.now, WINDOWS, calendar)
    gateway_q = traffic_store.gateway_latencies(ctx.store, gateway_latency_since(ctx.now))
    services = traffic_services(
        (s.name for s in ctx.catalog.services.values() if s.routes),
        [*(s for s, w in counts if w in WINDOWS), *(s for s, _, _ in gateway_q)],
        known,
    )
    # (service, window) -> quantile -> seconds, looked up per window (not searched).
    by_window: dict[tuple[str, str], dict[float, float]] = {}
    for (s, w, q), v in gateway_q.items():
        by_window.setdefault((s, w), {})[q] = v
    rolling: list[_Row] = []
    for service in services:
        team = ctx.team_of(service)
        for window, seconds in WINDOWS.items():
            gateway = by_window.get((service, window), {})
            k = window_kpis(counts.get((service, window)), seconds, gateway)
            rolling.append(_row(service, team, window, k))
    on_calendar: list[_Row] = []
    for window in CALENDAR_WINDOWS:
        for service in services:
            k = window_kpis(counts.get((service, window)), None, {})
            on_calendar.append(_row(service, ctx.team_of(service), window, k))
    del counts
    yield from _WindowFamilies(ctx, rolling, on_calendar).families()


def _consumers(ctx: RenderContext, known: set[str]) -> Metric:
    family = GaugeMetricFamily(
        "platform_service_active_consumers",
        _help(
            "Distinct API consumers (Kong consumers, or consumer keys from access logs) "
            "that sent requests to the service in the last 24h.",
            ctx,
        ),
        labels=["service", "team"],
    )
    active = traffic_store.active_consumers(ctx.store, active_since(ctx.now))
    for service, n in sorted(active.items()):
        if service in known:
            family.add_metric([service, ctx.team_of(service)], n)
    return family


def _daily(ctx: RenderContext, known: set[str]) -> Metric:
    family = GaugeMetricFamily(
        "platform_service_daily_requests",
        _help("Requests served on the last closed UTC day (yesterday), over every gateway.", ctx),
        labels=["service", "team"],
    )
    day = latest_closed_day(ctx.now)
    for (service, d), n in sorted(traffic_store.daily_totals(ctx.store, day).items()):
        if d == day and service in known:
            family.add_metric([service, ctx.team_of(service)], n)
    return family


def _sorted_counters(ctx: RenderContext, metric: str) -> list[tuple[dict[str, str], float]]:
    """A persisted counter's values, in the order of their sorted labels."""
    return sorted(ctx.store.counters(metric), key=lambda x: label_order(x[0]))


def _per_source(ctx: RenderContext, name: str, text: str, metric: str) -> Metric:
    """A counter family labelled by source only, from a persisted counter."""
    family = CounterMetricFamily(name, _help(text, ctx), labels=["source"])
    for labels, value in _sorted_counters(ctx, metric):
        family.add_metric([labels["source"]], value)
    return family


def _gateway_health(ctx: RenderContext) -> Iterator[Metric]:
    """Access-log tailing, NGINX stub_status, Prometheus warnings and Kong consumers."""
    yield _per_source(
        ctx,
        "platform_exporter_access_log_malformed_lines",
        "Access-log lines that could not be parsed and were skipped.",
        traffic_store.MALFORMED_TOTAL,
    )
    reopens = CounterMetricFamily(
        "platform_exporter_access_log_reopens",
        _help("Times the access log was found rotated or truncated and read anew.", ctx),
        labels=["source", "reason"],
    )
    for labels, value in _sorted_counters(ctx, traffic_store.ROTATIONS_TOTAL):
        reopens.add_metric([labels["source"], labels["reason"]], value)
    yield reopens
    yield from _stub_status(ctx)
    yield _per_source(
        ctx,
        "platform_exporter_prometheus_query_warnings",
        "Warnings Prometheus attached to the answers of the configured queries.",
        traffic_store.WARNINGS_TOTAL,
    )
    yield _per_source(
        ctx,
        "platform_exporter_upstream_series_dropped",
        "Upstream series left out because the source's max_series was reached.",
        traffic_store.SERIES_DROPPED_TOTAL,
    )
    registered = GaugeMetricFamily(
        "platform_gateway_consumers",
        _help("API consumers registered in Kong (Admin API /consumers).", ctx),
        labels=["source"],
    )
    for source, count in traffic_store.registered_consumers(ctx.store).items():
        registered.add_metric([source], float(count))
    yield registered


def _stub_status(ctx: RenderContext) -> Iterator[Metric]:
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
    for source, stub in traffic_store.stub_statuses(ctx.store).items():
        for state in STUB_STATES:
            connections.add_metric([source, state], float(stub[state]))
        handled.add_metric([source], float(stub["requests"]))
    yield connections
    yield handled
