"""The state store: an embedded SQLite file in WAL mode, or a shared PostgreSQL database.

It holds normalised records keyed by their upstream id, each source's cursors,
and the monotonic event counters and histograms derived from records. Every
write happens inside :meth:`Store.transaction`, so a poll's records, the
counters they bump and the cursor that says "we have read up to here" are
committed together or not at all: a restart never double-counts and never
skips.

Each component (the core, and each domain such as ``probe`` or ``delivery``)
owns its tables and declares them as an ordered list of forward migrations;
``schema_version`` records how far each component has been migrated.

The SQL is SQLite's everywhere; on PostgreSQL (:mod:`exporter.core.backend_postgres`) the
same statements run through :mod:`exporter.core.dialect`, and so do the same migrations.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from exporter.core.backend import PostgresTarget, url_user
from exporter.core.changes import ChangeLog
from exporter.core.clock import Clock, system_clock
from exporter.core.dialect import to_postgres_ddl
from exporter.core.errors import StartupError, StateError, StoreBusy, state_failure
from exporter.core.lease import Fence, check_fence, current_fence, fence_check, fence_held
from exporter.core.redact import MASK
from exporter.core.statepath import CONFIG, ENVIRONMENT, check_state_path, unusable

CORE_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE cursors (
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (source, name)
    );
    CREATE TABLE counters (
        metric TEXT NOT NULL,
        labels TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (metric, labels)
    );
    CREATE TABLE histograms (
        metric TEXT NOT NULL,
        labels TEXT NOT NULL,
        buckets TEXT NOT NULL,
        counts TEXT NOT NULL,
        sum REAL NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (metric, labels)
    );
    """,
)

Labels = Mapping[str, str]
# One statement of a batch: its SQL, its parameters (or rows, for one run per row), and
# whether it runs once per row.
Statement = tuple[str, Any, bool]


