"""The fixed instants every date-sensitive test runs at, whatever today's date is.

A test that depends on the calendar (month to date, last month, budgets, SLO
months, dashboards' data) takes its "now" from here, through a
:class:`~exporter.core.clock.FixedClock` (in-process) or ``faketime`` (a daemon run
as a process), never from the machine:

* ``first-of-month``: 00:05 UTC on the 1st, after a 28-day February; no day of
  the month has closed yet;
* ``end-of-30-day-month``: 23:55 UTC on the 30th of April, five minutes before
  the month ends;
* ``leap-day``: 12:00 UTC on 2028-02-29;
* ``new-years-eve``: 23:59 UTC on 2027-12-31, the last minute of the year;
* ``mid-month``: an ordinary day.

``@each_instant`` runs a test once per instant with an ``instant`` argument
(epoch seconds), its id the instant's name.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

INSTANTS: dict[str, float] = {
    "first-of-month": datetime(2027, 3, 1, 0, 5, tzinfo=UTC).timestamp(),
    "end-of-30-day-month": datetime(2027, 4, 30, 23, 55, tzinfo=UTC).timestamp(),
    "leap-day": datetime(2028, 2, 29, 12, 0, tzinfo=UTC).timestamp(),
    "new-years-eve": datetime(2027, 12, 31, 23, 59, tzinfo=UTC).timestamp(),
    "mid-month": datetime(2027, 7, 14, 9, 30, tzinfo=UTC).timestamp(),
}


def at(name: str) -> float:
    """The instant called ``name`` (epoch seconds)."""
    return INSTANTS[name]


each_instant = pytest.mark.parametrize("instant", list(INSTANTS.values()), ids=list(INSTANTS))
