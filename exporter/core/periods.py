"""Windows of time as spans: rolling windows ending now, and calendar periods (UTC).

A :class:`Span` is half-open, ``start <= t < end``. A rolling window of ``W``
seconds is ``(now - W, now]``, which is the span from the float just above
``now - W`` to the float just above ``now``, so one type (and one SQL test)
serves both. Calendar periods (see docs/kpis.md, "Calendar windows"):

* ``mtd``: from 00:00 UTC on the 1st of the current month up to and including now;
* ``last_month``: the whole previous calendar month, 00:00 UTC on its 1st to
  00:00 UTC on the 1st of the current month (28, 29, 30 or 31 days);
* ``month`` (the SLO window): the same span as ``mtd``.

Both are defined at every instant, including the 1st and the last day of each
month and February 29. Also the UTC day and minute arithmetic every domain shares
(closed days, day starts). Pure functions; no clock.
"""

from __future__ import annotations

import calendar
import functools
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

DAY = 86400.0

#: The calendar windows, by the name they carry in the ``window`` label.
CALENDAR_WINDOWS = ("mtd", "last_month")


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of time, ``start <= t < end`` (UTC epoch seconds)."""

    start: float
    end: float

    def __contains__(self, t: float) -> bool:
        return self.start <= t < self.end

    @property
    def seconds(self) -> float:
        return self.end - self.start


def rolling(now: float, seconds: float) -> Span:
    """The rolling window ``(now - seconds, now]``."""
    return Span(math.nextafter(now - seconds, math.inf), math.nextafter(now, math.inf))


def utc_date(t: float) -> date:
    """The UTC day holding ``t``."""
    return datetime.fromtimestamp(t, UTC).date()


def utc_minute(t: float) -> float:
    """The start of the UTC minute holding ``t``."""
    return float(math.floor(t / 60.0) * 60)


def day_start(day: date) -> float:
    """00:00 UTC of ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


@functools.lru_cache(maxsize=4096)
def day_start_iso(day: str) -> float:
    """00:00 UTC of an ISO day (``2026-03-01``). Cached: callers ask for the same few
    hundred days once per stored row."""
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def is_closed_day(day: date, now: float) -> bool:
    """A UTC day is closed once it has ended: today never is."""
    return day < utc_date(now)


def latest_closed_day(now: float) -> date:
    """Yesterday (UTC): the newest closed day."""
    return utc_date(now) - timedelta(days=1)


def days_in_month(day: date) -> int:
    """28, 29, 30 or 31: the length of the month holding ``day``."""
    return calendar.monthrange(day.year, day.month)[1]


def month_start(day: date) -> date:
    """The 1st of the month holding ``day``."""
    return day.replace(day=1)


def previous_month_start(day: date) -> date:
    """The 1st of the month before the one holding ``day``."""
    return month_start(month_start(day) - timedelta(days=1))


def month_to_date(now: float) -> Span:
    """From 00:00 UTC on the 1st of the current month up to and including ``now``."""
    return Span(day_start(month_start(utc_date(now))), math.nextafter(now, math.inf))


def last_month(now: float) -> Span:
    """The previous calendar month, whole."""
    today = utc_date(now)
    return Span(day_start(previous_month_start(today)), day_start(month_start(today)))


def calendar_span(name: str, now: float) -> Span:
    """The span of a calendar window (``mtd``, ``month`` or ``last_month``) at ``now``."""
    if name in ("mtd", "month"):
        return month_to_date(now)
    if name == "last_month":
        return last_month(now)
    raise ValueError(f"unknown calendar window {name!r}")


def last_month_days(today: date) -> tuple[date, date]:
    """First and last day (inclusive) of the month before ``today``'s."""
    first = previous_month_start(today)
    return first, month_start(today) - timedelta(days=1)


@dataclass(frozen=True, slots=True)
class DaySplit:
    """A span cut into the whole UTC days it covers and the partial pieces left over.

    ``first_day``..``last_day`` (inclusive) are the whole days, None when there
    are none; ``pieces`` are the spans outside them (at most one before, one after).
    """

    first_day: date | None
    last_day: date | None
    pieces: tuple[Span, ...]


def split_days(span: Span) -> DaySplit:
    """Whole UTC days of ``span`` plus the partial spans before and after them.

    A stored daily total can stand for a whole day; the pieces must be counted
    from finer records (minutes, single checks).
    """
    if span.end <= span.start:
        return DaySplit(None, None, ())
    first = utc_date(span.start)
    if day_start(first) < span.start:
        first += timedelta(days=1)
    last_end = utc_date(span.end)  # the last midnight at or before span.end
    if day_start(first) >= day_start(last_end):
        return DaySplit(None, None, (span,))
    pieces = []
    if span.start < day_start(first):
        pieces.append(Span(span.start, day_start(first)))
    if day_start(last_end) < span.end:
        pieces.append(Span(day_start(last_end), span.end))
    return DaySplit(first, last_end - timedelta(days=1), tuple(pieces))
