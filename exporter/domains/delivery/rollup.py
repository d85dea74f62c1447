"""Delivery rollups: what each service's windowed KPIs need, kept at write time.

Lead time needs each deployment's shipped commits, found by walking the commit graph
from it to the previous production deployment: too costly to redo for every service at
every render. So whenever a write changes a service's deployments, commits, incidents
or merge requests, :func:`rebuild` recomputes that service's derived rows in the same
transaction (a service's rows depend on that service's records only, so it is exact
and idempotent, whatever order events arrive in). The writes that happen as things
happen, a deployment finished after the service's latest success and an incident
opening or resolving, update the rows they touch in place instead (:func:`update`,
:func:`update_incidents`), leaving everything else to the rebuild:

* ``delivery_lead_times``: every lead-time sample (deployment, commit, both commit
  times), for either squash rule, indexed by deployment finish time;
* ``delivery_lead_totals``: the histogram of every lead time, per squash rule and commit
  time; ``delivery_restore_totals``: of every time to restore;
* ``delivery_links``: the deployments an incident's named root cause links to;
* ``delivery_services``: whether the service has a production deployment, and when its
  root commit was made.

A render then reads index ranges from the earliest window start on, and the totals
(minus any event dated after now, which a total cannot leave out). Deployments are
sparse (under one per service and day at 500 repos), so a window counts them from the
``deployments`` index rather than from day buckets, which would hold more rows.

A database written before these tables existed lists its services as pending (the
migration does); :func:`catch_up` builds them a batch per transaction, logging its
progress, and until a service is built its view is computed from its raw records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from exporter.core.stats import histogram
from exporter.core.store import Store, Tx
from exporter.domains.delivery import kpis as kpi

log = logging.getLogger("exporter.delivery.rollup")

MIGRATION = """
CREATE INDEX deployments_finished ON deployments (production, finished_at);
CREATE INDEX deployments_first ON deployments (service, production, status, finished_at);
CREATE INDEX incidents_service ON incidents (service);
CREATE INDEX incidents_opened ON incidents (opened_at);
CREATE INDEX incidents_resolved ON incidents (resolved_at);
CREATE TABLE delivery_lead_times (
    service TEXT NOT NULL,
    squash INTEGER NOT NULL,
    deploy_key TEXT NOT NULL,
    sha TEXT NOT NULL,
    deployed_at REAL NOT NULL,
    authored_at REAL NOT NULL,
    committed_at REAL NOT NULL
);
CREATE INDEX delivery_lead_times_service ON delivery_lead_times (service);
CREATE INDEX delivery_lead_times_window ON delivery_lead_times (squash, deployed_at);
CREATE TABLE delivery_lead_totals (
    service TEXT NOT NULL,
    squash INTEGER NOT NULL,
    clock TEXT NOT NULL,
    counts TEXT NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (squash, clock, service)
);
CREATE TABLE delivery_restore_totals (
    service TEXT PRIMARY KEY,
    counts TEXT NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL
);
CREATE TABLE delivery_links (
    service TEXT NOT NULL,
    deploy_key TEXT NOT NULL,
    deployed_at REAL NOT NULL,
    PRIMARY KEY (service, deploy_key)
);
CREATE INDEX delivery_links_window ON delivery_links (deployed_at);
CREATE TABLE delivery_services (
    service TEXT PRIMARY KEY,
    has_deploys INTEGER NOT NULL,
    root_authored REAL,
    root_committed REAL
);
CREATE TABLE delivery_rollup_pending (service TEXT PRIMARY KEY);
INSERT OR IGNORE INTO delivery_rollup_pending (service)
    SELECT service FROM deployments UNION SELECT service FROM commits
    UNION SELECT service FROM incidents UNION SELECT service FROM merge_requests;
