"""Traffic windows read from rollups: minute rows, hour buckets and day buckets.

Gateway traffic is stored per gateway identity, source and UTC minute
(``traffic_minutes``: the raw rows), and, in the same transaction, summed into one row
per identity, source and UTC hour (``traffic_hours``) and UTC day
(``traffic_daily_counts``). Every bucket holds the same columns: requests by status class
and the latency histogram's bucket counts, so sums of buckets are exact.

A window is the set of minute rows whose minute starts in a span. The span is cut on
the bucket ladder of :mod:`exporter.core.rollups` into runs of whole buckets plus raw
edges; a run is read from its tier's table and an edge from the minute rows. Minute
rows are kept for :func:`minutes_kept_from` (a little over a day), so the edges of any
window starting within the last day are exact to the minute. An edge older than that
is widened to the whole hour bucket (or day bucket) that holds it: the window then
starts at most one hour (one day) early, which ``docs/kpis.md`` states per KPI. The
minutes of the current hour up to now are read as its hour bucket (written with them)
unless a minute after now is stored in it: a rolling window reads at most the minutes of
its own leading edge, whatever its length.

Rollups stay keyed by identity, like the raw rows: the service is resolved through
``traffic_idents`` when read, so a catalog change corrects every window from the next
refresh on.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from exporter.core.errors import StoreBusy
from exporter.core.periods import Span
from exporter.core.rollups import (
    DAY,
    DEFAULT_LADDER,
    HOUR,
    MINUTE,
    ClosedPieces,
    Ladder,
    Piece,
    Tier,
    ceil_to,
    elementary,
    floor_to,
)
from exporter.core.rollups import split_window as ladder_split
from exporter.core.store import Store, Tx
from exporter.domains.traffic.kpis import LATENCY_BUCKETS, UNMAPPED

LADDER: Ladder = DEFAULT_LADDER
# While the hour buckets of an upgraded database are being built: minute rows (kept for
# the retention until then) and day buckets (complete since they were added).
_RAW_LADDER = Ladder((Tier(MINUTE, 1e15), Tier(DAY, math.inf)))
NB = len(LATENCY_BUCKETS)
BUCKET_COLS = [f"b{i}" for i in range(NB + 1)]  # the last one is the overflow
COUNT_COLS = ["c1", "c2", "c3", "c4", "c5", *BUCKET_COLS]

# Per tier size: the table, its bucket column, and how a bucket start is written there.
_TABLES: dict[int, tuple[str, str]] = {
    MINUTE: ("traffic_minutes", "minute"),
    HOUR: ("traffic_hours", "hour"),
    DAY: ("traffic_daily_counts", "day"),
}

HOURS_TABLE = f"""
    CREATE TABLE traffic_hours (
        hour REAL NOT NULL,
        source TEXT NOT NULL,
        ident TEXT NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in COUNT_COLS)},
        PRIMARY KEY (hour, source, ident)
    ) WITHOUT ROWID
"""

#: Adds a batch's sums to an hour bucket; its last parameter is the batch's write mark
#: (see :func:`write_mark`).
HOUR_SQL = (
    f"INSERT INTO traffic_hours (hour, source, ident, {', '.join(COUNT_COLS)}, written) "
    f"VALUES (?, ?, ?, {', '.join('?' for _ in COUNT_COLS)}, ?) "
    "ON CONFLICT (hour, source, ident) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNT_COLS)
    + ", written = excluded.written"
)
#: The hour and day buckets' write mark, added after them (an older database's rows hold 0).
WRITTEN_COLUMN = """
    ALTER TABLE traffic_hours ADD COLUMN written INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE traffic_daily_counts ADD COLUMN written INTEGER NOT NULL DEFAULT 0
