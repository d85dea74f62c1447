"""On-call incidents: their table, the Alertmanager notifications that open and close them,
and the DORA incidents derived from them.

Each on-call incident is one row, keyed by its tool and upstream id, so a re-poll, a
redelivered webhook or a restart upserts instead of double-counting. Every write then
derives, in the same transaction, the service's DORA incidents: its counted on-call
incidents merged across tools (:func:`exporter.domains.incident.kpis.merge_duplicates`),
stored as the delivery domain's incidents of source ``oncall``, which change failure
and time to restore are computed from like every other incident.

An Alertmanager group becomes one incident per firing episode, keyed by the hash of its
group key and its ``startsAt``: a repeated firing notification of an open episode
changes nothing, its resolved notification closes it, and a resolved notification whose
firing one was lost records the episode whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from exporter.core.store import Store, Tx, Writer
from exporter.domains.delivery.records import Incident
from exporter.domains.delivery.store import replace_incidents
from exporter.domains.incident.kpis import INF, Span, merge_duplicates
from exporter.domains.incident.records import AlertGroupNotice, OnCallIncident

MIGRATIONS = (
    """
    CREATE TABLE oncall_incidents (
        key TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        service TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        opened_at REAL NOT NULL,
        acknowledged_at REAL,
        resolved_at REAL,
        severity TEXT NOT NULL,
        counts INTEGER NOT NULL,
        dedup_key TEXT
    );
    CREATE INDEX oncall_incidents_service ON oncall_incidents (service, opened_at);
    CREATE INDEX oncall_incidents_dedup ON oncall_incidents (source, dedup_key, resolved_at);
    CREATE INDEX oncall_incidents_resolved ON oncall_incidents (resolved_at, opened_at);
    """,
    "ALTER TABLE oncall_incidents ADD COLUMN priority TEXT;",
    "ALTER TABLE oncall_incidents ADD COLUMN claim TEXT;",
)

INCIDENTS_TOTAL = "platform_incidents_total"
#: The delivery incidents' source for the merged on-call incidents.
DORA_SOURCE = "oncall"
ALERTMANAGER = "alertmanager"

_COLUMNS = (
    "key",
    "source",
    "service",
    "incident_id",
    "opened_at",
    "acknowledged_at",
    "resolved_at",
    "severity",
    "counts",
    "dedup_key",
    "priority",
    "claim",
)


def _row(i: OnCallIncident) -> dict[str, object]:
    return {
        "key": i.key,
        "source": i.source,
        "service": i.service,
        "incident_id": i.incident_id,
        "opened_at": i.opened_at,
        "acknowledged_at": i.acknowledged_at,
        "resolved_at": i.resolved_at,
        "severity": i.severity,
        "counts": int(i.counts),
        "dedup_key": i.dedup_key,
        "priority": i.priority,
        "claim": i.claim,
    }


def _upsert(tx: Tx, incident: OnCallIncident) -> None:
    if tx.upsert("oncall_incidents", _row(incident), ("key",)) == "inserted":
        labels = {"service": incident.service, "source": incident.source}
        tx.incr(INCIDENTS_TOTAL, {**labels, "severity": incident.severity})


def write_incidents(tx: Tx, incidents: Sequence[OnCallIncident]) -> None:
    """Upsert on-call incidents, then derive their services' DORA incidents around them."""
    window = _window(tx)
    spans: dict[str, list[tuple[float, float]]] = {}
    for incident in incidents:
        # The incident as it was (another service, another span) and as it is now.
        old = tx.execute(
            "SELECT service, opened_at, resolved_at FROM oncall_incidents WHERE key = ?",
            (incident.key,),
        ).fetchone()
        _upsert(tx, incident)
        if old is not None:
            spans.setdefault(str(old[0]), []).append((float(old[1]), _end(old[2])))
        spans.setdefault(incident.service, []).append(
            (incident.opened_at, _end(incident.resolved_at))
        )
    for service, seeds in sorted(spans.items()):
        derive(tx, service, window, (min(s[0] for s in seeds), max(s[1] for s in seeds)))


def _end(resolved: object) -> float:
    return INF if resolved is None else float(resolved)  # type: ignore[arg-type]


def episode_id(notice: AlertGroupNotice) -> str:
    """The incident id of an Alertmanager firing episode: group key hash and ``startsAt``."""
    return f"{notice.dedup_key[:16]}@{notice.starts_at:.3f}"


