"""On-call incidents: how many each tool reported, which are open, time to acknowledge.

Change failure and time to restore, computed from these incidents (merged across
tools), are the delivery domain's ``platform_change_failure_ratio`` and
``platform_time_to_restore_*``.

Sample::

    platform_incidents_total{service="accounts",team="identity",source="pagerduty",severity="high"} 3
    platform_incidents_open{service="accounts",team="identity",source="opsgenie"} 1
    platform_incidents_distinct{service="accounts",team="identity",window="30d"} 2
    platform_incident_time_to_acknowledge_quantile_seconds{service="accounts",team="identity",window="30d",quantile="0.5"} 900
    platform_incident_time_to_acknowledge_samples{service="accounts",team="identity",window="30d"} 2
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.provider import RenderContext, cached_help
from exporter.domains.incident import kpis, store
from exporter.domains.incident.records import OnCallIncident
from exporter.domains.incident.settings import IncidentSection


def collect(ctx: RenderContext) -> Iterator[Metric]:
    kinds = ctx.kinds(producing=OnCallIncident)
    kind = kinds[0] if kinds else "alertmanager"

    def helptext(text: str) -> str:
        return cached_help(text, ctx, kind)

    known = frozenset(s.name for s in ctx.config.services) | ctx.known_services()
    yield _totals(ctx, known, helptext)
    yield _open(ctx, known, helptext)
    window = IncidentSection.of(ctx.config).incidents.duplicate_window
    counted = {
        service: kpis.merge_duplicates(spans, window)
        for service, spans in sorted(
            store.spans_since(ctx.store, kpis.earliest_needed(ctx.now)).items()
        )
        if service in known
    }
    distinct = GaugeMetricFamily(
        "platform_incidents_distinct",
        helptext(
            "Incidents opened in the window that count toward the DORA keys, each counted "
            "once even when several tools reported it."
        ),
        labels=["service", "team", "window"],
    )
    ack = Metric(
        "platform_incident_time_to_acknowledge_quantile_seconds",
        helptext("From an incident's opening to its first acknowledgement, in any tool."),
        "summary",
    )
    samples = GaugeMetricFamily(
        "platform_incident_time_to_acknowledge_samples",
        helptext("Incidents acknowledged in the window behind the time-to-acknowledge quantiles."),
        labels=["service", "team", "window"],
    )
    for service, groups in counted.items():
        team = ctx.team_of(service)
        for name, seconds in kpis.ACK_WINDOWS.items():
            distinct.add_metric([service, team, name], kpis.opened_in(groups, ctx.now, seconds))
            n, values = kpis.acknowledge_quantiles(groups, ctx.now, seconds)
            samples.add_metric([service, team, name], n)
            for q, value in values.items():
                labels = {"service": service, "team": team, "window": name, "quantile": f"{q:g}"}
                ack.add_sample(ack.name, labels, value)
    yield from (distinct, ack, samples)


Help = Callable[[str], str]


def _totals(ctx: RenderContext, known: frozenset[str], helptext: Help) -> Metric:
    total = CounterMetricFamily(
        store.INCIDENTS_TOTAL,
        helptext("Incidents each on-call tool reported, counted once each when first seen."),
        labels=["service", "team", "source", "severity"],
    )
    rows = sorted(ctx.store.counters(store.INCIDENTS_TOTAL), key=lambda i: sorted(i[0].items()))
    for labels, value in rows:
        service = labels["service"]
        if service in known:
            team = ctx.team_of(service)
            total.add_metric([service, team, labels["source"], labels["severity"]], value)
    return total


def _open(ctx: RenderContext, known: frozenset[str], helptext: Help) -> Metric:
    gauge = GaugeMetricFamily(
        "platform_incidents_open",
        helptext("Incidents open now, as each on-call tool reports them."),
        labels=["service", "team", "source"],
    )
    for service, source, n in store.open_counts(ctx.store, ctx.now):
        if service in known:
            gauge.add_metric([service, ctx.team_of(service), source], n)
    return gauge