"""


def write_mark() -> int:
    """What a write stores in the ``written`` column of the buckets it touches: a
    random 40-bit number, drawn for each write. Not a time, only a mark that changes
    the sum of the marks of any rows it is written to (but for a chance of 2**-40), so a
    rewrite of rows to the same counts (a repaired or restored state) still reads as a
    change of what they hold (see :func:`_closed`). Drawn from the system's randomness,
    not from a seeded generator a test or another library may reset."""
    return secrets.randbits(40)


def minutes_kept_from(now: float) -> float:
    """The oldest minute row a render may read at ``now`` (older ones may be pruned)."""
    return LADDER.keep_after(LADDER.tiers[0], now)


def rolling_span(now: float, seconds: float) -> Span:
    """The minute starts of a rolling window: every minute starting in ``(now - W, now]``
    (the last one still running)."""
    return Span(floor_to(now - seconds, MINUTE) + MINUTE, floor_to(now, MINUTE) + MINUTE)


def calendar_minutes(span: Span) -> Span:
    """The minute starts in ``span`` (``start <= minute < end``)."""
    return Span(ceil_to(span.start, MINUTE), ceil_to(span.end, MINUTE))


def pieces(span: Span, now: float, *, raw: bool = False) -> tuple[Piece, ...]:
    """What to read for the minutes starting in ``span`` (minute-aligned) at ``now``.

    The ladder's runs, and its raw edges as minute pieces while the minute rows are
    kept; an older edge is widened to the finest bucket still kept that holds it.
    ``raw`` (while the hour buckets are being built): whole days and minute rows only.
    """
    if raw:
        # The same minutes (the same widened start), from minute rows and whole days.
        start = min((p.start for p in pieces(span, now)), default=span.start)
        split = ladder_split(Span(start, span.end), now, _RAW_LADDER)
        return tuple(sorted(Piece(r.size, r.start, r.end) for r in split.runs))
    split = ladder_split(span, now, LADDER)
    out = [Piece(r.size, r.start, r.end) for r in split.runs]
    kept = minutes_kept_from(now)
    for edge in split.raw:
        if edge.start >= kept:
            out.append(Piece(MINUTE, edge.start, edge.end))
            continue
        out.append(_widened(edge, now))
    return tuple(sorted(out))


def _widened(edge: Span, now: float) -> Piece:
    """The whole buckets of the finest kept tier above minutes that cover ``edge``."""
    for tier in LADDER.tiers[1:]:
        start = floor_to(edge.start, tier.size)
        if start >= LADDER.usable_from(tier, now):
            return Piece(tier.size, start, ceil_to(edge.end, tier.size))
    raise AssertionError("the coarsest tier is kept for ever")  # pragma: no cover


def widening(span: Span, now: float) -> float:
    """How many seconds before ``span.start`` the pieces of ``span`` start (0: exact)."""
    return span.start - min((p.start for p in pieces(span, now)), default=span.start)


def _bound(size: int, t: float) -> float | str:
    """A bucket start as its table stores it (days as ISO dates)."""
    if size == DAY:
        if math.isinf(t):
            return "0000-00-00" if t < 0 else "9999-99-99"
        return datetime.fromtimestamp(t, UTC).date().isoformat()
    return t


# The service a row's identity resolves to now (a row of alias r).
_RESOLVED = "LEFT JOIN traffic_idents a ON a.source = r.source AND a.ident = r.ident"
_SUMS = ", ".join(f"SUM(r.{c})" for c in COUNT_COLS)


# The minute rows of one hour, summed per identity: driven by that hour's bucket rows
# (one per identity that has minutes in the hour, written with them), each identity's
# minutes are a range of the minutes' primary key, read in key order, so SQLite sums
# them without sorting every minute row by service first (a third of the read).
_KEYED_MINUTES = (
    f"SELECT k.source, k.ident, {_SUMS} FROM traffic_hours k "
    "JOIN traffic_minutes r ON r.ident = k.ident AND r.source = k.source "
    "WHERE k.hour = ? AND r.minute >= ? AND r.minute < ? GROUP BY k.source, k.ident"
)


def _services(store: Store) -> dict[tuple[str, str], str]:
    """The service each gateway identity resolves to now."""
    rows = store.query("SELECT source, ident, service FROM traffic_idents")
    return {(str(r[0]), str(r[1])): str(r[2]) for r in rows}


# A piece's rows summed per gateway identity: (source, ident, column sums).
_IdentRow = tuple[str, str, list[int]]


def _by_service(
    rows: Iterable[_IdentRow], services: Mapping[tuple[str, str], str], out: dict[str, list[int]]
) -> None:
    """Add ``rows`` into ``out`` under the service each identity resolves to now
    (``unmapped`` when none). The rows' lists are not changed (they may be cached)."""
    for source, ident, values in rows:
        service = services.get((source, ident), UNMAPPED)
        have = out.get(service)
        out[service] = list(values) if have is None else list(map(operator.add, have, values))


