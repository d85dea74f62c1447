"""When each check probes: a fixed grid per check, and the loop that keeps to it.

Check ``k`` with interval ``i`` probes at ``offset(k) + n * i`` on the wall-clock
grid (``n`` an integer), where the offset is a stable hash of the check's name
scaled into the interval. This is how Prometheus spreads its scrapes: the same
check always lands on the same phase, across restarts and replicas, and many
checks with one interval spread evenly over it instead of all firing at once.

:class:`Grid` is that arithmetic. :func:`run_grid` sleeps from slot to slot on a
:class:`Ticker` (the event loop's monotonic clock in the daemon, a test clock in
tests) and hands every due slot to ``launch``. A wake-up a little early sleeps
again until the slot; a wake-up so late that whole intervals have passed runs
the latest slot and reports the ones before it to ``skip``. Nothing is dropped
without being counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)


def check_offset(name: str, interval: float) -> float:
    """The check's stable phase within its interval, in [0, interval)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64 * interval


class Ticker(Protocol):
    """The clock the loop sleeps on: monotonic seconds, and a sleep until one of them."""

    def now(self) -> float: ...

    async def sleep_until(self, when: float) -> None: ...


class LoopTicker:
    """The running event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, when: float) -> None:
        await asyncio.sleep(max(0.0, when - self.now()))


@dataclass(frozen=True, slots=True)
class Grid(Generic[K]):
    """Every check's slots, on the ticker's time line.

    ``wall_origin`` is the wall-clock time at ticker time ``tick_origin``; the grid
    is laid out on the wall clock (so it is the same after a restart) and read
    back in ticker time (so sleeping never depends on the wall clock moving).
    """

    intervals: Mapping[K, float]
    offsets: Mapping[K, float]
    wall_origin: float
    tick_origin: float

    @classmethod
    def of(
        cls, intervals: Mapping[K, float], names: Mapping[K, str], wall: float, tick: float
    ) -> Grid[K]:
        offsets = {k: check_offset(names[k], i) for k, i in intervals.items()}
        return cls(dict(intervals), offsets, wall, tick)

    def to_wall(self, tick: float) -> float:
        return self.wall_origin + (tick - self.tick_origin)

    def to_tick(self, wall: float) -> float:
        return self.tick_origin + (wall - self.wall_origin)

    def first_after(self, key: K, wall: float) -> float:
        """The ticker time of the check's first slot strictly after wall time ``wall``."""
        interval, offset = self.intervals[key], self.offsets[key]
        n = math.floor((wall - offset) / interval) + 1
        slot = offset + n * interval
        if slot <= wall:  # float rounding at an exact slot
            slot += interval
        return self.to_tick(slot)


async def run_grid(
    grid: Grid[K],
    ticker: Ticker,
    first: Mapping[K, float],
    launch: Callable[[K, float], None],
    skip: Callable[[K, int], None],
) -> None:
    """Call ``launch(key, slot)`` at every slot of every check, forever.

    ``first`` is each check's first slot (ticker time). ``launch`` must not block:
    it starts the probe (or counts it skipped, when the check cannot start it).
    Slots that passed while the loop could not run are reported with
    ``skip(key, n)``; the latest passed slot is still launched.
    """
    heap = [(at, i, key) for i, (key, at) in enumerate(first.items())]
    heapq.heapify(heap)
    while heap:
        at, i, key = heap[0]
        await ticker.sleep_until(at)
        now = ticker.now()
        while heap and heap[0][0] <= now:
            at, i, key = heapq.heappop(heap)
            interval = grid.intervals[key]
            missed = math.floor((now - at) / interval)
            if missed > 0:
                skip(key, missed)
                at += missed * interval
            launch(key, at)
            heapq.heappush(heap, (at + interval, i, key))
