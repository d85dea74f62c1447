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

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.catalog import CatalogService
from exporter.core.periods import last_month
from exporter.core.provider import RenderContext, cached_help, le_label
from exporter.core.stats import cumulative_counts, quantile
from exporter.domains.adoption.evidence import configured
from exporter.domains.delivery import kpis as kpi
from exporter.domains.delivery import store as store
from exporter.domains.delivery.store import ServiceDelivery

SOURCE_KINDS = ("github", "gitlab", "jenkins")


def _kind(ctx: RenderContext) -> str:
    for kind in SOURCE_KINDS:
        if ctx.interval_of(kind) is not None:
            return kind
    return "github"


def _buckets(values: Sequence[float], bounds: Sequence[float]) -> list[tuple[str, float]]:
    out = [
        (le_label(b), float(n))
        for b, n in zip(bounds, cumulative_counts(values, bounds), strict=True)
    ]
    out.append(("+Inf", float(len(values))))
    return out


def _add_quantile(metric: Metric, lbl: Sequence[str], window: str, q: float, value: float) -> None:
    labels = {"service": lbl[0], "team": lbl[1], "window": window, "quantile": f"{q:g}"}
    metric.add_sample(metric.name, labels, value)


def delivery_services(ctx: RenderContext) -> list[CatalogService]:
    """The services whose delivery KPIs are shown: config services with ``ci`` refs, and
    services of the merged catalog whose annotations name repos of a configured CI source
    (a service only Backstage lists included), in name order."""
    with_ci = {s.name for s in ctx.config.services if s.ci}
    kinds = tuple(f"{k}:" for k in SOURCE_KINDS if configured(ctx.config, (k,)))
    return [
        svc
        for name, svc in sorted(ctx.catalog.services.items())
        if name in with_ci or any(r.startswith(kinds) for r in svc.repos)
    ]


