"""Multi-window, multi-burn-rate alert windows (SRE Workbook, chapter "Alerting on SLOs").

For a 30-day SLO the Workbook pages when 2% of the budget burns in 1 hour or 5%
in 6 hours, and opens a ticket when 10% burns in 1 day or 10% in 3 days; each
long window is paired with a short one (1/12 of it) so that an alert resolves
soon after the burn stops. A burn factor is the budget share times the period
divided by the long window: 0.02 x 720h / 1h = 14.4.

Two ways to fit another period:

* ``workbook``: keep the windows, derive the factors from the same shares
  (a 28-day SLO pages at 13.44x over 1h), as Sloth does;
* ``scaled``: shrink every window by period / 30d and keep the factors
  (a 12-hour SLO pages at 14.4x over 1m and 5s): for tests and demos.

A calendar-month period (``MONTH``) keeps the Workbook's windows, and each
factor follows the length of the current month: 2% of a 31-day month's budget
in an hour is 14.88x, of February's 13.44x (13.92x in a leap year).
"""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86400.0
WORKBOOK_PERIOD = 30 * DAY
#: The calendar-month SLO period (UTC), as the config spells it.
MONTH = "month"

#: An SLO period: seconds (rolling) or the calendar month.
Period = float | str


@dataclass(frozen=True, slots=True)
class BurnWindow:
    """One condition of an alert: the burn over both windows exceeds ``factor``."""

    severity: str  # "page" or "ticket"
    budget_share: float
    long: float  # seconds
    short: float  # seconds
    period: float  # the SLO period, seconds (for a calendar month: 30 days, see factor_in)

    @property
    def factor(self) -> float:
        """The burn rate that spends ``budget_share`` of the budget within ``long``."""
        return round(self.budget_share * self.period / self.long, 6)

    def factor_in(self, days: float) -> float:
        """The factor for a period of ``days`` days: a calendar month of that length."""
        return round(self.budget_share * days * DAY / self.long, 6)


# (severity, budget share, long window, short window) for a 30-day period.
WORKBOOK: tuple[tuple[str, float, float, float], ...] = (
    ("page", 0.02, 3600.0, 300.0),
    ("page", 0.05, 6 * 3600.0, 1800.0),
    ("ticket", 0.10, DAY, 2 * 3600.0),
    ("ticket", 0.10, 3 * DAY, 6 * 3600.0),
)


class WorkbookWindowsError(ValueError):
    """The period cannot hold the requested alert windows."""


def check_period(period: Period, mode: str) -> None:
    """Raise WorkbookWindowsError if ``period`` does not suit ``mode``."""
    if isinstance(period, str):
        if period != MONTH:
            raise WorkbookWindowsError(f"unknown period {period!r}")
        if mode != "workbook":
            raise WorkbookWindowsError(
                "month is the calendar month: use alert_windows: workbook (its windows fit "
                "every month)"
            )
        return
    if period <= 0:
        raise WorkbookWindowsError("must be positive")
    longest = max(w[2] for w in WORKBOOK)
    if mode == "workbook" and period < longest:
        raise WorkbookWindowsError(
            f"{period:g}s is shorter than the Workbook's 3d alert window; "
            "use a window of at least 3d or alert_windows: scaled"
        )
    if mode == "scaled":
        # The shortest window must still hold two scrapes of a 1s-interval Prometheus.
        shortest = min(w[3] for w in WORKBOOK) * period / WORKBOOK_PERIOD
        if shortest < 2.0:
            raise WorkbookWindowsError(
                f"{period:g}s scales the shortest alert window below 2s; "
                f"use at least {prom_duration(2.0 * WORKBOOK_PERIOD / 300.0)}"
            )


def burn_windows(period: Period, mode: str) -> tuple[BurnWindow, ...]:
    """The four alert conditions for an SLO of ``period`` seconds (or the calendar month,
    whose factors depend on the month: see :meth:`BurnWindow.factor_in`)."""
    check_period(period, mode)
    if isinstance(period, str):
        period = WORKBOOK_PERIOD
    scale = period / WORKBOOK_PERIOD if mode == "scaled" else 1.0
    return tuple(
        BurnWindow(sev, share, _round_ms(long * scale), _round_ms(short * scale), period)
        for sev, share, long, short in WORKBOOK
    )


def _round_ms(seconds: float) -> float:
    return round(seconds * 1000) / 1000


_UNITS = (("d", DAY), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 0.001))


def period_name(period: Period) -> str:
    """How a period is named in window labels and record names: ``30d``, ``12h``, ``month``."""
    return period if isinstance(period, str) else prom_duration(period)


def prom_duration(seconds: float) -> str:
    """A Prometheus duration in the largest unit that divides it: 3600 -> ``1h``, 4320 -> ``72m``."""
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    millis = round(seconds * 1000)
    for unit, size in _UNITS:
        size_ms = round(size * 1000)
        if millis % size_ms == 0:
            return f"{millis // size_ms}{unit}"
    raise AssertionError("unreachable: ms divides every whole number of milliseconds")
