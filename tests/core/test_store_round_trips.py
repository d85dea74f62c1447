"""Round trips of a poll's commit on PostgreSQL: a fixed few per transaction, whatever the
number of records it writes.

On a shared database every statement waits for the server's answer, so a commit that
ran one statement per record (or several) cost a round trip each. The writers batch
instead: the stored rows a batch needs are read in one statement, new rows are inserted
a few hundred a statement, counters and histograms are written once per series at the
commit, and writes whose results nothing reads are sent with the next statement
(pipeline mode). Counted here at the writer connection: each ``execute``,
``executemany`` (psycopg pipelines its rows), pipelined batch and commit is one round trip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from exporter.core import lease
from exporter.core.backend import PostgresTarget
from exporter.core.store import Store, write_records
from exporter.domains import open_store
from exporter.domains.delivery import store as delivery_store
from exporter.domains.delivery.records import Commit, Deployment, PipelineRun
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.records import ProbeResult

DAY = 86400.0
T0 = 1_780_000_000.0  # a fixed instant (2026-05-28)


@contextmanager
def counting(store: Store) -> Iterator[list[str]]:
    """The statements (round trips) of the store's writer connection, as they are sent."""
    conn: Any = store._conn  # the writer connection: where a commit's statements go
    sent: list[str] = []
    execute, executemany, pipelined, commit = (
        conn.execute,
        conn.executemany,
        conn.pipelined,
        conn.commit,
    )

    def one(sql: str, params: Any = ()) -> Any:
        sent.append(sql)
        return execute(sql, params)

    def many(sql: str, rows: Any) -> Any:
        sent.append(sql)
        return executemany(sql, rows)

    def batch(statements: Sequence[tuple[str, Any, bool]]) -> Any:
        sent.append(" | ".join(s[0] for s in statements))
        return pipelined(statements)

    def commit_and_announce(announce: bool, before: Sequence[tuple[str, Any, bool]] = ()) -> Any:
        last = ["COMMIT", *(["SELECT nextval('state_commits')"] if announce else [])]
        sent.append(" | ".join([*(s[0] for s in before), *last]))
        return commit(announce, before)

    conn.execute, conn.executemany, conn.pipelined = one, many, batch
    conn.commit = commit_and_announce
    try:
        yield sent
    finally:
        del conn.execute, conn.executemany, conn.pipelined, conn.commit


@pytest.fixture
def store(pg_schema: PostgresTarget) -> Iterator[Store]:
    opened = open_store(pg_schema)
    opened.migrate("lease", lease.MIGRATIONS)
    yield opened
    opened.close()


@pytest.fixture
def leases(pg_schema: PostgresTarget, store: Store) -> Iterator[lease.Leases]:
    """This replica holds the leases of the probe and the github sources."""
    held = lease.Leases(pg_schema, "r1", ["probe", "github"], ttl=60.0)
    assert held.renew() == {"probe", "github"}
    yield held
    held.close()


def probe_results(n: int) -> list[ProbeResult]:
    """``n`` results of 10 checks, one a minute each; every fifth a failure."""
    return [
        ProbeResult(
            f"svc-{i % 10}",
            "health",
            T0 + 60.0 * (i // 10),
            0.05,
            i % 5 != 0,
            "" if i % 5 else "timeout",
            200 if i % 5 else None,
        )
        for i in range(n)
    ]


def delivery_unit(runs: int, deploys: int, commits: int) -> list[Any]:
    """One repo's backfill unit: runs of 4 workflows, production deployments (each of one
    of the commits), and a linear history of commits, an hour apart."""
    repo = "github:acme/checkout"
    shas = [f"{i:040x}" for i in range(commits)]
    history = [
        Commit("checkout", sha, T0 + 3600.0 * i, T0 + 3600.0 * i, (shas[i - 1],) if i else (), repo)
        for i, sha in enumerate(shas)
    ]
    pipelines = [
        PipelineRun(
            "github",
            "checkout",
            f"ci-{i % 4}",
            f"acme/checkout/{i}",
            "success" if i % 10 else "failure",
            T0 + 600.0 * i,
            T0 + 600.0 * i + 30.0,
            T0 + 600.0 * i + 330.0,
            repo,
        )
        for i in range(runs)
    ]
    deployments = [
        Deployment(
            "github",
            "checkout",
            "production",
            True,
            f"acme/checkout/{i}",
            shas[min(commits - 1, 3 * i + 2)],
            "success",
            T0 + 3600.0 * (3 * i + 3),
            T0 + 3600.0 * (3 * i + 3) + 60.0,
            repo,
        )
        for i in range(deploys)
    ]
    return [*pipelines, *deployments, *history]


class TestRoundTrips:
    def test_a_commit_of_100_probe_results_takes_at_most_15_round_trips(
        self, store: Store, leases: lease.Leases
    ) -> None:
        """The probe source's commit of 100 results (10 checks), fenced by its lease:
        from BEGIN to the commit's announcement, at most 15 statements."""
        with counting(store) as sent, leases.fenced("probe"), store.transaction() as tx:
            probe_store.write(tx, probe_results(100))
        assert len(sent) <= 15, "\n".join(sent)
        checks: dict[str, float] = {}
        for labels, value in store.counters(probe_store.CHECKS_TOTAL):
            checks[labels["result"]] = checks.get(labels["result"], 0.0) + value
        assert checks == {"success": 80.0, "failure": 20.0}
        assert store.query("SELECT COUNT(*) FROM probe_results")[0][0] == 100

    def test_a_delivery_unit_of_140_records_takes_at_most_30_round_trips(
        self, store: Store, leases: lease.Leases
    ) -> None:
        """One repo's backfill unit (100 runs, 10 deployments, 30 commits) with its
        cursors, fenced by the GitHub lease: at most 30 statements, rollups included."""
        with counting(store) as sent, leases.fenced("github"), store.transaction() as tx:
            write_records(tx, delivery_unit(100, 10, 30))
            tx.set_cursors("github", {"acme/checkout:runs": "{}", "acme/checkout:commits": "{}"})
        assert len(sent) <= 30, "\n".join(sent)
        runs = sum(v for _, v in store.counters(delivery_store.RUNS_TOTAL))
        deploys = sum(v for _, v in store.counters(delivery_store.DEPLOYMENTS_TOTAL))
        assert (runs, deploys) == (100.0, 10.0)
        # Each deployment ships the 3 commits made since the one before: 30 samples.
        leads = store.query("SELECT COUNT(*) FROM delivery_lead_times WHERE squash = 0")
        assert leads[0][0] == 30
        assert store.cursors("github") == {
            "acme/checkout:runs": "{}",
            "acme/checkout:commits": "{}",
        }

    def test_the_round_trips_of_a_commit_do_not_grow_with_its_records(self, store: Store) -> None:
        """Ten times the records (new ones each time) cost the same number of statements."""
        counts = []
        for n, first in ((20, 0), (200, 20)):
            results = [
                ProbeResult(
                    r.service, r.probe, r.started_at + DAY * first, 0.05, r.success, r.reason
                )
                for r in probe_results(n)
            ]
            with counting(store) as sent, store.transaction() as tx:
                probe_store.write(tx, results)
            counts.append(len(sent))
        assert counts[0] == counts[1]
        assert store.query("SELECT COUNT(*) FROM probe_results")[0][0] == 220
