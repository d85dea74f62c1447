"""Error budgets and burn rates of every configured SLO, from the exporter's stored history.

The same quantities as the generated recording rules (same windows, same event
definitions), computed from stored probe results and gateway minutes, so a
dashboard has them without the rules and a test can check one against the other.
OpenSLO SLOs, whose events live elsewhere, are left to the rules.

Every SLO is also reported over the calendar windows ``month`` (this month so
far) and ``last_month`` (the previous calendar month), with its error budget
remaining: the calendar-month SLA view, whatever the SLO's own period. For a
``window: month`` SLO, ``month`` is its period.

Sample::

    platform_slo_objective_ratio{service="checkout",team="payments",slo="availability"} 0.999
    platform_slo_sli_error_ratio{service="checkout",team="payments",slo="availability",window="1h"} 0.0021
    platform_slo_burn_rate{service="checkout",team="payments",slo="availability",window="1h"} 2.1
    platform_slo_error_budget_remaining_ratio{service="checkout",team="payments",slo="availability",window="30d"} 0.62
    platform_slo_error_budget_remaining_ratio{service="checkout",team="payments",slo="availability",window="last_month"} 0.35
    platform_slo_samples{service="checkout",team="payments",slo="availability",window="1h"} 120
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.periods import last_month, month_to_date
from exporter.core.provider import RenderContext
from exporter.domains.slo import store as slo_store
from exporter.domains.slo.kpis import EventCounts, budget_remaining, burn_rate, error_ratio
from exporter.domains.slo.rules import windows as slo_windows
from exporter.domains.slo.spec import SLOSpec, all_slos
from exporter.domains.slo.windows import MONTH, prom_duration

LABELS = ["service", "team", "slo"]
CACHED = " Computed from the exporter's stored history after each poll and cached."


def _events(
    ctx: RenderContext, probes: slo_store.ProbeWindows, spec: SLOSpec, windows: dict[str, float]
) -> dict[str, EventCounts]:
    if spec.sli == "probe-availability":
        return slo_store.probe_availability_events(probes, spec.service, windows)
    if spec.sli == "probe-latency":
        assert spec.threshold is not None
        return slo_store.probe_latency_events(probes, spec.service, windows, spec.threshold)
    threshold = spec.threshold if spec.sli == "requests-latency" else None
    per_service = slo_store.request_events(ctx.store, ctx.now, windows, threshold)
    return {w: per_service.get((spec.service, w), EventCounts(0, 0)) for w in windows}


def collect(ctx: RenderContext) -> Iterator[Metric]:
    objective = GaugeMetricFamily(
        "platform_slo_objective_ratio",
        "The SLO's objective: the share of events that must be good." + CACHED,
        labels=LABELS,
    )
    ratio = GaugeMetricFamily(
        "platform_slo_sli_error_ratio",
        "Bad events / all events of the SLO's indicator over the window." + CACHED,
        labels=[*LABELS, "window"],
    )
    burn = GaugeMetricFamily(
        "platform_slo_burn_rate",
        "Error ratio over the window / error budget (1 - objective); 1 spends the budget "
        "exactly over the SLO period." + CACHED,
        labels=[*LABELS, "window"],
    )
    remaining = GaugeMetricFamily(
        "platform_slo_error_budget_remaining_ratio",
        "Share of the error budget left over the SLO period, or over the calendar month so "
        "far (window month) and the previous one (last_month); negative when overspent." + CACHED,
        labels=[*LABELS, "window"],
    )
    samples = GaugeMetricFamily(
        "platform_slo_samples",
        "Events behind the SLO's error ratio over the window (0: the ratio is absent)." + CACHED,
        labels=[*LABELS, "window"],
    )
    calendar = {MONTH: month_to_date(ctx.now), "last_month": last_month(ctx.now)}
    spans = slo_store.SpanEvents(ctx.store, ctx.now)
    probes = slo_store.ProbeWindows(ctx.store, ctx.now)
    for spec in all_slos(ctx.config):
        if spec.sli == "openslo":
            continue
        key = [spec.service, spec.team, spec.name]
        objective.add_metric(key, spec.objective)
        windows = {prom_duration(w): w for w in slo_windows(spec)}
        events = _events(ctx, probes, spec, windows)
        for name, span in calendar.items():
            events[name] = spans.events(spec.sli, spec.service, span, spec.threshold)
        budgeted = {spec.period_name, *calendar}
        for name, counts in events.items():
            samples.add_metric([*key, name], counts.total)
            value = error_ratio(counts)
            if value is None:
                continue
            ratio.add_metric([*key, name], value)
            burn.add_metric([*key, name], burn_rate(value, spec.objective))
            if name in budgeted:
                remaining.add_metric([*key, name], budget_remaining(value, spec.objective))
    yield from (objective, ratio, burn, remaining, samples)
