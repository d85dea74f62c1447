"""Rollups: the bucket ladder every domain keeps its aggregates on, and window splitting.

A windowed KPI (uptime over 30 days, a burn rate over 6 hours) should cost a sum over a
bounded number of stored aggregates, not a scan of every raw row in the window. Each
domain keeps, next to its raw rows and in the same transaction, aggregates per time
bucket of each size of one :class:`Ladder`: by default minute buckets (kept for the
last 2 hours), hour buckets (the last 35 days) and day buckets (kept as long as the
domain keeps them). Buckets are aligned on the UTC epoch, so hour and day buckets start
at whole UTC hours and at 00:00 UTC (epoch seconds have no leap seconds).

:func:`split_window` cuts a window ``[start, end)`` into runs of whole buckets, the
coarsest size that fits and is still kept, plus the raw edge ranges no whole bucket
covers. A KPI sums the runs from its rollup table and the edges from its raw rows
(through an index), so its value is exactly the raw computation: no bucket edge is ever
counted as if it were the window's edge. A window of ``D`` days is at most ``D`` day
buckets, ``2 x 23`` hour buckets and ``2 x 59`` minute buckets, plus two raw ranges
(each under a minute where minute buckets are kept, under an hour or a day beyond).

Pure functions and values; no clock, no I/O.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from exporter.core.periods import Span

MINUTE = 60
HOUR = 3600
DAY = 86400


@dataclass(frozen=True, slots=True)
class Tier:
    """One bucket size of a ladder: ``size`` seconds, usable for ``horizon`` seconds.

    A bucket of this tier is used by :func:`split_window` only while its start is at
    most ``horizon`` seconds before now (``math.inf``: always); older ones may be pruned
    (see :meth:`Ladder.keep_after`)."""

    size: int
    horizon: float


@dataclass(frozen=True, slots=True)
class Ladder:
    """The bucket sizes aggregates are kept at, finest first.

    Each size divides the next, horizons grow with the size, and the coarsest tier is
    kept for ever (``horizon = inf``), so every window can be covered. ``slack`` is how
    much longer than its horizon a bucket is written and kept, so that a render whose
    clock is a little behind the writer's (another replica, a restarted process) still
    finds every bucket it may use.
    """

    tiers: tuple[Tier, ...]
    slack: float = float(DAY)

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ValueError("a ladder needs at least one tier")
        for finer, coarser in itertools.pairwise(self.tiers):
            if coarser.size <= finer.size or coarser.size % finer.size:
                raise ValueError(f"bucket size {coarser.size} is not a multiple of {finer.size}")
            if coarser.horizon < finer.horizon:
                raise ValueError(f"tier {coarser.size}s is kept shorter than tier {finer.size}s")
        if any(t.size <= 0 for t in self.tiers) or self.tiers[-1].horizon != math.inf:
            raise ValueError("sizes are positive and the coarsest tier is kept for ever")

    @property
    def sizes(self) -> tuple[int, ...]:
        """Bucket sizes in seconds, finest first."""
        return tuple(t.size for t in self.tiers)

    def usable_from(self, tier: Tier, now: float) -> float:
        """The earliest bucket start of ``tier`` that :func:`split_window` uses at ``now``."""
        if tier.horizon == math.inf:
            return -math.inf
        return ceil_to(now - tier.horizon, tier.size)

    def keep_after(self, tier: Tier, now: float) -> float:
        """Buckets of ``tier`` starting before this may be pruned (or not written) at
        ``now``: its horizon plus the ladder's slack, in whole buckets."""
        if tier.horizon == math.inf:
            return -math.inf
        return floor_to(now - tier.horizon - self.slack, tier.size)

    def written(self, t: float, now: float) -> tuple[tuple[int, float], ...]:
        """(size, bucket start) of every bucket a raw row at ``t`` goes into, written at
        ``now``: each tier's bucket, unless it is already past that tier's keeping."""
        out = []
        for tier in self.tiers:
            start = floor_to(t, tier.size)
            if start >= self.keep_after(tier, now):
                out.append((tier.size, start))
        return tuple(out)


#: Minute buckets for the last 2 hours, hour buckets for the last 35 days, day buckets
#: beyond (for as long as the domain keeps them).
DEFAULT_LADDER = Ladder((Tier(MINUTE, 2 * HOUR), Tier(HOUR, 35 * DAY), Tier(DAY, math.inf)))


def floor_to(t: float, size: int) -> float:
    """The start of the ``size``-second bucket holding ``t``."""
    return float(math.floor(t / size) * size)


def ceil_to(t: float, size: int) -> float:
    """The first ``size``-second bucket boundary at or after ``t``."""
    return float(math.ceil(t / size) * size)


@dataclass(frozen=True, slots=True)
class BucketRun:
    """Consecutive whole buckets of one size: those starting in ``[start, end)``."""

    size: int
    start: float
    end: float

    @property
    def count(self) -> int:
        return round((self.end - self.start) / self.size)


@dataclass(frozen=True, slots=True)
class WindowSplit:
    """A window cut into whole-bucket runs (read from rollups) and raw edges (read from
    raw rows); together they cover the window exactly once."""

    runs: tuple[BucketRun, ...]
    raw: tuple[Span, ...]

    @property
    def buckets(self) -> int:
        """How many buckets the runs hold."""
        return sum(r.count for r in self.runs)


def split_window(span: Span, now: float, ladder: Ladder = DEFAULT_LADDER) -> WindowSplit:
    """Cut ``span`` (``start <= t < end``) into runs of whole buckets and raw edges.

    The coarsest tier covers the whole buckets it can; what is left on either side is
    covered by the next finer tier, and so on; what no tier covers (less than a bucket
    of the finest usable tier, or older than a tier's horizon) is a raw edge. A tier's
    buckets are used only from :meth:`Ladder.usable_from` on, so a pruned bucket is
    never asked for. Adjacent raw pieces are merged.
    """
    runs: list[BucketRun] = []
    raw: list[Span] = []
    if span.end > span.start:
        _cover(span.start, span.end, len(ladder.tiers) - 1, now, ladder, runs, raw)
    runs.sort(key=lambda r: r.start)
    return WindowSplit(tuple(runs), _merged(raw))


def _cover(
    start: float,
    end: float,
    level: int,
    now: float,
    ladder: Ladder,
    runs: list[BucketRun],
    raw: list[Span],
) -> None:
    """Cover ``[start, end)`` with tiers ``0..level``, coarsest first (see split_window)."""
    if end <= start:
        return
    if level < 0:
        raw.append(Span(start, end))
        return
    tier = ladder.tiers[level]
    first = max(ceil_to(start, tier.size), ladder.usable_from(tier, now))
    last = floor_to(end, tier.size)
    if first >= last:
        _cover(start, end, level - 1, now, ladder, runs, raw)
        return
    _cover(start, first, level - 1, now, ladder, runs, raw)
    runs.append(BucketRun(tier.size, first, last))
    _cover(last, end, level - 1, now, ladder, runs, raw)


def _merged(pieces: list[Span]) -> tuple[Span, ...]:
    pieces.sort(key=lambda s: s.start)
    out: list[Span] = []
    for piece in pieces:
        if out and out[-1].end >= piece.start:
            out[-1] = Span(out[-1].start, max(out[-1].end, piece.end))
        else:
            out.append(piece)
    return tuple(out)
