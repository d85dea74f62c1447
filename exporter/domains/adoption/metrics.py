"""The service catalog and the platform's adoption: capabilities, activity, onboarding.

Everything is recomputed from the merged catalog and stored data on each
refresh, so a service removed from the catalog has no series in the next
snapshot. Sample::

    platform_catalog_entity_info{service="ledger",team="payments",system="payments",source="backstage"} 1
    platform_catalog_services{team="payments"} 3
    platform_catalog_teams 4
    platform_catalog_conflicts 1
    platform_catalog_services_registered_total{team="payments"} 3
    platform_capability_info{capability="golden-path",rule="catalog"} 1
    platform_capability_adopting_services{capability="golden-path"} 3
    platform_capability_adopting_teams{capability="golden-path"} 2
    platform_capability_adoption_ratio{capability="golden-path"} 0.4286
    platform_service_capability_adopted{service="checkout",team="payments",capability="golden-path"} 1
    platform_teams_onboarded 3
    platform_active_services{window="30d"} 5
    platform_new_services{month="2026-11"} 1
    platform_catalog_services_without_registration 2
    platform_onboarding_time_to_first_deploy_seconds_bucket{le="86400"} 1
    platform_onboarding_services{state="waiting"} 1
    platform_active_api_consumers{window="30d"} 12
    platform_cost_per_adopting_service{capability="api-gateway",currency="USD"} 41.5
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
)
from prometheus_client.metrics_core import Metric

from exporter.core.provider import RenderContext, cached_help, le_label
from exporter.core.stats import histogram
from exporter.domains.adoption import evidence as evidence_reader
from exporter.domains.adoption import kpis as kpi
from exporter.domains.catalog import store as catalog_store

SOURCE = "backstage"


def _help(text: str, ctx: RenderContext) -> str:
    if ctx.interval_of(SOURCE) is None:
        return f"{text} Cached by the exporter; recomputed after every poll of any source."
    return cached_help(text, ctx, SOURCE)


def collect(ctx: RenderContext) -> Iterator[Metric]:
    catalog = ctx.catalog
    yield from _catalog(ctx)

    windows = [c.detect.window for c in ctx.config.capabilities if hasattr(c.detect, "window")]
    facts = evidence_reader.collect(
        ctx.config, ctx.store, ctx.now, max([kpi.ACTIVE_WINDOW, *windows])
    )

    info = GaugeMetricFamily(
        "platform_capability_info",
        _help("A platform capability declared in the config, with its detection rule.", ctx),
        labels=["capability", "rule"],
    )
    services = GaugeMetricFamily(
        "platform_capability_adopting_services",
        _help("Catalog services that adopt the capability, by its detection rule.", ctx),
        labels=["capability"],
    )
    teams = GaugeMetricFamily(
        "platform_capability_adopting_teams",
        _help("Teams owning at least one service that adopts the capability.", ctx),
        labels=["capability"],
    )
    ratio = GaugeMetricFamily(
        "platform_capability_adoption_ratio",
        _help("Adopting services / services in the catalog.", ctx),
        labels=["capability"],
    )
    adopted = GaugeMetricFamily(
        "platform_service_capability_adopted",
        _help("1 if the service adopts the capability, 0 if not.", ctx),
        labels=["service", "team", "capability"],
    )
    results = []
    for cap in ctx.config.capabilities:
        info.add_metric([cap.name, cap.detect.rule], 1)
        result = kpi.adoption(cap, catalog, facts, ctx.now)
        if result is None:
            continue
        results.append(result)
        services.add_metric([cap.name], len(result.services))
        teams.add_metric([cap.name], len(result.teams))
        if result.ratio is not None:
            ratio.add_metric([cap.name], result.ratio)
        for name, svc in catalog.services.items():
            adopted.add_metric([name, svc.team, cap.name], 1 if name in result.services else 0)
    yield info
    yield services
    yield teams
    yield ratio
    yield adopted

    onboarded = GaugeMetricFamily(
        "platform_teams_onboarded",
        _help("Teams owning at least one service that adopts at least one capability.", ctx),
    )
    if ctx.config.capabilities:
        onboarded.add_metric([], len(kpi.teams_onboarded(catalog, results)))
    yield onboarded

    active = GaugeMetricFamily(
        "platform_active_services",
        _help(
            "Catalog services with a production deployment or gateway traffic in the window.", ctx
        ),
        labels=["window"],
    )
    active_set = kpi.active_services(catalog, facts, ctx.now)
    if active_set is not None:
        active.add_metric(["30d"], len(active_set))
    yield active

    new = GaugeMetricFamily(
        "platform_new_services",
        _help("Catalog services registered in each of the last 12 UTC months.", ctx),
        labels=["month"],
    )
    for month, count in kpi.new_services_per_month(catalog, ctx.now).items():
        new.add_metric([month], count)
    yield new
    unknown = GaugeMetricFamily(
        "platform_catalog_services_without_registration",
        _help("Catalog services whose registration time is unknown (not in new services).", ctx),
    )
    unknown.add_metric([], kpi.unregistered(catalog))
    yield unknown

    consumers = GaugeMetricFamily(
        "platform_active_api_consumers",
        _help(
            "Distinct API consumers seen through any gateway in the window, across all services "
            "(per service: platform_service_active_consumers).",
            ctx,
        ),
        labels=["window"],
    )
    n_consumers = evidence_reader.api_consumers(ctx.config, ctx.store, ctx.now - kpi.ACTIVE_WINDOW)
    if n_consumers is not None:
        consumers.add_metric(["30d"], n_consumers)
    yield consumers

    cost = GaugeMetricFamily(
        "platform_cost_per_adopting_service",
        _help(
            "Running cost of the capability (its cost_services) over the last 30 closed UTC days "
            "/ its adopting services.",
            ctx,
        ),
        labels=["capability", "currency"],
    )
    costs = evidence_reader.capability_costs(ctx.config, ctx.store, ctx.now)
    for result in results:
        for currency, amount in sorted(costs.get(result.capability, {}).items()):
            value = kpi.cost_per_adopting_service(amount, len(result.services))
            if value is not None:
                cost.add_metric([result.capability, currency], value)
    yield cost

    yield from _onboarding(ctx, facts)


def _catalog(ctx: RenderContext) -> Iterator[Metric]:
    catalog = ctx.catalog
    info = GaugeMetricFamily(
        "platform_catalog_entity_info",
        _help("A service of the merged catalog (config first, then Backstage).", ctx),
        labels=["service", "team", "system", "source"],
    )
    for name, svc in catalog.services.items():
        info.add_metric([name, svc.team, svc.system, svc.source], 1)
    yield info

    per_team = GaugeMetricFamily(
        "platform_catalog_services",
        _help("Services in the merged catalog by owning team (0 for a team with none).", ctx),
        labels=["team"],
    )
    counts = Counter(svc.team for svc in catalog.services.values())
    for team in sorted(catalog.teams):
        per_team.add_metric([team], counts.get(team, 0))
    yield per_team

    teams = GaugeMetricFamily("platform_catalog_teams", _help("Teams in the merged catalog.", ctx))
    teams.add_metric([], len(catalog.teams))
    yield teams

    conflicts = GaugeMetricFamily(
        "platform_catalog_conflicts",
        _help("Fields where the config and an external catalog disagree (the config wins).", ctx),
    )
    conflicts.add_metric([], len(catalog.conflicts))
    yield conflicts

    registered = CounterMetricFamily(
        "platform_catalog_services_registered",
        _help(
            "Services that entered the merged catalog, each counted once when the exporter "
            "first saw it, by its owning team then.",
            ctx,
        ),
        labels=["team"],
    )
    for labels, value in sorted(ctx.store.counters(catalog_store.REGISTERED_TOTAL), key=_team):
        registered.add_metric([labels["team"]], value)
    yield registered


def _team(item: tuple[dict[str, str], float]) -> str:
    return item[0].get("team", "")


def _onboarding(ctx: RenderContext, facts: kpi.Evidence) -> Iterator[Metric]:
    hist = GaugeHistogramMetricFamily(
        "platform_onboarding_time_to_first_deploy_seconds",
        _help(
            "Time from catalog registration to first successful production deployment, over "
            "services registered in the last 90 days (a distribution of the current cohort).",
            ctx,
        ),
    )
    states = GaugeMetricFamily(
        "platform_onboarding_services",
        _help(
            "Services registered in the last 90 days, deployed to production or still waiting.",
            ctx,
        ),
        labels=["state"],
    )
    if facts.first_deploy is not None:
        result = kpi.onboarding(ctx.catalog, facts.first_deploy, ctx.now)
        counts, total, n = histogram(result.seconds.values(), kpi.ONBOARDING_BUCKETS)
        buckets = [
            (le_label(b), float(c)) for b, c in zip(kpi.ONBOARDING_BUCKETS, counts, strict=True)
        ]
        buckets.append(("+Inf", float(n)))
        hist.add_metric([], buckets, total)
        states.add_metric(["deployed"], len(result.seconds))
        states.add_metric(["waiting"], len(result.waiting))
    yield hist
    yield states
