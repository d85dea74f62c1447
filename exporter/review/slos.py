"""Error budgets left at a week's end, through the SLO domain's KPIs.

Each built-in SLO's budget is measured over its own period ending at the week's
end (a ``month`` SLO: the calendar month holding that end, up to it), from the
same stored events as ``platform_slo_error_budget_remaining_ratio``. OpenSLO
SLOs, whose events live elsewhere, are left out, as the metrics leave them.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.periods import Span, day_start, month_start, utc_date
from exporter.core.provider import RenderContext
from exporter.domains.slo import store as slo_store
from exporter.domains.slo.kpis import budget_remaining, error_ratio
from exporter.domains.slo.spec import SLOSpec, all_slos
from exporter.review.inputs import PROBE, TRAFFIC


@dataclass(frozen=True)
class Budget:
    spec: SLOSpec
    left: float | None  # share of the budget left at the week's end; None: no events
    previous: float | None  # the same at the previous week's end

    @property
    def input(self) -> str:
        return PROBE if self.spec.sli.startswith("probe-") else TRAFFIC


def period_span(spec: SLOSpec, end: float) -> Span:
    """The SLO's period ending at ``end``."""
    if isinstance(spec.period, str):
        return Span(day_start(month_start(utc_date(end - 1e-6))), end)
    return Span(end - spec.period, end)


def _left(events: slo_store.SpanEvents, spec: SLOSpec, end: float) -> float | None:
    counts = events.events(spec.sli, spec.service, period_span(spec, end), spec.threshold)
    ratio = error_ratio(counts)
    return None if ratio is None else budget_remaining(ratio, spec.objective)


def budgets(ctx: RenderContext, end: float, previous_end: float) -> list[Budget]:
    """Every built-in SLO's budget left at ``end`` and at ``previous_end``."""
    events = slo_store.SpanEvents(ctx.store)
    return [
        Budget(spec, _left(events, spec, end), _left(events, spec, previous_end))
        for spec in all_slos(ctx.config)
        if spec.sli != "openslo"
    ]