def _ident_rows(rows: Iterable[Sequence[object]]) -> list[_IdentRow]:
    return [(str(r[0]), str(r[1]), [int(v or 0) for v in r[2:]]) for r in rows]  # type: ignore[call-overload]


def _minute_rows(store: Store, piece: Piece, now: float) -> list[_IdentRow]:
    """The minute rows of a piece within one hour, summed per identity (driven by that
    hour's bucket rows: see :data:`_KEYED_MINUTES`)."""
    hour = floor_to(piece.start, HOUR)
    return _closed(
        store,
        piece,
        now,
        lambda: _ident_rows(store.query(_KEYED_MINUTES, (hour, piece.start, piece.end))),
    )


def _bucket_rows(store: Store, piece: Piece, now: float) -> list[_IdentRow]:
    """The hour or day buckets of a piece, summed per identity."""
    table, col = _TABLES[piece.size]
    params = (_bound(piece.size, piece.start), _bound(piece.size, piece.end))
    sql = (
        f"SELECT r.source, r.ident, {_SUMS} FROM {table} r "
        f"WHERE r.{col} >= ? AND r.{col} < ? GROUP BY r.source, r.ident"
    )
    return _closed(store, piece, now, lambda: _ident_rows(store.query(sql, params)))


def _read_minutes(
    store: Store, piece: Piece, services: Mapping[tuple[str, str], str], now: float
) -> dict[str, list[int]]:
    """:func:`_read` of a piece of minute rows, hour by hour through the hour buckets
    (complete once the hour buckets are built: see :func:`backfill_pending`)."""
    out: dict[str, list[int]] = {}
    hour = floor_to(piece.start, HOUR)
    while hour < piece.end:
        within = Piece(MINUTE, max(piece.start, hour), min(piece.end, hour + HOUR))
        _by_service(_minute_rows(store, within, now), services, out)
        hour += HOUR
    return dict(sorted(out.items()))  # by service, as the other pieces' GROUP BY


def _read_buckets(
    store: Store, piece: Piece, services: Mapping[tuple[str, str], str], now: float
) -> dict[str, list[int]]:
    """:func:`_read` of a piece of hour or day buckets, from its rows per identity."""
    out: dict[str, list[int]] = {}
    _by_service(_bucket_rows(store, piece, now), services, out)
    return dict(sorted(out.items()))


# --- closed pieces, read again only when they change ---------------------------------

#: Per store, what each closed piece held per identity. The identities are resolved to
#: services at every read, so a catalog change shows at once.
_CLOSED: ClosedPieces[list[_IdentRow]] = ClosedPieces()
_TOTAL = " + ".join(COUNT_COLS)
# What a piece holds changes only through these: a delta adds to its rows (counts never
# go down), so a new row changes their count and an addition their total; retention
# deletes the oldest rows first, which changes the table's oldest bucket; any other
# rewrite leaves new write marks, which change their sum. The minutes of one hour are
# written with that hour's bucket rows, so those tell their changes, and the piece's own
# rows its count.
_MINUTES_PRINT = (
    "SELECT (SELECT COUNT(*) FROM traffic_minutes WHERE minute >= ? AND minute < ?), "
    "(SELECT MIN(minute) FROM traffic_minutes), COUNT(*), "
    f"COALESCE(SUM({_TOTAL}), 0), COALESCE(SUM(written), 0) FROM traffic_hours WHERE hour = ?"
)


