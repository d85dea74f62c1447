"""Cost and cost per transaction per service and week, through the cost domain's KPIs.

Everything is read once for all the weeks a review shows (its 12-week trend), then
each week is one call of :func:`~exporter.domains.cost.kpis.cost_by_window` and
:func:`~exporter.domains.cost.kpis.cost_per_transaction` per service, with the
week as the window: the metrics' rules (closed UTC days only, days every cost
source has data for, shared costs split by requests) apply unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from exporter.core.periods import Span, utc_date
from exporter.core.provider import RenderContext
from exporter.domains.cost import kpis
from exporter.domains.cost import store as cost_store
from exporter.domains.cost.freshness import clip_windows
from exporter.domains.cost.kpis import CostPerTransaction, CostRow
from exporter.domains.cost.records import CostContribution
from exporter.domains.cost.settings import CostSection, CostServiceFields

WEEK = "week"


def closed_days(span: Span) -> tuple[str, str] | None:
    """The first and last UTC day of ``span`` that had ended by its end; None if none had."""
    first = utc_date(span.start)
    last = utc_date(span.end) - timedelta(days=1)
    return None if last < first else (first.isoformat(), last.isoformat())


@dataclass(frozen=True)
class CostHistory:
    """Cost rows and request totals of every service over every week of a review."""

    rows: Mapping[str, list[CostRow]]  # ISO day -> its rows, in the order they were read
    requests: Mapping[str, dict[str, float]]  # ISO day -> service -> requests
    cost_start: str | None
    cost_end: str | None
    currency: str | None  # the currency most of the cost is in; the review's

    def week(self, span: Span) -> dict[str, tuple[float | None, CostPerTransaction | None]]:
        """Per service with data: (cost, cost per transaction) over the week's closed days,
        in the review's currency (None where there is none)."""
        days = closed_days(span)
        if days is None or self.currency is None:
            return {}
        # Only the week's rows and request days go in: the same result, for a part of the
        # work. Day by day, so each service's rows and days keep their order, and its sums
        # add the same numbers in the same order as the metrics' would.
        week = _days(*days)
        rows = [r for d in week for r in self.rows.get(d, ())]
        requests = {(s, d): n for d in week for s, n in self.requests.get(d, {}).items()}
        windows = {WEEK: days}
        amounts: dict[str, list[float]] = {}
        for key, amount in kpis.cost_by_window(rows, clip_windows(windows, self.cost_end)).items():
            if key[5] == self.currency:
                amounts.setdefault(key[1], []).append(amount)
        cpt = kpis.cost_per_transaction(
            rows, requests, windows, self.cost_end, self.cost_start or ""
        )
        per_service = {s: cpt.get((WEEK, s, self.currency)) for s in {r[1] for r in rows}}
        return {
            s: (sum(amounts[s]) if s in amounts else None, value)
            for s, value in per_service.items()
        }


def read(
    ctx: RenderContext, first: date, span: Span, gateway: Mapping[tuple[str, date], int]
) -> CostHistory:
    """The cost history from ``first`` to the end of ``span``, as the metrics view it;
    ``gateway`` holds the gateways' requests per (service, UTC day) from ``first`` on
    (or from earlier)."""
    if not ctx.kinds(producing=CostContribution):
        return CostHistory({}, {}, None, None, None)
    settings = CostSection.of(ctx.config).cost
    last = (utc_date(span.end) - timedelta(days=1)).isoformat()
    active = list(ctx.kinds(producing=CostContribution))
    rows = cost_store.daily_costs(ctx.store, first.isoformat(), last, settings.amount, active)
    ends = cost_store.newest_days(ctx.store, utc_date(span.end).isoformat(), active)
    cost_start, cost_end = kpis.coverage(cost_store.oldest_days(ctx.store, active), ends)
    gateway = {k: n for k, n in gateway.items() if k[1] >= first}
    own = cost_store.request_totals(ctx.store, first.isoformat(), last)
    # A gateway day counts once it has settled, as of the review's instant.
    requests = kpis.requests_per_day(gateway, own, last, ctx.now)
    catalog = {name: svc.team for name, svc in ctx.catalog.services.items()}
    catalog.update({s.name: s.team for s in ctx.config.services})
    shared = {
        s.name: s.team
        for s in ctx.config.services
        if (own_cost := CostServiceFields.of(s).cost) is not None and own_cost.shared
    }
    rows = kpis.cost_view(rows, shared, requests, catalog, settings.split_shared_by_requests)
    return CostHistory(
        _by_day(rows),
        _requests_by_day(requests),
        cost_start,
        cost_end,
        _main_currency(rows),
    )


def _days(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def _by_day(rows: Sequence[CostRow]) -> dict[str, list[CostRow]]:
    out: dict[str, list[CostRow]] = {}
    for row in rows:
        out.setdefault(row[0], []).append(row)
    return out


def _requests_by_day(
    requests: Mapping[tuple[str, str], float],
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (service, day), n in requests.items():
        out.setdefault(day, {})[service] = n
    return out


def _main_currency(rows: Sequence[CostRow]) -> str | None:
    counts = Counter(row[5] for row in rows)
    return counts.most_common(1)[0][0] if counts else None


def pooled(values: Sequence[CostPerTransaction]) -> CostPerTransaction | None:
    """Several services' cost per transaction as one: their costs over their requests."""
    if not values:
        return None
    return CostPerTransaction(
        sum(v.cost for v in values), sum(v.requests for v in values), max(v.days for v in values)
    )
