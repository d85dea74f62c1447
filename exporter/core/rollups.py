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

Also shared by the domains: :class:`KeptFrom`, the store's record of the oldest
complete bucket of each tier, and :class:`Backfill`, the batched build of a new rollup
from the raw rows an older release left. (Quantile sketches that merge by adding
counts are :mod:`exporter.core.sketch`.)

The ladder and the split are pure; KeptFrom and the backfill touch the store.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from exporter.core.errors import StoreBusy
from exporter.core.periods import Span
from exporter.core.store import Store, Tx

#: The size of a :class:`Piece` of raw rows, not buckets.
RAW = 0
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
    """The start of the ``size``-second bucket holding ``t`` (infinities stay as they are)."""
    return float(math.floor(t / size) * size) if math.isfinite(t) else t


def ceil_to(t: float, size: int) -> float:
    """The first ``size``-second bucket boundary at or after ``t`` (infinities stay)."""
    return float(math.ceil(t / size) * size) if math.isfinite(t) else t


@dataclass(frozen=True, slots=True)
class BucketRun:
    """Consecutive whole buckets of one size: those starting in ``[start, end)``."""

    size: int
    start: float
    end: float

    @property
    def count(self) -> int:
        return round((self.end - self.start) / self.size)


@dataclass(frozen=True, slots=True, order=True)
class Piece:
    """Buckets of one size starting in ``[start, end)``, read from that size's table
    (size :data:`RAW`: the raw rows starting there)."""

    size: int
    start: float
    end: float


def elementary(all_pieces: Iterable[Piece]) -> list[Piece]:
    """Disjoint pieces whose unions are each of ``all_pieces``: every row is read once."""
    by_size: dict[int, list[Piece]] = {}
    for p in set(all_pieces):
        by_size.setdefault(p.size, []).append(p)
    out: list[Piece] = []
    for size, group in by_size.items():
        cuts = sorted({t for p in group for t in (p.start, p.end)})
        for a, b in itertools.pairwise(cuts):
            if any(p.start <= a and b <= p.end for p in group):
                out.append(Piece(size, a, b))
    return sorted(out)


_Held = TypeVar("_Held")


class ClosedPieces(Generic[_Held]):
    """Per store, what each closed piece of a window held when last read, with its
    fingerprint. A piece that ended before the current hour changes only when a late
    record lands in it or retention prunes it, both of which change its fingerprint (one
    cheap indexed query), so a render reads its rows again only then. A few pieces per
    store (the edges and runs of one render's windows, and of the render before), in a
    ``WeakKeyDictionary`` so a closed store drops its own."""

    def __init__(self, size: int = 32) -> None:
        self._kept: weakref.WeakKeyDictionary[
            Store, dict[Piece, tuple[tuple[object, ...], _Held]]
        ] = weakref.WeakKeyDictionary()
        self._size = size
        # A render and a review (or two stores' renders) may read windows in two threads.
        self._lock = threading.Lock()

    def get(
        self,
        store: Store,
        piece: Piece,
        now: float,
        fingerprint: Callable[[], tuple[object, ...]],
        read: Callable[[], _Held],
    ) -> _Held:
        """``read()``, or what it gave before if ``piece`` is closed and its
        ``fingerprint()`` unchanged since (what is returned is shared: not to be changed)."""
        if piece.end > floor_to(now, HOUR):
            return read()  # it holds the running hour: it changes at every poll
        # Taken before the read: a write landing between the two is seen at the next render.
        printed = fingerprint()
        with self._lock:
            cached = self._kept.setdefault(store, {}).get(piece)
        if cached is not None and cached[0] == printed:
            return cached[1]
        held = read()
        with self._lock:
            kept = self._kept.setdefault(store, {})
            kept.pop(piece, None)
            while len(kept) >= self._size:
                del kept[next(iter(kept))]  # the oldest entry
            kept[piece] = (printed, held)
        return held

    def forget(self, store: Store) -> None:
        """Drop what is kept for ``store``: its next render reads every piece."""
        with self._lock:
            self._kept.pop(store, None)


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