def _buckets_print(size: int) -> str:
    table, col = _TABLES[size]
    return (
        f"SELECT COUNT(*), COALESCE(SUM({_TOTAL}), 0), COALESCE(SUM(written), 0), "
        f"(SELECT MIN({col}) FROM {table}) FROM {table} WHERE {col} >= ? AND {col} < ?"
    )


def _fingerprint(store: Store, piece: Piece) -> tuple[object, ...]:
    if piece.size == MINUTE:
        hour = floor_to(piece.start, HOUR)
        row = store.query_one(_MINUTES_PRINT, (piece.start, piece.end, hour))
    else:
        bounds = (_bound(piece.size, piece.start), _bound(piece.size, piece.end))
        row = store.query_one(_buckets_print(piece.size), bounds)
    return tuple(row or ())


def _closed(
    store: Store, piece: Piece, now: float, read: Callable[[], list[_IdentRow]]
) -> list[_IdentRow]:
    """``read()``, or what it gave before if ``piece`` is closed and unchanged since
    (the rows returned are shared: not to be changed)."""
    return _CLOSED.get(store, piece, now, lambda: _fingerprint(store, piece), read)


def _read(store: Store, piece: Piece) -> dict[str, list[int]]:
    """Service -> the column sums of the rows of one piece, each row under the service
    its identity resolves to now (``unmapped`` when none)."""
    table, col = _TABLES[piece.size]
    rows = store.query(
        f"SELECT COALESCE(a.service, '{UNMAPPED}'), {_SUMS} FROM {table} r {_RESOLVED} "
        f"WHERE r.{col} >= ? AND r.{col} < ? GROUP BY 1",
        (_bound(piece.size, piece.start), _bound(piece.size, piece.end)),
    )
    return {str(r[0]): [int(v or 0) for v in r[1:]] for r in rows}


def _current_hour(store: Store, ps: Sequence[Piece], span: Span) -> tuple[Piece, ...]:
    """``ps`` with its trailing minutes from the start of the hour that holds the span's
    end read as that hour's bucket, when no minute row is stored after the span's end in
    that hour: the bucket then holds exactly those minutes (it is written with them), one
    row per identity instead of up to 59. Minutes before that hour stay minutes."""
    hour = floor_to(span.end, HOUR)
    out: list[Piece] = []
    for p in ps:
        if p.size != MINUTE or p.end != span.end or hour == span.end or hour < p.start:
            out.append(p)
            continue
        later = store.query_one(
            "SELECT 1 FROM traffic_minutes WHERE minute >= ? AND minute < ? LIMIT 1",
            (span.end, hour + HOUR),
        )
        if later is not None:
            out.append(p)
            continue
        if p.start < hour:
            out.append(Piece(MINUTE, p.start, hour))
        out.append(Piece(HOUR, hour, hour + HOUR))
    return tuple(sorted(out))


def span_sums(
    store: Store, spans: Mapping[str, Span], now: float
) -> dict[tuple[str, str], list[int]]:
    """Per (service, name): the column sums over the minutes starting in ``spans[name]``.

    Each row of the rollups is read once, however many spans hold it; a service is
    present for a span when any row of the span is stored for it.
    """
    raw = backfill_pending(store)
    wanted = {name: pieces(span, now, raw=raw) for name, span in spans.items()}
    if not raw:
        wanted = {name: _current_hour(store, ps, spans[name]) for name, ps in wanted.items()}
    parts = elementary(p for ps in wanted.values() for p in ps)
    if raw:
        per_part = {part: _read(store, part) for part in parts}
    else:
        services = _services(store)
        per_part = {
            part: _read_minutes(store, part, services, now)
            if part.size == MINUTE
            else _read_buckets(store, part, services, now)
            for part in parts
        }
    out: dict[tuple[str, str], list[int]] = {}
    for name, ps in wanted.items():
        for part in parts:
            if any(p.size == part.size and p.start <= part.start and part.end <= p.end for p in ps):
                for service, values in per_part[part].items():
                    key = (service, name)
                    acc = out.get(key)
                    out[key] = values if acc is None else list(map(operator.add, acc, values))
    return out


