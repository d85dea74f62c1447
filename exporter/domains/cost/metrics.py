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
from dataclasses import dataclass
from datetime import date

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core.periods import utc_date
from exporter.core.provider import RenderContext, Row, tabular
from exporter.domains.cost import kpis
from exporter.domains.cost import store as cost_store
from exporter.domains.cost.freshness import clip_windows
from exporter.domains.cost.kpis import WINDOWS, CostRow
from exporter.domains.cost.records import CostContribution
from exporter.domains.cost.settings import CostSection, CostServiceFields
from exporter.domains.traffic import store as traffic_store


def _help(text: str, ctx: RenderContext) -> str:
    kinds = ctx.kinds(producing=CostContribution, enabled_only=False)
    intervals = [f"{h.source} every {h.interval:g}s" for h in ctx.health if h.kind in kinds]
    every = "; ".join(intervals) if intervals else "after each poll"
    return f"{text} Cached by the exporter from stored billing data; refreshed after each poll ({every})."


def _gauge(ctx: RenderContext, name: str, text: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, _help(text, ctx), labels=labels)


def active_cost_sources(ctx: RenderContext) -> list[str]:
    """The cost sources enabled in the config: stored data of others no longer counts."""
    return list(ctx.kinds(producing=CostContribution))


def request_totals(ctx: RenderContext, first: str, last: str) -> dict[tuple[str, str], float]:
    """Requests per (service, closed day): the gateways' daily totals, overridden by the
    ``request_totals`` source where it has a value (see :func:`kpis.requests_per_day`)."""
    gateway = traffic_store.daily_totals(ctx.store, date.fromisoformat(first))
    own = cost_store.request_totals(ctx.store, first, last)
    return kpis.requests_per_day(gateway, own, last, ctx.now)


@dataclass(frozen=True)
class _CostState:
    """What every cost family is shaped from, read once per render."""

    today: date
    windows: dict[str, tuple[str, str]]
    rows: list[CostRow]
    ends: dict[str, str]
    cost_start: str | None
    cost_end: str | None
    requests: dict[tuple[str, str], float]
    catalog: dict[str, str]  # service -> team, config first


def _state(ctx: RenderContext) -> _CostState:
    settings = CostSection.of(ctx.config).cost
    today = utc_date(ctx.now)
    windows = kpis.window_bounds(today)
    first, last = kpis.window_range(windows)
    active = active_cost_sources(ctx)
    rows = cost_store.daily_costs(ctx.store, first, last, settings.amount, active)
    ends = cost_store.newest_days(ctx.store, today.isoformat(), active)
    # Every cost KPI counts only days every cost source has proved arrived (up to the
    # oldest data end); cost per transaction and budgets also start at the newest first day.
    cost_start, cost_end = kpis.coverage(cost_store.oldest_days(ctx.store, active), ends)
    requests = request_totals(ctx, first, last)
    # The merged catalog: config services, then those an external catalog adds.
    catalog = {name: svc.team for name, svc in ctx.catalog.services.items()}
    catalog.update({s.name: s.team for s in ctx.config.services})
    shared = {
        s.name: s.team
        for s in ctx.config.services
        if (own := CostServiceFields.of(s).cost) is not None and own.shared
    }
    rows = kpis.cost_view(rows, shared, requests, catalog, settings.split_shared_by_requests)
    return _CostState(today, windows, rows, ends, cost_start, cost_end, requests, catalog)


def _cost(ctx: RenderContext, st: _CostState) -> Metric:
    labels = ["service", "team", "provider", "category", "currency", "window"]
    cost = _gauge(
        ctx,
        "platform_cost",
        f"Allocated cloud cost ({CostSection.of(ctx.config).cost.amount} cost) over the window's closed UTC days, "
        'in the currency of the label; unmatched cost is service="unallocated".',
        labels,
    )
    sums = sorted(kpis.cost_by_window(st.rows, clip_windows(st.windows, st.cost_end)).items())

    def rows() -> Iterator[Row]:
        for (window, *series), value in sums:
            yield (*series, window), value

    return tabular(cost, labels, rows)


def _per_transaction(ctx: RenderContext, st: _CostState) -> Iterator[Metric]:
    cpt = _gauge(
        ctx,
        "platform_cost_per_transaction",
        "Cost of the service on closed UTC days with both cost and request data, divided by "
        "its requests on the same days. Absent when there were no requests.",
        ["service", "team", "currency", "window"],
    )
    samples = _gauge(
        ctx,
        "platform_cost_per_transaction_samples",
        "Aligned days behind platform_cost_per_transaction (0: no value).",
        ["service", "team", "window"],
    )
    requests_used = _gauge(
        ctx,
        "platform_cost_per_transaction_requests",
        "Requests on the aligned days behind platform_cost_per_transaction.",
        ["service", "team", "window"],
    )
    values = kpis.cost_per_transaction(
        st.rows, st.requests, st.windows, st.cost_end, st.cost_start or ""
    )
    for (window, service, currency), v in sorted(values.items()):
        if service in st.catalog:
            cpt.add_metric([service, st.catalog[service], currency, window], v.value)
    by_service = kpis.requests_by_service(st.requests)
    for service, team in sorted(st.catalog.items()):
        for window in WINDOWS:
            if window not in st.windows:
                continue
            days, total = kpis.aligned_days(
                by_service.get(service, []), st.windows[window], st.cost_start, st.cost_end
            )
            samples.add_metric([service, team, window], days)
            requests_used.add_metric([service, team, window], total)
    yield from (cpt, samples, requests_used)


