"""Cost KPIs from the billing sources: cost per window, cost per transaction,
budget status and freshness; and the paid API calls made to get them.

Sample::

    platform_cost{service="checkout",team="payments",provider="aws",category="Compute",currency="USD",window="7d"} 84.12
    platform_cost_per_transaction{service="checkout",team="payments",currency="USD",window="7d"} 0.000183
    platform_cost_per_transaction_samples{service="checkout",team="payments",window="7d"} 7
    platform_cost_data_end_timestamp_seconds{source="focus"} 1.7637e9
    platform_budget{scope="team",name="payments",team="payments",currency="USD"} 3000
    platform_budget_forecast{scope="team",name="payments",team="payments",currency="USD"} 2710.5
    platform_budget_used_ratio{scope="service",name="checkout",team="payments",window="mtd"} 0.61
    platform_budget_used_ratio{scope="service",name="checkout",team="payments",window="last_month"} 1.04
    platform_budget_samples{scope="service",name="checkout",team="payments",window="mtd"} 20
    platform_budget_forecast_ratio{scope="team",name="payments",team="payments"} 0.9035
    platform_exporter_paid_api_calls_total{source="aws_cost"} 12
    platform_exporter_cost_rows_rejected_total{source="focus"} 1
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.periods import day_start_iso, utc_date
from exporter.core.provider import RenderContext
from exporter.domains.cost import store as cost_store
from exporter.domains.cost.kpis import (
    UNALLOCATED,
    WINDOWS,
    CostRow,
    budget_forecast,
    budget_used,
    cost_by_window,
    cost_per_transaction,
    month_days,
    split_shared,
    window_bounds,
)
from exporter.domains.traffic import store as traffic_store

DAY = 86400.0
COST_SOURCES = ("focus", "aws_cost", "azure_cost")
# Gateway sources read with a delay (CloudWatch's is 5 minutes by default).
GATEWAY_SETTLE = 900.0


def _help(text: str, ctx: RenderContext) -> str:
    intervals = [f"{h.source} every {h.interval:g}s" for h in ctx.health if h.kind in COST_SOURCES]
    every = "; ".join(intervals) if intervals else "after each poll"
    return f"{text} Cached by the exporter from stored billing data; refreshed after each poll ({every})."


def active_cost_sources(ctx: RenderContext) -> list[str]:
    """The cost sources enabled in the config: stored data of others no longer counts."""
    out = []
    for kind in COST_SOURCES:
        settings = getattr(ctx.config.sources, kind, None)
        if settings is not None and settings.enabled:
            out.append(kind)
    return out


def request_totals(ctx: RenderContext, first: str, last: str) -> dict[tuple[str, str], float]:
    """Requests per (service, closed day): the gateways' daily totals, overridden by the
    ``request_totals`` source where it has a value. A gateway day counts only once it
    has been over for ``GATEWAY_SETTLE`` seconds (its sources read with a delay)."""
    out: dict[tuple[str, str], float] = {}
    for (service, day), n in traffic_store.daily_totals(
        ctx.store, date.fromisoformat(first)
    ).items():
        iso = day.isoformat()
        if iso <= last and day_start_iso(iso) + DAY + GATEWAY_SETTLE <= ctx.now:
            out[(service, iso)] = float(n)
    out.update(cost_store.request_totals(ctx.store, first, last))
    return out


def collect(ctx: RenderContext) -> Iterator[Metric]:
    settings = ctx.config.cost
    today = utc_date(ctx.now)
    windows = window_bounds(today)
    first = min(a for a, _ in windows.values())
    last = max(b for _, b in windows.values())
    active = active_cost_sources(ctx)
    rows = cost_store.daily_costs(ctx.store, first, last, settings.amount, active)
    ends = cost_store.newest_days(ctx.store, today.isoformat(), active)
    # Cost per transaction and budgets only count days every cost source has reported:
    # after the newest first day and up to the oldest last day of their histories.
    cost_end = min(ends.values()) if ends else None
    starts = cost_store.oldest_days(ctx.store, active)
    cost_start = max(starts.values()) if starts else None
    requests = request_totals(ctx, first, last)
    # The merged catalog: config services, then those an external catalog adds.
    catalog = {name: svc.team for name, svc in ctx.catalog.services.items()}
    catalog.update({s.name: s.team for s in ctx.config.services})
    shared = {s.name: s.team for s in ctx.config.services if s.cost is not None and s.cost.shared}
    if settings.split_shared_by_requests and shared:
        recipients = {n: t for n, t in catalog.items() if n not in shared}
        rows = split_shared(rows, shared, requests, recipients)

    cost = GaugeMetricFamily(
        "platform_cost",
        _help(
            f"Allocated cloud cost ({settings.amount} cost) over the window's closed UTC days, "
            'in the currency of the label; unmatched cost is service="unallocated".',
            ctx,
        ),
        labels=["service", "team", "provider", "category", "currency", "window"],
    )
    for (window, service, team, provider, category, currency), value in sorted(
        cost_by_window(rows, windows).items()
    ):
        cost.add_metric([service, team, provider, category, currency, window], value)
    yield cost

    cpt = GaugeMetricFamily(
        "platform_cost_per_transaction",
        _help(
            "Cost of the service on closed UTC days with both cost and request data, divided by "
            "its requests on the same days. Absent when there were no requests.",
            ctx,
        ),
        labels=["service", "team", "currency", "window"],
    )
    samples = GaugeMetricFamily(
        "platform_cost_per_transaction_samples",
        _help("Aligned days behind platform_cost_per_transaction (0: no value).", ctx),
        labels=["service", "team", "window"],
    )
    requests_used = GaugeMetricFamily(
        "platform_cost_per_transaction_requests",
        _help("Requests on the aligned days behind platform_cost_per_transaction.", ctx),
        labels=["service", "team", "window"],
    )
    values = cost_per_transaction(rows, requests, windows, cost_end, cost_start or "")
    for (window, service, currency), v in sorted(values.items()):
        if service in catalog:
            cpt.add_metric([service, catalog[service], currency, window], v.value)
    for service, team in sorted(catalog.items()):
        for window in WINDOWS:
            if window not in windows:
                continue
            first_day, last_day = windows[window]
            start = max(first_day, cost_start or "")
            end = min(last_day, cost_end) if cost_end else ""
            days = [d for (s, d) in requests if s == service and start <= d <= end]
            samples.add_metric([service, team, window], len(days))
            requests_used.add_metric(
                [service, team, window], sum(requests[(service, d)] for d in days)
            )
    yield cpt
    yield samples
    yield requests_used

    fresh = GaugeMetricFamily(
        "platform_cost_data_end_timestamp_seconds",
        _help(
            "End (next midnight UTC) of the newest closed billing day the source has data for.", ctx
        ),
        labels=["source"],
    )
    for source, day in sorted(ends.items()):
        fresh.add_metric([source], day_start_iso(day) + DAY)
    yield fresh

    yield from _budgets(ctx, rows, catalog, month_days(today, cost_start, cost_end), today)

    paid = CounterMetricFamily(
        "platform_exporter_paid_api_calls",
        "Paid upstream API requests made (AWS Cost Explorer: USD 0.01 each), kept across restarts.",
        labels=["source"],
    )
    seen = {
        labels["source"]: value for labels, value in ctx.store.counters(cost_store.PAID_CALLS_TOTAL)
    }
    for h in ctx.health:
        if h.kind == "aws_cost":
            seen.setdefault(h.source, 0.0)
    for source, value in sorted(seen.items()):
        paid.add_metric([source], value)
    yield paid

    rejected = CounterMetricFamily(
        "platform_exporter_cost_rows_rejected",
        "Billing rows rejected as malformed (reported in the log with file and line).",
        labels=["source"],
    )
    for labels, value in sorted(
        ctx.store.counters(cost_store.ROWS_REJECTED_TOTAL), key=lambda kv: kv[0]["source"]
    ):
        rejected.add_metric([labels["source"]], value)
    yield rejected


def _budgets(
    ctx: RenderContext,
    rows: list[CostRow],
    catalog: dict[str, str],
    days: dict[str, tuple[date, date] | None],
    today: date,
) -> Iterator[Metric]:
    """Budget, forecast, used ratios (month to date and last month) and their days."""
    budget = GaugeMetricFamily(
        "platform_budget",
        "The configured monthly budget of a team or service.",
        labels=["scope", "name", "team", "currency"],
    )
    forecast = GaugeMetricFamily(
        "platform_budget_forecast",
        _help(
            "Forecast month-end spend: spend over the month's complete days / those days x days "
            "in the month; before any day of the month is complete, the previous month's daily "
            "run rate x days in the month.",
            ctx,
        ),
        labels=["scope", "name", "team", "currency"],
    )
    used = GaugeMetricFamily(
        "platform_budget_used_ratio",
        _help(
            "Spend over the complete days of the month (window mtd: this month so far; "
            "last_month: the closed previous month) / the monthly budget.",
            ctx,
        ),
        labels=["scope", "name", "team", "window"],
    )
    samples = GaugeMetricFamily(
        "platform_budget_samples",
        _help(
            "Complete billing days behind platform_budget_used_ratio (0: absent); the "
            "last_month ratio is final once this equals that month's days.",
            ctx,
        ),
        labels=["scope", "name", "team", "window"],
    )
    forecast_ratio = GaugeMetricFamily(
        "platform_budget_forecast_ratio",
        _help("Forecast month-end spend / the monthly budget.", ctx),
        labels=["scope", "name", "team"],
    )
    for b in ctx.config.cost.budgets:
        # `name` is the team or service the budget is for; `team` is always set, so a
        # budget alert routes by team like every other alert.
        who = [b.name, catalog.get(b.name, "")] if b.scope == "service" else [b.name, b.name]
        budget.add_metric([b.scope, *who, b.currency], b.monthly)
        daily: dict[str, float] = {}
        for day, service, team, _p, _c, currency, amount in rows:
            owner = service if b.scope == "service" else team
            if owner == b.name and currency == b.currency and service != UNALLOCATED:
                daily[day] = daily.get(day, 0.0) + amount
        for window, span in days.items():
            status = budget_used(daily, b.monthly, span)
            samples.add_metric([b.scope, *who, window], status.days if status else 0)
            if status is not None:
                used.add_metric([b.scope, *who, window], status.used_ratio)
        ahead = budget_forecast(daily, today, days) if b.monthly > 0 else None
        if ahead is not None:
            forecast.add_metric([b.scope, *who, b.currency], ahead.forecast)
            forecast_ratio.add_metric([b.scope, *who], ahead.forecast / b.monthly)
    yield from (budget, forecast, used, samples, forecast_ratio)