# --- the hour buckets of minutes stored before them -------------------------------------

_log = logging.getLogger("exporter.rollups")
# Where the progress is kept: a cursors row, committed with each batch.
BACKFILL_CURSOR = ("rollups", "traffic_hours")
BACKFILL_BATCH = 20_000

# Queued by the migration that adds the hour buckets: the minute rows there then.
BACKFILL_QUEUE = (
    "INSERT INTO cursors (source, name, value, updated_at) "
    f"SELECT '{BACKFILL_CURSOR[0]}', '{BACKFILL_CURSOR[1]}', "
    "json_object('after', 0, 'until', COALESCE(MAX(rowid), 0), 'total', COUNT(*), 'done', 0), 0 "
    "FROM traffic_minutes WHERE true ON CONFLICT (source, name) DO NOTHING"
)

_RECOUNT_SQL = (
    f"INSERT INTO traffic_hours (hour, source, ident, {', '.join(COUNT_COLS)}, written) "
    f"SELECT ?, source, ident, {', '.join(f'SUM({c})' for c in COUNT_COLS)}, ? "
    "FROM traffic_minutes WHERE ident = ? AND source = ? AND minute >= ? AND minute < ? "
    "GROUP BY source, ident ON CONFLICT (hour, source, ident) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COUNT_COLS)
    + ", written = excluded.written"
)


def backfill_pending(store: Store) -> bool:
    """True while minute rows stored before the hour buckets are not all in them."""
    value = store.get_cursor(*BACKFILL_CURSOR)
    if value is None:
        return False
    state = json.loads(value)
    return bool(state["after"] < state["until"])


def backfill_step(store: Store, now: float, batch: int = BACKFILL_BATCH) -> bool:
    """Build the hour buckets of the next ``batch`` minute rows stored before them; True
    once none is left. A write in progress wins: the step is left for the next call.

    Each hour touched is counted again from all its minute rows (a set, not an add), so
    a minute row that grew after the upgrade, or a batch done twice, counts once.
    """
    try:
        with store.transaction(wait=False) as tx:
            row = tx.execute(
                "SELECT value FROM cursors WHERE source = ? AND name = ?", BACKFILL_CURSOR
            ).fetchone()
            if row is None:
                return True
            state = json.loads(row[0])
            if state["after"] >= state["until"]:
                return True
            rows = tx.execute(
                "SELECT rowid, source, ident, minute FROM traffic_minutes "
                "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
                (state["after"], state["until"], batch),
            ).fetchall()
            _recount(tx, {(floor_to(r[3], HOUR), r[1], r[2]) for r in rows}, now)
            state["after"] = int(rows[-1][0]) if rows else state["until"]
            state["done"] = int(state.get("done", 0)) + len(rows)
            tx.set_cursor(*BACKFILL_CURSOR, json.dumps(state, sort_keys=True))
    except StoreBusy:
        return False
    finished = state["after"] >= state["until"]
    done = " (done)" if finished else ""
    _log.info(
        "rollup backfill traffic_hours: %d of %d minute rows%s", state["done"], state["total"], done
    )
    return bool(finished)


def _recount(tx: Tx, hours: Iterable[tuple[float, str, str]], now: float) -> None:
    oldest = LADDER.keep_after(LADDER.tiers[1], now)
    mark = write_mark()
    for hour, source, ident in sorted(hours):
        if hour >= oldest:
            tx.execute(_RECOUNT_SQL, (hour, mark, ident, source, hour, hour + HOUR))
