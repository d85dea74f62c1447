"""The facts adoption rules are evaluated on, read from the other store domains.

Each function is a small, explicit input interface for the pure functions of
:mod:`exporter.domains.adoption.kpis`: gateway traffic per service and period,
pipeline template use per service, first and last production deployment per
service, active API consumers, and running cost. Each returns ``None`` when its
data is not collected at all (no source of that kind is configured), so a
rule on missing data has no value rather than a false 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime

from exporter.core.provider import RenderContext
from exporter.core.settings import ConfigBase
from exporter.core.store import Store
from exporter.domains.adoption.kpis import Evidence, PipelineFact, TrafficFact
from exporter.domains.adoption.settings import AdoptionSection
from exporter.domains.cost.records import CostContribution
from exporter.domains.cost.settings import CostSection
from exporter.domains.delivery.records import PipelineRun
from exporter.domains.traffic.records import TrafficDelta

# A source tagged "template:<kind>" records TemplateUse facts of that kind ("workflow":
# a GitHub run's workflow file and reusable workflows, "include": GitLab CI includes).
TEMPLATE_TAG = "template:"


@dataclass(frozen=True)
class Collected:
    """Which kinds of evidence the enabled sources collect (from their declarations)."""

    gateway: bool  # a gateway source: traffic and consumers
    ci: bool  # a CI source: pipeline runs and deployments
    cost: bool  # a billing source
    # What the pipeline_template rule can match: "pipeline" (the pipeline, workflow or
    # job name of every run) with any CI source, plus each enabled source's template kinds.
    template_kinds: frozenset[str]


def collected(ctx: RenderContext) -> Collected:
    """What the enabled sources of ``ctx`` collect."""
    ci = bool(ctx.kinds(producing=PipelineRun))
    tagged = {
        tag.removeprefix(TEMPLATE_TAG)
        for s in ctx.sources
        if s.enabled
        for tag in s.tags
        if tag.startswith(TEMPLATE_TAG)
    }
    return Collected(
        gateway=bool(ctx.kinds(producing=TrafficDelta)),
        ci=ci,
        cost=bool(ctx.kinds(producing=CostContribution)),
        template_kinds=frozenset(({"pipeline"} if ci else set()) | tagged),
    )


def gateway_traffic(seen: Collected, store: Store, since: float) -> list[TrafficFact] | None:
    """Requests per service and UTC day, for days starting after ``since`` minus one day.

    None when no gateway source is configured (adoption through the gateway is unknown).
    """
    if not seen.gateway:
        return None
    from exporter.domains.traffic import store as traffic_store

    first = datetime.fromtimestamp(since, UTC).date()
    return traffic_facts(traffic_store.daily_totals(store, first))


def traffic_facts(totals: Mapping[tuple[str, date], int]) -> list[TrafficFact]:
    """The gateways' requests per (service, UTC day) as facts, by service, then day."""
    days = {d for _, d in totals}
    starts = {d: datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() for d in days}
    return [TrafficFact(service, starts[d], float(n)) for (service, d), n in sorted(totals.items())]


def api_consumers(seen: Collected, store: Store, since: float) -> int | None:
    """Distinct API consumers seen at or after ``since`` across every service and gateway."""
    if not seen.gateway:
        return None
    from exporter.domains.traffic import store as traffic_store

    return traffic_store.distinct_consumers(store, since)


def pipeline_templates(seen: Collected, store: Store, since: float) -> list[PipelineFact] | None:
    """The last run per service and workflow path, include or pipeline name after ``since``.

    None without a CI source.
    """
    if not seen.ci:
        return None
    from exporter.domains.catalog import store as catalog_store
    from exporter.domains.delivery import store as delivery_store

    facts = [
        PipelineFact(service, kind, ref, at)
        for service, kind, ref, at in catalog_store.template_uses(store, since)
    ]
    facts += [
        PipelineFact(service, "pipeline", pipeline, at)
        for service, pipeline, at in delivery_store.last_runs_per_pipeline(store, since)
    ]
    return facts


def production_deploys(
    seen: Collected, store: Store
) -> tuple[dict[str, float], dict[str, float]] | None:
    """(first, last) successful production deployment per service; None without a CI source."""
    if not seen.ci:
        return None
    from exporter.domains.delivery import store as delivery_store

    span = delivery_store.production_deploy_span(store)
    if span is None:
        return None
    first = {service: a for service, (a, _) in span.items()}
    last = {service: b for service, (_, b) in span.items()}
    return first, last


def capability_costs(
    config: ConfigBase, seen: Collected, store: Store, now: float
) -> dict[str, dict[str, float]]:
    """Each capability's running cost per currency over the last 30 closed UTC days.

    The cost of a capability is the allocated cost of its ``cost_services``; a capability
    without them, or with no cost row in the window, is absent (no cost data is not 0).
    """
    wanted = {
        c.name: set(c.cost_services)
        for c in AdoptionSection.of(config).capabilities
        if c.cost_services
    }
    if not wanted or not seen.cost:
        return {}
    from exporter.core.periods import utc_date
    from exporter.domains.cost import store as cost_store
    from exporter.domains.cost.kpis import window_bounds

    today = utc_date(now)
    first, last = window_bounds(today)["30d"]
    # Only days every cost source has proved arrived (a spread monthly fee proves none).
    end = cost_store.data_end(store, today.isoformat())
    if end is None or end < first:
        return {}
    rows = cost_store.daily_costs(store, first, min(last, end), CostSection.of(config).cost.amount)
    out: dict[str, dict[str, float]] = {}
    for _day, service, _team, _provider, _category, currency, amount in rows:
        for capability, services in wanted.items():
            if service in services:
                per = out.setdefault(capability, {})
                per[currency] = per.get(currency, 0.0) + amount
    return out


def collect(seen: Collected, store: Store, now: float, window: float) -> Evidence:
    """Everything the adoption rules need for windows up to ``window`` before ``now``."""
    since = now - window
    deploys = production_deploys(seen, store)
    return Evidence(
        traffic=gateway_traffic(seen, store, since),
        pipelines=pipeline_templates(seen, store, since),
        pipeline_kinds=seen.template_kinds,
        first_deploy=deploys[0] if deploys else None,
        last_deploy=deploys[1] if deploys else None,
    )