def write_alert_groups(tx: Tx, notices: Sequence[AlertGroupNotice]) -> None:
    """Open, keep or close the Alertmanager incident each notification is about."""
    changed: list[OnCallIncident] = []
    for n in notices:
        open_row = tx.execute(
            "SELECT incident_id, opened_at FROM oncall_incidents WHERE source = ? "
            "AND dedup_key = ? AND service = ? AND resolved_at IS NULL "
            "ORDER BY opened_at LIMIT 1",
            (ALERTMANAGER, n.dedup_key, n.service),
        ).fetchone()
        if open_row is not None:
            incident_id, opened_at = str(open_row[0]), min(float(open_row[1]), n.starts_at)
        else:
            incident_id, opened_at = episode_id(n), n.starts_at
            if n.firing and _resolved(tx, f"{ALERTMANAGER}/{incident_id}"):
                continue  # a firing notification delivered after its episode's resolution
        resolved = None if n.firing else max(n.ends_at or n.starts_at, opened_at)
        changed.append(
            OnCallIncident(
                ALERTMANAGER,
                n.service,
                incident_id,
                opened_at,
                None,
                resolved,
                n.severity,
                n.counts,
                n.dedup_key,
            )
        )
    # One notification at a time: a later one of the same group sees the earlier one's row.
    for incident in changed:
        write_incidents(tx, [incident])


def _resolved(tx: Tx, key: str) -> bool:
    row = tx.execute("SELECT resolved_at FROM oncall_incidents WHERE key = ?", (key,)).fetchone()
    return row is not None and row[0] is not None


def _window(tx: Tx) -> float:
    row = tx.execute(
        "SELECT value FROM cursors WHERE source = 'incident' AND name = 'duplicate_window'"
    ).fetchone()
    return float(row[0]) if row is not None else DEFAULT_WINDOW


#: The duplicate window the writers use until the domain's refresh stores the configured one.
DEFAULT_WINDOW = 900.0


def set_duplicate_window(store: Store, window: float) -> None:
    """Store the configured duplicate window (the writers read it in their transaction);
    when it changed, every service's DORA incidents are derived again."""
    if store.get_cursor("incident", "duplicate_window") == repr(window):
        return
    with store.transaction() as tx:
        tx.set_cursor("incident", "duplicate_window", repr(window))
        services = [str(r[0]) for r in tx.execute("SELECT DISTINCT service FROM oncall_incidents")]
        for service in services:
            derive(tx, service, window)
        # Rows of services no on-call incident maps to any more.
        tx.execute(
            "DELETE FROM incidents WHERE source = ? AND service NOT IN "
            "(SELECT DISTINCT service FROM oncall_incidents WHERE counts = 1)",
            (DORA_SOURCE,),
        )


def derive(tx: Tx, service: str, window: float, around: tuple[float, float] = (-INF, INF)) -> None:
    """The service's DORA incidents: its counted on-call incidents, merged across tools.

    The service's issue incidents (GitHub and GitLab issues labelled as incidents, in the
    delivery domain) take part in the merge as a tool each: a group holding one is not
    written, as that issue already counts for it (with its own times and root cause).

    Only the incidents connected by overlapping spans to ``around`` are grouped again: a
    group's incidents overlap one another, so no group reaches past them. The range grows
    until no further incident overlaps it (an open incident reaches to the end of time).
    """
    lo, hi = around
    while True:
        rows = tx.execute(
            "SELECT key, source, opened_at, acknowledged_at, resolved_at, dedup_key "
            "FROM oncall_incidents WHERE service = ? AND counts = 1 AND opened_at <= ? "
            "AND (resolved_at IS NULL OR resolved_at >= ?)",
            (service, hi, lo),
        ).fetchall()
        issues = tx.execute(
            "SELECT key, source, opened_at, NULL, resolved_at, NULL FROM incidents "
            "WHERE service = ? AND source != ? AND opened_at <= ? "
            "AND (resolved_at IS NULL OR resolved_at >= ?)",
            (service, DORA_SOURCE, hi, lo),
        ).fetchall()
        spans = [_span(r) for r in rows]
        issue_spans = [_span(r) for r in issues] if spans else []
        every = [*spans, *issue_spans]
        grown = (min([lo, *(s.opened_at for s in every)]), max([hi, *(s.end for s in every)]))
        if grown == (lo, hi):
            break
        lo, hi = grown
    issue_keys = {s.key for s in issue_spans}
    groups = [
        g
        for g in merge_duplicates(every, window)
        if not any(m.key in issue_keys for m in g.members)
    ]
    replace_incidents(
        tx,
        DORA_SOURCE,
        service,
        [Incident(DORA_SOURCE, service, g.key, g.opened_at, g.resolved_at) for g in groups],
        overlapping=(lo, hi),
    )


def claims(store: Store) -> list[tuple[str, str, str]]:
    """(source, claim, service) of every claim stored with on-call incidents."""
    rows = store.query(
        "SELECT DISTINCT source, claim, service FROM oncall_incidents WHERE claim IS NOT NULL "
        "ORDER BY source, claim, service"
    )
    return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]


