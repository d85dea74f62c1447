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

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.catalog import CatalogService
from exporter.core.provider import RenderContext, cached_help, le_label
from exporter.domains.delivery import kpis as kpi
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
    data = store.load(ctx.store, settings.commit_time)
    return [
        (
            svc,
            kpi.service_kpis(
                data.get(svc.name) or kpi.ServiceDelivery(), rules, svc.registered_at, ctx.now
            ),
        )
        for svc in delivery_services(ctx)
    ]


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


def _frequency(rows: Rows, helptext: Help) -> Iterator[Metric]:
    freq = _gauge(
        "platform_deployment_frequency_per_day",
        "Successful production deployments per day over the window.",
        helptext,
    )
    samples = _gauge(
        "platform_deployment_frequency_samples",
        "Successful production deployments in the window (0 with no data: no rate).",
        helptext,
    )
    for svc, k in rows:
        for window, (n, per_day) in k.frequency.items():
            samples.add_metric([svc.name, svc.team, window], n)
            if per_day is not None:
                freq.add_metric([svc.name, svc.team, window], per_day)
    yield freq
    yield samples


def _lead_time(rows: Rows, helptext: Help) -> Iterator[Metric]:
    hist = HistogramMetricFamily(
        "platform_lead_time_seconds",
        helptext("Lead time for changes: deployment finish minus commit time, per commit."),
        labels=["service", "team"],
    )
    qs = _summary(
        "platform_lead_time_quantile_seconds",
        "Median and p90 lead time for changes of deployments in the window.",
        helptext,
    )
    samples = _gauge(
        "platform_lead_time_samples",
        "Commits behind platform_lead_time_quantile_seconds.",
        helptext,
    )
    for svc, k in rows:
        lbl = [svc.name, svc.team]
        hist.add_metric(lbl, _buckets(kpi.LEAD_TIME_BUCKETS, k.lead_histogram), k.lead_histogram[1])
        for window, (n, values) in k.lead.items():
            samples.add_metric([*lbl, window], n)
            _add_quantiles(qs, lbl, window, values)
    yield from (hist, qs, samples)


def _change_failure(rows: Rows, helptext: Help) -> Iterator[Metric]:
    ratio = _gauge(
        "platform_change_failure_ratio",
        "Failed or incident-linked production deployments / all, over the window.",
        helptext,
    )
    samples = _gauge(
        "platform_change_failure_samples",
        "Production deployments behind platform_change_failure_ratio.",
        helptext,
    )
    for svc, k in rows:
        for window, cf in k.change_failure.items():
            samples.add_metric([svc.name, svc.team, window], cf.total)
            if cf.ratio is not None:
                ratio.add_metric([svc.name, svc.team, window], cf.ratio)
    yield ratio
    yield samples


def _restore(rows: Rows, helptext: Help) -> Iterator[Metric]:
    hist = HistogramMetricFamily(
        "platform_time_to_restore_seconds",
        helptext("Time to restore: incident resolved minus opened."),
        labels=["service", "team"],
    )
    qs = _summary(
        "platform_time_to_restore_quantile_seconds",
        "Median and p90 time to restore of incidents resolved in the window.",
        helptext,
    )
    samples = _gauge(
        "platform_time_to_restore_samples",
        "Resolved incidents behind platform_time_to_restore_quantile_seconds.",
        helptext,
    )
    for svc, k in rows:
        lbl = [svc.name, svc.team]
        hist.add_metric(
            lbl, _buckets(kpi.RESTORE_BUCKETS, k.restore_histogram), k.restore_histogram[1]
        )
        for window, (n, values) in k.restore.items():
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
    yield from _lead_time(rows, helptext)
    yield from _change_failure(rows, helptext)
    yield from _restore(rows, helptext)
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