def _freshness(ctx: RenderContext, st: _CostState) -> Metric:
    fresh = _gauge(
        ctx,
        "platform_cost_data_end_timestamp_seconds",
        "End (next midnight UTC) of the newest closed billing day the source has data for.",
        ["source"],
    )
    for source, day in sorted(st.ends.items()):
        fresh.add_metric([source], kpis.day_end(day))
    return fresh


def _paid_calls(ctx: RenderContext) -> Metric:
    paid = CounterMetricFamily(
        "platform_exporter_paid_api_calls",
        "Paid upstream API requests made (AWS Cost Explorer: USD 0.01 each), kept across restarts.",
        labels=["source"],
    )
    seen = {
        labels["source"]: value for labels, value in ctx.store.counters(cost_store.PAID_CALLS_TOTAL)
    }
    paid_kinds = ctx.kinds(tag="paid_api", enabled_only=False)
    for h in ctx.health:
        if h.kind in paid_kinds:
            seen.setdefault(h.source, 0.0)
    for source, value in sorted(seen.items()):
        paid.add_metric([source], value)
    return paid


def _rejected(ctx: RenderContext) -> Metric:
    rejected = CounterMetricFamily(
        "platform_exporter_cost_rows_rejected",
        "Billing rows rejected as malformed (reported in the log with file and line).",
        labels=["source"],
    )
    for labels, value in sorted(
        ctx.store.counters(cost_store.ROWS_REJECTED_TOTAL), key=lambda kv: kv[0]["source"]
    ):
        rejected.add_metric([labels["source"]], value)
    return rejected


def collect(ctx: RenderContext) -> Iterator[Metric]:
    st = _state(ctx)
    yield _cost(ctx, st)
    yield from _per_transaction(ctx, st)
    yield _freshness(ctx, st)
    yield from _budgets(ctx, st)
    yield _paid_calls(ctx)
    yield _rejected(ctx)


def _budgets(ctx: RenderContext, st: _CostState) -> Iterator[Metric]:
    """Budget, forecast, used ratios (month to date and last month) and their days."""
    budget = GaugeMetricFamily(
        "platform_budget",
        "The configured monthly budget of a team or service.",
        labels=["scope", "name", "team", "currency"],
    )
    forecast = _gauge(
        ctx,
        "platform_budget_forecast",
        "Forecast month-end spend: spend over the month's complete days / those days x days "
        "in the month; before any day of the month is complete, the previous month's daily "
        "run rate x days in the month.",
        ["scope", "name", "team", "currency"],
    )
    used = _gauge(
        ctx,
        "platform_budget_used_ratio",
        "Spend over the complete days of the month (window mtd: this month so far; "
        "last_month: the closed previous month) / the monthly budget.",
        ["scope", "name", "team", "window"],
    )
    samples = _gauge(
        ctx,
        "platform_budget_samples",
        "Complete billing days behind platform_budget_used_ratio (0: absent); the "
        "last_month ratio is final once this equals that month's days.",
        ["scope", "name", "team", "window"],
    )
    forecast_ratio = _gauge(
        ctx,
        "platform_budget_forecast_ratio",
        "Forecast month-end spend / the monthly budget.",
        ["scope", "name", "team"],
    )
    days = kpis.month_days(st.today, st.cost_start, st.cost_end)
    for b in CostSection.of(ctx.config).cost.budgets:
        # `name` is the team or service the budget is for; `team` is always set, so a
        # budget alert routes by team like every other alert.
        who = [b.name, st.catalog.get(b.name, "")] if b.scope == "service" else [b.name, b.name]
        budget.add_metric([b.scope, *who, b.currency], b.monthly)
        daily = kpis.budget_spend(st.rows, b.scope, b.name, b.currency)
        for window, span in days.items():
            status = kpis.budget_used(daily, b.monthly, span)
            samples.add_metric([b.scope, *who, window], status.days if status else 0)
            if status is not None:
                used.add_metric([b.scope, *who, window], status.used_ratio)
        outlook = kpis.budget_outlook(daily, b.monthly, st.today, days)
        if outlook is not None:
            forecast.add_metric([b.scope, *who, b.currency], outlook[0].forecast)
            forecast_ratio.add_metric([b.scope, *who], outlook[1])
    yield from (budget, forecast, used, samples, forecast_ratio)
