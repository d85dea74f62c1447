"""The one clock: every "now" in the exporter comes from here.

A clock is a callable returning UTC epoch seconds. Product code takes one as a
parameter (``clock: Clock = system_clock``) and never reads the wall clock
itself, so KPIs, windows, retention, the sandbox and the demo all agree on one
instant, and a test or ``--as-of`` can choose that instant.

Durations are measured with :func:`time.monotonic` or :func:`time.perf_counter`,
which are not "now" and stay where they are used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

#: A source of "now": UTC epoch seconds.
Clock = Callable[[], float]


def system_clock() -> float:
    """The machine's clock (UTC epoch seconds)."""
    return time.time()


def wall_datetime() -> datetime:
    """The machine's clock as an aware datetime, for APScheduler's own timers.

    The scheduler measures its intervals on the real clock whatever instant the
    product's clock stands at, so its first run times come from here.
    """
    return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until moved: ``FixedClock(t)()`` is ``t``."""

    def __init__(self, at: float) -> None:
        self.at = float(at)

    def __call__(self) -> float:
        return self.at

    def set(self, at: float) -> None:
        self.at = float(at)

    def advance(self, seconds: float) -> None:
        self.at += seconds


class ShiftedClock:
    """A clock that starts at ``at`` and then runs at the real clock's pace.

    It serves ``demo --as-of``: the simulated platform and the daemon live at a
    chosen instant (the 1st of a month, a leap day) while polls, timeouts and
    the scheduler keep real time.
    """

    def __init__(self, at: float, real: Clock = system_clock) -> None:
        self._real = real
        self.offset = float(at) - real()

    def __call__(self) -> float:
        return self._real() + self.offset


def parse_instant(text: str) -> float:
    """An ISO 8601 instant (``2027-03-01T00:05:00Z``; no zone means UTC) or epoch seconds.

    Raises ``ValueError`` naming what was given.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"invalid instant {text!r}: use e.g. 2027-03-01T00:05:00Z or epoch seconds"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid instant {text!r}: epoch seconds must be finite and not negative")
    return seconds


def utc_datetime(at: float) -> datetime:
    """``at`` (epoch seconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(at, UTC)