def move_claims(store: Store, moves: Sequence[tuple[str, str, str, str | None]]) -> None:
    """Move the incidents of each (source, claim, old service) to its new service, or drop
    them (None: nobody claims them), and derive both services' DORA incidents again, in
    one transaction. The incident counter is not moved: what it counted stays counted."""
    window = float(store.get_cursor("incident", "duplicate_window") or DEFAULT_WINDOW)
    touched: set[str] = set()
    with store.transaction() as tx:
        for source, claim, old, new in moves:
            where = "source = ? AND claim = ? AND service = ?"
            if new is None:
                tx.execute(f"DELETE FROM oncall_incidents WHERE {where}", (source, claim, old))
            else:
                tx.execute(
                    f"UPDATE oncall_incidents SET service = ? WHERE {where}",
                    (new, source, claim, old),
                )
                touched.add(new)
            touched.add(old)
        for service in sorted(touched):
            derive(tx, service, window)


def merge_issue_incidents(store: Store) -> None:
    """Derive again the DORA incidents of every service with both on-call and issue
    incidents: after a poll wrote issue incidents, which may duplicate on-call ones. So
    too of the services that had both at the last merge and no longer do (their issue
    incidents moved to another service with their repo): on-call groups an issue stood
    for count again."""
    window = float(store.get_cursor("incident", "duplicate_window") or DEFAULT_WINDOW)
    rows = store.query(
        "SELECT DISTINCT service FROM oncall_incidents WHERE counts = 1 AND service IN "
        "(SELECT DISTINCT service FROM incidents WHERE source != ?)",
        (DORA_SOURCE,),
    )
    both = sorted({str(r[0]) for r in rows})
    before = json.loads(store.get_cursor("incident", "merged_with_issues") or "[]")
    if not both and not before:
        return
    with store.transaction() as tx:
        for service in sorted(set(both) | set(before)):
            derive(tx, service, window)
        if both != before:
            tx.set_cursor("incident", "merged_with_issues", json.dumps(both))


def _span(r: Sequence[object]) -> Span:
    return Span(
        key=str(r[0]),
        source=str(r[1]),
        opened_at=float(r[2]),  # type: ignore[arg-type]
        acknowledged_at=None if r[3] is None else float(r[3]),  # type: ignore[arg-type]
        resolved_at=None if r[4] is None else float(r[4]),  # type: ignore[arg-type]
        dedup_key=None if r[5] is None else str(r[5]),
    )


def spans_since(store: Store, since: float) -> dict[str, list[Span]]:
    """The counted on-call incidents, per service, that are open or ended at or after
    ``since``, and those their spans overlap (so a group read is read whole)."""
    lo = since
    while True:
        rows = store.query(
            "SELECT service, key, source, opened_at, acknowledged_at, resolved_at, dedup_key "
            "FROM oncall_incidents WHERE resolved_at IS NULL AND counts = 1 "
            "UNION ALL "
            "SELECT service, key, source, opened_at, acknowledged_at, resolved_at, dedup_key "
            "FROM oncall_incidents WHERE resolved_at >= ? AND counts = 1",
            (lo,),
        )
        earliest = min([lo, *(float(r[3]) for r in rows)])
        if earliest >= lo:
            break
        lo = earliest
    out: dict[str, list[Span]] = {}
    for r in rows:
        out.setdefault(str(r[0]), []).append(_span(tuple(r)[1:]))
    return out


def open_counts(store: Store, now: float) -> list[tuple[str, str, int]]:
    """(service, source, incidents) open at ``now``: opened by then, not resolved by then."""
    rows = store.query(
        "SELECT service, source, COUNT(*) FROM ("
        "SELECT service, source, opened_at FROM oncall_incidents WHERE resolved_at IS NULL "
        "UNION ALL "
        "SELECT service, source, opened_at FROM oncall_incidents WHERE resolved_at > ?"
        ") WHERE opened_at <= ? GROUP BY service, source ORDER BY service, source",
        (now, now),
    )
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def stored_times(
    store: Store, source: str, since: float
) -> dict[str, tuple[float | None, float | None]]:
    """incident id -> (acknowledged_at, resolved_at) of the source's incidents opened at or
    after ``since``."""
    rows = store.query(
        "SELECT incident_id, acknowledged_at, resolved_at FROM oncall_incidents "
        "WHERE source = ? AND opened_at >= ?",
        (source, since),
    )
    return {
        str(r[0]): (
            None if r[1] is None else float(r[1]),
            None if r[2] is None else float(r[2]),
        )
        for r in rows
    }


def oldest_open(store: Store, source: str, since: float) -> float | None:
    """When the source's oldest incident still open (and opened after ``since``) opened."""
    row = store.query_one(
        "SELECT MIN(opened_at) FROM oncall_incidents WHERE source = ? "
        "AND resolved_at IS NULL AND opened_at >= ?",
        (source, since),
    )
    return None if row is None or row[0] is None else float(row[0])


def group_key_hash(group_key: str) -> str:
    """SHA-256 hex of an Alertmanager group key (Alertmanager's own ``Key.Hash``)."""
    return hashlib.sha256(group_key.encode()).hexdigest()


WRITERS: dict[type, Writer] = {
    OnCallIncident: write_incidents,
    AlertGroupNotice: write_alert_groups,
}
