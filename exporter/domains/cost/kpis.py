"""Cost KPIs: allocation of billing lines to services, windows over closed UTC days,
shared-cost split, cost per transaction and budget forecasts. Pure functions.

Definitions (see docs/kpis.md):

* a **closed** billing day is a UTC day that has ended; today is never counted.
* cost over a window = the sum of the chosen amount (EffectiveCost by default)
  over the window's closed days; windows end on the last closed day: ``1d``
  (that day), ``7d``, ``30d``, and ``mtd`` (the month's closed days; none on the
  1st); ``last_month`` is the whole previous calendar month. Amounts in
  different currencies are never added.
* cost per transaction over a window = cost of the service on the *aligned*
  days / requests of the service on the same days, where a day is aligned if it
  is closed, inside the window, has request totals for the service and lies
  between the oldest and the newest day every cost source has data for. No
  requests on the aligned days: no value.
* a budget's *complete* days in a month are its days that every cost source has
  data for; used ratio = spend over them / the monthly budget, for ``mtd`` and
  for ``last_month`` (the closed month's final ratio once all its days are in).
* budget forecast = spend over the month's complete days / number of those days
  x days in the month (a linear run rate). Before any day of the month is
  complete (the first days of a month), the previous month's daily run rate
  over its complete days x days in this month.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from exporter.core.periods import day_start_iso, last_month_days

UNALLOCATED = "unallocated"
WINDOWS = ("1d", "7d", "30d", "mtd", "last_month")
DAY = 86400.0
#: Gateway sources read with a delay (CloudWatch's is 5 minutes by default): a gateway
#: day counts towards cost per transaction once it has been over this long.
GATEWAY_SETTLE = 900.0

# (day, service, team, provider, category, currency, amount)
CostRow = tuple[str, str, str, str, str, str, float]


def window_bounds(today: date) -> dict[str, tuple[str, str]]:
    """(first, last) closed day, inclusive, of each window; ``mtd`` is absent on the 1st,
    ``last_month`` (the previous calendar month) is always there."""
    last = today - timedelta(days=1)
    out = {
        "1d": (last, last),
        "7d": (last - timedelta(days=6), last),
        "30d": (last - timedelta(days=29), last),
    }
    if today.day > 1:
        out["mtd"] = (today.replace(day=1), last)
    out["last_month"] = last_month_days(today)
    return {w: (a.isoformat(), b.isoformat()) for w, (a, b) in out.items()}


def split_shared(
    rows: Iterable[CostRow],
    shared: Mapping[str, str],
    requests: Mapping[tuple[str, str], float],
    team_of: Mapping[str, str],
) -> list[CostRow]:
    """Move the cost of ``shared`` services onto the others, by their share of requests that day.

    ``shared`` maps each shared service to its team. A day on which no other
    service has requests keeps the shared cost where it was (nothing is lost).
    """
    out: list[CostRow] = []
    per_day: dict[str, dict[str, float]] = {}
    for service, day in requests:
        if service in shared or service not in team_of:
            continue
        n = requests[(service, day)]
        if n > 0:
            per_day.setdefault(day, {})[service] = n
    for row in rows:
        day, service = row[0], row[1]
        recipients = per_day.get(day)
        if service not in shared or not recipients:
            out.append(row)
            continue
        total = sum(recipients.values())
        for target, n in sorted(recipients.items()):
            out.append((day, target, team_of[target], row[3], row[4], row[5], row[6] * n / total))
    return out


def cost_by_window(
    rows: Iterable[CostRow], windows: Mapping[str, tuple[str, str]]
) -> dict[tuple[str, str, str, str, str, str], float]:
    """Sum per (window, service, team, provider, category, currency)."""
    out: dict[tuple[str, str, str, str, str, str], float] = {}
    # The windows holding each day, in the windows' order, found once per day (a bill
    # has a few dozen days and thousands of rows a day).
    holding: dict[str, list[str]] = {}
    for day, service, team, provider, category, currency, amount in rows:
        names = holding.get(day)
        if names is None:
            names = holding[day] = [w for w, (a, b) in windows.items() if a <= day <= b]
        for window in names:
            key = (window, service, team, provider, category, currency)
            out[key] = out.get(key, 0.0) + amount
    return out


@dataclass(frozen=True, slots=True)
class CostPerTransaction:
    cost: float
    requests: float
    days: int

    @property
    def value(self) -> float:
        return self.cost / self.requests


def cost_per_transaction(
    rows: Iterable[CostRow],
    requests: Mapping[tuple[str, str], float],
    windows: Mapping[str, tuple[str, str]],
    cost_end: str | None,
    cost_start: str = "",
) -> dict[tuple[str, str, str], CostPerTransaction]:
    """Per (window, service, currency): cost / requests over the aligned days.

    Aligned days are the window's days from ``cost_start`` (the oldest day every
    cost source has data for) to ``cost_end`` (the newest such day) that have a
    request total for the service. A service with no requests on its aligned days
    gets no entry.
    """
    if cost_end is None:
        return {}
    cost: dict[tuple[str, str, str], float] = {}
    for day, service, _team, _provider, _category, currency, amount in rows:
        if cost_start <= day <= cost_end:
            cost[(service, day, currency)] = cost.get((service, day, currency), 0.0) + amount
    currencies: dict[str, set[str]] = {}
    for service, _day, currency in cost:
        currencies.setdefault(service, set()).add(currency)
    out: dict[tuple[str, str, str], CostPerTransaction] = {}
    by_service = requests_by_service(requests)
    for window, (first, last) in windows.items():
        start, end = max(first, cost_start), min(last, cost_end)
        for service, service_currencies in currencies.items():
            days = [(d, n) for d, n in by_service.get(service, ()) if start <= d <= end]
            total = sum(n for _, n in days)
            if total <= 0:
                continue
            for currency in service_currencies:
                lines = [cost[k] for d, _ in days if (k := (service, d, currency)) in cost]
                # No line in this currency on these days: absent, not a cost of 0.
                if lines:
                    out[(window, service, currency)] = CostPerTransaction(
                        sum(lines), total, len(days)
                    )
    return out


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget's spend over the complete days of one month."""

    spent: float
    used_ratio: float
    days: int