"""

CLOCKS = ("authored", "committed")
#: Services rebuilt per transaction when catching up.
BATCH = 100

_TABLES = (
    "delivery_lead_times",
    "delivery_lead_totals",
    "delivery_restore_totals",
    "delivery_links",
    "delivery_services",
    "delivery_rollup_pending",
)
Rows = Sequence[Sequence[Any]]


def load_service(
    rows: Any, commit_time: str, service: str | None = None
) -> dict[str, kpi.ServiceDelivery]:
    """Finished production deployments, commits, incidents and squashes per service (of
    ``service`` only, if given), read through ``rows(sql, params)``; each table in its
    stored order, so that sums come out as they did from raw rows."""
    where, params = ("", ()) if service is None else (" AND service = ?", (service,))
    out: dict[str, kpi.ServiceDelivery] = {}
    for row in rows(
        "SELECT service, key, sha, status, finished_at FROM deployments WHERE production = 1 "
        f"AND status IN ('success', 'failure') AND finished_at IS NOT NULL{where}",
        params,
    ):
        out.setdefault(str(row[0]), kpi.ServiceDelivery()).deploys.append(
            kpi.ProdDeploy(str(row[1]), str(row[2]), row[3] == "success", float(row[4]))
        )
    col = "authored_at" if commit_time == "authored" else "committed_at"
    for row in rows(f"SELECT service, sha, {col}, parents FROM commits WHERE 1 = 1{where}", params):
        out.setdefault(str(row[0]), kpi.ServiceDelivery()).commits[str(row[1])] = kpi.CommitNode(
            str(row[1]), float(row[2]), tuple(json.loads(row[3]))
        )
    for row in rows(
        "SELECT service, key, opened_at, resolved_at, deployment_sha FROM incidents "
        f"WHERE 1 = 1{where} ORDER BY rowid",
        params,
    ):
        out.setdefault(str(row[0]), kpi.ServiceDelivery()).incidents.append(
            kpi.IncidentSpan(
                str(row[1]),
                float(row[2]),
                None if row[3] is None else float(row[3]),
                None if row[4] is None else str(row[4]),
            )
        )
    for row in _squash_rows(rows, where, params):
        originals = tuple(str(sha) for sha in json.loads(row[2]))
        if originals:
            out.setdefault(str(row[0]), kpi.ServiceDelivery()).squashed[str(row[1])] = originals
    return out


def _squash_rows(rows: Any, where: str, params: Sequence[Any]) -> Any:
    return rows(
        "SELECT service, squash_commit_sha, commits FROM merge_requests "
        f"WHERE squash = 1 AND squash_commit_sha IS NOT NULL{where} ORDER BY rowid",
        params,
    )


def load_squashes(rows: Any, service: str) -> dict[str, tuple[str, ...]]:
    """The service's squash commits and the original commits each replaced."""
    out: dict[str, tuple[str, ...]] = {}
    for row in _squash_rows(rows, " AND service = ?", (service,)):
        originals = tuple(str(sha) for sha in json.loads(row[2]))
        if originals:
            out[str(row[1])] = originals
    return out


def _tx_rows(tx: Tx) -> Any:
    return lambda sql, params: tx.execute(sql, params).fetchall()


def rebuild(tx: Tx, services: Iterable[str]) -> None:
    """Recompute the derived rows of ``services`` from their raw records (see module doc).

    Every service's reads go in one batch (one round trip on PostgreSQL), after its rows
    are deleted; the rows written are sent with the transaction's next statement."""
    todo = sorted(set(services))
    reads: list[tuple[str, tuple[Any, ...]]] = []
    for service in todo:
        for table in _TABLES:
            tx.write_later(f"DELETE FROM {table} WHERE service = ?", (service,))
        load_service(_recorded(reads), "committed", service)
        reads.append((_AUTHORED, (service,)))
    answers = dict(zip(reads, tx.read_all(reads), strict=True))

    def rows(sql: str, params: Sequence[Any]) -> list[Any]:
        return answers[(sql, tuple(params))]

    for service in todo:
        d = load_service(rows, "committed", service).get(service)
        if d is not None:
            _write_service(tx, service, d, rows(_AUTHORED, (service,)))


_AUTHORED = "SELECT sha, authored_at FROM commits WHERE service = ?"


def _recorded(reads: list[tuple[str, tuple[Any, ...]]]) -> Any:
    """A ``rows`` for :func:`load_service` that notes each read it is asked and answers
    none: what a rebuild then reads in one batch."""

    def rows(sql: str, params: Sequence[Any]) -> list[Any]:
        reads.append((sql, tuple(params)))
        return []

    return rows


_PENDING = "delivery.rollup.rebuild"


def rebuild_later(tx: Tx, services: Iterable[str]) -> None:
    """:func:`rebuild` ``services`` once, at the end of the transaction: a poll's unit
    writes a service's deployments, commits and merge requests in turn, and each would
    otherwise rebuild it."""
    pending: set[str] = tx.memo.setdefault(_PENDING, set())
    pending.update(services)
    if pending:
        tx.defer(_PENDING, lambda: rebuild(tx, tx.memo.pop(_PENDING, ())))


