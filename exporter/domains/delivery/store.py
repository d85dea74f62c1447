"""Delivery records (runs, deployments, commits, merge requests, incidents): tables and queries.

Pipeline runs are immutable once finished: a new one bumps the run counter and
the duration and queue histograms in the same transaction as its insert.
Deployments change state (pending, then success or failure): the deployment
counter is bumped once, when a deployment is first seen finished. Lead time,
change failure, time to restore and time to production are recomputed from
these tables on every render, so a late or out-of-order event lands where its
timestamps say, never where it arrived.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from exporter.core.store import Store, Tx, Writer
from exporter.domains.delivery import rollup
from exporter.domains.delivery.kpis import (
    PIPELINE_DURATION_BUCKETS,
    QUEUE_BUCKETS,
    IncidentSpan,
    ServiceDelivery,
)
from exporter.domains.delivery.records import (
    Commit,
    Deployment,
    Incident,
    MergeRequest,
    PipelineRun,
)

MIGRATIONS = (
    """
    CREATE TABLE pipeline_runs (
        key TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        service TEXT NOT NULL,
        pipeline TEXT NOT NULL,
        result TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL NOT NULL
    );
    CREATE INDEX pipeline_runs_finished ON pipeline_runs (finished_at);
    CREATE INDEX pipeline_runs_service ON pipeline_runs (service, pipeline);
    CREATE TABLE deployments (
        key TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        service TEXT NOT NULL,
        environment TEXT NOT NULL,
        production INTEGER NOT NULL,
        sha TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX deployments_service ON deployments (service, production);
    CREATE TABLE commits (
        service TEXT NOT NULL,
        sha TEXT NOT NULL,
        authored_at REAL NOT NULL,
        committed_at REAL NOT NULL,
        parents TEXT NOT NULL,
        PRIMARY KEY (service, sha)
    );
    CREATE TABLE incidents (
        key TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        service TEXT NOT NULL,
        opened_at REAL NOT NULL,
        resolved_at REAL,
        deployment_sha TEXT
    );
    """,
    """
    CREATE TABLE merge_requests (
        key TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        service TEXT NOT NULL,
        merged_at REAL NOT NULL,
        sha TEXT NOT NULL,
        merge_commit_sha TEXT,
        squash_commit_sha TEXT,
        squash INTEGER NOT NULL,
        commits TEXT NOT NULL
    );
    CREATE INDEX merge_requests_service ON merge_requests (service);
    """,
    rollup.MIGRATION,
    # The repo (project, job) each record was read from, so a catalog change can give a
    # repo's records to the service that claims it now (see delivery.attribution).
    """
    ALTER TABLE pipeline_runs ADD COLUMN repo TEXT;
    ALTER TABLE deployments ADD COLUMN repo TEXT;
    ALTER TABLE commits ADD COLUMN repo TEXT;
    ALTER TABLE merge_requests ADD COLUMN repo TEXT;
    CREATE INDEX pipeline_runs_repo ON pipeline_runs (repo, service);
    CREATE INDEX deployments_repo ON deployments (repo, service);
    CREATE INDEX commits_repo ON commits (repo, service);
    CREATE INDEX merge_requests_repo ON merge_requests (repo, service);
    CREATE TABLE delivery_repos (repo TEXT PRIMARY KEY);
    """,
    # Issue incidents follow their repo too (derived on-call incidents have none).
    """
    ALTER TABLE incidents ADD COLUMN repo TEXT;
    CREATE INDEX incidents_repo ON incidents (repo, service);
    """,
)
# The tables whose records carry their repo.
REPO_TABLES = ("pipeline_runs", "deployments", "commits", "merge_requests", "incidents")

RUNS_TOTAL = "platform_pipeline_runs_total"
RUN_DURATION = "platform_pipeline_duration_seconds"
RUN_QUEUE = "platform_pipeline_queue_seconds"
DEPLOYMENTS_TOTAL = "platform_deployments_total"

FINISHED = ("success", "failure")
# Distinct pipeline names kept per service; runs of any further one count as "other".
MAX_PIPELINES_PER_SERVICE = 50


def write_runs(tx: Tx, runs: Sequence[PipelineRun]) -> None:
    """Insert finished runs; count and observe only those not seen before."""
    stored = tx.stored_rows("pipeline_runs", (), ("key",), [(r.key,) for r in runs])
    fresh: list[PipelineRun] = []
    rows: list[dict[str, object]] = []
    for r in runs:
        if (r.key,) in stored:
            continue
        stored[(r.key,)] = ()  # a second copy in the batch is not new either
        pipeline = _bounded_pipeline(tx, r.service, r.pipeline)
        fresh.append(r)
        rows.append(
            {
                "key": r.key,
                "source": r.source,
                "service": r.service,
                "pipeline": pipeline,
                "result": r.result,
                "created_at": r.created_at,
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                **_repo(tx, r.repo),
            }
        )
    for r, row, new in zip(
        fresh, rows, tx.insert_new_many("pipeline_runs", rows, ("key",)), strict=True
    ):
        if not new:
            continue
        labels = {"service": r.service, "pipeline": str(row["pipeline"])}
        tx.incr(RUNS_TOTAL, {**labels, "result": r.result})
        started = r.started_at if r.started_at is not None else r.created_at
        tx.observe(
            RUN_DURATION, labels, max(0.0, r.finished_at - started), PIPELINE_DURATION_BUCKETS
        )
        if r.started_at is not None:
            tx.observe(RUN_QUEUE, labels, max(0.0, r.started_at - r.created_at), QUEUE_BUCKETS)


def _repo(tx: Tx, repo: str) -> dict[str, str]:
    """The ``repo`` column of a record read from a known repo (noted in ``delivery_repos``,
    once per transaction); none otherwise, so an update from a source that does not know it
    keeps the stored one."""
    if not repo:
        return {}
    noted: set[str] = tx.memo.setdefault("delivery.repos", set())
    if repo not in noted:
        tx.write_later(
            "INSERT INTO delivery_repos (repo) VALUES (?) ON CONFLICT DO NOTHING", (repo,)
        )
        noted.add(repo)
    return {"repo": repo}


def repos(store: Store) -> list[str]:
    """Every repo records were stored from."""
    return [str(r[0]) for r in store.query("SELECT repo FROM delivery_repos ORDER BY repo")]


def move_repo(tx: Tx, repo: str, service: str) -> set[str]:
    """Give every stored record of ``repo`` to ``service`` and rebuild the rollups of the
    services concerned; return the services it left (none: nothing moved). A commit the
    service already holds (the same sha, read again after the claim) is kept once."""
    left: set[str] = set()
    for table in REPO_TABLES:
        rows = tx.execute(
            f"SELECT DISTINCT service FROM {table} WHERE repo = ? AND service != ?",
            (repo, service),
        )
        left.update(str(r[0]) for r in rows)
    if not left:
        return left
    for table in REPO_TABLES:
        tx.execute(
            f"UPDATE OR IGNORE {table} SET service = ? WHERE repo = ? AND service != ?",
            (service, repo, service),
        )
    tx.execute("DELETE FROM commits WHERE repo = ? AND service != ?", (repo, service))
    tx.memo.pop(_PIPELINES, None)  # the services' pipelines changed
    rollup.rebuild(tx, left | {service})
    return left


_PIPELINES = "delivery.pipelines"


def _bounded_pipeline(tx: Tx, service: str, pipeline: str) -> str:
    """The pipeline label of a new run of ``service``: its own name while the service has
    fewer than :data:`MAX_PIPELINES_PER_SERVICE` (or already has it), else ``other``. The
    service's stored pipelines are read once per transaction, the new runs' added."""
    known: dict[str, set[str]] = tx.memo.setdefault(_PIPELINES, {})
    names = known.get(service)
    if names is None:
        names = known[service] = {
            str(r[0])
            for r in tx.execute(
                "SELECT DISTINCT pipeline FROM pipeline_runs WHERE service = ?", (service,)
            )
        }
    label = pipeline if pipeline in names or len(names) < MAX_PIPELINES_PER_SERVICE else "other"
    names.add(label)
    return label


def write_deployments(tx: Tx, deployments: Sequence[Deployment]) -> None:
    """Upsert deployments; count each one once, when it is first seen finished."""
    changed: set[str] = set()
    changes: dict[str, list[rollup.Change]] = {}
    rows = [
        {
            "key": d.key,
            "source": d.source,
            "service": d.service,
            "environment": d.environment,
            "production": int(d.production),
            "sha": d.sha,
            "status": d.status,
            "created_at": d.created_at,
            "finished_at": d.finished_at,
            **_repo(tx, d.repo),
        }
        for d in deployments
    ]
    for d, (outcome, old) in zip(
        deployments, tx.upsert_many("deployments", rows, ("key",)), strict=True
    ):
        # old: key, source, service, environment, production, sha, status, created_at, ...
        if outcome != "unchanged" and old is not None and str(old[2]) != d.service:
            changed.update({d.service, str(old[2])})  # moved: both services rebuilt
        elif outcome != "unchanged":
            before = None if old is None else rollup.counted(d.key, old[5], old[4], old[6], old[8])
            after = rollup.counted(d.key, d.sha, d.production, d.status, d.finished_at)
            changes.setdefault(d.service, []).append((before, after))
        was_finished = old is not None and old[6] in FINISHED
        if d.status in FINISHED and not was_finished:
            tx.incr(
                DEPLOYMENTS_TOTAL,
                {"service": d.service, "environment": d.environment, "result": d.status},
            )
    rollup.rebuild_later(tx, changed)
    rollup.update(tx, {s: c for s, c in changes.items() if s not in changed})


def write_commits(tx: Tx, commits: Sequence[Commit]) -> None:
    rows = [
        {
            "service": c.service,
            "sha": c.sha,
            "authored_at": c.authored_at,
            "committed_at": c.committed_at,
            "parents": json.dumps(list(c.parents)),
            **_repo(tx, c.repo),
        }
        for c in commits
    ]
    new = tx.insert_new_many("commits", rows, ("service", "sha"))
    rollup.rebuild_later(tx, {c.service for c, n in zip(commits, new, strict=True) if n})


def write_incidents(tx: Tx, incidents: Sequence[Incident]) -> None:
    columns = ("key", "source", "service", "opened_at", "resolved_at", "deployment_sha")
    changed: set[str] = set()
    changes: dict[str, list[rollup.IncidentChange]] = {}
    rows = [{**{c: getattr(i, c) for c in columns}, **_repo(tx, i.repo)} for i in incidents]
    for i, (outcome, old) in zip(
        incidents, tx.upsert_many("incidents", rows, ("key",)), strict=True
    ):
        # old: key, source, service, opened_at, resolved_at, deployment_sha, ...
        if outcome == "unchanged":
            continue
        if old is not None and str(old[2]) != i.service:
            # An incident moved to another service changes the old one's rollups too.
            changed.update({i.service, str(old[2])})
            continue
        before = None if old is None else IncidentSpan(i.key, old[3], old[4], old[5])
        after = IncidentSpan(i.key, i.opened_at, i.resolved_at, i.deployment_sha)
        changes.setdefault(i.service, []).append((before, after))
    rollup.rebuild_later(tx, changed)
    rollup.update_incidents(tx, {s: c for s, c in changes.items() if s not in changed})


def replace_incidents(
    tx: Tx,
    source: str,
    service: str,
    incidents: Sequence[Incident],
    overlapping: tuple[float, float] | None = None,
) -> None:
    """Make ``incidents`` the service's incidents of ``source`` (those whose span overlaps
    ``overlapping`` when given: the others stay): the new and changed ones written, the
    rest deleted. For a set derived elsewhere (on-call incidents merged across tools)
    whose members may merge or split."""
    where = "source = ? AND service = ?"
    params: list[object] = [source, service]
    if overlapping is not None:
        where += " AND opened_at <= ? AND (resolved_at IS NULL OR resolved_at >= ?)"
        params += [overlapping[1], overlapping[0]]
    stored = {
        str(r[0]): (float(r[1]), None if r[2] is None else float(r[2]), r[3])
        for r in tx.execute(
            f"SELECT key, opened_at, resolved_at, deployment_sha FROM incidents WHERE {where}",
            params,
        )
    }
    wanted = {i.key: i for i in incidents}
    gone = [(key,) for key in stored if key not in wanted]
    tx.executemany("DELETE FROM incidents WHERE key = ?", gone)
    if gone:
        rollup.rebuild_later(tx, {service})
    changed = [
        i
        for key, i in wanted.items()
        if stored.get(key) != (i.opened_at, i.resolved_at, i.deployment_sha)
    ]
    write_incidents(tx, changed)


def write_merge_requests(tx: Tx, merge_requests: Sequence[MergeRequest]) -> None:
    rows = [
        {
            "key": m.key,
            "source": m.source,
            "service": m.service,
            "merged_at": m.merged_at,
            "sha": m.sha,
            "merge_commit_sha": m.merge_commit_sha,
            "squash_commit_sha": m.squash_commit_sha,
            "squash": int(m.squash),
            "commits": json.dumps(list(m.commits)),
            **_repo(tx, m.repo),
        }
        for m in merge_requests
    ]
    outcomes = tx.upsert_many("merge_requests", rows, ("key",))
    rollup.rebuild_later(
        tx,
        {m.service for m, (o, _) in zip(merge_requests, outcomes, strict=True) if o != "unchanged"},
    )


def load(store: Store, commit_time: str) -> dict[str, ServiceDelivery]:
    """Every service's finished production deployments, commits, incidents and squashes,
    from the raw tables (the windowed KPIs read :func:`rollup.views` instead)."""
    return rollup.load_service(store.query, commit_time)


def known_merge_requests(store: Store, source: str, prefix: str) -> set[str]:
    """Keys of this source's merge requests whose ``mr_id`` starts with ``prefix``."""
    rows = store.query(
        "SELECT key FROM merge_requests WHERE source = ? AND key LIKE ?",
        (source, f"{source}/{prefix}%"),
    )
    return {str(r[0]) for r in rows}


