"""The PostgreSQL backend of the state store, through psycopg 3.

:class:`PgConnection` looks to :class:`~exporter.core.store.Tx` and the domains' stores
like a ``sqlite3.Connection``: ``execute`` and ``executemany`` take SQLite's SQL
(rewritten by :mod:`exporter.core.dialect`) and return a cursor whose rows read by index
and by column name (:class:`Row`), ``total_changes`` counts the rows written. It runs in
autocommit mode, so the store's own ``BEGIN`` / ``COMMIT`` delimit each transaction, as
they do on SQLite.

A connection that broke (the server restarted, the network dropped it) is replaced by a
new one at its next use: the replica reconnects without a restart. The statement that
met the break fails with :class:`psycopg.OperationalError`, a state failure (the poll is
retried at its next interval, nothing of it committed).

Values are adapted as SQLite has them: Python booleans are stored as 0 and 1 (the
schema's flags are integers), and ``numeric`` results (PostgreSQL's ``SUM`` of integers)
come back as ``int``, or ``float`` when they have a fraction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import ClientCursor, abc
from psycopg.adapt import Dumper, Loader, Transformer
from psycopg.pq import TransactionStatus

from exporter.core.backend import PostgresTarget
from exporter.core.dialect import to_postgres


class Row(tuple[Any, ...]):
    """A result row read by index or by column name, as ``sqlite3.Row`` is."""

    _names: dict[str, int]

    def __new__(cls, values: Iterable[Any], names: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = {d.name: i for i, d in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


class _BoolAsInt(Dumper):
    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class _NumericAsNumber(Loader):
    def load(self, data: Any) -> int | float:
        text = bytes(data).decode("ascii")
        if text.lstrip("-").isdigit():
            return int(text)
        return float(text)


def _options(target: PostgresTarget, lock_timeout: float) -> str:
    options = f"-c lock_timeout={max(1, round(lock_timeout * 1000))} -c TimeZone=UTC"
    if target.schema is not None:
        options += f" -c search_path={target.schema}"
    return options


def connect(target: PostgresTarget, lock_timeout: float) -> psycopg.Connection[Any]:
    """One autocommit connection with the store's adaptations; ``lock_timeout`` bounds the
    wait for another replica's row lock (SQLite's ``busy_timeout``)."""
    conn: psycopg.Connection[Any] = psycopg.connect(
        target.url,
        autocommit=True,
        cursor_factory=ClientCursor,
        row_factory=_row_factory,
        options=_options(target, lock_timeout),
        **target.connect_args(),
    )
    conn.adapters.register_dumper(bool, _BoolAsInt)
    conn.adapters.register_loader("numeric", _NumericAsNumber)
    return conn


_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})


class PgConnection:
    """A ``sqlite3.Connection`` look-alike over one psycopg connection, renewed when broken."""

    def __init__(self, target: PostgresTarget, lock_timeout: float) -> None:
        self._target = target
        self._lock_timeout = lock_timeout
        self._conn: psycopg.Connection[Any] | None = None
        # The live connection's literal maker (see :meth:`_inline`), made with it.
        self._literals: abc.Transformer | None = None
        self._guard = threading.Lock()
        self.total_changes = 0
        self.raw()  # the first connection is made now: a bad URL or password fails at start

    def raw(self) -> psycopg.Connection[Any]:
        """The live psycopg connection (a new one if the last one broke)."""
        with self._guard:
            if self._conn is None or self._conn.closed or self._conn.broken:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                self._conn = connect(self._target, self._lock_timeout)
                self._literals = Transformer.from_context(self._conn)
            return self._conn

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        idle = not self.in_transaction
        try:
            cur = self.raw().cursor()
            self._execute(cur, sql, params)
        except psycopg.OperationalError:
            # A statement outside a transaction (a read, a BEGIN) that met a connection
            # the server had already ended is run once more on a new one: nothing of it
            # ran. Inside a transaction the failure stands (the transaction is lost).
            if not (idle and self._conn is not None and self._conn.broken):
                raise
            cur = self.raw().cursor()
            self._execute(cur, sql, params)
        self._count(cur)
        return cur

    def _execute(self, cur: Any, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> None:
        query = self._inline(sql, params)
        if query is None:
            cur.execute(to_postgres(sql), params)
        else:
            cur.execute(query)

    def _inline(self, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> bytes | None:
        """``sql`` with its parameters in it as literals: the statement the client-side
        cursor would send, made without its parse of the statement's text. That parse is
        in Python and is not cached for long statements (a multi-row insert of a backfill
        unit binds thousands of values): it held the interpreter for a quarter of a
        commit's CPU, time the event loop waits for. None (psycopg binds them, as
        before) for named parameters, or a count that does not match the statement's
        (psycopg's error says which)."""
        literals = self._literals
        if literals is None or isinstance(params, Mapping):
            return None
        try:
            # The dialect writes each parameter as %s and a literal % as %%: bytes'
            # formatting reads them as psycopg's client-side binding does.
            return to_postgres(sql).encode(literals.encoding) % tuple(
                b"NULL" if p is None else literals.as_literal(p) for p in params
            )
        except TypeError:
            return None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        cur = self.raw().cursor()
        cur.executemany(to_postgres(sql), list(rows))
        self._count(cur)
        return cur

    def pipelined(self, statements: Sequence[tuple[str, Any, bool]]) -> list[Any]:
        """Run ``statements`` (SQL, parameters or rows, once per row) in order, sent together
        and answered together (pipeline mode: one round trip); their cursors, read after.
        The first that fails raises, and the ones after it do not run.

        A transaction's first round trip (its ``BEGIN`` and first statements, no
        ``COMMIT``) that met a connection the server had already ended is run once more on
        a new one, as :meth:`execute` runs a statement outside a transaction: the server
        kept nothing of it (a transaction it did not commit is rolled back with its
        session). A later round trip's failure stands: the transaction is lost."""
        first = (
            not self.in_transaction
            and bool(statements)
            and statements[0][0] == "BEGIN"
            and all(sql != "COMMIT" for sql, _, _ in statements)
        )
        try:
            return self._pipelined(statements)
        except psycopg.OperationalError:
            if not (first and self._conn is not None and self._conn.broken):
                raise
            return self._pipelined(statements)

    def _pipelined(self, statements: Sequence[tuple[str, Any, bool]]) -> list[Any]:
        conn = self.raw()
        cursors: list[psycopg.Cursor[Any]] = []
        with conn.pipeline():
            self._send(conn, statements, cursors)
        for cur in cursors:
            self._count(cur)
        return cursors

    def _send(
        self,
        conn: psycopg.Connection[Any],
        statements: Sequence[tuple[str, Any, bool]],
        cursors: list[psycopg.Cursor[Any]],
    ) -> None:
        """Queue ``statements`` (sql, parameters, whether ``executemany``) on ``conn``, in
        pipeline mode, each on a cursor appended to ``cursors`` as it is sent (so those
        sent before one that fails are still there), their results read later."""
        for sql, params, many in statements:
            cur = conn.cursor()
            if many:
                cur.executemany(to_postgres(sql), params)
            else:
                self._execute(cur, sql, params)
            cursors.append(cur)

    def commit(self, announce: bool, before: Sequence[tuple[str, Any, bool]] = ()) -> bool:
        """The ``before`` statements (the transaction's last writes), COMMIT, and with
        ``announce`` the commit counter bumped right after it, all in one round trip (see
        :meth:`~exporter.core.store.Store.versions`). A failing statement of ``before``
        raises, and the COMMIT does not run. True if bumped: a bump that fails after the
        commit is lost (the next commit's makes up for it)."""
        if not announce and not before:
            self.execute("COMMIT")
            return False
        conn = self.raw()
        done, bump = conn.cursor(), conn.cursor()
        cursors: list[psycopg.Cursor[Any]] = []
        try:
            with conn.pipeline():
                self._send(conn, before, cursors)
                done.execute("COMMIT")
                if announce:
                    bump.execute("SELECT nextval('state_commits')")
        except psycopg.Error:
            if done.statusmessage != "COMMIT":
                raise
            return False
        finally:
            for cur in cursors:
                self._count(cur)
        return announce

    def _count(self, cur: Any) -> None:
        # Rows inserted, updated or deleted (a SELECT's rowcount is its rows: not changes;
        # an INSERT ... RETURNING's is its rows, each one inserted).
        status = (cur.statusmessage or "").split(" ", 1)[0]
        if status in _WRITES and cur.rowcount > 0:
            self.total_changes += cur.rowcount

    @property
    def in_transaction(self) -> bool:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            return False
        return conn.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        with self._guard:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._literals = None


def holds_state(target: PostgresTarget) -> bool:
    """True when the target's schema (or ``search_path``) has the store's tables: a
    ``schema_version`` table. Reads only: a report never creates a state it is to read."""
    with connect(target, lock_timeout=5.0) as conn:
        row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    return bool(row is not None and row[0])


def state_failure(exc: BaseException) -> bool:
    """True when PostgreSQL (or the way to it) failed, not our SQL: a lost connection, a
    lock timeout, a full disk, a server shutting down, a serialisation failure."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
