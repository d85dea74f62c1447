"""Alerts on cost budgets, added to ``exporter.rules.yml``.

* ``PlatformCostBudgetForecastOver``: a team's or service's forecast month-end spend
  is above its monthly budget (``platform_budget_forecast_ratio > 1``);
* ``PlatformCostBudgetExceeded``: the month's spend so far is already above it
  (``platform_budget_used_ratio{window="mtd"} > 1``; last month's final ratio is
  for reviews, not for an alert that would fire all month).

Every replica serves the same ratios: each alert reads one copy of each series
(:func:`~exporter.core.replicas.one_copy`), so it fires once, not once per replica.
"""

from __future__ import annotations

from typing import Any

from exporter.core.replicas import one_copy

FORECAST_RATIO = "platform_budget_forecast_ratio"
USED_RATIO = "platform_budget_used_ratio"
USED_MTD = f'{USED_RATIO}{{window="mtd"}}'


def rules(config: Any) -> list[dict[str, Any]]:
    """The budget alerts (the same for every config: budgets are labels of the series)."""
    return [
        {
            "alert": "PlatformCostBudgetForecastOver",
            "expr": f"{one_copy(FORECAST_RATIO)} > 1\n",
            # The forecast moves once a day, when a billing day closes: no need to be quick.
            "for": "1h",
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "{{ $labels.scope }} {{ $labels.name }} is forecast to exceed its "
                "monthly budget.",
                "description": "Forecast month-end spend is {{ $value | humanizePercentage }} of "
                "the monthly budget of {{ $labels.scope }} {{ $labels.name }} "
                "(platform_budget_forecast).",
            },
        },
        {
            "alert": "PlatformCostBudgetExceeded",
            "expr": f"{one_copy(USED_MTD)} > 1\n",
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "{{ $labels.scope }} {{ $labels.name }} has spent more than its "
                "monthly budget.",
                "description": "Spend this month is {{ $value | humanizePercentage }} of the "
                "monthly budget of {{ $labels.scope }} {{ $labels.name }}.",
            },
        },
    ]