def _rebuilding(tx: Tx) -> set[str]:
    """The services whose rebuild is pending in the transaction (their incremental
    updates would be undone by it)."""
    pending: set[str] = tx.memo.get(_PENDING, set())
    return pending


def _write_service(
    tx: Tx, service: str, d: kpi.ServiceDelivery, authored_rows: Sequence[Any]
) -> None:
    authored = {str(r[0]): float(r[1]) for r in authored_rows}
    for squash in (1, 0):
        leads = kpi.lead_times(d.deploys, d.commits, d.squashed if squash else None)
        _insert_leads(tx, service, squash, leads, d.commits, authored)
        for clock in CLOCKS:
            at = authored if clock == "authored" else {k: c.at for k, c in d.commits.items()}
            counts, total, n = histogram(
                (max(0.0, s.deployed_at - at[s.sha]) for s in leads), kpi.LEAD_TIME_BUCKETS
            )
            if n:
                tx.write_later(
                    "INSERT INTO delivery_lead_totals (service, squash, clock, counts, sum, count) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (service, squash, clock, json.dumps(counts), total, n),
                )
    counts, total, n = histogram(_restore_seconds(d.incidents), kpi.RESTORE_BUCKETS)
    if n:
        tx.write_later(
            "INSERT INTO delivery_restore_totals (service, counts, sum, count) VALUES (?, ?, ?, ?)",
            (service, json.dumps(counts), total, n),
        )
    finished = {x.key: x.finished_at for x in d.deploys}
    tx.write_many_later(
        "INSERT INTO delivery_links (service, deploy_key, deployed_at) VALUES (?, ?, ?)",
        [
            (service, key, finished[key])
            for key in sorted(kpi.root_cause_links(d.deploys, d.incidents, d.commits, d.squashed))
        ],
    )
    roots = [sha for sha, c in d.commits.items() if not c.parents]
    tx.write_later(
        "INSERT INTO delivery_services (service, has_deploys, root_authored, root_committed) "
        "VALUES (?, ?, ?, ?)",
        (
            service,
            int(bool(d.deploys)),
            min((authored[sha] for sha in roots), default=None),
            min((d.commits[sha].at for sha in roots), default=None),
        ),
    )


Change = tuple[kpi.ProdDeploy | None, kpi.ProdDeploy | None]


def counted(
    key: str, sha: str, production: bool, status: str, finished_at: float | None
) -> kpi.ProdDeploy | None:
    """A deployment as the rollups see it: a finished production one, else None."""
    if not production or status not in ("success", "failure") or finished_at is None:
        return None
    return kpi.ProdDeploy(key, sha, status == "success", float(finished_at))


def update(tx: Tx, changes: Mapping[str, Sequence[Change]]) -> None:
    """Bring the rollups of services whose deployments changed (each change: the
    deployment as the rollups saw it before the write, and after it) up to date.

    The common change, a new finished deployment after every other success of its
    service (what a webhook or a poll brings as it happens), only adds rows: its lead
    times, added to the service's totals, and ``has_deploys``. It reads the service's
    commits only when the deployed commit is one of them (it may then ship commits).
    Anything else (a deployment rewritten, several at once, one finished before the
    latest success, a service with incidents naming a root-cause commit, whose links
    it could move) rebuilds the service, as :func:`rebuild` would; the rows are the
    same either way (the totals' sums add in the rebuild's order)."""
    later = _rebuilding(tx)
    todo = [
        s
        for s, c in changes.items()
        if s in later or not _added(tx, s, [x for x in c if x[0] != x[1]])
    ]
    rebuild_later(tx, todo)


