"""The platform review of one ISO week, built from the stored history.

Every number comes from a domain's store and KPI functions (see weekly.py,
costs.py, delivery.py, slos.py); this module only picks the week, the services
and the teams, and marks each number whose inputs were stale (inputs.py). The
review polls nothing: it reads committed state, so the same store and instant
always give the same review.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from exporter.core.periods import utc_date
from exporter.core.provider import RenderContext
from exporter.domains.adoption import kpis as adoption_kpis
from exporter.domains.adoption.settings import AdoptionSection
from exporter.domains.traffic import store as traffic_store
from exporter.review import costs, delivery, slos
from exporter.review.inputs import (
    CATALOG,
    COST,
    DELIVERY,
    PROBE,
    RULE_INPUTS,
    TRAFFIC,
    freshness,
    stale_inputs,
)
from exporter.review.model import Cell, CostMover, Headline, Review, Row, SloBurn
from exporter.review.weekly import Evidence, WeekNumbers, read_week
from exporter.review.weeks import IsoWeek

TREND_WEEKS = 12
TOP_COST_MOVERS = 5
# An SLO is listed under "what changed" once it has burned more than this share of its budget.
BURN_LISTED = 0.5


def adoption_inputs(ctx: RenderContext) -> frozenset[str]:
    """The inputs the adoption numbers read: the catalog, and what each rule reads."""
    rules = {c.detect.rule for c in AdoptionSection.of(ctx.config).capabilities}
    return frozenset({CATALOG, *(RULE_INPUTS[r] for r in rules if r in RULE_INPUTS)})


def _cell(value: float | None, inputs: frozenset[str] | set[str], stale: frozenset[str]) -> Cell:
    return Cell(value, bool(inputs & stale))


def _change(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


class _Builder:
    """What building one review shares: the context, the weeks and their numbers."""

    def __init__(self, ctx: RenderContext, week: IsoWeek) -> None:
        self.ctx = ctx
        self.week = week
        self.weeks = [week.shifted(-i) for i in range(TREND_WEEKS - 1, -1, -1)]
        self.spans = [w.span(ctx.now) for w in self.weeks]
        self.span = self.spans[-1]
        self.prev_span = self.spans[-2]
        catalog = ctx.catalog.services
        names = set(catalog) | {s.name for s in ctx.config.services}
        self.services = sorted(names, key=lambda n: (ctx.team_of(n), n))
        # The gateways' daily totals, read once for both their readers: cost per
        # transaction (from the first week's Monday) and the adoption rules (from the
        # evidence window before the first week's end).
        window = adoption_kpis.evidence_window(AdoptionSection.of(ctx.config).capabilities)
        since = min(self.weeks[0].monday, utc_date(self.spans[0].end - window))
        gateway = traffic_store.daily_totals(ctx.store, since)
        self.cost = costs.read(ctx, self.weeks[0].monday, self.span, gateway)
        evidence = Evidence(ctx, gateway)
        self.numbers = [read_week(ctx, s, self.cost, evidence) for s in self.spans]
        self.delivery = delivery.read(ctx, self.services, self.span.end)
        self.fresh = freshness(ctx, self.span.end)
        self.stale = stale_inputs(self.fresh)
        past = replace(ctx, health=())
        self.prev_stale = stale_inputs(freshness(past, self.prev_span.end))
        self.adoption_inputs = adoption_inputs(ctx)
        self.budgets = slos.budgets(ctx, self.span.end, self.prev_span.end)
        # Each service's availability SLO (the first, if several): looked up per row.
        self.availability: dict[str, slos.Budget] = {}
        for b in self.budgets:
            if b.spec.name == "availability":
                self.availability.setdefault(b.spec.service, b)

    @property
    def now(self) -> WeekNumbers:
        return self.numbers[-1]

    def _headline_values(self, n: WeekNumbers) -> dict[str, float | None]:
        return {
            "uptime": n.uptime(self.services),
            "p95_latency": n.p95(self.services),
            "cost_per_transaction": n.per_transaction(self.services),
            "adoption": n.platform_adoption(len(self.ctx.catalog.services)),
            "time_to_production": delivery.median_time_to_production(self.delivery, n.span.end),
        }

    def headlines(self) -> tuple[Headline, ...]:
        per_week = [self._headline_values(n) for n in self.numbers]
        out = []
        for key, title, unit, inputs in HEADLINES:
            ins = self.adoption_inputs if key == "adoption" else inputs
            value = per_week[-1][key]
            previous = per_week[-2][key]
            out.append(
                Headline(
                    key,
                    title,
                    unit,
                    _cell(value, ins, self.stale),
                    _cell(previous, ins, self.prev_stale),
                    _change(value, previous),
                    tuple(w[key] for w in per_week),
                    tuple(sorted(ins)),
                )
            )
        return tuple(out)

    def row(self, name: str, team: str, services: Sequence[str]) -> Row:
        n, st = self.now, self.stale
        budget = self.availability.get(services[0]) if len(services) == 1 else None
        return Row(
            name=name,
            team=team,
            services=len(services),
            uptime=_cell(n.uptime(services), {PROBE}, st),
            slo_objective=budget.spec.objective if budget else None,
            budget_left=_cell(
                budget.left if budget else None, {budget.input} if budget else set(), st
            ),
            p95_latency=_cell(n.p95(services), {TRAFFIC}, st),
            requests=_cell(n.requests(services), {TRAFFIC}, st),
            cost=_cell(n.cost(services), {COST}, st),
            cost_per_transaction=_cell(n.per_transaction(services), {COST, TRAFFIC}, st),
            dora=delivery.dora(self.delivery, services, DELIVERY in st),
            adopted=n.adopted(services),
            adoption=_cell(n.adoption(services), self.adoption_inputs, st),
            currency=self.cost.currency,
        )

    def rows(self) -> tuple[tuple[Row, ...], tuple[Row, ...]]:
        teams: dict[str, list[str]] = {}
        for s in self.services:
            teams.setdefault(self.ctx.team_of(s), []).append(s)
        team_rows = tuple(self.row(t, t, names) for t, names in sorted(teams.items()))
        service_rows = tuple(self.row(s, self.ctx.team_of(s), [s]) for s in self.services)
        return team_rows, service_rows

    def cost_movers(self) -> tuple[CostMover, ...]:
        now, prev = self.now, self.numbers[-2]
        movers = []
        for s in self.services:
            a, b = now.cost([s]), prev.cost([s])
            if a is None and b is None:
                continue
            change = (a or 0.0) - (b or 0.0)
            movers.append(
                CostMover(
                    s,
                    self.ctx.team_of(s),
                    _cell(a, {COST}, self.stale),
                    _cell(b, {COST}, self.prev_stale),
                    change,
                )
            )
        movers.sort(key=lambda m: (-abs(m.change), m.service))
        return tuple(movers[:TOP_COST_MOVERS])

    def slo_burns(self) -> tuple[SloBurn, ...]:
        return tuple(
            SloBurn(
                b.spec.service,
                b.spec.team,
                b.spec.name,
                b.spec.objective,
                b.spec.period_name,
                _cell(b.left, {b.input}, self.stale),
                _cell(b.previous, {b.input}, self.prev_stale),
            )
            for b in self.budgets
            if b.left is not None and b.left < 1.0 - BURN_LISTED
        )

    def build(self) -> Review:
        team_rows, service_rows = self.rows()
        team_of = {s: self.ctx.team_of(s) for s in self.services}
        return Review(
            week=self.week.label,
            start=self.span.start,
            end=self.span.end,
            previous_week=self.weeks[-2].label,
            generated_at=self.ctx.now,
            complete=self.span.end >= self.week.end,
            currency=self.cost.currency,
            headlines=self.headlines(),
            teams=team_rows,
            services=service_rows,
            cost_movers=self.cost_movers(),
            onboarded=tuple(delivery.onboarded(self.ctx, self.span, bool({DELIVERY} & self.stale))),
            slo_burns=self.slo_burns(),
            incidents=tuple(
                delivery.incidents(self.ctx, team_of, self.span, DELIVERY in self.stale)
            ),
            freshness=tuple(self.fresh),
            stale_inputs=tuple(sorted(self.stale)),
            capabilities=tuple(c.name for c in AdoptionSection.of(self.ctx.config).capabilities),
            trend_weeks=tuple(w.label for w in self.weeks),
        )


# (key, title, unit, inputs) of the five headline KPIs, in the order they are shown.
HEADLINES: tuple[tuple[str, str, str, frozenset[str]], ...] = (
    ("uptime", "Uptime", "ratio", frozenset({PROBE})),
    ("p95_latency", "p95 latency", "seconds", frozenset({TRAFFIC})),
    ("cost_per_transaction", "Cost per transaction", "money", frozenset({COST, TRAFFIC})),
    ("adoption", "Adoption", "ratio", frozenset({CATALOG})),
    ("time_to_production", "Time to production", "seconds", frozenset({DELIVERY})),
)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector held off while a review is built.

    A build makes a few hundred thousand small objects (rows read, facts, cells) that
    all live until it ends, and no cycles: every full pass of the collector would walk
    them all again to free nothing (at 500 services, a quarter of the build's CPU).
    Reference counting still frees everything as it goes; the collector resumes after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def build_review(ctx: RenderContext, week: IsoWeek | None = None) -> Review:
    """The review of ``week`` (default: the week holding ``ctx.now``), as of ``ctx.now``."""
    with _collector_paused():
        return _Builder(ctx, week or IsoWeek.of(ctx.now)).build()
