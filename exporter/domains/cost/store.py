"""Billing data: daily cost per origin and attribution key, request totals per day, and
paid API calls.

Cost is kept as one row per (origin, day, attribution key, provider, category,
currency), where an origin is one export file or one (account, day) answer of a
cost API, and the key is what the lines were attributed by (see
:class:`~exporter.domains.cost.allocation.CostKey`). ``cost_idents`` says which service
and team each key belongs to, and every read joins through it;
:mod:`exporter.domains.cost.attribution` re-resolves it when the catalog changes, so the
cost KPIs follow the catalog from the next refresh. A
:class:`~exporter.domains.cost.records.CostContribution` replaces everything its
origin said before, in one transaction, so a re-read file or a re-queried day
never double-counts. Paid API calls are recorded per UTC day as they happen,
so a restart knows how much of the daily cap is spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from exporter.core.store import Store, Tx, Writer
from exporter.domains.cost.allocation import UNALLOCATED, pinned
from exporter.domains.cost.records import CostContribution, RequestTotal

MIGRATIONS = (
    """
    CREATE TABLE cost_origins (
        source TEXT NOT NULL,
        origin TEXT NOT NULL,
        signature TEXT NOT NULL,
        final INTEGER NOT NULL,
        rows_read INTEGER NOT NULL,
        rows_rejected INTEGER NOT NULL,
        PRIMARY KEY (source, origin)
    );
    CREATE TABLE cost_daily (
        source TEXT NOT NULL,
        origin TEXT NOT NULL,
        day TEXT NOT NULL,
        service TEXT NOT NULL,
        team TEXT NOT NULL,
        provider TEXT NOT NULL,
        category TEXT NOT NULL,
        currency TEXT NOT NULL,
        billed REAL NOT NULL,
        effective REAL NOT NULL,
        lines INTEGER NOT NULL,
        PRIMARY KEY (source, origin, day, service, team, provider, category, currency)
    );
    CREATE INDEX cost_daily_day ON cost_daily (day);
    CREATE TABLE cost_coverage (
        source TEXT NOT NULL,
        origin TEXT NOT NULL,
        day TEXT NOT NULL,
        PRIMARY KEY (source, origin, day)
    );
    CREATE TABLE cost_request_totals (
        service TEXT NOT NULL,
        day TEXT NOT NULL,
        requests REAL NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (service, day)
    );
    CREATE TABLE cost_paid_calls (
        source TEXT NOT NULL,
        day TEXT NOT NULL,
        calls INTEGER NOT NULL,
        PRIMARY KEY (source, day)
    );
    """,
    # A render reads request totals by day range.
    "CREATE INDEX cost_request_totals_day ON cost_request_totals (day);",
    # Cost kept by attribution key, resolved to a service through cost_idents when read
    # (re-resolved when the catalog changes). Rows stored before are pinned to their
    # service (key 'service:<name>'), with one of the teams they had (the refresh then
    # gives them the catalog's).
    """
    CREATE TABLE cost_idents (
        ident TEXT NOT NULL PRIMARY KEY,
        service TEXT NOT NULL,
        team TEXT NOT NULL
    );
    INSERT INTO cost_idents (ident, service, team)
    SELECT 'service:' || service, service, MAX(team) FROM cost_daily GROUP BY service;
    CREATE TABLE cost_keyed (
        source TEXT NOT NULL,
        origin TEXT NOT NULL,
        day TEXT NOT NULL,
        ident TEXT NOT NULL,
        provider TEXT NOT NULL,
        category TEXT NOT NULL,
        currency TEXT NOT NULL,
        billed REAL NOT NULL,
        effective REAL NOT NULL,
        lines INTEGER NOT NULL,
        PRIMARY KEY (source, origin, day, ident, provider, category, currency)
    );
    INSERT INTO cost_keyed (source, origin, day, ident, provider, category, currency,
        billed, effective, lines)
    SELECT source, origin, day, 'service:' || service, provider, category, currency,
        SUM(billed), SUM(effective), SUM(lines)
    FROM cost_daily GROUP BY source, origin, day, service, provider, category, currency;
    DROP TABLE cost_daily;
    ALTER TABLE cost_keyed RENAME TO cost_daily;
    CREATE INDEX cost_daily_day ON cost_daily (day)
    """,
    # Keys no stored cost is under any more (a file read again under new rules) are
    # pruned by probing this index (see prune_idents).
    "CREATE INDEX cost_daily_ident ON cost_daily (ident);",
)

PAID_CALLS_TOTAL = "platform_exporter_paid_api_calls_total"
ROWS_REJECTED_TOTAL = "platform_exporter_cost_rows_rejected_total"

CostRow = tuple[str, str, str, str, str, str, float]


def write_contributions(tx: Tx, batch: Sequence[CostContribution]) -> None:
    """Replace each origin's rows with the new contribution."""
    for c in batch:
        outcome = tx.upsert(
            "cost_origins",
            {
                "source": c.source,
                "origin": c.origin,
                "signature": c.signature,
                "final": int(c.final),
                "rows_read": c.rows_read,
                "rows_rejected": c.rows_rejected,
            },
            key=("source", "origin"),
        )
        if outcome == "unchanged":
            continue
        if c.rows_rejected:
            tx.incr(ROWS_REJECTED_TOTAL, {"source": c.source}, c.rows_rejected)
        tx.execute("DELETE FROM cost_daily WHERE source = ? AND origin = ?", (c.source, c.origin))
        tx.execute(
            "DELETE FROM cost_coverage WHERE source = ? AND origin = ?", (c.source, c.origin)
        )
        merged: dict[tuple[str, ...], list[float]] = {}
        owners: dict[str, tuple[str, str]] = {}
        for d in c.days:
            ident = d.ident or pinned(d.service)
            owners.setdefault(ident, (d.service, d.team))
            k = (d.day, ident, d.provider, d.category, d.currency)
            acc = merged.setdefault(k, [0.0, 0.0, 0.0])
            acc[0] += d.billed
            acc[1] += d.effective
            acc[2] += d.lines
        tx.executemany(
            "INSERT INTO cost_daily (source, origin, day, ident, provider, category, "
            "currency, billed, effective, lines) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(c.source, c.origin, *k, v[0], v[1], int(v[2])) for k, v in merged.items()],
        )
        # A key seen before keeps its service: the attribution refresh re-resolves them all.
        tx.executemany(
            "INSERT INTO cost_idents (ident, service, team) VALUES (?, ?, ?) "
            "ON CONFLICT (ident) DO NOTHING",
            [(ident, *owner) for ident, owner in owners.items()],
        )
        # Only the days the origin proves arrived: a fee spread over a month does not.
        tx.executemany(
            "INSERT INTO cost_coverage (source, origin, day) VALUES (?, ?, ?)",
            [(c.source, c.origin, day) for day in sorted(set(c.covered_days))],
        )


