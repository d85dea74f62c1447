"""Which closed UTC days a cost API source asks about. Pure functions.

Cost Explorer and Azure Cost Management are asked about their ``lookback_days``
(35 and 31 by default), but the ``last_month`` window needs the whole previous
calendar month: from about the 4th of a month, 35 days back no longer reach its
1st. So the days asked about always start no later than the 1st of the previous
month. Settled days are not asked again, so this costs requests only on a first
poll or after a gap.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

from exporter.core.periods import last_month_days


def poll_days(today: date, lookback_days: int) -> list[date]:
    """The closed days to read on ``today``, oldest first: the last ``lookback_days``
    and, in any case, every day of the previous calendar month."""
    start = min(today - timedelta(days=lookback_days), last_month_days(today)[0])
    return [start + timedelta(days=n) for n in range((today - start).days)]


def spans(start: date, end: date, max_days: int) -> Iterator[tuple[date, date]]:
    """[start, end) cut into consecutive [a, b) of at most ``max_days`` days each (a
    daily Azure query spans at most 31)."""
    a = start
    while a < end:
        b = min(a + timedelta(days=max_days), end)
        yield a, b
        a = b