class Cursor(Protocol):
    """What a statement returns on either backend (``sqlite3.Cursor`` or psycopg's)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


_log = logging.getLogger("exporter.store")
#: How long a replica waits for another's migrations (seconds), and how often it looks.
MIGRATION_WAIT = 600.0
ADVISORY_POLL = 0.2
#: SQLite's page cache per connection (negative: KiB), 256 KiB instead of its 2 MiB: the
#: file's pages stay in the OS page cache, shared with every process, and a read that
#: misses SQLite's own cache costs a copy from it, not a disk read. Resident memory
#: counts each connection's cache, and the daemon keeps two open.
CACHE_SIZE = -256


# Label sets and histogram bounds decoded, by their JSON text: every render reads the
# same tens of thousands of them, and a copy costs a fifteenth of json.loads. Bounded
# by the series the counters hold; emptied whole if it ever outgrows that.
_DECODED: dict[str, Any] = {}
_DECODED_MAX = 200_000


def _decoded(text: str) -> Any:
    """``json.loads(text)`` of a label set (an object) or a bucket list: a fresh copy."""
    found = _DECODED.get(text)
    if found is None:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        found = json.loads(text)
        if isinstance(found, dict):
            # Label names and values repeat across sets (a service in each of its
            # series): one string each, so the kept sets take a third of the memory.
            found = {sys.intern(k): sys.intern(v) for k, v in found.items()}
        _DECODED[text] = found
    return found.copy()


def _labels_key(labels: Labels) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


class Tx:
    """One write transaction. Obtain it from :meth:`Store.transaction`."""

    def __init__(
        self,
        conn: Any,
        clock: Clock = system_clock,
        writers: Mapping[type, Writer] | None = None,
    ) -> None:
        self.conn = conn
        self.clock = clock
        self.writers: Mapping[type, Writer] = writers or {}
        # Rows written by :meth:`execute_bookkeeping`: not a change of any provider's input.
        self.bookkeeping = 0
        # Views of a domain's data this transaction changed (see :meth:`also_changes`).
        self.views: set[str] = set()
        # Per-transaction state of the writers (what they already looked up or noted),
        # so a batch asks the database once, not once per record.
        self.memo: dict[str, Any] = {}
        # Counter increments and histogram observations, written once per series at the
        # commit (:meth:`flush`): a backfill bumps the same few series thousands of times.
        self._counts: dict[tuple[str, str], float] = {}
        self._observed: dict[tuple[str, str], list[tuple[list[float], float]]] = {}
        self._deferred: dict[str, Callable[[], None]] = {}
        # Writes whose results nothing reads (:meth:`write_later`), sent with the next
        # statement that runs now, in one round trip (PostgreSQL's pipeline mode).
        self.postgres = not isinstance(conn, sqlite3.Connection)
        self._later: list[Statement] = []
        # The rows of the read sent along with the last :meth:`stored_rows` (its ``also``).
        self._also: list[Any] = []
        self._closing: list[Statement] = []

    def chunked(self, items: Sequence[Any], values_each: int) -> Iterator[Sequence[Any]]:
        """``items`` in the slices a multi-row statement of ``values_each`` values per item
        takes. On SQLite the connection keeps each distinct statement text it ran compiled
        (128 of them), at about 80 bytes per bound value: a batch of any size is cut into
        full slices and slices of power-of-two sizes (:func:`_chunks`), so the writes of a
        poll after another reuse a few compiled statements, where a remainder of every size
        left a new one (160 KiB at 2,000 values). PostgreSQL, where each statement of a
        batch may cost a round trip, takes the largest slices its bound-value limit allows."""
        if self.postgres:
            return _chunks(items, max(1, _VALUES_PER_STATEMENT // values_each))
        return _chunks(items, max(1, _SQLITE_VALUES_PER_STATEMENT // values_each), ladder=True)

    def _now(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        """Run one statement now (after the queued writes, in the same round trip)."""
        if not self._later:
            cur: Cursor = self.conn.execute(sql, params)
            return cur
        return self._send((sql, params, False))

    def _now_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        if not self._later:
            cur: Cursor = self.conn.executemany(sql, rows)
            return cur
        return self._send((sql, list(rows), True))

    def _send(self, last: Statement | None = None) -> Cursor:
        batch, self._later = self._later, []
        if last is not None:
            batch.append(last)
        cur: Cursor = self.conn.pipelined(batch)[-1]
        return cur

    def send(self) -> None:
        """Send the queued writes now (before the commit)."""
        if self._later:
            self._send()

    def closing(self) -> list[Statement]:
        """The flush's last writes on PostgreSQL (the histograms' upserts, each of which
        writes its row), no longer kept: for the commit to send with its ``COMMIT``."""
        closing, self._closing = self._closing, []
        return closing

    def write_later(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a write whose result nothing reads: on PostgreSQL it is queued and sent with
        the transaction's next statement (a read, the lease check, the commit), so a
        batch of such writes costs no round trip of its own; on SQLite it runs now."""
        if self.postgres:
            self._later.append((sql, params, False))
        else:
            self.conn.execute(sql, params)

    def write_many_later(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """:meth:`write_later` of one statement for each of ``rows``."""
        rows = list(rows)
        if not rows:
            return
        if self.postgres:
            self._later.append((sql, rows, True))
        else:
            self.conn.executemany(sql, rows)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Cursor:
        """Run one statement for each of ``rows`` (one round trip on PostgreSQL)."""
        return self._now_many(sql, rows)

    def read_all(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """The rows of each of several reads, sent together (one round trip on PostgreSQL)."""
        if not statements:
            return []
        if not self.postgres:
            return [self.conn.execute(sql, params).fetchall() for sql, params in statements]
        batch, self._later = self._later, []
        curs = self.conn.pipelined([*batch, *((sql, p, False) for sql, p in statements)])
        return [cur.fetchall() for cur in curs[len(batch) :]]

    def also_changes(self, view: str) -> None:
        """Count the commit as a change of ``view`` too: a narrower input of the writer's
        domain (``Domain.views``), which providers read instead of the whole domain."""
        self.views.add(view)

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        """Run one statement (SQLite's SQL, on either backend); its cursor."""
        cur: Cursor = self._now(sql, params)
        return cur

    def execute_bookkeeping(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> Cursor:
        """Execute one write of rows no provider renders (when a source last listed, say):
        the rows it changes are not counted as a change of the transaction's inputs."""
        cur: Cursor = self._now(sql, params)
        self.bookkeeping += max(0, cur.rowcount)
        return cur

    def insert_new(self, table: str, row: Mapping[str, Any]) -> bool:
        """Insert ``row`` unless its primary key exists; True if it was new.

        Use it for immutable events (a probe result, a finished run): counters
        are bumped only when this returns True, which is what makes re-polls
        and restarts idempotent.
        """
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        cur: Cursor = self._now(
            f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING",
            tuple(row.values()),
        )
        return cur.rowcount == 1

    def upsert(self, table: str, row: Mapping[str, Any], key: Sequence[str]) -> str:
        """Insert or update ``row`` by its ``key`` columns.

        Returns ``"inserted"``, ``"updated"`` (some column changed) or
        ``"unchanged"``, so callers can count a state change exactly once.
        """
        where = " AND ".join(f"{k} = ?" for k in key)
        old = self._now(
            f"SELECT {', '.join(row)} FROM {table} WHERE {where}", tuple(row[k] for k in key)
        ).fetchone()
        if old is None:
            self.insert_new(table, row)
            return "inserted"
        if tuple(old) == tuple(row.values()):
            return "unchanged"
        sets = ", ".join(f"{c} = ?" for c in row if c not in key)
        self._now(
            f"UPDATE {table} SET {sets} WHERE {where}",
            tuple(v for c, v in row.items() if c not in key) + tuple(row[k] for k in key),
        )
        return "updated"

    def set_cursor(self, source: str, name: str, value: str) -> None:
        """Set a cursor; ``updated_at`` is when its value last changed (setting the same
        value again writes nothing, so a poll that found nothing new changes nothing)."""
        self.write_later(
            "INSERT INTO cursors (source, name, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (source, name) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at WHERE cursors.value IS NOT excluded.value",
            (source, name, value, self.clock()),
        )

    def set_cursors(self, source: str, values: Mapping[str, str]) -> None:
        """:meth:`set_cursor` for several cursors of ``source``, in one statement."""
        items = sorted(values.items())
        for chunk in self.chunked(items, 4):
            marks = ", ".join("(?, ?, ?, ?)" for _ in chunk)
            now = self.clock()
            self.write_later(
                f"INSERT INTO cursors (source, name, value, updated_at) VALUES {marks} "
                "ON CONFLICT (source, name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at WHERE cursors.value IS NOT excluded.value",
                tuple(v for name, value in chunk for v in (source, name, value, now)),
            )

    def insert_new_many(
        self, table: str, rows: Sequence[Mapping[str, Any]], key: Sequence[str]
    ) -> list[bool]:
        """:meth:`insert_new` for many rows of the same columns, a statement per few hundred
        rows; for each row, whether it was new (of two with the same ``key``, the first)."""
        if not rows:
            return []
        if len(groups := _by_columns(rows)) > 1:
            return _regrouped(rows, groups, lambda part: self.insert_new_many(table, part, key))
        columns = list(rows[0])
        new: set[tuple[Any, ...]] = set()
        for chunk in self.chunked(rows, len(columns)):
            row_marks = "(" + ", ".join("?" for _ in columns) + ")"
            cur = self._now(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                f"{', '.join(row_marks for _ in chunk)} ON CONFLICT DO NOTHING "
                f"RETURNING {', '.join(key)}",
                tuple(row[c] for row in chunk for c in columns),
            )
            new.update(tuple(r) for r in cur.fetchall())
        out = []
        for row in rows:
            k = tuple(row[c] for c in key)
            out.append(k in new)
            new.discard(k)  # a second row with the same key was not new
        return out

    def _insert_later(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows of the same columns known to be new (:meth:`write_later`)."""
        if not rows:
            return
        columns = list(rows[0])
        row_marks = "(" + ", ".join("?" for _ in columns) + ")"
        for chunk in self.chunked(rows, len(columns)):
            self.write_later(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                f"{', '.join(row_marks for _ in chunk)} ON CONFLICT DO NOTHING",
                tuple(row[c] for row in chunk for c in columns),
            )

    def stored_rows(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        keys: Iterable[Sequence[Any]],
        *,
        also: tuple[str, Sequence[Any]] | None = None,
    ) -> dict[tuple[Any, ...], tuple[Any, ...]]:
        """The stored ``columns`` of the rows of ``table`` with these ``key`` values, by key
        (absent: not stored), read a few hundred keys a statement, in one round trip on
        PostgreSQL. ``also``: one more read sent with them, its rows left in ``_also``."""
        wanted = sorted({tuple(k) for k in keys}, key=repr)
        found: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        cols = ", ".join([*key, *columns])
        reads: list[tuple[str, Sequence[Any]]] = []
        for chunk in self.chunked(wanted, len(key)):
            if len(key) == 1:
                where = f"{key[0]} IN ({', '.join('?' for _ in chunk)})"
            else:
                one = "(" + ", ".join("?" for _ in key) + ")"
                where = f"({', '.join(key)}) IN (VALUES {', '.join(one for _ in chunk)})"
            reads.append(
                (f"SELECT {cols} FROM {table} WHERE {where}", tuple(v for k in chunk for v in k))
            )
        answers = self.read_all([*reads, *([] if also is None else [also])])
        if also is not None:
            self._also = answers.pop()
        for rows in answers:
            for r in rows:
                found[tuple(r[: len(key)])] = tuple(r[len(key) :])
        return found

    def upsert_many(
        self, table: str, rows: Sequence[Mapping[str, Any]], key: Sequence[str]
    ) -> list[tuple[str, tuple[Any, ...] | None]]:
        """:meth:`upsert` for many rows of the same columns: the stored rows read in one
        statement, the new ones inserted and the changed ones updated in one batch each.

        For each row, its outcome (as :meth:`upsert`'s) and the row as stored before it
        (its columns in ``rows``' order; None: it was new). Two rows with the same key are
        applied in order, as two :meth:`upsert` calls would be."""
        if not rows:
            return []
        if len(groups := _by_columns(rows)) > 1:
            return _regrouped(rows, groups, lambda part: self.upsert_many(table, part, key))
        columns = list(rows[0])
        current = self.stored_rows(table, columns, key, [[r[k] for k in key] for r in rows])
        stored = dict(current)
        out: list[tuple[str, tuple[Any, ...] | None]] = []
        for row in rows:
            k, values = tuple(row[c] for c in key), tuple(row.values())
            old = current.get(k)
            out.append(
                ("inserted" if old is None else "unchanged" if old == values else "updated", old)
            )
            current[k] = values
        inserts = [
            dict(zip(columns, v, strict=True)) for k, v in current.items() if k not in stored
        ]
        updates = [v for k, v in current.items() if k in stored and stored[k] != v]
        self._insert_later(table, inserts)
        if updates:
            at = {c: i for i, c in enumerate(columns)}
            sets = [c for c in columns if c not in key]
            self._now_many(
                f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in sets)} "
                f"WHERE {' AND '.join(f'{k} = ?' for k in key)}",
                [tuple(v[at[c]] for c in [*sets, *key]) for v in updates],
            )
        return out

    def defer(self, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` once before the commit (the first one given under ``name``): work
        a writer would otherwise redo for every batch of the transaction (a rebuild)."""
        self._deferred.setdefault(name, fn)

    def incr(self, metric: str, labels: Labels, amount: float = 1.0) -> None:
        """Add ``amount`` to a persisted counter (created at 0), at the commit."""
        if amount < 0:
            raise ValueError("counters only go up")
        key = (metric, _labels_key(labels))
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def observe(self, metric: str, labels: Labels, value: float, buckets: Sequence[float]) -> None:
        """Record ``value`` in a persisted histogram with the given upper bounds, at the
        commit."""
        bounds = [float(b) for b in buckets]
        self._observed.setdefault((metric, _labels_key(labels)), []).append((bounds, value))

    def flush(self, fence: Fence | None = None, *, last: bool = False) -> None:
        """Run the deferred work, then write the counters and histograms bumped so far:
        one statement per kind of write, whatever the number of series. With ``fence``
        (a poll's lease, see :mod:`exporter.core.lease`), check it with the last read
        (the histograms' stored rows), or on its own if there is none. ``last``: the
        flush before the commit, whose histogram writes the commit sends (see
        :meth:`closing`); any other flush's go before the transaction's next statement."""
        while self._deferred:
            name = next(iter(self._deferred))
            self._deferred.pop(name)()
        counts, self._counts = self._counts, {}
        created = [(m, k) for (m, k), v in counts.items() if v == 0]
        added = [(m, k, v) for (m, k), v in counts.items() if v > 0]
        if created:
            # Creates the series at 0 once; an existing one is left as it is (no change).
            self.write_many_later(
                "INSERT INTO counters (metric, labels, value) VALUES (?, ?, 0) "
                "ON CONFLICT (metric, labels) DO NOTHING",
                created,
            )
        if added:
            self.write_many_later(
                "INSERT INTO counters (metric, labels, value) VALUES (?, ?, ?) "
                "ON CONFLICT (metric, labels) DO UPDATE SET value = counters.value + excluded.value",
                added,
            )
        if not self._observed:
            if fence is not None:
                check_fence(self, fence)
            return
        self._flush_histograms(fence, last)

    def _flush_histograms(self, fence: Fence | None, last: bool) -> None:
        observed, self._observed = self._observed, {}
        stored = self.stored_rows(
            "histograms",
            ("buckets", "counts", "sum", "count"),
            ("metric", "labels"),
            observed,
            also=None if fence is None else fence_check(fence),
        )
        if fence is not None:
            fence_held(self._also, fence)
        rows = []
        for (metric, key), values in observed.items():
            row = stored.get((metric, key))
            layout: list[float] | None = None if row is None else json.loads(row[0])
            counts: list[int] = [] if row is None else json.loads(row[1])
            total, n = (0.0, 0) if row is None else (float(row[2]), int(row[3]))
            for bounds, value in values:
                if layout != bounds:
                    # A changed bucket layout starts the series afresh, as a restart would.
                    layout, counts, total, n = bounds, [0] * len(bounds), 0.0, 0
                for i, bound in enumerate(bounds):
                    if value <= bound:
                        counts[i] += 1
                total, n = total + value, n + 1
            rows.append((metric, key, json.dumps(layout), json.dumps(counts), total, n))
        upsert = (
            "INSERT INTO histograms (metric, labels, buckets, counts, sum, count) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (metric, labels) DO UPDATE SET "
            "buckets = excluded.buckets, counts = excluded.counts, sum = excluded.sum, "
            "count = excluded.count"
        )
        if self.postgres and last:
            self._closing.append((upsert, rows, True))  # sent with the COMMIT
        else:
            self.write_many_later(upsert, rows)


#: Values bound in one statement by the batch writes (SQLite allows 32766, PostgreSQL
#: 65535). On SQLite fewer: a statement costs no round trip there, and its compiled
#: form, kept by the connection, grows with its values (see :meth:`Tx.chunked`).
_VALUES_PER_STATEMENT = 2000
_SQLITE_VALUES_PER_STATEMENT = 500


def _by_columns(rows: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """The indexes of ``rows``, grouped by their columns (a statement's rows share them)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(tuple(row), []).append(i)
    return list(groups.values())


def _regrouped(
    rows: Sequence[Mapping[str, Any]],
    groups: Sequence[Sequence[int]],
    each: Callable[[Sequence[Mapping[str, Any]]], Sequence[Any]],
) -> list[Any]:
    """``each`` applied to every group of ``rows``, its results put back in rows' order."""
    out: list[Any] = [None] * len(rows)
    for group in groups:
        for i, result in zip(group, each([rows[i] for i in group]), strict=True):
            out[i] = result
    return out


def _chunks(items: Sequence[Any], size: int, ladder: bool = False) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``, the last one shorter. With ``ladder``, what is
    left after the full slices goes in slices whose sizes are powers of two, largest
    first, so that a statement built per slice has at most a few distinct texts,
    whatever the number of items (see :meth:`Tx.chunked`)."""
    full = len(items) - len(items) % size if ladder else len(items)
    for i in range(0, full, size):
        yield items[i : i + size]
    start, step = full, 1 << (size.bit_length() - 1)  # the largest power of two <= size
    while start < len(items):
        while step > len(items) - start:
            step >>= 1
        yield items[start : start + step]
        start += step


class Store:
    """The database shared by the scheduler's polls and the snapshot renderer.

    ``path`` is a SQLite file (or ``:memory:``) or a :class:`PostgresTarget`.

    Two connections, each behind its own lock: writes go through one (a transaction at
    a time), reads through the other. In WAL mode a read never waits for a write and
    sees only what is committed, so a write that waits for another process's lock
    (up to ``busy_timeout``) holds up other writes but never a read, a cursor lookup or
    a render. An in-memory database (tests) has one connection for both. PostgreSQL is
    the same: two connections, each read sees what is committed when it starts.
    """

    def __init__(
        self,
        path: str | Path | PostgresTarget,
        clock: Clock = system_clock,
        schema: Schema | None = None,
        *,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = str(path)
        self.location = path
        self.postgres = isinstance(path, PostgresTarget)
        # The domains' tables and record writers; an empty schema keeps only the core's.
        self.schema = schema or Schema()
        # Stamps cursors' ``updated_at``; the daemon passes its own clock.
        self.clock = clock
        # What each committed write changed, for the providers' inputs.
        self.changes = ChangeLog()
        self._data_version: int | None = None
        self._own_commits, self._pg_others = 0, 0
        self._pg_seen: int | None = None
        self._lock = threading.RLock()
        self._conn: Any
        self._reader: Any
        if isinstance(path, PostgresTarget):
            self._conn = self._connect_postgres(path, busy_timeout)
        else:
            if self.path != ":memory:":
                check_state_path(Path(self.path))
            try:
                self._conn = self._connect(busy_timeout)
            except sqlite3.Error as exc:
                raise unusable(self.path, exc) from None
        self._read_lock = self._lock
        self._reader = self._conn
        try:
            self.migrate("core", CORE_MIGRATIONS)
            for component, migrations in self.schema.components:
                self.migrate(component, migrations)
            if isinstance(path, PostgresTarget):
                self._reader = self._connect_postgres(path, busy_timeout)
                self._read_lock = threading.RLock()
            elif self.path != ":memory:":
                self._reader = self._connect_reader(busy_timeout)
                self._read_lock = threading.RLock()
        except BaseException:
            self._conn.close()
            raise

    def _connect_reader(self, busy_timeout: float) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # Readers wait only in rare cases (WAL recovery after a crash of another process).
            conn.execute(f"PRAGMA busy_timeout={max(0, round(busy_timeout * 1000))}")
            conn.execute("PRAGMA query_only=ON")
            conn.execute(f"PRAGMA cache_size={CACHE_SIZE}")
        except sqlite3.Error as exc:
            raise unusable(self.path, exc) from None
        return conn

    def _connect(self, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            # How long a write waits for another process's write lock before the poll
            # fails with reason ``state`` (and is retried at its next interval).
            conn.execute(f"PRAGMA busy_timeout={max(0, round(busy_timeout * 1000))}")
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across process crashes in WAL mode (only an OS crash can
            # lose the last transactions), which is what kill -9 safety needs.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA cache_size={CACHE_SIZE}")
            # A damaged file is refused at start, not found out by a poll at 3 am.
            problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise StartupError(
                    f"state.path: {self.path} is corrupt (integrity check: "
                    f"{' '.join(str(problem).split())}); "
                    "move it away to start afresh",
                    1,
                )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_postgres(self, target: PostgresTarget, lock_timeout: float) -> Any:
        with reaching(target) as pg:
            conn = pg.PgConnection(target, lock_timeout)
            # Replicas starting together on an empty database: "IF NOT EXISTS" is not safe
            # against a concurrent CREATE (the loser fails on the catalog's unique index),
            # so they create these one at a time, under a lock held until the commit.
            conn.execute("BEGIN")
            try:
                key = f"{target}/{target.schema or ''}:setup"
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (key,))
                if target.schema is not None:
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{target.schema}"')
                # The commits of every replica, for :meth:`versions` (data_version's part).
                conn.execute("CREATE SEQUENCE IF NOT EXISTS state_commits")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version "
                    "(component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )
                conn.execute("COMMIT")
            except BaseException:
                with suppress(Exception):  # a broken connection has nothing to roll back
                    conn.execute("ROLLBACK")
                raise
        return conn

    def _migrating(self) -> AbstractContextManager[None]:
        """Held while migrating: on PostgreSQL, replicas starting together migrate one at a
        time (a session advisory lock), and each finds the others' versions applied."""
        if not self.postgres:
            return nullcontext()
        return self._advisory("schema_version")

    @contextmanager
    def _advisory(self, name: str) -> Iterator[None]:
        # Per database and schema: replicas of other schemas on the server migrate freely.
        schema = self.location.schema if isinstance(self.location, PostgresTarget) else None
        key = f"{self.path}/{schema or ''}:{name}"
        self._wait_for_advisory(key)
        try:
            yield
        finally:
            self._conn.execute("SELECT pg_advisory_unlock(hashtext(?))", (key,))

    def _wait_for_advisory(self, key: str) -> None:
        """Take the session lock ``key``, waiting for another replica holding it (its
        migrations may take minutes on a large state, longer than any statement's lock
        timeout) up to :data:`MIGRATION_WAIT`; past that, a one-line StartupError."""
        started = time.monotonic()
        said = False
        while not self._conn.execute("SELECT pg_try_advisory_lock(hashtext(?))", (key,)).fetchone()[
            0
        ]:
            waited = time.monotonic() - started
            if waited >= MIGRATION_WAIT:
                raise StartupError(
                    f"state.url: {self.path}: another replica has been migrating the schema "
                    f"for over {MIGRATION_WAIT:g}s; start this one when it is done",
                    ENVIRONMENT,
                )
            if not said:
                _log.info("%s: waiting for another replica's migrations to finish", self.path)
                said = True
            time.sleep(ADVISORY_POLL)

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Apply ``component``'s migrations not applied yet; return its new version.

        Migrations are append-only: never edit one that has shipped, add another. They
        run at start, so a database that refuses them is a StartupError.
        """
        try:
            with self._migrating():
                return self._migrate(component, migrations)
        except StateError as exc:
            cause = exc.__cause__
            if self.postgres:
                reason = " ".join(str(cause or exc).split())
                raise StartupError(f"state.url: {self.path}: {reason}", ENVIRONMENT) from None
            raise unusable(self.path, cause if isinstance(cause, sqlite3.Error) else exc) from None

    def _migrate(self, component: str, migrations: Sequence[str]) -> int:
        with self._lock:
            row = self._conn.execute(
                "SELECT version FROM schema_version WHERE component = ?", (component,)
            ).fetchone()
            current = int(row[0]) if row else 0
            if current > len(migrations):
                raise StartupError(
                    f"state.path: {self.path} has {component} schema v{current}, written by a "
                    f"newer release (this one knows v{len(migrations)}); refusing to downgrade",
                    1,
                )
            for version in range(current, len(migrations)):
                with self.transaction() as tx:
                    for statement in self._statements(migrations[version]):
                        tx.execute(statement)
                    tx.execute(
                        "INSERT INTO schema_version (component, version) VALUES (?, ?) "
                        "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                        (component, version + 1),
                    )
            return len(migrations)

    def _statements(self, migration: str) -> list[str]:
        if self.postgres:
            text = getattr(migration, "postgresql", migration)
            return [to_postgres_ddl(s) for s in text.split(";") if s.strip()]
        return [s for s in migration.split(";") if s.strip()]

    def has_table(self, name: str) -> bool:
        """True when the database has table ``name`` (a store opened without some
        domain's schema lacks its tables)."""
        if self.postgres:
            row = self.query_one("SELECT to_regclass(?) IS NOT NULL", (name,))
            return bool(row is not None and row[0])
        found = self.query_one(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        )
        return found is not None

    def schema_version(self, component: str) -> int:
        row = self.query_one("SELECT version FROM schema_version WHERE component = ?", (component,))
        return int(row[0]) if row else 0

    @contextmanager
    def transaction(self, *, wait: bool = True) -> Iterator[Tx]:
        """A write transaction: committed on normal exit, rolled back on any exception.

        ``wait=False`` (housekeeping that can run later) raises :class:`StoreBusy` at
        once when another write of this process is in progress, instead of queueing.

        A failure of the database itself (disk full, locked past the busy timeout, an
        I/O error), whether in a statement or in the ``COMMIT``, is raised as
        :class:`~exporter.core.errors.StateError` once the transaction is rolled back
        (any other error, a bug such as bad SQL, is raised as it is, also rolled back):
        the connection never stays inside a half-written transaction whose rows the
        next read would serve as if committed.
        """
        if not self._lock.acquire(blocking=wait):
            raise StoreBusy(f"state database {self.path}: another write is in progress")
        try:
            try:
                if not self.postgres:
                    self._conn.execute("BEGIN IMMEDIATE")
            except Exception as exc:
                if state_failure(exc):
                    raise StateError(
                        f"state database {self.path}: cannot begin a write: {exc}"
                    ) from exc
                raise
            try:
                before = self._conn.total_changes
                tx = Tx(self._conn, self.clock, self.schema.writers)
                if self.postgres:
                    # Sent with the transaction's first statement: a round trip less (see
                    # PgConnection.pipelined for a connection found ended by then).
                    tx.write_later("BEGIN")
                yield tx
                # A poll that lost its lease keeps nothing (checked with the last read).
                tx.flush(current_fence() if self.postgres else None, last=True)
                if self.postgres:
                    self._commit_postgres(tx, before)
                else:
                    self._conn.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if not isinstance(exc, StateError) and state_failure(exc):
                    raise StateError(
                        f"state database {self.path}: write rolled back: {exc}"
                    ) from exc
                raise
            changed = self._conn.total_changes - before
            self.changes.committed(changed - tx.bookkeeping, tx.views)
        finally:
            self._lock.release()

    def _commit_postgres(self, tx: Tx, before: int) -> None:
        """COMMIT, sent with the flush's closing writes (the histograms', after the fence's
        check) and, if the transaction changed rows, the announcement to the other
        replicas: one round trip. Each closing write writes its row, so whether the
        transaction changed rows is known before it is sent."""
        tx.send()  # what is still queued (none after a fence's check or histograms' read)
        closing = tx.closing()
        announce = self._conn.total_changes > before or bool(closing)
        self._own_commits += int(self._conn.commit(announce, closing))

    def _other_commits(self) -> int | None:
        """A number that changes when another connection commits (None: cannot tell)."""
        if not self.postgres:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        last = int(self._conn.execute("SELECT last_value FROM state_commits").fetchone()[0])
        # Our own announcements since the last look are not another's commits.
        if self._pg_seen is not None and last != self._pg_seen + self._own_commits:
            self._pg_others += 1
        self._pg_seen, self._own_commits = last, 0
        return self._pg_others

    def versions(self) -> Mapping[str, int]:
        """Every provider input's version (see :mod:`exporter.core.changes`), after
        noting a commit by another connection to the same file, if there was one.

        The check reads the writing connection's ``data_version``; while a write holds
        that connection (it may be waiting for another process's lock) it is left to the
        next call, which still sees the change: a render never waits for a write."""
        if not self._lock.acquire(blocking=False):
            return self.changes.versions()
        try:
            try:
                version: int | None = self._other_commits()
            except Exception as exc:
                if not (isinstance(exc, sqlite3.Error) or state_failure(exc)):
                    raise
                version = None  # unreadable (closed, failing): assume anything changed
            if version is None or (
                self._data_version is not None and version != self._data_version
            ):
                self.changes.changed_elsewhere()
            self._data_version = version
        finally:
            self._lock.release()
        return self.changes.versions()

    def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (SQLITE_FULL, SQLITE_IOERR); then
        # there is no transaction left, and a ROLLBACK would fail and hide the first error.
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[sqlite3.Row]:
        """Rows of a read, as committed when it starts (never a write in progress)."""
        with self._read_lock:
            cur = self._reader.execute(sql, params)
            if not self.postgres:
                cur.row_factory = sqlite3.Row
            rows: list[sqlite3.Row] = cur.fetchall()
            return rows

    def query_one(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> sqlite3.Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def get_cursor(self, source: str, name: str) -> str | None:
        row = self.query_one(
            "SELECT value FROM cursors WHERE source = ? AND name = ?", (source, name)
        )
        return None if row is None else str(row[0])

    def cursors(self, source: str) -> dict[str, str]:
        rows = self.query("SELECT name, value FROM cursors WHERE source = ?", (source,))
        return {str(r[0]): str(r[1]) for r in rows}

    def counters(self, metric: str) -> list[tuple[dict[str, str], float]]:
        """Every labelled value of a persisted counter."""
        rows = self.query("SELECT labels, value FROM counters WHERE metric = ?", (metric,))
        return [(_decoded(r[0]), float(r[1])) for r in rows]

    def histograms(
        self, metric: str
    ) -> list[tuple[dict[str, str], list[float], list[int], float, int]]:
        """Every labelled persisted histogram: (labels, bounds, cumulative counts, sum, count)."""
        rows = self.query(
            "SELECT labels, buckets, counts, sum, count FROM histograms WHERE metric = ?",
            (metric,),
        )
        return [
            (_decoded(r[0]), _decoded(r[1]), json.loads(r[2]), float(r[3]), int(r[4])) for r in rows
        ]

    def close(self) -> None:
        """Checkpoint the WAL into the database file if possible, then close.

        A checkpoint that fails (the disk is full, another process holds a lock) loses
        nothing: the committed transactions stay in the WAL file and the next open
        replays them. So it is reported, never raised.
        """
        with self._lock, self._read_lock:
            if self._reader is not self._conn:
                self._reader.close()
            if self.postgres:
                self._conn.close()
                return
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                _log.warning(
                    "state database %s: WAL not checkpointed at close (%s); "
                    "it is replayed at the next start",
                    self.path,
                    exc,
                )
            finally:
                self._conn.close()


Writer = Callable[[Tx, Sequence[Any]], None]


@contextmanager
def reaching(target: PostgresTarget) -> Iterator[ModuleType]:
    """The PostgreSQL driver module, for work on ``target``: a failure of the server or of
    the way to it (down, a wrong password) is a one-line :class:`StartupError` naming
    ``state.url``; a missing driver is one too."""
    try:
        from exporter.core import backend_postgres as pg
    except ImportError:
        raise StartupError(
            "state.url: a PostgreSQL state needs psycopg: "
            "pip install 'platform-kpi-exporter[postgres]'",
            CONFIG,
        ) from None
    try:
        yield pg
    except Exception as exc:
        if not pg.state_failure(exc):
            raise
        reason = " ".join(str(exc).split())
        user = url_user(target.url)
        if user:
            # libpq names the user ("password authentication failed for user ..."): the
            # user name is kept out of what is printed, as the URL's is.
            reason = reason.replace(f'user "{user}"', f'user "{MASK}"')
        raise StartupError(f"state.url: cannot use {target}: {reason}", ENVIRONMENT) from None


def holds_state(location: str | Path | PostgresTarget) -> bool:
    """True when ``location`` already holds a state database (a SQLite file, or the store's
    tables on PostgreSQL). Creates nothing: what reads a stored history asks first."""
    if isinstance(location, PostgresTarget):
        with reaching(location) as pg:
            held: bool = pg.holds_state(location)
        return held
    return Path(location).is_file()


@dataclass(frozen=True)
class Schema:
    """The domains' part of the database: each component's forward migrations (applied in
    this order, after the core's) and the writer of each record type."""

    components: tuple[tuple[str, tuple[str, ...]], ...] = ()
    writers: Mapping[type, Writer] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        components: Iterable[tuple[str, Sequence[str]]],
        writers: Iterable[Mapping[type, Writer]],
    ) -> Schema:
        """One schema from every domain's parts; a component or record type twice is a bug."""
        comps: dict[str, tuple[str, ...]] = {}
        for name, migrations in components:
            if name in comps or name == "core":
                raise ValueError(f"store component {name} declared twice")
            comps[name] = tuple(migrations)
        merged: dict[type, Writer] = {}
        for part in writers:
            for record_type, writer in part.items():
                if record_type in merged:
                    raise ValueError(f"two store writers for {record_type.__name__}")
                merged[record_type] = writer
        return cls(tuple(comps.items()), merged)


def upsert_each(
    tx: Tx, table: str, items: Iterable[Any], columns: Sequence[str], key: Sequence[str]
) -> None:
    """Upsert one row of ``table`` per item, each column read from the item's attribute of
    the same name (records name their fields after their columns)."""
    for item in items:
        tx.upsert(table, {c: getattr(item, c) for c in columns}, key)


def write_records(tx: Tx, records: Sequence[Any]) -> None:
    """Write a batch of mixed records through their domains' writers, grouped by type."""
    by_type: dict[type, list[Any]] = {}
    for record in records:
        by_type.setdefault(type(record), []).append(record)
    for record_type, batch in by_type.items():
        writer = tx.writers.get(record_type)
        if writer is None:
            raise TypeError(f"no store writer registered for {record_type.__name__}")
        writer(tx, batch)
