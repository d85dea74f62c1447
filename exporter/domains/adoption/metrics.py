"""The platform's adoption: capabilities, activity, onboarding.

Everything is recomputed from the merged catalog and stored data on each
refresh, so a service removed from the catalog has no series in the next
snapshot (the catalog's own families: :mod:`exporter.domains.catalog.metrics`).
Sample::

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

from collections.abc import Iterator

from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.provider import RenderContext, le_label
from exporter.domains.adoption import evidence as evidence_reader
from exporter.domains.adoption import kpis as kpi
from exporter.domains.adoption.settings import AdoptionSection
from exporter.domains.catalog.metrics import catalog_help as _help


def collect(ctx: RenderContext) -> Iterator[Metric]:
    window = kpi.evidence_window(AdoptionSection.of(ctx.config).capabilities)
    seen = evidence_reader.collected(ctx)
    facts = evidence_reader.collect(seen, ctx.store, ctx.now, window)
    results = [
        r
        for cap in AdoptionSection.of(ctx.config).capabilities
        if (r := kpi.adoption(cap, ctx.catalog, facts, ctx.now)) is not None
    ]
    yield from _capabilities(ctx, results)
    yield from _activity(ctx, facts, results)
    yield _api_consumers(ctx, seen)
    yield _costs(ctx, seen, results)
    yield from _onboarding(ctx, facts)


def _capabilities(ctx: RenderContext, results: list[kpi.CapabilityAdoption]) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        "platform_capability_info",
        _help("A platform capability declared in the config, with its detection rule.", ctx),
        labels=["capability", "rule"],
    )
    for cap in AdoptionSection.of(ctx.config).capabilities:
        info.add_metric([cap.name, cap.detect.rule], 1)
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
    for result in results:
        name = result.capability
        services.add_metric([name], result.adopting_services)
        teams.add_metric([name], result.adopting_teams)
        if result.ratio is not None:
            ratio.add_metric([name], result.ratio)
        for service, svc in ctx.catalog.services.items():
            adopted.add_metric([service, svc.team, name], result.adopted(service))
    yield from (info, services, teams, ratio, adopted)


def _activity(
    ctx: RenderContext, facts: kpi.Evidence, results: list[kpi.CapabilityAdoption]
) -> Iterator[Metric]:
    catalog = ctx.catalog
    onboarded = GaugeMetricFamily(
        "platform_teams_onboarded",
        _help("Teams owning at least one service that adopts at least one capability.", ctx),
    )
    if AdoptionSection.of(ctx.config).capabilities:
        onboarded.add_metric([], kpi.teams_onboarded_count(catalog, results))
    yield onboarded

    active = GaugeMetricFamily(
        "platform_active_services",
        _help(
            "Catalog services with a production deployment or gateway traffic in the window.", ctx
        ),
        labels=["window"],
    )
    n_active = kpi.active_service_count(catalog, facts, ctx.now)
    if n_active is not None:
        active.add_metric(["30d"], n_active)
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


def _api_consumers(ctx: RenderContext, seen: evidence_reader.Collected) -> Metric:
    family = GaugeMetricFamily(
        "platform_active_api_consumers",
        _help(
            "Distinct API consumers seen through any gateway in the window, across all services "
            "(per service: platform_service_active_consumers).",
            ctx,
        ),
        labels=["window"],
    )
    since = kpi.active_since(ctx.now)
    n_consumers = evidence_reader.api_consumers(seen, ctx.store, since)
    if n_consumers is not None:
        family.add_metric(["30d"], n_consumers)
    return family


def _costs(
    ctx: RenderContext, seen: evidence_reader.Collected, results: list[kpi.CapabilityAdoption]
) -> Metric:
    family = GaugeMetricFamily(
        "platform_cost_per_adopting_service",
        _help(
            "Running cost of the capability (its cost_services) over the last 30 closed UTC days "
            "/ its adopting services.",
            ctx,
        ),
        labels=["capability", "currency"],
    )
    costs = evidence_reader.capability_costs(ctx.config, seen, ctx.store, ctx.now)
    for result in results:
        for currency, amount in sorted(costs.get(result.capability, {}).items()):
            value = kpi.cost_per_adopting_service(amount, result.adopting_services)
            if value is not None:
                family.add_metric([result.capability, currency], value)
    return family


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
        counts, total, n = result.histogram()
        buckets = [
            (le_label(b), float(c)) for b, c in zip(kpi.ONBOARDING_BUCKETS, counts, strict=True)
        ]
        buckets.append(("+Inf", float(n)))
        hist.add_metric([], buckets, total)
        states.add_metric(["deployed"], result.deployed_count)
        states.add_metric(["waiting"], result.waiting_count)
    yield hist
    yield states
