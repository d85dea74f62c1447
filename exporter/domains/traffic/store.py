"""Gateway traffic: per-minute counts, daily totals, gateway-computed latency, consumers.

Every :class:`~exporter.domains.traffic.records.TrafficDelta` is added to ``traffic_minutes`` (one row
per gateway identity, source and UTC minute), to ``traffic_daily`` (one row per identity,
source and UTC day, kept forever: the cost KPIs divide by it), and to the persisted counter
``platform_service_requests_total`` and histogram
``platform_service_request_duration_seconds``, all in the poll's transaction and only
for a batch not seen before. Window KPIs sum the minutes of the window.

Rows hold the identity the traffic was counted under (a route, a host and path, an
API name); ``traffic_idents`` says which service each identity belongs to, and every
query joins through it. :mod:`exporter.domains.traffic.attribution` re-resolves it
when the catalog changes, so every windowed KPI follows the catalog from the next
refresh. The counter and the histogram keep the service of the moment of ingest.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from exporter.core.errors import StateError
from exporter.core.periods import Span, utc_date
from exporter.core.rollups import HOUR, floor_to
from exporter.core.store import Labels, Store, Tx, Writer, _labels_key, write_records
from exporter.domains.traffic import rollup
from exporter.domains.traffic.kpis import CODE_CLASSES, LATENCY_BUCKETS, WindowCounts
from exporter.domains.traffic.records import ConsumerSeen, TrafficDelta, TrafficLatency
from exporter.domains.traffic.routes import pinned

NB = len(LATENCY_BUCKETS)
_BUCKET_COLS = rollup.BUCKET_COLS
_COUNT_COLS = rollup.COUNT_COLS

MIGRATIONS = (
    f"""
    CREATE TABLE traffic_batches (
        key TEXT PRIMARY KEY,
        minute REAL NOT NULL
    );
    CREATE INDEX traffic_batches_minute ON traffic_batches (minute);
    CREATE TABLE traffic_minutes (
        service TEXT NOT NULL,
        source TEXT NOT NULL,
        minute REAL NOT NULL,
        c1 INTEGER NOT NULL DEFAULT 0,
        c2 INTEGER NOT NULL DEFAULT 0,
        c3 INTEGER NOT NULL DEFAULT 0,
        c4 INTEGER NOT NULL DEFAULT 0,
        c5 INTEGER NOT NULL DEFAULT 0,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _BUCKET_COLS)},
        latency_sum REAL NOT NULL DEFAULT 0,
        latency_count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (service, source, minute)
    );
    CREATE INDEX traffic_minutes_minute ON traffic_minutes (minute);
    CREATE TABLE traffic_daily (
        service TEXT NOT NULL,
        source TEXT NOT NULL,
        day TEXT NOT NULL,
        requests INTEGER NOT NULL,
        PRIMARY KEY (service, source, day)
    );
    CREATE TABLE traffic_latency (
        service TEXT NOT NULL,
        source TEXT NOT NULL,
        window TEXT NOT NULL,
        quantile REAL NOT NULL,
        seconds REAL NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (service, source, window, quantile)
    );
    CREATE TABLE traffic_consumers (
        service TEXT NOT NULL,
        source TEXT NOT NULL,
        consumer TEXT NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (service, source, consumer)
    )
    """,
    # Daily status classes and latency buckets, filled from the minutes still stored.
    f"""
    CREATE TABLE traffic_daily_counts (
        service TEXT NOT NULL,
        source TEXT NOT NULL,
        day TEXT NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _COUNT_COLS)},
        PRIMARY KEY (service, source, day)
    );
    INSERT INTO traffic_daily_counts (service, source, day, {", ".join(_COUNT_COLS)})
    SELECT service, source, date(minute, 'unixepoch'), {", ".join(f"SUM({c})" for c in _COUNT_COLS)}
    FROM traffic_minutes GROUP BY service, source, date(minute, 'unixepoch')
    """,
    # Rows keyed by the gateway identity they were counted under, resolved to a service
    # through traffic_idents (re-resolved when the catalog changes). Rows stored before
    # keep the service they were attributed to, pinned.
    """
    CREATE TABLE traffic_idents (
        source TEXT NOT NULL,
        ident TEXT NOT NULL,
        service TEXT NOT NULL,
        PRIMARY KEY (source, ident)
    );
    INSERT OR IGNORE INTO traffic_idents (source, ident, service)
    SELECT source, 'service:' || service, service FROM (
        SELECT source, service FROM traffic_minutes
        UNION SELECT source, service FROM traffic_daily
        UNION SELECT source, service FROM traffic_daily_counts
        UNION SELECT source, service FROM traffic_consumers
    );
    CREATE INDEX traffic_idents_service ON traffic_idents (service);
    ALTER TABLE traffic_minutes RENAME COLUMN service TO ident;
    UPDATE traffic_minutes SET ident = 'service:' || ident;
    ALTER TABLE traffic_daily RENAME COLUMN service TO ident;
    UPDATE traffic_daily SET ident = 'service:' || ident;
    ALTER TABLE traffic_daily_counts RENAME COLUMN service TO ident;
    UPDATE traffic_daily_counts SET ident = 'service:' || ident;
    ALTER TABLE traffic_consumers RENAME COLUMN service TO ident;
    UPDATE traffic_consumers SET ident = 'service:' || ident
    """,
    # Indexes for the windows every render reads: by day, by the time a gateway computed
    # its quantiles, by when a consumer was last seen.
    """
    CREATE INDEX traffic_daily_day ON traffic_daily (day);
    CREATE INDEX traffic_daily_counts_day ON traffic_daily_counts (day);
    CREATE INDEX traffic_latency_at ON traffic_latency (at);
    CREATE INDEX traffic_consumers_last_seen ON traffic_consumers (last_seen)
    """,
    # Hour buckets (see exporter.domains.traffic.rollup); the minutes stored before them
    # are added by the batched backfill (rollup.BACKFILL) while the daemon serves.
    f"""
    {rollup.HOURS_TABLE};
    {rollup.BACKFILL_QUEUE}
    """,
    # Gateway-computed quantiles keyed by identity too, resolved through traffic_idents
    # when read; those stored before keep the service they were read for, pinned.
    """
    INSERT OR IGNORE INTO traffic_idents (source, ident, service)
    SELECT DISTINCT source, 'service:' || service, service FROM traffic_latency;
    ALTER TABLE traffic_latency RENAME COLUMN service TO ident;
    UPDATE traffic_latency SET ident = 'service:' || ident
    """,
    # A mark of the write that last touched each hour and day bucket, so a render can
    # tell whether the buckets of a closed piece changed since it read them.
    rollup.WRITTEN_COLUMN,
)
#: The view of the traffic data that cost per transaction reads (``Domain.views``): the
#: daily totals of days already over, under the attribution of the moment. A gateway
#: poll adds to today, so it changes this view only when it carries traffic of an
#: earlier day (a late minute after midnight), or an identity moves to another service.
DAYS_OVER = "traffic_days_over"
DAYS_OVER_TABLES = frozenset({"traffic_daily", "traffic_idents"})
# Joins a raw row (alias r) to the service its identity resolves to now.
_RESOLVED = "LEFT JOIN traffic_idents a ON a.source = r.source AND a.ident = r.ident"
_SERVICE = "COALESCE(a.service, 'unmapped')"

_DAY_COUNTS_SQL = (
    f"INSERT INTO traffic_daily_counts (ident, source, day, {', '.join(_COUNT_COLS)}, written) "
    f"VALUES (?, ?, ?, {', '.join('?' for _ in _COUNT_COLS)}, ?) "
    "ON CONFLICT (ident, source, day) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _COUNT_COLS)
    + ", written = excluded.written"
)

REQUESTS_TOTAL = "platform_service_requests_total"
DURATION = "platform_service_request_duration_seconds"
# The exporter's own counters of the access-log and Prometheus sources.
MALFORMED_TOTAL = "platform_exporter_access_log_malformed_lines_total"
ROTATIONS_TOTAL = "platform_exporter_access_log_reopens_total"
WARNINGS_TOTAL = "platform_exporter_prometheus_query_warnings_total"
# Upstream series left out because the source's `max_series` was reached.
SERIES_DROPPED_TOTAL = "platform_exporter_upstream_series_dropped_total"
# Cursors holding a gateway's latest readings (JSON), per source.
STUB_STATUS = "stub_status"
CONSUMERS_REGISTERED = "consumers_registered"


def _ident(record: TrafficDelta | ConsumerSeen | TrafficLatency) -> str:
    return record.ident or pinned(record.service)


def _note_idents(tx: Tx, seen: Mapping[tuple[str, str], str]) -> None:
    """Attribute identities never seen before to the service their source resolved;
    known ones keep theirs (:mod:`~exporter.domains.traffic.attribution` re-resolves)."""
    for (source, ident), service in seen.items():
        tx.execute(
            "INSERT INTO traffic_idents (source, ident, service) VALUES (?, ?, ?) "
            "ON CONFLICT (source, ident) DO NOTHING",
            (source, ident, service),
        )


def write_deltas(tx: Tx, deltas: Sequence[TrafficDelta]) -> None:
    """Add each new delta to the minute, hour and day rows, the counters and the histogram.

    Minute, hour and day rows are keyed by the delta's identity (resolved when read);
    the counters and the histogram by the service it resolved to at ingest (exported
    counters only go forward). A delta whose batch was counted before adds nothing.
    """
    cols = ["c1", "c2", "c3", "c4", "c5", *_BUCKET_COLS, "latency_sum", "latency_count"]
    minute_sql = (
        f"INSERT INTO traffic_minutes (ident, source, minute, {', '.join(cols)}) "
        f"VALUES (?, ?, ?, {', '.join('?' for _ in cols)}) "
        "ON CONFLICT (ident, source, minute) DO UPDATE SET "
        + ", ".join(f"{c} = {c} + excluded.{c}" for c in cols)
    )
    # Rollup, counter and histogram updates are summed first: one write per row per batch.
    sums = _BatchSums()
    for d in deltas:
        if not tx.insert_new("traffic_batches", {"key": d.key, "minute": d.minute}):
            continue
        buckets = list(d.latency_buckets) if d.latency_buckets is not None else [0] * (NB + 1)
        if len(buckets) != NB + 1:
            raise ValueError(f"a delta needs {NB + 1} latency buckets, got {len(buckets)}")
        ident = _ident(d)
        tx.execute(
            minute_sql,
            (ident, d.source, d.minute, *d.codes, *buckets, d.latency_sum, d.latency_count),
        )
        sums.add(d, ident, buckets)
    sums.write(tx)


class _BatchSums:
    """What one batch of new deltas adds to the day totals, the hour and day buckets,
    the counters and the histogram, summed per row."""

    def __init__(self) -> None:
        self.idents: dict[tuple[str, str], str] = {}
        self.daily: dict[tuple[str, str, str], int] = defaultdict(int)
        self.hours: dict[tuple[float, str, str], list[int]] = {}
        self.days: dict[tuple[str, str, str], list[int]] = {}
        self.counters: dict[tuple[str, str, str], int] = defaultdict(int)
        self.hist: dict[tuple[str, str], list[float]] = {}

    def add(self, d: TrafficDelta, ident: str, buckets: Sequence[int]) -> None:
        self.idents.setdefault((d.source, ident), d.service)
        requests = sum(d.codes)
        day = utc_date(d.minute).isoformat()
        if requests:
            self.daily[(ident, d.source, day)] += requests
        values = (*d.codes, *buckets)
        hour = floor_to(d.minute, HOUR)
        for acc in (
            self.hours.setdefault((hour, d.source, ident), [0] * len(_COUNT_COLS)),
            self.days.setdefault((ident, d.source, day), [0] * len(_COUNT_COLS)),
        ):
            for i, n in enumerate(values):
                acc[i] += n
        for cls, n in zip(CODE_CLASSES, d.codes, strict=True):
            if n:
                self.counters[(d.service, d.source, cls)] += n
        if d.latency_buckets is not None and d.latency_count:
            hist = self.hist.setdefault((d.service, d.source), [0.0] * (NB + 2))
            for i, n in enumerate(buckets):
                hist[i] += n
            hist[NB + 1] += d.latency_sum

    def write(self, tx: Tx) -> None:
        _note_idents(tx, self.idents)
        today = utc_date(tx.clock()).isoformat()
        if any(day < today for _, _, day in self.daily):
            tx.also_changes(DAYS_OVER)
        for (ident, source, day), n in self.daily.items():
            tx.execute(
                "INSERT INTO traffic_daily (ident, source, day, requests) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (ident, source, day) DO UPDATE SET "
                "requests = requests + excluded.requests",
                (ident, source, day, n),
            )
        mark = rollup.write_mark()
        for (hour, source, ident), values in self.hours.items():
            tx.execute(rollup.HOUR_SQL, (hour, source, ident, *values, mark))
        for (ident, source, day), values in self.days.items():
            tx.execute(_DAY_COUNTS_SQL, (ident, source, day, *values, mark))
        for (service, source, cls), n in self.counters.items():
            tx.incr(REQUESTS_TOTAL, {"service": service, "source": source, "code_class": cls}, n)
        for (service, source), acc in self.hist.items():
            _observe_many(
                tx,
                DURATION,
                {"service": service, "source": source},
                [int(n) for n in acc[: NB + 1]],
                acc[NB + 1],
            )


def _observe_many(
    tx: Tx, metric: str, labels: Mapping[str, str], counts: Sequence[int], total: float
) -> None:
    """Add non-cumulative bucket ``counts`` (plus overflow) to a persisted histogram.

    Same table layout as :meth:`Tx.observe` (cumulative counts per finite bound).
    """
    key = _labels_key(labels)
    bounds = [float(b) for b in LATENCY_BUCKETS]
    tx.flush()  # the series' observations pending in the transaction come first
    row = tx.execute(
        "SELECT buckets, counts, sum, count FROM histograms WHERE metric = ? AND labels = ?",
        (metric, key),
    ).fetchone()
    if row is None or json.loads(row[0]) != bounds:
        cumulative, old_sum, old_n = [0] * NB, 0.0, 0
    else:
        cumulative, old_sum, old_n = json.loads(row[1]), float(row[2]), int(row[3])
    running = 0
    for i in range(NB):
        running += counts[i]
        cumulative[i] += running
    n = running + counts[NB]
    tx.execute(
        "INSERT INTO histograms (metric, labels, buckets, counts, sum, count) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (metric, labels) DO UPDATE SET "
        "buckets = excluded.buckets, counts = excluded.counts, sum = excluded.sum, "
        "count = excluded.count",
        (metric, key, json.dumps(bounds), json.dumps(cumulative), old_sum + total, old_n + n),
    )


def write_latencies(tx: Tx, points: Sequence[TrafficLatency]) -> None:
    """Keep each quantile under its identity (the latest reading replaces the one before)."""
    idents: dict[tuple[str, str], str] = {}
    for p in points:
        ident = _ident(p)
        idents.setdefault((p.source, ident), p.service)
        tx.execute(
            "INSERT INTO traffic_latency (ident, source, window, quantile, seconds, at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ident, source, window, quantile) "
            "DO UPDATE SET seconds = excluded.seconds, at = excluded.at",
            (ident, p.source, p.window, p.quantile, p.seconds, p.at),
        )
    _note_idents(tx, idents)


def write_consumers(tx: Tx, seen: Sequence[ConsumerSeen]) -> None:
    idents: dict[tuple[str, str], str] = {}
    for c in seen:
        ident = _ident(c)
        idents.setdefault((c.source, ident), c.service)
        tx.execute(
            "INSERT INTO traffic_consumers (ident, source, consumer, last_seen) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (ident, source, consumer) "
            "DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
            (ident, c.source, c.consumer, c.at),
        )
    _note_idents(tx, idents)


def attributions(store: Store) -> list[tuple[str, str, str]]:
    """(source, identity, service) of every identity traffic was stored under (none in a
    store opened without this domain's tables)."""
    if not store.has_table("traffic_idents"):
        return []
    rows = store.query("SELECT source, ident, service FROM traffic_idents ORDER BY 1, 2")
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def reattribute(store: Store, changes: Sequence[tuple[str, str, str]]) -> None:
    """Move each (source, identity) to its new service, in one transaction."""
    with store.transaction() as tx:
        tx.also_changes(DAYS_OVER)  # every day's totals follow the identity
        for source, ident, service in changes:
            tx.execute(
                "UPDATE traffic_idents SET service = ? WHERE source = ? AND ident = ?",
                (service, source, ident),
            )


def prune(tx: Tx, older_than: float, now: float | None = None) -> int:
    """Delete what no KPI reads any more, bucket by bucket; return the minute rows deleted.

    Minute rows, batch keys and consumers go once older than ``older_than`` (the
    retention). With ``now``, minute rows also go once older than the ladder keeps them
    (a little over a day; not while the upgrade backfill still needs them), and hour
    buckets once older than the ladder keeps them (see
    :mod:`exporter.domains.traffic.rollup`). Day rows, counters and histograms are kept.
    """
    minutes = floor_to(older_than, 60)
    if now is not None:
        hours = rollup.LADDER.keep_after(rollup.LADDER.tiers[1], now)
        tx.execute("DELETE FROM traffic_hours WHERE hour < ?", (hours,))
        # Until the hour buckets hold every minute row stored before them, the windows
        # read minute rows, and the backfill needs them.
        if not _backfill_pending(tx):
            minutes = max(minutes, rollup.minutes_kept_from(now))
    n = tx.execute("DELETE FROM traffic_minutes WHERE minute < ?", (minutes,)).rowcount
    tx.execute("DELETE FROM traffic_batches WHERE minute < ?", (older_than,))
    tx.execute("DELETE FROM traffic_consumers WHERE last_seen < ?", (older_than,))
    return n


def _backfill_pending(tx: Tx) -> bool:
    row = tx.execute(
        "SELECT value FROM cursors WHERE source = ? AND name = ?", rollup.BACKFILL_CURSOR
    ).fetchone()
    state = json.loads(row[0]) if row is not None else None
    return state is not None and bool(state["after"] < state["until"])


_log = logging.getLogger("exporter.store.traffic")
_PRUNE_EVERY = 3600.0
_last_prune: list[float] = [float("-inf")]


def prune_if_due(store: Store, now: float, retention: float) -> None:
    """Prune (see :func:`prune`) at most once an hour, whichever gateway source asks."""
    mono = time.monotonic()
    if mono - _last_prune[0] < _PRUNE_EVERY:
        return
    try:
        with store.transaction() as tx:
            prune(tx, now - retention, now)
    except StateError as exc:
        # Retention is housekeeping: the poll that asked has committed its data already,
        # so a locked or full database only postpones the prune to the next poll.
        _log.warning("traffic retention postponed: %s", exc)
        return
    _last_prune[0] = mono


# --- what the sources commit besides records -----------------------------------------


def record_stub_status(store: Store, source: str, stub: Mapping[str, int]) -> None:
    """Keep the latest ``stub_status`` reading of an NGINX source."""
    with store.transaction() as tx:
        tx.set_cursor(source, STUB_STATUS, json.dumps(dict(stub)))


def record_reopen(store: Store, source: str, reason: str, file_cursor: str) -> None:
    """Count one rotation or truncation of an access log and move to the new file."""
    with store.transaction() as tx:
        tx.incr(ROTATIONS_TOTAL, {"source": source, "reason": reason})
        tx.set_cursor(source, "file", file_cursor)


def commit_counted(
    store: Store,
    records: Sequence[Any],
    counter: str,
    labels: Labels,
    amount: float,
    cursors: Mapping[tuple[str, str], str],
) -> None:
    """Write ``records``, add ``amount`` (if any) to ``counter`` and advance ``cursors``
    ((source, name) -> value), all in one transaction."""
    commit_counts(store, records, {counter: amount}, labels, cursors)


def commit_counts(
    store: Store,
    records: Sequence[Any],
    counts: Mapping[str, float],
    labels: Labels,
    cursors: Mapping[tuple[str, str], str],
) -> None:
    """:func:`commit_counted` with several counters (each with its amount, if any)."""
    with store.transaction() as tx:
        write_records(tx, records)
        for counter, amount in counts.items():
            if amount:
                tx.incr(counter, labels, amount)
        for (source, name), value in cursors.items():
            tx.set_cursor(source, name, value)


# --- queries ---------------------------------------------------------------------------


def window_counts(
    store: Store, now: float, windows: Mapping[str, float]
) -> dict[tuple[str, str], WindowCounts]:
    """Counts per (service, window) over every source, for the minutes starting in
    (now - W, now], from the rollups (see :mod:`exporter.domains.traffic.rollup`).

    A window holds whole minutes only. One starting before the minute rows kept starts
    at the start of the hour that holds ``now - W``.
    """
    spans = {name: rollup.rolling_span(now, seconds) for name, seconds in windows.items()}
    return {key: _counts(v) for key, v in rollup.span_sums(store, spans, now).items()}


def counts_by_window(
    store: Store, now: float, rolling: Mapping[str, float], calendar: Mapping[str, Span]
) -> dict[tuple[str, str], WindowCounts]:
    """:func:`window_counts` of the ``rolling`` windows and :func:`span_counts` of each
    ``calendar`` span (named), read together: the rows they share are read once."""
    spans = {name: rollup.rolling_span(now, seconds) for name, seconds in rolling.items()}
    spans.update((name, rollup.calendar_minutes(span)) for name, span in calendar.items())
    return {key: _counts(v) for key, v in rollup.span_sums(store, spans, now).items()}


def span_counts(store: Store, span: Span, now: float | None = None) -> dict[str, WindowCounts]:
    """Counts per service over every source for the minutes starting in ``span``, from
    whole day buckets (kept beyond the retention), hour buckets and minute rows.

    ``now`` (default: the span's end) decides which buckets are still kept.
    """
    at = span.end if now is None else now
    sums = rollup.span_sums(store, {"span": rollup.calendar_minutes(span)}, at)
    return {service: _counts(v) for (service, _), v in sums.items()}


def _counts(values: Sequence[int]) -> WindowCounts:
    return WindowCounts(tuple(values[:5]), tuple(values[5:]))  # type: ignore[arg-type]


def daily_requests(store: Store, service: str, day: date, source: str | None = None) -> int | None:
    """Requests served by ``service`` on the UTC ``day``, over every gateway source
    (or only ``source``); None when no gateway reported traffic for it that day.

    Only a closed day is final: callers dividing by it (cost per request) should ask
    for days that have ended, plus the sources' ``delay``.
    """
    sql = f"SELECT SUM(requests) FROM traffic_daily r {_RESOLVED} WHERE {_SERVICE} = ? AND day = ?"
    params: list[Any] = [service, day.isoformat()]
    if source is not None:
        sql += " AND r.source = ?"
        params.append(source)
    row = store.query_one(sql, params)
    return None if row is None or row[0] is None else int(row[0])


def daily_totals(store: Store, since: date) -> dict[tuple[str, date], int]:
    """Requests per (service, day) for every day from ``since``, over every source."""
    rows = store.query(
        f"SELECT {_SERVICE}, day, SUM(requests) FROM traffic_daily r {_RESOLVED} "
        f"WHERE day >= ? GROUP BY {_SERVICE}, day",
        (since.isoformat(),),
    )
    return {(str(r[0]), date.fromisoformat(str(r[1]))): int(r[2]) for r in rows}


def gateway_latencies(store: Store, since: float) -> dict[tuple[str, str, float], float]:
    """(service, window, quantile) -> seconds as the gateways computed them at or after
    ``since``, each identity under the service it resolves to now (the most recent wins)."""
    rows = store.query(
        f"SELECT {_SERVICE}, window, quantile, seconds FROM traffic_latency r {_RESOLVED} "
        "WHERE at >= ? ORDER BY at, r.source, r.ident",
        (since,),
    )
    return {(str(r[0]), str(r[1]), float(r[2])): float(r[3]) for r in rows}


def _cursor_readings(store: Store, name: str) -> dict[str, dict[str, Any]]:
    """source -> the decoded JSON of its cursor ``name``, for every source that has one."""
    rows = store.query("SELECT source, value FROM cursors WHERE name = ? ORDER BY source", (name,))
    return {str(r[0]): json.loads(r[1]) for r in rows if r[1]}


def distinct_consumers(store: Store, since: float) -> int:
    """Distinct (gateway, consumer) pairs seen at or after ``since``, over every service."""
    row = store.query_one(
        "SELECT COUNT(*) FROM (SELECT DISTINCT source, consumer FROM traffic_consumers "
        "WHERE last_seen >= ?)",
        (since,),
    )
    return int(row[0]) if row is not None else 0


def stub_statuses(store: Store) -> dict[str, dict[str, int]]:
    """source -> its latest NGINX ``stub_status`` numbers (active, reading, ..., requests)."""
    return _cursor_readings(store, STUB_STATUS)


def registered_consumers(store: Store) -> dict[str, int]:
    """source -> the number of API consumers registered in the gateway when last polled."""
    return {s: int(v["count"]) for s, v in _cursor_readings(store, CONSUMERS_REGISTERED).items()}


def active_consumers(store: Store, since: float) -> dict[str, int]:
    """Distinct consumers per service seen at or after ``since``."""
    rows = store.query(
        f"SELECT {_SERVICE}, COUNT(DISTINCT consumer) FROM traffic_consumers r {_RESOLVED} "
        f"WHERE last_seen >= ? GROUP BY {_SERVICE}",
        (since,),
    )
    return {str(r[0]): int(r[1]) for r in rows}


WRITERS: dict[type, Writer] = {
    TrafficDelta: write_deltas,
    TrafficLatency: write_latencies,
    ConsumerSeen: write_consumers,
}
