"""One week's numbers for every service, read once and shared by the rows and headlines.

:class:`WeekNumbers` holds, for one span, what each domain's store gives (probe
checks, gateway counts, cost) and what the adoption rules decide; rows and the
platform headline are shaped from it with the domains' KPI functions.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from exporter.core.periods import Span
from exporter.core.provider import RenderContext
from exporter.core.stats import share
from exporter.domains.adoption import evidence as evidence_reader
from exporter.domains.adoption import kpis as adoption_kpis
from exporter.domains.adoption.settings import (
    AdoptionSection,
    GatewayTrafficRule,
    PipelineTemplateRule,
)
from exporter.domains.cost.kpis import CostPerTransaction
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.kpis import CheckCounts, uptime_ratio
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import WindowCounts, window_kpis
from exporter.review.costs import CostHistory, pooled


@dataclass(frozen=True)
class WeekNumbers:
    span: Span
    checks: dict[str, CheckCounts]
    traffic: dict[str, WindowCounts]
    costs: dict[str, tuple[float | None, CostPerTransaction | None]]
    adoptions: list[adoption_kpis.CapabilityAdoption]

    def uptime(self, services: Iterable[str]) -> float | None:
        """Successful checks / checks of ``services`` taken together."""
        counts = [c for s in services if (c := self.checks.get(s)) is not None]
        if not counts:
            return None
        return uptime_ratio(
            CheckCounts(sum(c.total for c in counts), sum(c.successes for c in counts))
        )

    def _counts(self, services: Iterable[str]) -> WindowCounts | None:
        counts = [c for s in services if (c := self.traffic.get(s)) is not None]
        if not counts:
            return None
        codes = tuple(map(sum, zip(*(c.codes for c in counts), strict=True)))
        buckets = tuple(map(sum, zip(*(c.buckets for c in counts), strict=True)))
        return WindowCounts(codes, buckets)  # type: ignore[arg-type]

    def p95(self, services: Iterable[str]) -> float | None:
        """The 95th percentile of gateway latency of ``services`` taken together."""
        counts = self._counts(services)
        if counts is None:
            return None
        return window_kpis(counts, self.span.seconds, {}).latency.get(0.95)

    def requests(self, services: Iterable[str]) -> float | None:
        counts = self._counts(services)
        return None if counts is None else float(counts.requests)

    def cost(self, services: Iterable[str]) -> float | None:
        amounts = [c for s in services if (c := self.costs.get(s, (None, None))[0]) is not None]
        return sum(amounts) if amounts else None

    def per_transaction(self, services: Iterable[str]) -> float | None:
        values = [c for s in services if (c := self.costs.get(s, (None, None))[1]) is not None]
        cpt = pooled(values)
        return None if cpt is None else cpt.value

    def adopted(self, services: Sequence[str]) -> tuple[str, ...]:
        """The capabilities any of ``services`` adopts."""
        return tuple(a.capability for a in self.adoptions if any(a.adopted(s) for s in services))

    def adoption(self, services: Sequence[str]) -> float | None:
        """Adopted capabilities / capabilities whose rule has data."""
        return share(len(self.adopted(services)), len(self.adoptions), "adopted capabilities")

    def platform_adoption(self, catalog_services: int) -> float | None:
        """Catalog services that adopt at least one capability / catalog services."""
        if not self.adoptions:
            return None
        adopters = frozenset().union(*(a.services for a in self.adoptions))
        return share(len(adopters), catalog_services, "adopting services")


class Evidence:
    """The adoption rules' evidence for every week of a review, read once where it can be.

    Only what the configured rules read is gathered: gateway traffic (from the review's
    one read of the gateways' daily totals, sorted by day so that each week takes its
    window's facts by bisection) and, for a template rule, pipeline templates, which
    are the last run per pipeline and so read per week."""

    def __init__(self, ctx: RenderContext, totals: Mapping[tuple[str, date], int]) -> None:
        self.ctx = ctx
        self.capabilities = AdoptionSection.of(ctx.config).capabilities
        self.seen = evidence_reader.collected(ctx)
        self.window = adoption_kpis.evidence_window(self.capabilities) if self.capabilities else 0
        rules = {type(c.detect) for c in self.capabilities}
        self.templates = PipelineTemplateRule in rules
        self.traffic: list[adoption_kpis.TrafficFact] | None = None
        if GatewayTrafficRule in rules and self.seen.gateway:
            facts = evidence_reader.traffic_facts(totals)
            # A stable sort: each service's facts keep their day order, so every sum a
            # rule takes adds the same numbers in the same order as over all the facts.
            self.traffic = sorted(facts, key=lambda f: f.start)
        self.starts = [f.start for f in self.traffic or ()]

    def _traffic(self, end: float) -> list[adoption_kpis.TrafficFact] | None:
        """The facts of the periods starting in (end - window, end]: what any rule's
        window up to the evidence window sees at ``end``."""
        if self.traffic is None:
            return None
        lo = bisect.bisect_right(self.starts, end - self.window)
        return self.traffic[lo : bisect.bisect_right(self.starts, end)]

    def adoptions(self, end: float) -> list[adoption_kpis.CapabilityAdoption]:
        if not self.capabilities:
            return []
        since = end - self.window
        facts = adoption_kpis.Evidence(
            traffic=self._traffic(end),
            pipelines=(
                evidence_reader.pipeline_templates(self.seen, self.ctx.store, since)
                if self.templates
                else None
            ),
            pipeline_kinds=self.seen.template_kinds,
        )
        return [
            r
            for cap in self.capabilities
            if (r := adoption_kpis.adoption(cap, self.ctx.catalog, facts, end)) is not None
        ]


def read_week(ctx: RenderContext, span: Span, cost: CostHistory, evidence: Evidence) -> WeekNumbers:
    """The numbers of every service over ``span``."""
    checks = {s: c.uptime for s, c in probe_store.span_counts(ctx.store, span).items()}
    traffic = traffic_store.span_counts(ctx.store, span)
    return WeekNumbers(span, checks, traffic, cost.week(span), evidence.adoptions(span.end))
