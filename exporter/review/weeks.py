"""ISO weeks (Monday 00:00 UTC to the next Monday), the unit of the platform review.

A review covers one ISO 8601 week: ``2026-W53`` runs from Monday 2026-12-28 to
Sunday 2027-01-03, so a week may straddle a year end or a month's first day; its
year is the ISO year (that of its Thursday). A week still running when the review
is made ends at that instant instead (week to date). Pure functions; no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from exporter.core.periods import DAY, Span, day_start, utc_date

WEEK = 7 * DAY
_WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True, slots=True)
class IsoWeek:
    """One ISO week: its ISO year and number."""

    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> IsoWeek:
        """``YYYY-Www`` (``2026-W53``); ValueError for anything else or a week the year lacks."""
        m = _WEEK_RE.match(text)
        if m is None:
            raise ValueError(f"{text!r} is not an ISO week such as 2026-W05")
        year, week = int(m.group(1)), int(m.group(2))
        try:
            date.fromisocalendar(year, week, 1)
        except ValueError:
            raise ValueError(f"{year} has no ISO week {week}") from None
        return cls(year, week)

    @classmethod
    def of(cls, t: float) -> IsoWeek:
        """The ISO week holding the instant ``t``."""
        iso = utc_date(t).isocalendar()
        return cls(iso.year, iso.week)

    @property
    def label(self) -> str:
        return f"{self.year}-W{self.week:02d}"

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.week, 1)

    @property
    def sunday(self) -> date:
        return self.monday + timedelta(days=6)

    @property
    def start(self) -> float:
        return day_start(self.monday)

    @property
    def end(self) -> float:
        """The next Monday 00:00 UTC (excluded)."""
        return self.start + WEEK

    def shifted(self, weeks: int) -> IsoWeek:
        """The week ``weeks`` later (earlier when negative)."""
        return IsoWeek.of(self.start + weeks * WEEK)

    def span(self, as_of: float | None = None) -> Span:
        """The week's span, ending at ``as_of`` when that falls inside it (week to date)."""
        end = self.end if as_of is None or as_of >= self.end else max(as_of, self.start)
        return Span(self.start, end)


def iso_day(t: float) -> str:
    """The UTC day holding ``t``, ISO formatted."""
    return datetime.fromtimestamp(t, UTC).date().isoformat()
