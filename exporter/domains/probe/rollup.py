"""Probe rollups: checks per (service, probe) and bucket, kept with the raw results.

Every new result is added, in the transaction that stores it, to its minute and hour
bucket in ``probe_rollup`` (checks, successes, successful checks per duration bucket
of :data:`~exporter.domains.probe.kpis.DURATION_BUCKETS`) and, when it succeeded, to
its duration's bin (:data:`BINS`, 1 % relative) in ``probe_latency_bins``. Day
buckets are ``probe_daily`` (per service, kept for ever). A result already stored is
not added again: the writer adds only what ``insert_new`` took.

A window is read as :func:`exporter.core.rollups.split_window` cuts it: whole buckets
from the rollups, the edges from ``probe_results`` through its ``started_at`` index,
so checks and successes are exactly those of the raw rows. A database from before
the rollups gets them from a batched backfill (:data:`BACKFILL`); until it is done,
windows are read from the raw rows and the daily totals, as before.

Kept: minute buckets for 26 hours, hour buckets for 36 days, hour bins for
the longest latency window plus 2 hours (see :data:`LATENCY_KEEP`).
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from exporter.core.periods import Span
from exporter.core.rollups import (
    DAY,
    DEFAULT_LADDER,
    HOUR,
    MINUTE,
    RAW,
    Backfill,
    BucketRun,
    ClosedPieces,
    KeptFrom,
    Ladder,
    Piece,
    Tier,
    backfill_migration,
    backfill_pending,
    elementary,
    floor_to,
    split_window,
)
from exporter.core.spans import span_sums
from exporter.core.store import Store, Tx
from exporter.domains.probe.kpis import BINS, DURATION_BUCKETS, LATENCY_WINDOWS

LADDER = DEFAULT_LADDER
#: Latency bins are kept at minutes and hours only, so a latency window is read from
#: minute buckets (last 2 hours) and hour buckets, the rest from raw rows.
LATENCY_LADDER = Ladder((LADDER.tiers[0], Tier(HOUR, float("inf"))), LADDER.slack)
#: How long hour bins are kept: the longest latency window, plus two hours of margin.
LATENCY_KEEP = max(LATENCY_WINDOWS.values()) + 2 * HOUR
#: The oldest complete bucket of each part ("rollup", "bins") and size.
KEPT = KeptFrom("probe_rollup_kept")

# Successful checks per duration bucket (non-cumulative), then the overflow.
BUCKET_COLS = tuple(f"b{i}" for i in range(len(DURATION_BUCKETS) + 1))
_SUMS = ", ".join(f"SUM({c})" for c in ("checks", "successes", *BUCKET_COLS))

MIGRATION = ";".join(
    (
        f"""
    CREATE TABLE probe_rollup (
        size INTEGER NOT NULL,
        bucket REAL NOT NULL,
        service TEXT NOT NULL,
        probe TEXT NOT NULL,
        checks INTEGER NOT NULL,
        successes INTEGER NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL" for c in BUCKET_COLS)},
        PRIMARY KEY (size, bucket, service, probe)
    ) WITHOUT ROWID""",
        """
    CREATE TABLE probe_latency_bins (
        size INTEGER NOT NULL,
        bucket REAL NOT NULL,
        service TEXT NOT NULL,
        probe TEXT NOT NULL,
        bin INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (size, bucket, service, probe, bin)
    ) WITHOUT ROWID""",
        KEPT.create_sql(),
        # Day runs read the daily totals by day, for every service at once.
        "CREATE INDEX probe_daily_day ON probe_daily (day)",
        backfill_migration("probe", "probe_results"),
    )
)

_ROLLUP_SQL = (
    f"INSERT INTO probe_rollup (size, bucket, service, probe, checks, successes, "
    f"{', '.join(BUCKET_COLS)}) VALUES ({', '.join('?' for _ in range(6 + len(BUCKET_COLS)))}) "
    "ON CONFLICT (size, bucket, service, probe) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in ("checks", "successes", *BUCKET_COLS))
)
_BINS_SQL = (
    "INSERT INTO probe_latency_bins (size, bucket, service, probe, bin, n) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (size, bucket, service, probe, bin) "
    "DO UPDATE SET n = n + excluded.n"
)


@dataclass(frozen=True, slots=True)
class Check:
    """What a rollup needs of one stored result."""

    service: str
    probe: str
    started_at: float
    duration: float
    success: bool


def add(tx: Tx, checks: Iterable[Check], now: float) -> None:
    """Add results (each stored once, in this transaction) to their buckets and bins.

    A result older than a tier keeps is left out of that tier, and the tier's
    :data:`KEPT` mark raised past it, so no window reads the incomplete bucket."""
    rows: dict[tuple[int, float, str, str], list[int]] = {}
    bins: dict[tuple[int, float, str, str, int], int] = {}
    bins_from = floor_to(now - LATENCY_KEEP, HOUR)
    skipped: dict[tuple[str, int], float] = {}
    for c in checks:
        one_hot = [0] * len(BUCKET_COLS)
        if c.success:
            one_hot[bisect.bisect_left(DURATION_BUCKETS, c.duration)] = 1
        written = dict(LADDER.written(c.started_at, now))
        for tier in LADDER.tiers:
            if tier.size == DAY:
                continue  # the day tier is probe_daily, written by the store
            if tier.size not in written:
                skipped[("rollup", tier.size)] = LADDER.keep_after(tier, now)
                skipped[("bins", tier.size)] = LADDER.keep_after(tier, now)
                continue
            bucket = written[tier.size]
            acc = rows.setdefault((tier.size, bucket, c.service, c.probe), [0] * (2 + len(one_hot)))
            acc[0] += 1
            acc[1] += int(c.success)
            for i, v in enumerate(one_hot, start=2):
                acc[i] += v
            if tier.size == HOUR and bucket < bins_from:
                skipped[("bins", HOUR)] = bins_from
            elif c.success:
                key = (tier.size, bucket, c.service, c.probe, BINS.index(c.duration))
                bins[key] = bins.get(key, 0) + 1
    if rows:
        tx.write_many_later(_ROLLUP_SQL, [(*k, *v) for k, v in rows.items()])
    if bins:
        tx.write_many_later(_BINS_SQL, [(*k, n) for k, n in bins.items()])
    for (part, size), cutoff in skipped.items():
        KEPT.raise_to(tx, part, size, cutoff)


def prune(tx: Tx, now: float) -> None:
    """Drop buckets past their tier's keeping (minute, hour) and hour bins past
    :data:`LATENCY_KEEP`, raising :data:`KEPT` to match; the daily totals stay."""
    minute, hour = LADDER.tiers[:2]
    cutoffs = (
        ("probe_rollup", "rollup", MINUTE, LADDER.keep_after(minute, now)),
        ("probe_rollup", "rollup", HOUR, LADDER.keep_after(hour, now)),
        ("probe_latency_bins", "bins", MINUTE, LADDER.keep_after(minute, now)),
        ("probe_latency_bins", "bins", HOUR, floor_to(now - LATENCY_KEEP, HOUR)),
    )
    for table, part, size, cutoff in cutoffs:
        tx.execute(f"DELETE FROM {table} WHERE size = ? AND bucket < ?", (size, cutoff))
        KEPT.raise_to(tx, part, size, cutoff)


def _backfill_rows(tx: Tx, rows: Sequence[object], now: float) -> None:
    add(
        tx,
        (
            Check(r["service"], r["probe"], r["started_at"], r["duration"], bool(r["success"]))  # type: ignore[index]
            for r in rows
        ),
        now,
    )


#: Rollups of the results stored before them, built in batches after the upgrade.
BACKFILL = Backfill(
    name="probe",
    table="probe_results",
    columns="service, probe, started_at, duration, success",
    add=_backfill_rows,
)


def pending(store: Store | Tx) -> bool:
    """True while the backfill of results stored before the rollups is not done."""
    return backfill_pending(store, BACKFILL.name)


# --- reading windows ------------------------------------------------------------------


def _raw_bucket_terms(portable: bool = True) -> list[str]:
    # Portable: PostgreSQL sums no boolean and ANDs no integer (``success`` is 0 or 1).
    def term(condition: str) -> str:
        if not portable:
            return f"SUM(success{condition})"
        return f"SUM(CASE WHEN success = 1{condition} THEN 1 ELSE 0 END)"

    terms: list[str] = []
    lower: float | None = None
    for bound in DURATION_BUCKETS:
        above = f" AND duration > {lower!r}" if lower is not None else ""
        terms.append(term(f"{above} AND duration <= {bound!r}"))
        lower = bound
    terms.append(term(f" AND duration > {DURATION_BUCKETS[-1]!r}"))
    return terms


def raw_bucket_sums(portable: bool = False) -> str:
    """SQL sums of successful checks per duration bucket, over ``probe_results`` rows
    (``portable=False``: as the migration that shipped wrote them, SQLite only)."""
    return ", ".join(_raw_bucket_terms(portable))


def _aliased(terms: Sequence[str]) -> str:
    return ", ".join(f"{t} AS v{i}" for i, t in enumerate(terms))


_VALUES = [f"v{i}" for i in range(2 + len(BUCKET_COLS))]
_STORED_SUMS = _aliased([f"SUM({c})" for c in ("checks", "successes", *BUCKET_COLS)])
RAW_SQL = (
    f"SELECT service, {_aliased(['COUNT(*)', 'SUM(success)', *_raw_bucket_terms()])} "
    "FROM probe_results WHERE started_at >= ? AND started_at < ? GROUP BY service"
)
DAILY_SQL = (
    f"SELECT service, {_STORED_SUMS} FROM probe_daily WHERE day >= ? AND day <= ? GROUP BY service"
)
# Row by row, for one GROUP BY over all of a window's parts: each raw check, each bucket.
_ROW_TERMS = ["1", "success", *(f"({t[4:-1]})" for t in _raw_bucket_terms())]  # SUM(x) -> (x)
_RAW_ROWS = (
    f"SELECT service, {_aliased(_ROW_TERMS)} "
    "FROM probe_results WHERE started_at >= ? AND started_at < ?"
)
_STORED = _aliased(["checks", "successes", *BUCKET_COLS])
_RUN_ROWS = (
    f"SELECT service, {_STORED} FROM probe_rollup WHERE size = ? AND bucket >= ? AND bucket < ?"
)
_DAY_ROWS = f"SELECT service, {_STORED} FROM probe_daily WHERE day >= ? AND day < ?"


def _iso_day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).date().isoformat()


def span_sums_by_service(
    store: Store, span: Span, now: float, width: int = len(_VALUES)
) -> dict[str, list[int]]:
    """Per service: checks, successes and successes per duration bucket in ``span`` (the
    first ``width`` of them: 2 for uptime).

    From the rollups when they are built (each run and raw edge through its index, a
    closed one kept from an earlier render while unchanged: see :data:`_CLOSED`), else
    from the daily totals and raw rows; the same numbers either way."""
    if pending(store):
        return {s: v[:width] for s, v in span_sums(store, span, DAILY_SQL, RAW_SQL).items()}
    return spans_sums_by_service(store, {"": span}, now, width)[""]


def spans_sums_by_service(
    store: Store, spans: Mapping[str, Span], now: float, width: int = len(_VALUES)
) -> dict[str, dict[str, list[int]]]:
    """:func:`span_sums_by_service` of each of ``spans``, by name, each run and raw edge
    they share read once. The rolling windows of a render overlap (each ends with the
    minutes of the current hour, the longer ones share hours and days): read apart, a
    render read those rows once per window."""
    if pending(store):
        return {name: span_sums_by_service(store, span, now, width) for name, span in spans.items()}
    wanted = {name: _pieces(store, span, now) for name, span in spans.items()}
    parts = elementary(p for ps in wanted.values() for p in ps)
    read = {part: _piece_sums(store, part, now, width) for part in parts}
    out: dict[str, dict[str, list[int]]] = {}
    for name, ps in wanted.items():
        acc: dict[str, list[int]] = {}
        for part in parts:
            if not any(
                p.size == part.size and p.start <= part.start <= part.end <= p.end for p in ps
            ):
                continue
            for service, values in read[part].items():
                have = acc.get(service)
                acc[service] = (
                    list(values) if have is None else list(map(operator.add, have, values))
                )
        out[name] = dict(sorted(acc.items()))  # by service, as one query's GROUP BY
    return out


def _pieces(store: Store, span: Span, now: float) -> list[Piece]:
    """The runs of whole buckets and the raw edges (size :data:`RAW`) of ``span``."""
    split = split_window(span, now, LADDER, KEPT.read(store, "rollup"))
    return [
        *(Piece(RAW, p.start, p.end) for p in split.raw),
        *(Piece(r.size, r.start, r.end) for r in split.runs),
    ]


def _piece_rows(piece: Piece) -> tuple[str, list[object]]:
    """The rows of one piece, as a query of (service, v0, v1...) and its parameters."""
    if piece.size == RAW:
        return _RAW_ROWS, [piece.start, piece.end]
    if piece.size == DAY:
        return _DAY_ROWS, [_iso_day(piece.start), _iso_day(piece.end)]
    return _RUN_ROWS, [piece.size, piece.start, piece.end]


#: Per width of the sums, what each closed piece held per service (see
#: :class:`~exporter.core.rollups.ClosedPieces`): the calendar windows are whole days
#: and hours that change only when a late result lands, and every rolling window but
#: the hour is mostly hours and days before the current one.
_CLOSED: dict[int, ClosedPieces[dict[str, list[int]]]] = {}
# What a piece holds changes only through these: a result is stored once and added once
# to its buckets (counts never go down), so a late one changes a piece's row count or its
# checks; retention deletes the oldest rows and buckets first, which changes the table's
# oldest one (the daily totals are kept for ever).
_RAW_PRINT = (
    "SELECT COUNT(*), (SELECT MIN(started_at) FROM probe_results) FROM probe_results "
    "WHERE started_at >= ? AND started_at < ?"
)
_RUN_PRINT = (
    "SELECT COUNT(*), COALESCE(SUM(checks), 0), "
    "(SELECT MIN(bucket) FROM probe_rollup WHERE size = ?) FROM probe_rollup "
    "WHERE size = ? AND bucket >= ? AND bucket < ?"
)
_DAY_PRINT = "SELECT COUNT(*), COALESCE(SUM(checks), 0) FROM probe_daily WHERE day >= ? AND day < ?"


def _fingerprint(store: Store, piece: Piece) -> tuple[object, ...]:
    if piece.size == RAW:
        row = store.query_one(_RAW_PRINT, (piece.start, piece.end))
    elif piece.size == DAY:
        row = store.query_one(_DAY_PRINT, (_iso_day(piece.start), _iso_day(piece.end)))
    else:
        row = store.query_one(_RUN_PRINT, (piece.size, piece.size, piece.start, piece.end))
    return tuple(row or ())


def _piece_sums(store: Store, piece: Piece, now: float, width: int) -> dict[str, list[int]]:
    """The first ``width`` sums per service of one piece (shared when kept: not to be
    changed)."""
    closed = _CLOSED.get(width) or _CLOSED.setdefault(width, ClosedPieces())
    return closed.get(
        store,
        piece,
        now,
        lambda: _fingerprint(store, piece),
        lambda: _summed(store, *_piece_rows(piece), width),
    )


def _summed(store: Store, rows: str, params: Sequence[object], width: int) -> dict[str, list[int]]:
    """The first ``width`` values of ``rows`` (a query of service, v0, v1...) summed per
    service."""
    sums = ", ".join(f"SUM({v})" for v in _VALUES[:width])
    found = store.query(f"SELECT service, {sums} FROM ({rows}) GROUP BY service", params)
    return {str(r[0]): [int(v or 0) for v in r[1:]] for r in found}


_RAW_DURATIONS_SQL = (
    "SELECT service, duration FROM probe_results "
    "WHERE success = 1 AND started_at >= ? AND started_at < ?"
)
_BINS_RUN_SQL = (
    "SELECT service, bin, SUM(n) FROM probe_latency_bins "
    "WHERE size = ? AND bucket >= ? AND bucket < ? GROUP BY service, bin"
)
# What a run's bins hold, cheaply: counts only grow (a result is added once) and a pruned
# bucket moves KEPT, so an unchanged fingerprint means unchanged bins.
_BINS_PRINT_SQL = (
    "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM probe_latency_bins "
    "WHERE size = ? AND bucket >= ? AND bucket < ?"
)
#: Bins per service of each closed run of whole buckets (24 hours of a 24 h window),
#: which changes only when a late result lands in it: a render sums it again only then.
_CLOSED_BINS: ClosedPieces[dict[str, dict[int, int]]] = ClosedPieces()


def _run_bins(store: Store, run: BucketRun, now: float) -> dict[str, dict[int, int]]:
    """Successful checks per service and bin in the whole buckets of ``run`` (do not
    change the result: it may be the kept one)."""
    params = (run.size, run.start, run.end)

    def read() -> dict[str, dict[int, int]]:
        bins: dict[str, dict[int, int]] = {}
        for service, index, n in store.query(_BINS_RUN_SQL, params):
            bins.setdefault(str(service), {})[int(index)] = int(n)
        return bins

    return _CLOSED_BINS.get(
        store,
        Piece(run.size, run.start, run.end),
        now,
        lambda: tuple(float(v) for v in store.query(_BINS_PRINT_SQL, params)[0]),
        read,
    )


def latency_bins(store: Store, span: Span, now: float) -> dict[str, dict[int, int]]:
    """Per service, successful checks started in ``span`` per latency bin (:data:`BINS`):
    whole buckets from the bins still kept, the rest from raw rows."""
    out: dict[str, dict[int, int]] = {}
    pieces: Sequence[Span] = (span,)
    if not pending(store):
        split = split_window(span, now, LATENCY_LADDER, KEPT.read(store, "bins"))
        pieces = split.raw
        for run in split.runs:
            for service, bins in _run_bins(store, run, now).items():
                acc = out.get(service)
                if acc is None:
                    out[service] = dict(bins)
                    continue
                for index, n in bins.items():
                    acc[index] = acc.get(index, 0) + n
    for piece in pieces:
        for service, duration in store.query(_RAW_DURATIONS_SQL, (piece.start, piece.end)):
            acc = out.setdefault(str(service), {})
            index = BINS.index(float(duration))
            acc[index] = acc.get(index, 0) + 1
    return out
