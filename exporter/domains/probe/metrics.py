"""Uptime and latency of services, from synthetic probes.

Sample::

    platform_probe_checks_total{service="checkout",team="payments",probe="health",result="failure",reason="timeout"} 3
    platform_probe_duration_seconds_bucket{service="checkout",team="payments",probe="health",le="0.1"} 250
    platform_probe_last_success_timestamp_seconds{service="checkout",team="payments",probe="health"} 1.7e9
    platform_service_uptime_ratio{service="checkout",team="payments",window="24h"} 0.9965
    platform_service_uptime_ratio{service="checkout",team="payments",window="last_month"} 0.9991
    platform_service_uptime_samples{service="checkout",team="payments",window="24h"} 2880
    platform_service_probe_latency_seconds{service="checkout",team="payments",window="1h",quantile="0.95"} 0.12
    platform_probe_skipped_total{service="checkout",team="payments",probe="health"} 0
    platform_probe_phase_duration_seconds{service="checkout",team="payments",probe="health",phase="connect"} 0.0004
    platform_probe_tls_cert_expiry_timestamp_seconds{service="checkout",team="payments",probe="health"} 1.8e9
    platform_probe_tls_version_info{service="checkout",team="payments",probe="health",version="TLSv1.3"} 1
    platform_probe_http_version{service="checkout",team="payments",probe="health"} 1.1
    platform_probe_http_redirects{service="checkout",team="payments",probe="health"} 0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric

from exporter.core.exposition import in_chunks
from exporter.core.periods import CALENDAR_WINDOWS, calendar_span
from exporter.core.provider import (
    RenderContext,
    Row,
    StoredHistogram,
    cached_help,
    label_order,
    sample,
    stored_histogram_samples,
    tabular,
)
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.kpis import (
    LATENCY_WINDOWS,
    UPTIME_WINDOWS,
    binned_latency_quantiles,
    uptime_ratio,
)
from exporter.domains.probe.records import ProbeResult
from exporter.domains.probe.settings import ProbeServiceFields
from exporter.domains.probe.store import LastProbe

# A check's labels (service, team, probe) and its latest probe.
_Check = tuple[list[str], LastProbe]


def collect(ctx: RenderContext) -> Iterator[Metric]:
    known = {s.name for s in ctx.config.services}
    yield from _checks(ctx, known)
    yield from _durations(ctx, known)
    yield _last_success(ctx, known)
    yield from _uptime(ctx)
    yield _latency(ctx, known)
    yield _skipped(ctx, known)
    yield from _last_probe(ctx, known)


def _help(text: str, ctx: RenderContext) -> str:
    """HELP text naming the probe source and how often it polls."""
    return cached_help(text, ctx, ctx.kinds(producing=ProbeResult, enabled_only=False)[0])


def _checks(ctx: RenderContext, known: set[str]) -> Iterator[Metric]:
    text = _help("Synthetic probe checks by result and failure reason.", ctx)
    name = "platform_probe_checks"
    rows = [
        row
        for row in sorted(ctx.store.counters(probe_store.CHECKS_TOTAL), key=_order)
        if row[0]["service"] in known
    ]

    def make() -> CounterMetricFamily:
        labels = ["service", "team", "probe", "result", "reason"]
        return CounterMetricFamily(name, text, labels=labels)

    def add(family: CounterMetricFamily, row: tuple[dict[str, str], float]) -> None:
        labels, value = row
        service = labels["service"]
        series = {
            "service": service,
            "team": ctx.team_of(service),
            "probe": labels["probe"],
            "result": labels["result"],
            "reason": labels["reason"],
        }
        family.samples.append(sample(name + "_total", series, value))

    return in_chunks(rows, make, add)


def _durations(ctx: RenderContext, known: set[str]) -> Iterator[Metric]:
    text = _help("Duration of successful probe checks.", ctx)
    name = "platform_probe_duration_seconds"
    rows = [
        row
        for row in sorted(ctx.store.histograms(probe_store.DURATION), key=_order)
        if row[0]["service"] in known
    ]
    les: dict[tuple[float, ...], list[str]] = {}  # shared by the chunks

    def series(labels: dict[str, str]) -> dict[str, str]:
        service = labels["service"]
        return {"service": service, "team": ctx.team_of(service), "probe": labels["probe"]}

    def make() -> HistogramMetricFamily:
        return HistogramMetricFamily(name, text, labels=["service", "team", "probe"])

    def add(family: HistogramMetricFamily, row: StoredHistogram) -> None:
        family.samples.extend(stored_histogram_samples(name, (row,), series, les))

    return in_chunks(rows, make, add)


def _last_success(ctx: RenderContext, known: set[str]) -> Metric:
    family = GaugeMetricFamily(
        "platform_probe_last_success_timestamp_seconds",
        _help("Unix time of the last successful check of each probe.", ctx),
        labels=["service", "team", "probe"],
    )
    for (service, probe), at in sorted(probe_store.last_success(ctx.store).items()):
        if service in known:
            family.add_metric([service, ctx.team_of(service), probe], at)
    return family


def _uptime(ctx: RenderContext) -> Iterator[Metric]:
    ratio = GaugeMetricFamily(
        "platform_service_uptime_ratio",
        _help(
            "Share of successful probe checks of the service over the window, from stored history.",
            ctx,
        ),
        labels=["service", "team", "window"],
    )
    samples = GaugeMetricFamily(
        "platform_service_uptime_samples",
        _help("Probe checks behind platform_service_uptime_ratio.", ctx),
        labels=["service", "team", "window"],
    )
    per_window = probe_store.check_counts(ctx.store, ctx.now, UPTIME_WINDOWS)
    # Calendar windows (month to date, last month) count whole days from the daily totals.
    for window in CALENDAR_WINDOWS:
        span = calendar_span(window, ctx.now)
        for service, in_span in probe_store.span_counts(ctx.store, span, ctx.now).items():
            per_window[(service, window)] = in_span.uptime
    probed = [svc for svc in ctx.config.services if ProbeServiceFields.of(svc).probes]
    windows = (*UPTIME_WINDOWS, *CALENDAR_WINDOWS)

    def uptime_rows(ratios: bool) -> Iterator[Row]:
        for svc in probed:
            for window in windows:
                c = per_window.get((svc.name, window))
                if not ratios:
                    yield (svc.name, svc.team, window), c.total if c else 0
                elif c and (up_ratio := uptime_ratio(c)) is not None:
                    yield (svc.name, svc.team, window), up_ratio

    by_window = ["service", "team", "window"]
    yield tabular(ratio, by_window, lambda: uptime_rows(True))
    yield tabular(samples, by_window, lambda: uptime_rows(False))


def _latency(ctx: RenderContext, known: set[str]) -> Metric:
    # Typed summary (quantiles only), like every windowed quantile of the exporter: promtool
    # rejects a "quantile" label on any other type; in PromQL the series are plain samples.
    family = Metric(
        "platform_service_probe_latency_seconds",
        _help("Quantiles of successful probe check durations over the window.", ctx),
        "summary",
    )
    rows: list[Row] = []
    for window, seconds in LATENCY_WINDOWS.items():
        bins = probe_store.latency_bins(ctx.store, ctx.now, seconds)
        for service in sorted(bins):
            if service not in known:
                continue
            team = ctx.team_of(service)
            for q, value in binned_latency_quantiles(bins[service]).items():
                rows.append(((service, team, window, f"{q:g}"), value))
    return tabular(family, ["service", "team", "window", "quantile"], lambda: iter(rows))


def _skipped(ctx: RenderContext, known: set[str]) -> Metric:
    family = CounterMetricFamily(
        "platform_probe_skipped",
        _help("Probe slots that passed without a probe: it could not start on time.", ctx),
        labels=["service", "team", "probe"],
    )
    name, out = family.name + "_total", family.samples
    for labels, value in sorted(ctx.store.counters(probe_store.SKIPPED_TOTAL), key=_order):
        service = labels["service"]
        if service in known:
            series = {"service": service, "team": ctx.team_of(service), "probe": labels["probe"]}
            out.append(sample(name, series, value))
    return family


def _last_probe(ctx: RenderContext, known: set[str]) -> Iterator[Metric]:
    """What each check's latest probe showed: phases, TLS, HTTP (last values), a family
    at a time, each a chunk of checks at a time."""
    checks = [
        ([service, ctx.team_of(service), probe], last)
        for (service, probe), last in probe_store.last_probes(ctx.store).items()
        if service in known
    ]
    for name, text, extra in _LAST_FAMILIES:
        help_text = _help(text, ctx)
        add = _LAST_SAMPLES[name]

        def make(
            name: str = name, help_text: str = help_text, extra: tuple[str, ...] = extra
        ) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_text, labels=[*_CHECK, *extra])

        yield from in_chunks(checks, make, add)


def _phases(family: GaugeMetricFamily, row: _Check) -> None:
    check, last = row
    for phase, seconds in sorted(last.phases.items()):
        family.add_metric([*check, phase], seconds)


def _cert_expiry(family: GaugeMetricFamily, row: _Check) -> None:
    check, last = row
    if last.cert_not_after is not None:
        family.add_metric(check, last.cert_not_after)


def _tls_version(family: GaugeMetricFamily, row: _Check) -> None:
    check, last = row
    if last.tls_version is not None:
        family.add_metric([*check, last.tls_version], 1.0)


def _http_version(family: GaugeMetricFamily, row: _Check) -> None:
    check, last = row
    if last.http_version is not None:
        family.add_metric(check, last.http_version)


def _redirects(family: GaugeMetricFamily, row: _Check) -> None:
    check, last = row
    if last.http_version is not None:
        family.add_metric(check, last.redirects)


_CHECK = ("service", "team", "probe")
# (family, HELP, labels beyond the check's): the latest probe's details, as last values.
_LAST_FAMILIES = (
    (
        "platform_probe_phase_duration_seconds",
        "Seconds the check's latest probe spent in each phase "
        "(resolve, connect, tls, processing, transfer).",
        ("phase",),
    ),
    (
        "platform_probe_tls_cert_expiry_timestamp_seconds",
        "Unix time of the earliest notAfter in the certificate chain of the check's latest "
        "TLS probe.",
        (),
    ),
    (
        "platform_probe_tls_version_info",
        "TLS version the check's latest probe negotiated.",
        ("version",),
    ),
    ("platform_probe_http_version", "HTTP version of the latest answer to the check (1.1).", ()),
    ("platform_probe_http_redirects", "Redirects the check's latest HTTP probe followed.", ()),
)


_LAST_SAMPLES: dict[str, Callable[[GaugeMetricFamily, _Check], None]] = {
    "platform_probe_phase_duration_seconds": _phases,
    "platform_probe_tls_cert_expiry_timestamp_seconds": _cert_expiry,
    "platform_probe_tls_version_info": _tls_version,
    "platform_probe_http_version": _http_version,
    "platform_probe_http_redirects": _redirects,
}


def _order(item: tuple[dict[str, str], object] | tuple[object, ...]) -> tuple[str, ...]:
    labels = item[0]
    assert isinstance(labels, dict)
    return label_order(labels)