def _added(tx: Tx, service: str, changes: Sequence[Change]) -> bool:
    """Add ``changes`` to the service's rollups if that is exact (see :func:`update`);
    False, touching nothing, if the service needs a rebuild."""
    if not changes:
        return True  # nothing the rollups count changed
    old, new = changes[0]
    if len(changes) > 1 or old is not None or new is None:
        return False
    one = "SELECT 1 FROM {} WHERE service = ?{} LIMIT 1"
    if (
        tx.execute(one.format("delivery_rollup_pending", ""), (service,)).fetchone()
        or (
            tx.execute(one.format("incidents", " AND deployment_sha IS NOT NULL"), (service,))
        ).fetchone()
    ):
        return False
    if (
        tx.execute(
            "UPDATE delivery_services SET has_deploys = 1 WHERE service = ?", (service,)
        ).rowcount
        == 0
    ):
        return False  # no row yet: the service's first rollups
    if not new.success:
        return True  # a failure ships nothing
    row = tx.execute(
        "SELECT key, sha, finished_at FROM deployments WHERE service = ? AND production = 1 "
        "AND status = 'success' AND finished_at IS NOT NULL AND key != ? "
        "ORDER BY finished_at DESC, key DESC LIMIT 1",
        (service, new.key),
    ).fetchone()
    prev = None if row is None else kpi.ProdDeploy(str(row[0]), str(row[1]), True, float(row[2]))
    if prev is not None and (prev.finished_at, prev.key) > (new.finished_at, new.key):
        return False  # finished before the latest success: it changes the next one's
    if tx.execute(one.format("commits", " AND sha = ?"), (service, new.sha)).fetchone() is None:
        return True  # an unknown commit ships nothing (until its commits are written)
    commits, authored, squashed = _graph(tx, service)
    for squash in (1, 0):
        leads = kpi.lead_times_of(new, prev, commits, squashed if squash else None)
        _add_leads(tx, service, squash, leads, commits, authored)
    return True


IncidentChange = tuple[kpi.IncidentSpan | None, kpi.IncidentSpan]


def update_incidents(tx: Tx, changes: Mapping[str, Sequence[IncidentChange]]) -> None:
    """Bring the rollups of services whose incidents changed (each change: the incident
    before the write, None if new, and after it) up to date.

    An incident that names no root cause changes only the time-to-restore totals: a new
    one, or an open one resolving, adds its time to restore to them in place. Anything
    else (a resolved incident changed, one naming a root-cause commit, whose links it
    could move) rebuilds the service, as :func:`rebuild` would. The counts are the
    same either way; the sum may differ from the rebuild's in its last bits (it adds in
    another order), and not at all for whole seconds."""
    later = _rebuilding(tx)
    todo = [s for s, c in changes.items() if s in later or not _restores_added(tx, s, c)]
    rebuild_later(tx, todo)


def _restores_added(tx: Tx, service: str, changes: Sequence[IncidentChange]) -> bool:
    values: list[float] = []
    for old, new in changes:
        if new.deployment_sha is not None or (old is not None and old.deployment_sha is not None):
            return False
        if old is not None and (old.resolved_at is not None or old.opened_at != new.opened_at):
            return False
        values.extend(_restore_seconds([new]))
    one = "SELECT 1 FROM {} WHERE service = ? LIMIT 1"
    if tx.execute(one.format("delivery_rollup_pending"), (service,)).fetchone() or (
        tx.execute(one.format("delivery_services"), (service,)).fetchone() is None
    ):
        return False
    if not values:
        return True
    row = tx.execute(
        "SELECT counts, sum, count FROM delivery_restore_totals WHERE service = ?", (service,)
    ).fetchone()
    counts, total, n = histogram(values, kpi.RESTORE_BUCKETS)
    if row is not None:
        counts, total, n = _added_to(row, values, counts, n)
    tx.execute(
        "INSERT INTO delivery_restore_totals (service, counts, sum, count) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (service) DO UPDATE SET counts = excluded.counts, sum = excluded.sum, "
        "count = excluded.count",
        (service, json.dumps(counts), total, n),
    )
    return True


def _added_to(
    row: Sequence[Any], values: Sequence[float], counts: Sequence[int], n: int
) -> tuple[list[int], float, int]:
    """A stored histogram row (counts, sum, count) with ``values`` (whose counts and
    number are given) added; the values one by one after the stored sum, as the
    rebuild's ``sum()`` adds them."""
    total = float(row[1])
    for v in values:
        total += v
    return [a + b for a, b in zip(json.loads(row[0]), counts, strict=True)], total, n + int(row[2])


def _graph(
    tx: Tx, service: str
) -> tuple[dict[str, kpi.CommitNode], dict[str, float], dict[str, tuple[str, ...]]]:
    """The service's commits (by commit time), their author times and its squashes, as
    :func:`load_service` reads them."""
    commits: dict[str, kpi.CommitNode] = {}
    authored: dict[str, float] = {}
    for r in tx.execute(
        "SELECT sha, authored_at, committed_at, parents FROM commits WHERE service = ?",
        (service,),
    ):
        commits[str(r[0])] = kpi.CommitNode(str(r[0]), float(r[2]), tuple(json.loads(r[3])))
        authored[str(r[0])] = float(r[1])
    return commits, authored, load_squashes(_tx_rows(tx), service)


