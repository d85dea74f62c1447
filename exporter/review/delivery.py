"""The review's delivery numbers, through the delivery and adoption domains' KPIs.

The DORA keys of a service are :func:`~exporter.domains.delivery.kpis.view_kpis` of
its :class:`~exporter.domains.delivery.kpis.DeliveryView` at the week's end (the
store's rollups, as the metrics read them), so they use the metrics' windows:
deployments and lead time over the 7 days that end there (for a finished week, the
week itself), change failure ratio, time to restore and the performance level over
30 days. A team's are the same function of its services' views pooled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter.core.periods import Span
from exporter.core.provider import RenderContext
from exporter.core.stats import histogram, quantile
from exporter.domains.adoption import evidence as evidence_reader
from exporter.domains.adoption import kpis as adoption_kpis
from exporter.domains.delivery import kpis as kpi
from exporter.domains.delivery import rollup
from exporter.domains.delivery.records import Deployment
from exporter.domains.delivery.settings import DeliverySection
from exporter.review.model import Cell, Dora, IncidentLine, Onboarded


@dataclass(frozen=True)
class DeliveryHistory:
    """Every service's delivery view at the review's end and the rules its KPIs apply."""

    enabled: bool  # a CI/CD source is configured
    views: Mapping[str, kpi.DeliveryView]
    rules: kpi.DeliveryRules
    end: float


def read(ctx: RenderContext, services: Iterable[str], end: float) -> DeliveryHistory:
    settings = DeliverySection.of(ctx.config).delivery
    rules = kpi.DeliveryRules(
        squash_lead_time=settings.squash_lead_time,
        incident_link_window=settings.incident_link_window,
        backfill_days=settings.backfill_days,
    )
    enabled = bool(ctx.kinds(producing=Deployment))
    if not enabled:
        return DeliveryHistory(False, {}, rules, end)
    names = list(services)
    registered = {
        n: svc.registered_at for n in names if (svc := ctx.catalog.services.get(n)) is not None
    }
    views = rollup.views(ctx.store, names, rules, settings.commit_time, registered, end)
    return DeliveryHistory(True, views, rules, end)


def together(views: Iterable[kpi.DeliveryView]) -> kpi.DeliveryView:
    """Several services' views as one (a team's): their events pooled."""
    items = list(views)
    return kpi.DeliveryView(
        has_deploys=any(v.has_deploys for v in items),
        deploys=sorted((d for v in items for d in v.deploys), key=lambda d: d.finished_at),
        leads=sorted(x for v in items for x in v.leads),
        linked=frozenset().union(*(v.linked for v in items)),
        timed_incidents=sorted(x for v in items for x in v.timed_incidents),
        restores=sorted(x for v in items for x in v.restores),
        lead_histogram=histogram([], kpi.LEAD_TIME_BUCKETS),
        restore_histogram=histogram([], kpi.RESTORE_BUCKETS),
        production_start=None,
        first_production=None,
    )


def dora(history: DeliveryHistory, services: Iterable[str], stale: bool) -> Dora:
    """The four keys and the level of ``services`` taken together at the review's end; no
    data without a CI/CD source."""
    views = [v for s in services if (v := history.views.get(s)) is not None]
    if not history.enabled or not views:
        none = Cell(None, stale)
        return Dora(none, none, none, none, none, None, stale)
    view = views[0] if len(views) == 1 else together(views)
    k = kpi.view_kpis(view, history.rules, history.end)
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


def median_time_to_production(history: DeliveryHistory, end: float) -> float | None:
    """The median of the services' time to production at ``end`` (at or before the
    review's end): from where production starts to the first successful production
    deployment, for the services whose first one was made by ``end``."""
    values = [
        v.first_production - v.production_start
        for v in history.views.values()
        if v.production_start is not None
        and v.first_production is not None
        and v.first_production <= end
    ]
    return quantile(values, 0.5)


def incidents(
    ctx: RenderContext, team_of: Mapping[str, str], span: Span, stale: bool
) -> list[IncidentLine]:
    """Incidents open at any time in the week, with their time to restore if they were
    resolved in it; by opening time."""
    rows = ctx.store.query(
        "SELECT service, key, opened_at, resolved_at FROM incidents "
        "WHERE opened_at < ? AND (resolved_at IS NULL OR resolved_at >= ?)",
        (span.end, span.start),
    )
    out = []
    for service, key, opened, resolved in rows:
        inc = kpi.IncidentSpan(
            str(key), float(opened), None if resolved is None else float(resolved)
        )
        restored = kpi.restore_times([inc], span.end, span)
        out.append(
            IncidentLine(
                str(service),
                team_of.get(str(service), "unknown"),
                inc.key,
                inc.opened_at,
                inc.resolved_at if restored else None,
                Cell(restored[0] if restored else None, stale),
            )
        )
    return sorted(out, key=lambda i: (i.opened_at, i.service, i.key))


def onboarded(ctx: RenderContext, span: Span, stale: bool) -> list[Onboarded]:
    """Services registered in the week and their time to first production deployment."""
    # Without a registration in the week there is nothing to list: deployments unread.
    if not adoption_kpis.onboarding(ctx.catalog, {}, span.end, span.seconds).waiting:
        return []
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
