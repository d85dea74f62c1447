"""The review's delivery numbers, through the delivery and adoption domains' KPIs.

The DORA keys of a service (or of a team: its services' deliveries taken as one)
are :func:`~exporter.domains.delivery.kpis.service_kpis` at the week's end, so
they use the metrics' windows: deployments and lead time over the 7 days that
end there (for a finished week, the week itself), change failure ratio and time
to restore over 30 days, and the performance level from those.
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

    def of(self, services: Iterable[str]) -> kpi.ServiceDelivery:
        """The deliveries of ``services`` as one (a team's)."""
        merged = kpi.ServiceDelivery()
        for name in services:
            d = self.data.get(name)
            if d is not None:
                merged.deploys.extend(d.deploys)
                merged.commits.update(d.commits)
                merged.incidents.extend(d.incidents)
                merged.squashed.update(d.squashed)
        return merged


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


def dora(
    history: DeliveryHistory,
    d: kpi.ServiceDelivery,
    registered_at: float | None,
    end: float,
    stale: bool,
) -> Dora:
    """The four keys and the level of ``d`` at ``end``; no data without a CI/CD source."""
    if not history.enabled:
        none = Cell(None, stale)
        return Dora(none, none, none, none, none, None, stale)
    k = kpi.service_kpis(d, history.rules, registered_at, end)
    deploys, per_day = k.frequency["7d"]
    return Dora(
        deploys=Cell(float(deploys), stale),
        per_day=Cell(per_day, stale),
        lead_time=Cell(k.lead["7d"][1].get(0.5), stale),
        change_failure=Cell(k.change_failure["30d"].ratio, stale),
        restore=Cell(k.restore["30d"][1].get(0.5), stale),
        level=k.level,
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
