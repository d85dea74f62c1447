"""Error budgets and burn rates from event counts (pure).

Definitions (see docs/kpis.md):

* SLI error ratio over a window = bad events / all events in the window (no
  events -> no value);
* burn rate = error ratio / error budget, where the budget is 1 - objective: 1
  spends exactly the budget over the SLO period, 14.4 spends 2% of a 30-day
  budget in an hour;
* error budget remaining over the period = 1 - period error ratio / budget; it is
  negative once the budget is overspent.

These are the values the generated recording rules compute in PromQL
(``slo:sli_error:ratio_rate<w>``, ``slo:current_burn_rate:ratio``,
``slo:period_error_budget_remaining:ratio``), here from the exporter's own history.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.stats import share


@dataclass(frozen=True, slots=True)
class EventCounts:
    """Events in a window, and how many of them were bad."""

    total: int
    bad: int


def error_ratio(counts: EventCounts) -> float | None:
    """Bad / all events; None when there were none."""
    return share(counts.bad, counts.total, "bad events")


def burn_rate(ratio: float, objective: float) -> float:
    """How many times faster than sustainable the budget burns."""
    if not 0 < objective < 1:
        raise ValueError("objective must be strictly between 0 and 1")
    return ratio / (1.0 - objective)


def budget_remaining(period_ratio: float, objective: float) -> float:
    """Share of the period's error budget left (negative when overspent)."""
    return 1.0 - burn_rate(period_ratio, objective)