def pending_deployments(store: Store, source: str) -> list[tuple[str, str]]:
    """(key, sha) of this source's deployments not finished yet."""
    rows = store.query(
        "SELECT key, sha FROM deployments WHERE source = ? AND status NOT IN ('success', 'failure')",
        (source,),
    )
    return [(str(r[0]), str(r[1])) for r in rows]


def last_production_sha(store: Store, service: str) -> str | None:
    row = store.query_one(
        "SELECT sha FROM deployments WHERE service = ? AND production = 1 AND status = 'success' "
        "ORDER BY finished_at DESC LIMIT 1",
        (service,),
    )
    return None if row is None else str(row[0])


WRITERS: dict[type, Writer] = {
    PipelineRun: write_runs,
    Deployment: write_deployments,
    Commit: write_commits,
    Incident: write_incidents,
    MergeRequest: write_merge_requests,
}


def has_commit(store: Store, service: str, sha: str) -> bool:
    """Whether the service's commit ``sha`` is stored."""
    row = store.query_one("SELECT 1 FROM commits WHERE service = ? AND sha = ?", (service, sha))
    return row is not None


def previous_production_deploy(
    store: Store, service: str, before: float
) -> tuple[float, str] | None:
    """(finished_at, sha) of the service's latest successful production deployment that
    finished before ``before``, if one is stored."""
    row = store.query_one(
        "SELECT finished_at, sha FROM deployments WHERE service = ? AND production = 1 "
        "AND status = 'success' AND finished_at < ? ORDER BY finished_at DESC LIMIT 1",
        (service, before),
    )
    return None if row is None else (float(row[0]), str(row[1]))


