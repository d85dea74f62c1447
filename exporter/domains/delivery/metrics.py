"""Delivery KPIs: deployments, the four DORA keys, pipeline health and time to production.

Counters and pipeline histograms are persisted event counts (bumped once per
new event); the window gauges, the lead-time and restore histograms and the
DORA level are recomputed from stored events on every render. A KPI with no data
is absent, and its ``*_samples`` gauge says how many events stood behind it.

Sample::

    platform_deployments_total{service="checkout",team="payments",environment="production",result="success"} 41
    platform_deployment_frequency_per_day{service="checkout",team="payments",window="7d"} 1.2857
    platform_deployment_frequency_per_day{service="checkout",team="payments",window="last_month"} 0.9
    platform_lead_time_seconds_bucket{service="checkout",team="payments",le="3600"} 17
    platform_lead_time_quantile_seconds{service="checkout",team="payments",window="7d",quantile="0.5"} 5400
    platform_lead_time_samples{service="checkout",team="payments",window="7d"} 23
    platform_change_failure_ratio{service="checkout",team="payments",window="30d"} 0.1
    platform_change_failure_samples{service="checkout",team="payments",window="30d"} 30
    platform_time_to_restore_quantile_seconds{service="checkout",team="payments",window="30d",quantile="0.9"} 7200
    platform_pipeline_runs_total{service="checkout",team="payments",pipeline="CI",result="failure"} 12
    platform_pipeline_duration_seconds_bucket{service="checkout",team="payments",pipeline="CI",le="300"} 80
    platform_time_to_production_seconds{service="recommendations",team="discovery"} 604800
    platform_dora_performance_level{service="checkout",team="payments",level="high"} 1
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.catalog import CatalogService
from exporter.core.provider import RenderContext, cached_help, le_label
from exporter.domains.delivery import kpis as kpi
from exporter.domains.delivery import rollup
from exporter.domains.delivery import store as store
from exporter.domains.delivery.records import PipelineRun
from exporter.domains.delivery.settings import DeliverySection, DeliveryServiceFields

Help = Callable[[str], str]
Rows = Sequence[tuple[CatalogService, kpi.ServiceKpis]]
WINDOW_LABELS = ["service", "team", "window"]


def _kind(ctx: RenderContext) -> str:
    """The CI source kind HELP texts name: the first that polls, else the first there is."""
    kinds = ctx.kinds(producing=PipelineRun, enabled_only=False)
    for kind in kinds:
        if ctx.interval_of(kind) is not None:
            return kind
    return kinds[0]


def _buckets(bounds: Sequence[float], h: kpi.Histogram) -> list[tuple[str, float]]:
    counts, _total, n = h
    out = [(le_label(b), float(c)) for b, c in zip(bounds, counts, strict=True)]
    out.append(("+Inf", float(n)))
    return out


def _gauge(
    name: str, text: str, helptext: Help, labels: list[str] | None = None
) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        name, helptext(text), labels=WINDOW_LABELS if labels is None else labels
    )


def _summary(name: str, text: str, helptext: Help) -> Metric:
    # Typed summary (quantiles only) rather than gauge: promtool rejects a "quantile"
    # label on any other type; in PromQL the series are the same.
    return Metric(name, helptext(text), "summary")


def _add_quantiles(metric: Metric, lbl: Sequence[str], window: str, qs: dict[float, float]) -> None:
    for q, value in qs.items():
        labels = {"service": lbl[0], "team": lbl[1], "window": window, "quantile": f"{q:g}"}
        metric.add_sample(metric.name, labels, value)


def delivery_services(ctx: RenderContext) -> list[CatalogService]:
    """The services whose delivery KPIs are shown: config services with ``ci`` refs, and
    services of the merged catalog whose annotations name repos of a configured CI source
    (a service only Backstage lists included), in name order."""
    kinds = ctx.kinds(producing=PipelineRun)
    with_ci = [s.name for s in ctx.config.services if DeliveryServiceFields.of(s).ci]
    return kpi.delivery_services(ctx.catalog.services, with_ci, kinds)


def _service_rows(ctx: RenderContext) -> list[tuple[CatalogService, kpi.ServiceKpis]]:
    settings = DeliverySection.of(ctx.config).delivery
    rules = kpi.DeliveryRules(
        squash_lead_time=settings.squash_lead_time,
        incident_link_window=settings.incident_link_window,
        backfill_days=settings.backfill_days,
    )
    services = delivery_services(ctx)
    views = rollup.views(
        ctx.store,
        [s.name for s in services],
        rules,
        settings.commit_time,
        {s.name: s.registered_at for s in services},
        ctx.now,
    )
    return [(svc, kpi.view_kpis(views[svc.name], rules, ctx.now)) for svc in services]


def _stored_counter(
    ctx: RenderContext, known: frozenset[str], metric: str, text: str, helptext: Help, label: str
) -> Metric:
    """A persisted counter re-exported with the owning team, for known services."""
    family = CounterMetricFamily(
        metric.removesuffix("_total"), helptext(text), labels=["service", "team", label, "result"]
    )
    for labels, value in sorted(ctx.store.counters(metric), key=lambda i: sorted(i[0].items())):
        service = labels["service"]
        if service in known:
            family.add_metric(
                [service, ctx.team_of(service), labels[label], labels["result"]], value
            )
    return family


def _ratio_and_samples(
    rows: Rows,
    helptext: Help,
    names: tuple[str, str],
    texts: tuple[str, str],
    values: Callable[[kpi.ServiceKpis], dict[str, tuple[int, float | None]]],
) -> Iterator[Metric]:
    """A per-window value and the samples behind it (0 with no value)."""
    value = _gauge(names[0], texts[0], helptext)
    samples = _gauge(names[1], texts[1], helptext)
    for svc, k in rows:
        for window, (n, v) in values(k).items():
            samples.add_metric([svc.name, svc.team, window], n)
            if v is not None:
                value.add_metric([svc.name, svc.team, window], v)
    yield value
    yield samples


def _frequency(rows: Rows, helptext: Help) -> Iterator[Metric]:
    return _ratio_and_samples(
        rows,
        helptext,
        ("platform_deployment_frequency_per_day", "platform_deployment_frequency_samples"),
        (
            "Successful production deployments per day over the window.",
            "Successful production deployments in the window (0 with no data: no rate).",
        ),
        lambda k: k.frequency,
    )


def _change_failure(rows: Rows, helptext: Help) -> Iterator[Metric]:
    return _ratio_and_samples(
        rows,
        helptext,
        ("platform_change_failure_ratio", "platform_change_failure_samples"),
        (
            "Failed or incident-linked production deployments / all, over the window.",
            "Production deployments behind platform_change_failure_ratio.",
        ),
        lambda k: {w: (cf.total, cf.ratio) for w, cf in k.change_failure.items()},
    )


@dataclass(frozen=True)
class _Durations:
    """A duration KPI's three families: the histogram of every value, the quantiles per
    window and the samples behind them."""

    name: str  # the histogram; the others add _quantile_seconds and _samples to its stem
    histogram_help: str
    quantile_help: str
    samples_help: str
    bounds: Sequence[float]
    histogram: Callable[[kpi.ServiceKpis], kpi.Histogram]
    quantiles: Callable[[kpi.ServiceKpis], dict[str, kpi.Quantiles]]


LEAD_TIME = _Durations(
    "platform_lead_time_seconds",
    "Lead time for changes: deployment finish minus commit time, per commit.",
    "Median and p90 lead time for changes of deployments in the window.",
    "Commits behind platform_lead_time_quantile_seconds.",
    kpi.LEAD_TIME_BUCKETS,
    lambda k: k.lead_histogram,
    lambda k: k.lead,
)
TIME_TO_RESTORE = _Durations(
    "platform_time_to_restore_seconds",
    "Time to restore: incident resolved minus opened.",
    "Median and p90 time to restore of incidents resolved in the window.",
    "Resolved incidents behind platform_time_to_restore_quantile_seconds.",
    kpi.RESTORE_BUCKETS,
    lambda k: k.restore_histogram,
    lambda k: k.restore,
)


def _durations(rows: Rows, helptext: Help, spec: _Durations) -> Iterator[Metric]:
    stem = spec.name.removesuffix("_seconds")
    hist = HistogramMetricFamily(
        spec.name, helptext(spec.histogram_help), labels=["service", "team"]
    )
    qs = _summary(f"{stem}_quantile_seconds", spec.quantile_help, helptext)
    samples = _gauge(f"{stem}_samples", spec.samples_help, helptext)
    for svc, k in rows:
        lbl = [svc.name, svc.team]
        h = spec.histogram(k)
        hist.add_metric(lbl, _buckets(spec.bounds, h), h[1])
        for window, (n, values) in spec.quantiles(k).items():
            samples.add_metric([*lbl, window], n)
            _add_quantiles(qs, lbl, window, values)
    yield from (hist, qs, samples)


def _time_to_production(rows: Rows, helptext: Help) -> Iterator[Metric]:
    ttp = _gauge(
        "platform_time_to_production_seconds",
        "From the service's first commit (or catalog registration) to its first "
        "successful production deployment.",
        helptext,
        ["service", "team"],
    )
    samples = _gauge(
        "platform_time_to_production_samples",
        "Whether the start of time to production is known (1) or not (0): first "
        "commit or registration.",
        helptext,
        ["service", "team"],
    )
    for svc, k in rows:
        samples.add_metric([svc.name, svc.team], 1 if k.ttp_known else 0)
        if k.time_to_production is not None:
            ttp.add_metric([svc.name, svc.team], k.time_to_production)
    yield ttp
    yield samples
    first = HistogramMetricFamily(
        "platform_time_to_first_production_seconds",
        helptext("Time to production across the services of the catalog, one sample each."),
    )
    h = kpi.first_production_histogram(k for _svc, k in rows)
    first.add_metric([], _buckets(kpi.TIME_TO_PRODUCTION_BUCKETS, h), h[1])
    yield first


def _level(rows: Rows, helptext: Help) -> Metric:
    level = _gauge(
        "platform_dora_performance_level",
        "DORA performance level (2021 report thresholds over 30d); 1 for the current.",
        helptext,
        ["service", "team", "level"],
    )
    for svc, k in rows:
        if k.level is not None:
            for name in kpi.LEVELS:
                level.add_metric([svc.name, svc.team, name], 1.0 if name == k.level else 0.0)
    return level


def _pipeline_histograms(
    ctx: RenderContext, known: Iterable[str], helptext: Help
) -> Iterator[Metric]:
    for metric, text in (
        (store.RUN_DURATION, "Duration of finished pipeline runs, started to finished."),
        (store.RUN_QUEUE, "Queue time of pipeline runs, created to started."),
    ):
        hist = HistogramMetricFamily(metric, helptext(text), labels=["service", "team", "pipeline"])
        for labels, bounds, counts, total, n in sorted(
            ctx.store.histograms(metric), key=lambda i: sorted(i[0].items())
        ):
            service = labels["service"]
            if service in known:
                h: kpi.Histogram = (list(counts), total, n)
                lbl = [service, ctx.team_of(service), labels["pipeline"]]
                hist.add_metric(lbl, _buckets(bounds, h), total)
        yield hist


def collect(ctx: RenderContext) -> Iterator[Metric]:
    kind = _kind(ctx)

    def helptext(text: str) -> str:
        return cached_help(text, ctx, kind)

    known = frozenset(s.name for s in ctx.config.services) | ctx.known_services()
    yield _stored_counter(
        ctx,
        known,
        store.DEPLOYMENTS_TOTAL,
        "Finished deployments by environment and result, counted once each.",
        helptext,
        "environment",
    )
    rows = _service_rows(ctx)
    yield from _frequency(rows, helptext)
    yield from _durations(rows, helptext, LEAD_TIME)
    yield from _change_failure(rows, helptext)
    yield from _durations(rows, helptext, TIME_TO_RESTORE)
    yield from _time_to_production(rows, helptext)
    yield _level(rows, helptext)
    yield _stored_counter(
        ctx,
        known,
        store.RUNS_TOTAL,
        "Finished CI pipeline (workflow) runs by result.",
        helptext,
        "pipeline",
    )
    yield from _pipeline_histograms(ctx, known, helptext)