def _add_leads(
    tx: Tx,
    service: str,
    squash: int,
    leads: Sequence[kpi.LeadTime],
    commits: Mapping[str, kpi.CommitNode],
    authored: Mapping[str, float],
) -> None:
    """Store one deployment's lead-time samples and add them to the service's totals."""
    _insert_leads(tx, service, squash, leads, commits, authored)
    for clock in CLOCKS:
        at = authored if clock == "authored" else {k: c.at for k, c in commits.items()}
        values = [max(0.0, s.deployed_at - at[s.sha]) for s in leads]
        if not values:
            continue
        row = tx.execute(
            "SELECT counts, sum, count FROM delivery_lead_totals "
            "WHERE squash = ? AND clock = ? AND service = ?",
            (squash, clock, service),
        ).fetchone()
        counts, total, n = histogram(values, kpi.LEAD_TIME_BUCKETS)
        if row is not None:
            counts, total, n = _added_to(row, values, counts, n)
        tx.execute(
            "INSERT INTO delivery_lead_totals (service, squash, clock, counts, sum, count) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (squash, clock, service) DO UPDATE SET "
            "counts = excluded.counts, sum = excluded.sum, count = excluded.count",
            (service, squash, clock, json.dumps(counts), total, n),
        )


def _insert_leads(
    tx: Tx,
    service: str,
    squash: int,
    leads: Iterable[kpi.LeadTime],
    commits: Mapping[str, kpi.CommitNode],
    authored: Mapping[str, float],
) -> None:
    tx.write_many_later(
        "INSERT INTO delivery_lead_times (service, squash, deploy_key, sha, deployed_at, "
        "authored_at, committed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                service,
                squash,
                s.deploy_key,
                s.sha,
                s.deployed_at,
                authored[s.sha],
                commits[s.sha].at,
            )
            for s in leads
        ],
    )


def _restore_seconds(incidents: Iterable[kpi.IncidentSpan]) -> list[float]:
    return [max(0.0, i.resolved_at - i.opened_at) for i in incidents if i.resolved_at is not None]


def pending(store: Store) -> list[str]:
    """Services whose rollups are not built yet (a database from before they existed)."""
    return [str(r[0]) for r in store.query("SELECT service FROM delivery_rollup_pending")]


def catch_up(config: object, store: Store, now: float) -> None:
    """Build the rollups of every pending service, :data:`BATCH` per transaction."""
    del config, now  # a refresh hook's signature; the rollups depend on neither
    todo = sorted(pending(store))
    done = 0
    while done < len(todo):
        batch = todo[done : done + BATCH]
        with store.transaction() as tx:
            rebuild(tx, batch)
        done += len(batch)
        log.info("delivery rollups: %d of %d services built", done, len(todo))


# --- the render's reads -------------------------------------------------------------


def _histograms(totals: Rows, future: Rows, bounds: Sequence[float]) -> dict[str, kpi.Histogram]:
    """Per service: its total histogram, minus the values dated after now."""
    out: dict[str, kpi.Histogram] = {
        str(r[0]): (json.loads(r[1]), float(r[2]), int(r[3])) for r in totals
    }
    later: dict[str, list[float]] = {}
    for service, seconds in future:
        later.setdefault(str(service), []).append(float(seconds))
    for service, values in later.items():
        if service not in out:
            continue  # not built yet: its view comes from its raw records
        counts, total, n = out[service]
        minus, less, m = histogram(values, bounds)
        out[service] = (
            histogram([], bounds)
            if n == m
            else ([a - b for a, b in zip(counts, minus, strict=True)], total - less, n - m)
        )
    return out


