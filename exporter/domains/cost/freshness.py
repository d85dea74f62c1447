"""Freshness of billing data from the bill's own evidence. Pure functions.

A UTC day is *arrived* for a source only when a line proves it: a usage line
whose charge period lies inside that one day (hourly and daily usage do). A
charge spread over several days (a monthly support fee from the 1st to the next
1st, a Savings Plan's recurring fee, tax, a credit) is cost of those days but
says nothing about whether their usage is in yet, and a correction of an
earlier day says nothing about the day it arrives on. The cost APIs answer per
day: a day Cost Explorer or Azure answers with at least one cost group proves
itself, an empty answer does not.

A source's data end is its newest arrived day; the cost KPIs count only the
days up to the oldest data end of the active cost sources (see docs/kpis.md).
"""

from __future__ import annotations

from collections.abc import Mapping

# ChargeCategory values whose lines are the metered use of a day (FOCUS 1.0 to 1.2).
USAGE_CATEGORIES = frozenset({"usage"})
# ChargeClass of a line that corrects a charge of an earlier period.
CORRECTION = "correction"


def proves_arrival(charge_category: object, charge_class: object) -> bool:
    """Whether a one-day line is evidence that its day's usage has arrived.

    Usage lines are; purchases, taxes, credits and adjustments are not, nor any
    correction. A file without a ``ChargeCategory`` (or a line with none) cannot
    tell, so its one-day lines count as usage.
    """
    if isinstance(charge_class, str) and charge_class.strip().lower() == CORRECTION:
        return False
    if not isinstance(charge_category, str) or not charge_category.strip():
        return True
    return charge_category.strip().lower() in USAGE_CATEGORIES


def clip_windows(
    windows: Mapping[str, tuple[str, str]], cost_end: str | None
) -> dict[str, tuple[str, str]]:
    """Each window cut to its days up to ``cost_end``; a window with none is left out,
    so a KPI over it is absent rather than 0."""
    if cost_end is None:
        return {}
    out: dict[str, tuple[str, str]] = {}
    for window, (first, last) in windows.items():
        end = min(last, cost_end)
        if first <= end:
            out[window] = (first, end)
    return out