def complete_days(
    first: date, last: date, cost_start: str | None, cost_end: str | None
) -> tuple[date, date] | None:
    """The days of ``first``..``last`` (inclusive) that every cost source has data for:
    from ``cost_start`` to ``cost_end``; None when there are none."""
    if cost_start is None or cost_end is None:
        return None
    a, b = max(first, date.fromisoformat(cost_start)), min(last, date.fromisoformat(cost_end))
    return (a, b) if a <= b else None


def spend(daily: Mapping[str, float], days: tuple[date, date]) -> float:
    """The sum of ``daily`` (ISO day -> amount) over ``days`` (first, last, inclusive)."""
    first, last = days[0].isoformat(), days[1].isoformat()
    return sum(v for d, v in daily.items() if first <= d <= last)


def has_lines(daily: Mapping[str, float], days: tuple[date, date]) -> bool:
    """Whether ``daily`` has any line on ``days``: without one a spend is absent, not 0."""
    first, last = days[0].isoformat(), days[1].isoformat()
    return any(first <= d <= last for d in daily)


def day_count(days: tuple[date, date]) -> int:
    return (days[1] - days[0]).days + 1


def budget_used(
    daily: Mapping[str, float], budget: float, days: tuple[date, date] | None
) -> BudgetStatus | None:
    """Spend over the complete ``days`` (see :func:`complete_days`) and its share of the
    monthly budget; None without a complete day."""
    if days is None or budget <= 0 or not has_lines(daily, days):
        return None
    spent = spend(daily, days)
    return BudgetStatus(spent, spent / budget, day_count(days))


def month_days(
    today: date, cost_start: str | None, cost_end: str | None
) -> dict[str, tuple[date, date] | None]:
    """Complete days of the month to date (closed days only) and of the previous month."""
    return {
        "mtd": complete_days(today.replace(day=1), today - timedelta(days=1), cost_start, cost_end),
        "last_month": complete_days(*last_month_days(today), cost_start, cost_end),
    }


@dataclass(frozen=True, slots=True)
class BudgetForecast:
    """Forecast month-end spend, and the window whose run rate it extends."""

    forecast: float
    basis: str  # "mtd", or "last_month" in the first days of a month
    days: int


def budget_forecast(
    daily: Mapping[str, float], today: date, days: Mapping[str, tuple[date, date] | None]
) -> BudgetForecast | None:
    """Month-end spend at the daily run rate of the month's complete days or, while none
    is complete, of the previous month's; None without either.

    ``days`` is :func:`month_days`. The run rate (spend / complete days) is multiplied
    by the number of days of the current month.
    """
    days_in_month = calendar.monthrange(today.year, today.month)[1]
    for basis in ("mtd", "last_month"):
        span = days[basis]
        if span is not None:
            if not has_lines(daily, span):
                return None
            n = day_count(span)
            return BudgetForecast(spend(daily, span) / n * days_in_month, basis, n)
    return None