def split_window(
    span: Span,
    now: float,
    ladder: Ladder = DEFAULT_LADDER,
    kept_from: Mapping[int, float] | None = None,
) -> WindowSplit:
    """Cut ``span`` (``start <= t < end``) into runs of whole buckets and raw edges.

    The coarsest tier covers the whole buckets it can; what is left on either side is
    covered by the next finer tier, and so on; what no tier covers (less than a bucket
    of the finest usable tier, or older than a tier's horizon) is a raw edge. A tier's
    buckets are used only from :meth:`Ladder.usable_from` on, and from
    ``kept_from[size]`` on (the store's own record of the oldest complete bucket: see
    :class:`KeptFrom`), so a pruned or skipped bucket is never asked for. Adjacent raw
    pieces are merged.
    """
    runs: list[BucketRun] = []
    raw: list[Span] = []
    if span.end > span.start:
        floors = {
            t.size: max(ladder.usable_from(t, now), (kept_from or {}).get(t.size, -math.inf))
            for t in ladder.tiers
        }
        _cover(span.start, span.end, len(ladder.tiers) - 1, floors, ladder, runs, raw)
    runs.sort(key=lambda r: r.start)
    return WindowSplit(tuple(runs), _merged(raw))


def _cover(
    start: float,
    end: float,
    level: int,
    floors: Mapping[int, float],
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
    first = max(ceil_to(start, tier.size), ceil_to(floors[tier.size], tier.size))
    last = floor_to(end, tier.size)
    if first >= last:
        _cover(start, end, level - 1, floors, ladder, runs, raw)
        return
    _cover(start, first, level - 1, floors, ladder, runs, raw)
    runs.append(BucketRun(tier.size, first, last))
    _cover(last, end, level - 1, floors, ladder, runs, raw)


def _merged(pieces: list[Span]) -> tuple[Span, ...]:
    pieces.sort(key=lambda s: s.start)
    out: list[Span] = []
    for piece in pieces:
        if out and out[-1].end >= piece.start:
            out[-1] = Span(out[-1].start, max(out[-1].end, piece.end))
        else:
            out.append(piece)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class KeptFrom:
    """A domain's record, in its table ``table`` (``part TEXT, size INTEGER, kept_from
    REAL``, primary key ``(part, size)``), of the oldest bucket of each rollup part and
    size that is complete.

    A writer that skips a tier for an old row (:meth:`Ladder.written`) and a prune both
    raise it to their cutoff, in their transaction. Windows are split with it, so what
    a render uses never depends on its clock agreeing with the writer's (a replica, a
    test at a fixed instant).
    """

    table: str

    def create_sql(self) -> str:
        return (
            f"CREATE TABLE {self.table} (part TEXT NOT NULL, size INTEGER NOT NULL, "
            "kept_from REAL NOT NULL, PRIMARY KEY (part, size))"
        )

    def raise_to(self, tx: Tx, part: str, size: int, cutoff: float) -> None:
        """Buckets of ``part`` and ``size`` before ``cutoff`` may be incomplete from now on."""
        if cutoff == -math.inf:
            return
        tx.write_later(
            f"INSERT INTO {self.table} (part, size, kept_from) VALUES (?, ?, ?) "
            "ON CONFLICT (part, size) DO UPDATE SET kept_from = max(kept_from, excluded.kept_from)",
            (part, size, cutoff),
        )

    def read(self, store: Store, part: str) -> dict[int, float]:
        rows = store.query(f"SELECT size, kept_from FROM {self.table} WHERE part = ?", (part,))
        return {int(r[0]): float(r[1]) for r in rows}


# --- building a new rollup from existing raw rows ---------------------------------------

BACKFILL_SOURCE = "rollups"

_log = logging.getLogger("exporter.rollups")


def backfill_migration(name: str, table: str) -> str:
    """The migration statement that queues the backfill ``name`` of ``table``'s rows.

    It records the rows already there (``rowid`` up to the current maximum); rows
    written later go into the rollup with their own transaction. Append it to the
    migration that creates the rollup tables, so both happen in one transaction.
    """
    return (
        "INSERT INTO cursors (source, name, value, updated_at) "
        f"SELECT '{BACKFILL_SOURCE}', '{name}', "
        "json_object('after', 0, 'until', COALESCE(MAX(rowid), 0), 'total', COUNT(*)), 0 "
        f"FROM {table} WHERE true ON CONFLICT (source, name) DO NOTHING"
    )


@dataclass(frozen=True)
class Backfill:
    """A rollup built in batches from the raw rows of ``table`` that predate it.

    ``columns`` is the SELECT list handed to ``add`` (with the transaction and the time
    of the batch) for each batch of at most ``batch`` rows, in ``rowid`` order. The
    progress is the ``cursors`` row (:data:`BACKFILL_SOURCE`, ``name``), committed with
    each batch, so a restart resumes where the last batch ended, and a batch is added
    once. Until it is done, the domain reads its windows from raw rows
    (:func:`backfill_pending`).
    """

    name: str
    table: str
    columns: str
    add: Callable[[Tx, Sequence[sqlite3.Row], float], None]
    batch: int = 20_000


def backfill_pending(store: Store | Tx, name: str) -> bool:
    """True while the backfill ``name`` has rows left to add (read in ``store``, or in a
    write transaction)."""
    sql = "SELECT value FROM cursors WHERE source = ? AND name = ?"
    if isinstance(store, Tx):
        row = store.execute(sql, (BACKFILL_SOURCE, name)).fetchone()
    else:
        row = store.query_one(sql, (BACKFILL_SOURCE, name))
    if row is None:
        return False
    state = json.loads(row[0])
    return bool(state["after"] < state["until"])


def backfill_step(store: Store, backfill: Backfill) -> bool:
    """Add one batch of ``backfill``; True once nothing is left (now or before).

    A write of a poll in progress wins: the step is left for the next call
    (:class:`~exporter.core.errors.StoreBusy` is not raised). Progress is logged per
    batch.
    """
    try:
        with store.transaction(wait=False) as tx:
            row = tx.execute(
                "SELECT value FROM cursors WHERE source = ? AND name = ?",
                (BACKFILL_SOURCE, backfill.name),
            ).fetchone()
            if row is None:
                return True
            state = json.loads(row[0])
            if state["after"] >= state["until"]:
                return True
            cur = tx.execute(
                f"SELECT rowid, {backfill.columns} FROM {backfill.table} "
                "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
                (state["after"], state["until"], backfill.batch),
            )
            if isinstance(cur, sqlite3.Cursor):  # PostgreSQL's rows read by name already
                cur.row_factory = sqlite3.Row
            rows = cur.fetchall()
            backfill.add(tx, rows, tx.clock())
            state["after"] = int(rows[-1][0]) if rows else state["until"]
            state["done"] = int(state.get("done", 0)) + len(rows)
            tx.set_cursor(BACKFILL_SOURCE, backfill.name, json.dumps(state, sort_keys=True))
    except StoreBusy:
        return False
    finished = state["after"] >= state["until"]
    _log.info(
        "rollup backfill %s: %d of %d rows%s",
        backfill.name,
        state["done"],
        state["total"],
        " (done)" if finished else "",
    )
    return bool(finished)


def backfill_batches(store: Store, backfills: Iterable[Backfill]) -> bool:
    """One batch of each backfill not done yet; True once all are done.

    The daemon calls it on a timer from its start until it returns True, so the
    rollups of an upgraded database fill in while it serves (reading raw rows meanwhile).
    """
    return all([backfill_step(store, b) for b in backfills])