def write_request_totals(tx: Tx, batch: Sequence[RequestTotal]) -> None:
    for r in batch:
        tx.upsert(
            "cost_request_totals",
            {"service": r.service, "day": r.day, "requests": r.requests, "source": r.source},
            key=("service", "day"),
        )


def count_paid_call(tx: Tx, source: str, day: str) -> None:
    """One paid upstream request made on UTC ``day``: for the daily cap and the counter."""
    tx.execute(
        "INSERT INTO cost_paid_calls (source, day, calls) VALUES (?, ?, 1) "
        "ON CONFLICT (source, day) DO UPDATE SET calls = calls + 1",
        (source, day),
    )
    tx.incr(PAID_CALLS_TOTAL, {"source": source})


def paid_calls_on(store: Store, source: str, day: str) -> int:
    row = store.query_one(
        "SELECT calls FROM cost_paid_calls WHERE source = ? AND day = ?", (source, day)
    )
    return int(row[0]) if row else 0


def origins(store: Store, source: str) -> dict[str, tuple[str, bool]]:
    """Each stored origin of ``source``: (signature, final)."""
    rows = store.query(
        "SELECT origin, signature, final FROM cost_origins WHERE source = ?", (source,)
    )
    return {str(r[0]): (str(r[1]), bool(r[2])) for r in rows}