def _grouped(rows: Rows, make: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in rows:
        out.setdefault(str(r[0]), []).append(make(r))
    return out


def _deploy(r: Sequence[Any]) -> kpi.ProdDeploy:
    return kpi.ProdDeploy(str(r[1]), str(r[2]), r[3] == "success", float(r[4]))


def _lead(r: Sequence[Any]) -> tuple[float, float]:
    return float(r[1]), float(r[2])


def _restore(r: Sequence[Any]) -> tuple[float, float]:
    return float(r[1]), max(0.0, float(r[1]) - float(r[2]))


def _recent(store: Store, since: float, squash: int, col: str) -> dict[str, dict[str, list[Any]]]:
    """Per kind of event, per service: the events since ``since`` (index ranges)."""
    q = store.query
    return {
        "deploys": _grouped(
            q(
                "SELECT service, key, sha, status, finished_at FROM deployments "
                "WHERE production = 1 AND finished_at >= ? AND status IN ('success', 'failure')",
                (since,),
            ),
            _deploy,
        ),
        "leads": _grouped(
            q(
                f"SELECT service, deployed_at, MAX(0.0, deployed_at - {col}) FROM delivery_lead_times "
                "WHERE squash = ? AND deployed_at >= ?",
                (squash, since),
            ),
            _lead,
        ),
        "linked": _grouped(
            q("SELECT service, deploy_key FROM delivery_links WHERE deployed_at >= ?", (since,)),
            lambda r: str(r[1]),
        ),
        "timed": _grouped(
            q(
                "SELECT service, opened_at FROM incidents "
                "WHERE opened_at >= ? AND deployment_sha IS NULL",
                (since,),
            ),
            lambda r: float(r[1]),
        ),
        "restores": _grouped(
            q(
                "SELECT service, resolved_at, opened_at FROM incidents WHERE resolved_at >= ?",
                (since,),
            ),
            _restore,
        ),
    }


def _totals(
    store: Store, squash: int, commit_time: str, col: str, now: float
) -> tuple[dict[str, kpi.Histogram], dict[str, kpi.Histogram]]:
    """Per service: the lead-time and the time-to-restore histograms of all time by now."""
    q = store.query
    lead = _histograms(
        q(
            "SELECT service, counts, sum, count FROM delivery_lead_totals "
            "WHERE squash = ? AND clock = ?",
            (squash, commit_time),
        ),
        q(
            f"SELECT service, MAX(0.0, deployed_at - {col}) FROM delivery_lead_times "
            "WHERE squash = ? AND deployed_at > ?",
            (squash, now),
        ),
        kpi.LEAD_TIME_BUCKETS,
    )
    restore = _histograms(
        q("SELECT service, counts, sum, count FROM delivery_restore_totals"),
        q(
            "SELECT service, MAX(0.0, resolved_at - opened_at) FROM incidents "
            "WHERE resolved_at > ?",
            (now,),
        ),
        kpi.RESTORE_BUCKETS,
    )
    return lead, restore


def views(
    store: Store,
    services: Iterable[str],
    rules: kpi.DeliveryRules,
    commit_time: str,
    registered: Mapping[str, float | None],
    now: float,
) -> dict[str, kpi.DeliveryView]:
    """Each service's :class:`~kpis.DeliveryView` at ``now``: from the rollups, or from the
    raw records of a service whose rollups are not built yet."""
    squash = int(rules.squash_lead_time == "original_commits")
    col = "authored_at" if commit_time == "authored" else "committed_at"
    recent = _recent(store, kpi.window_start(now), squash, col)
    lead_hist, restore_hist = _totals(store, squash, commit_time, col, now)
    root = "root_authored" if commit_time == "authored" else "root_committed"
    firsts = {
        str(r[0]): (bool(r[1]), None if r[2] is None else float(r[2]))
        for r in store.query(f"SELECT service, has_deploys, {root} FROM delivery_services")
    }
    waiting = set(pending(store))
    out: dict[str, kpi.DeliveryView] = {}
    for service in sorted(set(services)):
        registered_at = registered.get(service)
        if service in waiting:
            d = load_service(store.query, commit_time, service).get(service)
            out[service] = kpi.view_of(d or kpi.ServiceDelivery(), rules, registered_at, now)
            continue
        has, first_commit = firsts.get(service, (False, None))
        start = kpi.production_start_at(first_commit, registered_at, now, rules.backfill_days)
        out[service] = kpi.DeliveryView(
            has_deploys=has,
            deploys=recent["deploys"].get(service, []),
            leads=recent["leads"].get(service, []),
            linked=frozenset(recent["linked"].get(service, ())),
            timed_incidents=recent["timed"].get(service, []),
            restores=recent["restores"].get(service, []),
            lead_histogram=lead_hist.get(service) or histogram([], kpi.LEAD_TIME_BUCKETS),
            restore_histogram=restore_hist.get(service) or histogram([], kpi.RESTORE_BUCKETS),
            production_start=start,
            first_production=_first_production(store, service, start, now),
        )
    return out


def _first_production(store: Store, service: str, start: float | None, now: float) -> float | None:
    if start is None:
        return None
    row = store.query_one(
        "SELECT MIN(finished_at) FROM deployments WHERE service = ? AND production = 1 "
        "AND status = 'success' AND finished_at >= ? AND finished_at <= ?",
        (service, start, now),
    )
    return None if row is None or row[0] is None else float(row[0])
