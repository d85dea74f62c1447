"""The merged service catalog: its services, teams, conflicts and registrations.

Recomputed from the merged catalog on each refresh, so a service removed from the
catalog has no series in the next snapshot. Sample::

    platform_catalog_entity_info{service="ledger",team="payments",system="payments",source="backstage"} 1
    platform_catalog_services{team="payments"} 3
    platform_catalog_teams 4
    platform_catalog_conflicts 1
    platform_catalog_services_registered_total{team="payments"} 3
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.provider import RenderContext, cached_help
from exporter.domains.catalog import store as catalog_store
from exporter.domains.catalog.kpis import (
    conflict_count,
    services_per_team,
    team_count,
    without_owner_count,
)
from exporter.domains.catalog.records import CatalogListing


def catalog_help(text: str, ctx: RenderContext) -> str:
    """HELP text for families recomputed from the merged catalog: refreshed after each
    poll of the catalog source, or of any source when none is polled."""
    kind = ctx.kinds(producing=CatalogListing, enabled_only=False)[0]
    if ctx.interval_of(kind) is None:
        return f"{text} Cached by the exporter; recomputed after every poll of any source."
    return cached_help(text, ctx, kind)


def collect(ctx: RenderContext) -> Iterator[Metric]:
    catalog = ctx.catalog
    info = GaugeMetricFamily(
        "platform_catalog_entity_info",
        catalog_help("A service of the merged catalog (config first, then Backstage).", ctx),
        labels=["service", "team", "system", "source"],
    )
    for name, svc in catalog.services.items():
        info.add_metric([name, svc.team, svc.system, svc.source], 1)
    yield info

    per_team = GaugeMetricFamily(
        "platform_catalog_services",
        catalog_help(
            "Services in the merged catalog by owning team (0 for a team with none).", ctx
        ),
        labels=["team"],
    )
    for team, count in services_per_team(catalog).items():
        per_team.add_metric([team], count)
    yield per_team

    ownerless = GaugeMetricFamily(
        "platform_catalog_services_without_owner",
        catalog_help(
            "Services of the merged catalog that no team owns (no owner, or an owner of a kind "
            "not in catalog.owner_kinds); they count in no team's figures.",
            ctx,
        ),
    )
    ownerless.add_metric([], without_owner_count(catalog))
    yield ownerless

    teams = GaugeMetricFamily(
        "platform_catalog_teams", catalog_help("Teams in the merged catalog.", ctx)
    )
    teams.add_metric([], team_count(catalog))
    yield teams

    conflicts = GaugeMetricFamily(
        "platform_catalog_conflicts",
        catalog_help(
            "Fields where the config and an external catalog disagree (the config wins).", ctx
        ),
    )
    conflicts.add_metric([], conflict_count(catalog))
    yield conflicts
    yield _registered(ctx)


def _registered(ctx: RenderContext) -> Metric:
    family = CounterMetricFamily(
        "platform_catalog_services_registered",
        catalog_help(
            "Services that entered the merged catalog, each counted once when the exporter "
            "first saw it, by its owning team then.",
            ctx,
        ),
        labels=["team"],
    )
    for labels, value in sorted(ctx.store.counters(catalog_store.REGISTERED_TOTAL), key=_team):
        family.add_metric([labels["team"]], value)
    return family


def _team(item: tuple[dict[str, str], float]) -> str:
    return item[0].get("team", "")