def collect(ctx: RenderContext) -> Iterator[Metric]:
    kind = _kind(ctx)

    def helptext(text: str) -> str:
        return cached_help(text, ctx, kind)

    catalog = delivery_services(ctx)
    known = {s.name for s in ctx.config.services} | ctx.known_services()
    rules = ctx.config.delivery
    data = store.load(ctx.store, rules.commit_time)
    now = ctx.now
    # Every windowed KPI is also reported over the closed previous calendar month.
    calendar: dict[str, kpi.Window] = {"last_month": last_month(now)}
    freq_windows: dict[str, kpi.Window] = {**kpi.FREQUENCY_WINDOWS, **calendar}
    lead_windows: dict[str, kpi.Window] = {**kpi.LEAD_TIME_WINDOWS, **calendar}
    cfr_windows: dict[str, kpi.Window] = {**kpi.CHANGE_FAILURE_WINDOWS, **calendar}
    restore_windows: dict[str, kpi.Window] = {**kpi.RESTORE_WINDOWS, **calendar}

    deployments = CounterMetricFamily(
        "platform_deployments",
        helptext("Finished deployments by environment and result, counted once each."),
        labels=["service", "team", "environment", "result"],
    )
    for labels, value in sorted(
        ctx.store.counters(store.DEPLOYMENTS_TOTAL), key=lambda i: sorted(i[0].items())
    ):
        if labels["service"] in known:
            deployments.add_metric(
                [
                    labels["service"],
                    ctx.team_of(labels["service"]),
                    labels["environment"],
                    labels["result"],
                ],
                value,
            )
    yield deployments

    freq = GaugeMetricFamily(
        "platform_deployment_frequency_per_day",
        helptext("Successful production deployments per day over the window."),
        labels=["service", "team", "window"],
    )
    freq_samples = GaugeMetricFamily(
        "platform_deployment_frequency_samples",
        helptext("Successful production deployments in the window (0 with no data: no rate)."),
        labels=["service", "team", "window"],
    )
    lead_hist = HistogramMetricFamily(
        "platform_lead_time_seconds",
        helptext("Lead time for changes: deployment finish minus commit time, per commit."),
        labels=["service", "team"],
    )
    # Typed summary (quantiles only) rather than gauge: promtool rejects a "quantile"
    # label on any other type; in PromQL the series are the same.
    lead_q = Metric(
        "platform_lead_time_quantile_seconds",
        helptext("Median and p90 lead time for changes of deployments in the window."),
        "summary",
    )
    lead_samples = GaugeMetricFamily(
        "platform_lead_time_samples",
        helptext("Commits behind platform_lead_time_quantile_seconds."),
        labels=["service", "team", "window"],
    )
    cfr = GaugeMetricFamily(
        "platform_change_failure_ratio",
        helptext("Failed or incident-linked production deployments / all, over the window."),
        labels=["service", "team", "window"],
    )
    cfr_samples = GaugeMetricFamily(
        "platform_change_failure_samples",
        helptext("Production deployments behind platform_change_failure_ratio."),
        labels=["service", "team", "window"],
    )
    ttr_hist = HistogramMetricFamily(
        "platform_time_to_restore_seconds",
        helptext("Time to restore: incident resolved minus opened."),
        labels=["service", "team"],
    )
    ttr_q = Metric(
        "platform_time_to_restore_quantile_seconds",
        helptext("Median and p90 time to restore of incidents resolved in the window."),
        "summary",
    )
    ttr_samples = GaugeMetricFamily(
        "platform_time_to_restore_samples",
        helptext("Resolved incidents behind platform_time_to_restore_quantile_seconds."),
        labels=["service", "team", "window"],
    )
    ttp = GaugeMetricFamily(
        "platform_time_to_production_seconds",
        helptext(
            "From the service's first commit (or catalog registration) to its first "
            "successful production deployment."
        ),
        labels=["service", "team"],
    )
    ttp_samples = GaugeMetricFamily(
        "platform_time_to_production_samples",
        helptext(
            "Whether the start of time to production is known (1) or not (0): first "
            "commit or registration."
        ),
        labels=["service", "team"],
    )
    level = GaugeMetricFamily(
        "platform_dora_performance_level",
        helptext("DORA performance level (2021 report thresholds over 30d); 1 for the current."),
        labels=["service", "team", "level"],
    )
    ttp_values: list[float] = []

    for svc in catalog:
        d: ServiceDelivery = data.get(svc.name) or ServiceDelivery()
        lbl = [svc.name, svc.team]
        for window, span in freq_windows.items():
            freq_samples.add_metric(
                [*lbl, window], kpi.successful_deployments(d.deploys, now, span)
            )
            per_day = kpi.deployment_frequency(d.deploys, now, span)
            if per_day is not None:
                freq.add_metric([*lbl, window], per_day)

        squashed = d.squashed if rules.squash_lead_time == "original_commits" else None
        leads = kpi.lead_times(d.deploys, d.commits, squashed)
        lead_values = [s.seconds for s in leads if s.deployed_at <= now]
        lead_hist.add_metric(lbl, _buckets(lead_values, kpi.LEAD_TIME_BUCKETS), sum(lead_values))
        lead_median_30d: float | None = None
        for window, span in lead_windows.items():
            n, qs = kpi.lead_time_quantiles(leads, now, span)
            lead_samples.add_metric([*lbl, window], n)
            for q, lead_v in qs.items():
                _add_quantile(lead_q, lbl, window, q, lead_v)
            if window == "30d":
                lead_median_30d = qs.get(0.5)

        cfr_30d: float | None = None
        for window, span in cfr_windows.items():
            cf = kpi.change_failure(
                d.deploys,
                d.incidents,
                now,
                span,
                rules.incident_link_window,
                d.commits,
                d.squashed,
            )
            cfr_samples.add_metric([*lbl, window], cf.total)
            if cf.ratio is not None:
                cfr.add_metric([*lbl, window], cf.ratio)
                if window == "30d":
                    cfr_30d = cf.ratio

        restores = kpi.restore_times(d.incidents, now, float("inf"))
        ttr_hist.add_metric(lbl, _buckets(restores, kpi.RESTORE_BUCKETS), sum(restores))
        ttr_median_30d: float | None = None
        for window, span in restore_windows.items():
            values = kpi.restore_times(d.incidents, now, span)
            ttr_samples.add_metric([*lbl, window], len(values))
            for q in kpi.QUANTILES:
                restore_q = quantile(values, q)
                if restore_q is not None:
                    _add_quantile(ttr_q, lbl, window, q, restore_q)
            if window == "30d":
                ttr_median_30d = quantile(values, 0.5)

        start = kpi.first_commit_time(d.commits)
        history_start = now - rules.backfill_days * kpi.DAY
        if start is None and svc.registered_at is not None:
            # A registration older than the history we read may predate deployments we
            # never saw: its first production deployment is unknown.
            registered = svc.registered_at
            start = registered if registered >= history_start else None
        ttp_samples.add_metric(lbl, 0 if start is None else 1)
        to_prod = kpi.time_to_production(start, d.deploys, now)
        if to_prod is not None:
            ttp.add_metric(lbl, to_prod)
            ttp_values.append(to_prod)

        current = kpi.performance_level(
            kpi.deployment_frequency(d.deploys, now, kpi.FREQUENCY_WINDOWS["30d"]),
            lead_median_30d,
            cfr_30d,
            ttr_median_30d,
        )
        if current is not None:
            for name in kpi.LEVELS:
                level.add_metric([*lbl, name], 1.0 if name == current else 0.0)

    yield freq
    yield freq_samples
    yield lead_hist
    yield lead_q
    yield lead_samples
    yield cfr
    yield cfr_samples
    yield ttr_hist
    yield ttr_q
    yield ttr_samples
    yield ttp
    yield ttp_samples
    first_prod = HistogramMetricFamily(
        "platform_time_to_first_production_seconds",
        helptext("Time to production across the services of the catalog, one sample each."),
    )
    first_prod.add_metric([], _buckets(ttp_values, kpi.TIME_TO_PRODUCTION_BUCKETS), sum(ttp_values))
    yield first_prod
    yield level

    runs = CounterMetricFamily(
        "platform_pipeline_runs",
        helptext("Finished CI pipeline (workflow) runs by result."),
        labels=["service", "team", "pipeline", "result"],
    )
    for labels_, value in sorted(
        ctx.store.counters(store.RUNS_TOTAL), key=lambda i: sorted(i[0].items())
    ):
        if labels_["service"] in known:
            runs.add_metric(
                [
                    labels_["service"],
                    ctx.team_of(labels_["service"]),
                    labels_["pipeline"],
                    labels_["result"],
                ],
                value,
            )
    yield runs
    for metric, text in (
        (store.RUN_DURATION, "Duration of finished pipeline runs, started to finished."),
        (store.RUN_QUEUE, "Queue time of pipeline runs, created to started."),
    ):
        hist = HistogramMetricFamily(metric, helptext(text), labels=["service", "team", "pipeline"])
        for labels_, bounds, counts, total, n in sorted(
            ctx.store.histograms(metric), key=lambda i: sorted(i[0].items())
        ):
            if labels_["service"] not in known:
                continue
            buckets = [(le_label(b), float(c)) for b, c in zip(bounds, counts, strict=True)]
            buckets.append(("+Inf", float(n)))
            hist.add_metric(
                [labels_["service"], ctx.team_of(labels_["service"]), labels_["pipeline"]],
                buckets,
                total,
            )
        yield hist