def finished_deployment_keys(store: Store, source: str, prefix: str) -> set[str]:
    """Keys of this source's finished (success or failure) deployments starting with ``prefix``."""
    rows = store.query(
        "SELECT key FROM deployments WHERE source = ? AND key LIKE ? "
        "AND status IN ('success', 'failure')",
        (source, f"{prefix}%"),
    )
    return {str(r[0]) for r in rows}


def last_run_finished(store: Store, prefix: str) -> float | None:
    """When the newest stored pipeline run whose key starts with ``prefix`` finished."""
    row = store.query_one(
        "SELECT MAX(finished_at) FROM pipeline_runs WHERE key LIKE ?", (f"{prefix}%",)
    )
    return None if row is None or row[0] is None else float(row[0])


def run_keys(store: Store, prefix: str) -> set[str]:
    """Keys of the stored pipeline runs starting with ``prefix``."""
    rows = store.query("SELECT key FROM pipeline_runs WHERE key LIKE ?", (f"{prefix}%",))
    return {str(r[0]) for r in rows}


def last_runs_per_pipeline(store: Store, since: float) -> list[tuple[str, str, float]]:
    """(service, pipeline, last finished_at) of the runs finished after ``since``."""
    if not store.has_table("pipeline_runs"):
        return []
    # Left to itself the planner walks the whole (service, pipeline) index to group
    # without sorting; the window's range of finished_at is what should bound the read.
    rows = store.query(
        "SELECT service, pipeline, MAX(finished_at) FROM pipeline_runs "
        "INDEXED BY pipeline_runs_finished WHERE finished_at > ? GROUP BY service, pipeline",
        (since,),
    )
    return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]


def production_deploy_span(store: Store) -> dict[str, tuple[float, float]] | None:
    """service -> (first, last) successful production deployment; None without the table."""
    if not store.has_table("deployments"):
        return None
    rows = store.query(
        "SELECT service, MIN(finished_at), MAX(finished_at) FROM deployments "
        "WHERE production = 1 AND status = 'success' AND finished_at IS NOT NULL "
        "GROUP BY service"
    )
    return {str(r[0]): (float(r[1]), float(r[2])) for r in rows}
