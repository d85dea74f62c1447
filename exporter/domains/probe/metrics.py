"""Uptime and latency of services, from synthetic probes.

Sample::

    platform_probe_checks_total{service="checkout",team="payments",probe="health",result="failure",reason="timeout"} 3
    platform_probe_duration_seconds_bucket{service="checkout",team="payments",probe="health",le="0.1"} 250
    platform_probe_last_success_timestamp_seconds{service="checkout",team="payments",probe="health"} 1.7e9
    platform_service_uptime_ratio{service="checkout",team="payments",window="24h"} 0.9965
    platform_service_uptime_ratio{service="checkout",team="payments",window="last_month"} 0.9991
    platform_service_uptime_samples{service="checkout",team="payments",window="24h"} 2880
    platform_service_probe_latency_seconds{service="checkout",team="payments",window="1h",quantile="0.95"} 0.12
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric

from exporter.core.periods import CALENDAR_WINDOWS, calendar_span
from exporter.core.provider import RenderContext, cached_help, le_label
from exporter.core.stats import quantile
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.kpis import (
    LATENCY_QUANTILES,
    LATENCY_WINDOWS,
    UPTIME_WINDOWS,
    uptime_ratio,
)


def collect(ctx: RenderContext) -> Iterator[Metric]:
    known = {s.name for s in ctx.config.services}

    checks = CounterMetricFamily(
        "platform_probe_checks",
        cached_help("Synthetic probe checks by result and failure reason.", ctx, "probe"),
        labels=["service", "team", "probe", "result", "reason"],
    )
    for labels, value in sorted(ctx.store.counters(probe_store.CHECKS_TOTAL), key=_order):
        if labels["service"] in known:
            checks.add_metric(
                [
                    labels["service"],
                    ctx.team_of(labels["service"]),
                    labels["probe"],
                    labels["result"],
                    labels["reason"],
                ],
                value,
            )
    yield checks

    hist = HistogramMetricFamily(
        "platform_probe_duration_seconds",
        cached_help("Duration of successful probe checks.", ctx, "probe"),
        labels=["service", "team", "probe"],
    )
    for labels, bounds, counts, total, n in sorted(
        ctx.store.histograms(probe_store.DURATION), key=_order
    ):
        if labels["service"] not in known:
            continue
        buckets = [(le_label(b), float(c)) for b, c in zip(bounds, counts, strict=True)]
        buckets.append(("+Inf", float(n)))
        hist.add_metric(
            [labels["service"], ctx.team_of(labels["service"]), labels["probe"]], buckets, total
        )
    yield hist

    last = GaugeMetricFamily(
        "platform_probe_last_success_timestamp_seconds",
        cached_help("Unix time of the last successful check of each probe.", ctx, "probe"),
        labels=["service", "team", "probe"],
    )
    for (service, probe), at in sorted(probe_store.last_success(ctx.store).items()):
        if service in known:
            last.add_metric([service, ctx.team_of(service), probe], at)
    yield last

    ratio = GaugeMetricFamily(
        "platform_service_uptime_ratio",
        cached_help(
            "Share of successful probe checks of the service over the window, from stored history.",
            ctx,
            "probe",
        ),
        labels=["service", "team", "window"],
    )
    samples = GaugeMetricFamily(
        "platform_service_uptime_samples",
        cached_help("Probe checks behind platform_service_uptime_ratio.", ctx, "probe"),
        labels=["service", "team", "window"],
    )
    per_window = probe_store.check_counts(ctx.store, ctx.now, UPTIME_WINDOWS)
    # Calendar windows (month to date, last month) count whole days from the daily totals.
    for window in CALENDAR_WINDOWS:
        span = calendar_span(window, ctx.now)
        for service, in_span in probe_store.span_counts(ctx.store, span).items():
            per_window[(service, window)] = in_span.uptime
    for svc in ctx.config.services:
        if not svc.probes:
            continue
        for window in (*UPTIME_WINDOWS, *CALENDAR_WINDOWS):
            c = per_window.get((svc.name, window))
            samples.add_metric([svc.name, svc.team, window], c.total if c else 0)
            up_ratio = uptime_ratio(c) if c else None
            if up_ratio is not None:
                ratio.add_metric([svc.name, svc.team, window], up_ratio)
    yield ratio
    yield samples

    # Typed summary (quantiles only), like every windowed quantile of the exporter: promtool
    # rejects a "quantile" label on any other type; in PromQL the series are plain samples.
    latency = Metric(
        "platform_service_probe_latency_seconds",
        cached_help("Quantiles of successful probe check durations over the window.", ctx, "probe"),
        "summary",
    )
    for window, seconds in LATENCY_WINDOWS.items():
        durations = probe_store.success_durations(ctx.store, ctx.now, seconds)
        for service in sorted(durations):
            if service not in known:
                continue
            for q in LATENCY_QUANTILES:
                seconds_q = quantile(durations[service], q)
                if seconds_q is not None:
                    latency.add_sample(
                        "platform_service_probe_latency_seconds",
                        {
                            "service": service,
                            "team": ctx.team_of(service),
                            "window": window,
                            "quantile": f"{q:g}",
                        },
                        seconds_q,
                    )
    yield latency


def _order(item: tuple[dict[str, str], object] | tuple[object, ...]) -> list[tuple[str, str]]:
    labels = item[0]
    assert isinstance(labels, dict)
    return sorted(labels.items())