def _only(sources: Sequence[str] | None, column: str = "source") -> tuple[str, list[str]]:
    if sources is None:
        return "", []
    return f" AND {column} IN ({', '.join('?' for _ in sources)})", list(sources)


def daily_costs(
    store: Store,
    first_day: str,
    last_day: str,
    amount: Literal["effective", "billed"],
    sources: Sequence[str] | None = None,
) -> list[CostRow]:
    """(day, service, team, provider, category, currency, amount) summed over origins
    (of ``sources`` only, if given: a source removed from the config no longer counts),
    each key's cost given to the service ``cost_idents`` resolves it to now."""
    column = "effective" if amount == "effective" else "billed"
    where, params = _only(sources, "d.source")
    rows = store.query(
        f"SELECT d.day, COALESCE(i.service, '{UNALLOCATED}'), COALESCE(i.team, '{UNALLOCATED}'), "
        f"d.provider, d.category, d.currency, SUM(d.{column}) "
        "FROM cost_daily d LEFT JOIN cost_idents i ON i.ident = d.ident "
        f"WHERE d.day >= ? AND d.day <= ?{where} "
        "GROUP BY d.day, i.service, i.team, d.provider, d.category, d.currency",
        (first_day, last_day, *params),
    )
    return [
        (str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), float(r[6]))
        for r in rows
    ]


def newest_days(
    store: Store, before_day: str, sources: Sequence[str] | None = None
) -> dict[str, str]:
    """The newest arrived day before ``before_day`` (exclusive), per source: its data end."""
    where, params = _only(sources)
    rows = store.query(
        f"SELECT source, MAX(day) FROM cost_coverage WHERE day < ?{where} GROUP BY source",
        (before_day, *params),
    )
    return {str(r[0]): str(r[1]) for r in rows if r[1] is not None}


def data_end(store: Store, before_day: str, sources: Sequence[str] | None = None) -> str | None:
    """The newest day before ``before_day`` that every source (of ``sources``, if given)
    has proved arrived: where every closed-day cost window ends. None without data."""
    ends = newest_days(store, before_day, sources)
    return min(ends.values()) if ends else None


def oldest_days(store: Store, sources: Sequence[str] | None = None) -> dict[str, str]:
    """The oldest arrived day per source: where its history starts."""
    where, params = _only(sources)
    rows = store.query(
        f"SELECT source, MIN(day) FROM cost_coverage WHERE 1 = 1{where} GROUP BY source",
        tuple(params),
    )
    return {str(r[0]): str(r[1]) for r in rows if r[1] is not None}


def attributions(store: Store) -> list[tuple[str, str, str]]:
    """(key, service, team) of every attribution key cost was stored under."""
    rows = store.query("SELECT ident, service, team FROM cost_idents ORDER BY ident")
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def prune_idents(store: Store) -> int:
    """Drop the attribution keys no stored cost is under any more; how many."""
    with store.transaction() as tx:
        cur = tx.execute(
            "DELETE FROM cost_idents WHERE NOT EXISTS "
            "(SELECT 1 FROM cost_daily d WHERE d.ident = cost_idents.ident)"
        )
        return max(0, int(cur.rowcount or 0))


def reattribute(store: Store, changes: Sequence[tuple[str, str, str]]) -> None:
    """Give each (key, service, team) its new service and team, in one transaction."""
    with store.transaction() as tx:
        tx.executemany(
            "UPDATE cost_idents SET service = ?, team = ? WHERE ident = ?",
            [(service, team, ident) for ident, service, team in changes],
        )


def request_totals(store: Store, first_day: str, last_day: str) -> dict[tuple[str, str], float]:
    """Requests per (service, day) read by this domain's own request-totals source."""
    rows = store.query(
        "SELECT service, day, requests FROM cost_request_totals WHERE day >= ? AND day <= ?",
        (first_day, last_day),
    )
    return {(str(r[0]), str(r[1])): float(r[2]) for r in rows}


def request_days(store: Store) -> set[str]:
    return {str(r[0]) for r in store.query("SELECT DISTINCT day FROM cost_request_totals")}


WRITERS: dict[type, Writer] = {
    CostContribution: write_contributions,
    RequestTotal: write_request_totals,
}