# --- What the cost metrics show, from the stored rows ---------------------------------


def day_end(day: str) -> float:
    """The end (next midnight UTC, epoch seconds) of an ISO day."""
    return day_start_iso(day) + DAY


def window_range(windows: Mapping[str, tuple[str, str]]) -> tuple[str, str]:
    """The first and last day any window covers (the days to read)."""
    return min(a for a, _ in windows.values()), max(b for _, b in windows.values())


def coverage(starts: Mapping[str, str], ends: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(cost_start, cost_end): the days every cost source has data for run from the newest
    of their first days to the oldest of their last days; None where no source has any."""
    return (max(starts.values()) if starts else None, min(ends.values()) if ends else None)


def requests_per_day(
    gateway: Mapping[tuple[str, date], float],
    own: Mapping[tuple[str, str], float],
    last: str,
    now: float,
) -> dict[tuple[str, str], float]:
    """Requests per (service, ISO day) up to ``last``: the gateways' daily totals once the
    day has been over for :data:`GATEWAY_SETTLE`, overridden by the ``request_totals``
    source's (``own``) where it has a value."""
    out: dict[tuple[str, str], float] = {}
    for (service, day), n in gateway.items():
        iso = day.isoformat()
        if iso <= last and day_end(iso) + GATEWAY_SETTLE <= now:
            out[(service, iso)] = float(n)
    out.update(own)
    return out


def requests_by_service(
    requests: Mapping[tuple[str, str], float],
) -> dict[str, list[tuple[str, float]]]:
    """(day, requests) per service, in the order of ``requests``: each service's days
    are then read once, not searched for among every service's."""
    out: dict[str, list[tuple[str, float]]] = {}
    for (service, day), n in requests.items():
        out.setdefault(service, []).append((day, n))
    return out


def aligned_days(
    days: Sequence[tuple[str, float]],
    bounds: tuple[str, str],
    cost_start: str | None,
    cost_end: str | None,
) -> tuple[int, float]:
    """(aligned days, requests on them) among one service's (day, requests) in a window:
    the days with a request total from ``cost_start`` to ``cost_end`` (none without a
    ``cost_end``)."""
    first_day, last_day = bounds
    start = max(first_day, cost_start or "")
    end = min(last_day, cost_end) if cost_end else ""
    kept = [n for d, n in days if start <= d <= end]
    return len(kept), sum(kept)


def aligned_requests(
    requests: Mapping[tuple[str, str], float],
    service: str,
    bounds: tuple[str, str],
    cost_start: str | None,
    cost_end: str | None,
) -> tuple[int, float]:
    """:func:`aligned_days` of one service, from every service's requests."""
    return aligned_days(
        requests_by_service(requests).get(service, []), bounds, cost_start, cost_end
    )


def cost_view(
    rows: list[CostRow],
    shared: Mapping[str, str],
    requests: Mapping[tuple[str, str], float],
    catalog: Mapping[str, str],
    split: bool,
) -> list[CostRow]:
    """The rows the metrics show: with ``split`` and shared services, the shared cost
    moved onto the catalog's other services by requests (:func:`split_shared`)."""
    if not (split and shared):
        return rows
    recipients = {n: t for n, t in catalog.items() if n not in shared}
    return split_shared(rows, shared, requests, recipients)


def budget_spend(rows: Iterable[CostRow], scope: str, name: str, currency: str) -> dict[str, float]:
    """A budget's spend per ISO day: the allocated cost, in its currency, of the service
    (scope ``service``) or of the team's services (scope ``team``) named ``name``."""
    daily: dict[str, float] = {}
    for day, service, team, _p, _c, row_currency, amount in rows:
        owner = service if scope == "service" else team
        if owner == name and row_currency == currency and service != UNALLOCATED:
            daily[day] = daily.get(day, 0.0) + amount
    return daily


def budget_outlook(
    daily: Mapping[str, float],
    monthly: float,
    today: date,
    days: Mapping[str, tuple[date, date] | None],
) -> tuple[BudgetForecast, float] | None:
    """The month-end forecast (:func:`budget_forecast`) and forecast / ``monthly``;
    None without a forecast or without a positive budget."""
    ahead = budget_forecast(daily, today, days) if monthly > 0 else None
    return None if ahead is None else (ahead, ahead.forecast / monthly)
