"""The review's delivery numbers, through the delivery and adoption domains' KPIs.

The DORA keys of a service (or of a team: its services' deliveries taken as one)
are the delivery KPIs at the week's end (what
:func:`~exporter.domains.delivery.kpis.service_kpis` computes, without the
histograms and calendar windows the review does not show), so they use the
metrics' windows: deployments and lead time over the 7 days that end there (for
a finished week, the week itself), change failure ratio, time to restore and the
performance level over 30 days. Lead times are walked once per service; a team
pools its services' samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter.core.catalog import Catalog
from exporter.core.periods import Span
from exporter.core.provider import RenderContext
from exporter.core.stats import quantile
from exporter.domains.adoption import evidence as evidence_reader
from exporter.domains.adoption import kpis as adoption_kpis
from exporter.domains.delivery import kpis as kpi
from exporter.domains.delivery import store as delivery_store
from exporter.domains.delivery.records import Deployment
from exporter.domains.delivery.settings import DeliverySection
from exporter.review.model import Cell, Dora, IncidentLine, Onboarded


@dataclass(frozen=True)
class DeliveryHistory:
    """Every service's stored deliveries and the rules its KPIs apply."""

    enabled: bool  # a CI/CD source is configured
    data: Mapping[str, kpi.ServiceDelivery]
    rules: kpi.DeliveryRules


def read(ctx: RenderContext) -> DeliveryHistory:
    settings = DeliverySection.of(ctx.config).delivery
    rules = kpi.DeliveryRules(
        squash_lead_time=settings.squash_lead_time,
        incident_link_window=settings.incident_link_window,
        backfill_days=settings.backfill_days,
    )
    enabled = bool(ctx.kinds(producing=Deployment))
    data = delivery_store.load(ctx.store, settings.commit_time) if enabled else {}
    return DeliveryHistory(enabled, data, rules)


@dataclass(frozen=True)
class Shipped:
    """What one service's (or team's) DORA keys are computed from: its deployments, its
    incidents and its commits' lead times (the costly part, computed once per service)."""

    deploys: list[kpi.ProdDeploy]
    incidents: list[kpi.IncidentSpan]
    leads: list[kpi.LeadTime]
    failure: kpi.ChangeFailure


def shipped(history: DeliveryHistory, d: kpi.ServiceDelivery, end: float) -> Shipped:
    squashed = d.squashed if history.rules.squash_lead_time == "original_commits" else None
    failure = kpi.change_failure(
        d.deploys,
        d.incidents,
        end,
        kpi.CHANGE_FAILURE_WINDOWS["30d"],
        history.rules.incident_link_window,
        d.commits,
        d.squashed,
    )
    return Shipped(d.deploys, d.incidents, kpi.lead_times(d.deploys, d.commits, squashed), failure)


def together(parts: Iterable[Shipped]) -> Shipped:
    """Several services' deliveries as one (a team's): their samples pooled."""
    items = list(parts)
    return Shipped(
        [x for p in items for x in p.deploys],
        [x for p in items for x in p.incidents],
        [x for p in items for x in p.leads],
        kpi.ChangeFailure(
            sum(p.failure.failed for p in items), sum(p.failure.total for p in items)
        ),
    )


def dora(history: DeliveryHistory, s: Shipped, end: float, stale: bool) -> Dora:
    """The four keys and the level at ``end``, over the metrics' windows (see the module
    doc); no data without a CI/CD source."""
    if not history.enabled:
        none = Cell(None, stale)
        return Dora(none, none, none, none, none, None, stale)
    week, month = kpi.FREQUENCY_WINDOWS["7d"], kpi.FREQUENCY_WINDOWS["30d"]
    lead_week = kpi.lead_time_quantiles(s.leads, end, week)[1].get(0.5)
    lead_month = kpi.lead_time_quantiles(s.leads, end, month)[1].get(0.5)
    restore = quantile(kpi.restore_times(s.incidents, end, kpi.RESTORE_WINDOWS["30d"]), 0.5)
    level = kpi.performance_level(
        kpi.deployment_frequency(s.deploys, end, month), lead_month, s.failure.ratio, restore
    )
    return Dora(
        deploys=Cell(float(kpi.successful_deployments(s.deploys, end, week)), stale),
        per_day=Cell(kpi.deployment_frequency(s.deploys, end, week), stale),
        lead_time=Cell(lead_week, stale),
        change_failure=Cell(s.failure.ratio, stale),
        restore=Cell(restore, stale),
        level=level,
        level_stale=stale,
    )


def median_time_to_production(
    history: DeliveryHistory, catalog: Catalog, end: float
) -> float | None:
    """The median of the services' time to production at ``end`` (services that have one)."""
    values = []
    for name, svc in catalog.services.items():
        d = history.data.get(name)
        if d is None:
            continue
        start = kpi.production_start(d, svc.registered_at, end, history.rules.backfill_days)
        ttp = kpi.time_to_production(start, d.deploys, end)
        if ttp is not None:
            values.append(ttp)
    return quantile(values, 0.5)


def incidents(
    history: DeliveryHistory, team_of: Mapping[str, str], span: Span, stale: bool
) -> list[IncidentLine]:
    """Incidents open at any time in the week, with their time to restore if they were
    resolved in it; by opening time."""
    out = []
    for service, d in sorted(history.data.items()):
        for inc in d.incidents:
            if inc.opened_at >= span.end or (
                inc.resolved_at is not None and inc.resolved_at < span.start
            ):
                continue
            restored = kpi.restore_times([inc], span.end, span)
            out.append(
                IncidentLine(
                    service,
                    team_of.get(service, "unknown"),
                    inc.key,
                    inc.opened_at,
                    inc.resolved_at
                    if inc.resolved_at is not None and inc.resolved_at < span.end
                    else None,
                    Cell(restored[0] if restored else None, stale),
                )
            )
    return sorted(out, key=lambda i: (i.opened_at, i.service, i.key))


def onboarded(ctx: RenderContext, span: Span, stale: bool) -> list[Onboarded]:
    """Services registered in the week and their time to first production deployment."""
    seen = evidence_reader.collected(ctx)
    deploys = evidence_reader.production_deploys(seen, ctx.store)
    first = deploys[0] if deploys else {}
    result = adoption_kpis.onboarding(ctx.catalog, first, span.end, span.seconds)
    out = []
    for name in sorted(result.seconds.keys() | result.waiting):
        svc = ctx.catalog.services[name]
        assert svc.registered_at is not None
        out.append(
            Onboarded(name, svc.team, svc.registered_at, Cell(result.seconds.get(name), stale))
        )
    return out
