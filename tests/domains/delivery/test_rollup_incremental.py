"""A deployment written after the service's latest success updates the rollups in place
(its lead-time rows and totals, ``has_deploys``) instead of rebuilding the service; the
rows are those a full rebuild writes, on hand-checked data and on generated histories
written one deployment per transaction, as webhooks write them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core.backend import PostgresTarget
from exporter.core.clock import FixedClock
from exporter.core.store import Store, write_records
from exporter.domains import open_store
from exporter.domains.delivery import rollup
from exporter.domains.delivery.records import Commit, Deployment, Incident
from tests.domains.delivery.test_rollup import NOW, SERVICES, assert_views_equal, histories, sha

H = 3600.0
D = 86400.0
#: The rebuild itself (the ``rebuilds`` fixture spies on the module's name).
REBUILD = rollup.rebuild
TABLES = (
    "delivery_lead_times",
    "delivery_lead_totals",
    "delivery_restore_totals",
    "delivery_links",
    "delivery_services",
)


@pytest.fixture
def db(state_location: Path | PostgresTarget) -> Iterator[Store]:
    """A store on each backend (tests/conftest.py's ``state_location``)."""
    s = open_store(state_location, FixedClock(NOW))
    yield s
    s.close()


@pytest.fixture
def rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The services each call of :func:`rollup.rebuild` rebuilt (non-empty calls)."""
    calls: list[list[str]] = []
    real = rollup.rebuild

    def spy(tx: Any, services: Any) -> None:
        names = sorted(set(services))
        if names:
            calls.append(names)
        real(tx, names)

    monkeypatch.setattr(rollup, "rebuild", spy)
    return calls


def dump(db: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup row (not PostgreSQL's emulated rowid: a rebuild renumbers it)."""
    return {
        t: sorted(
            tuple(v for k, v in zip(r.keys(), r, strict=True) if k != "rowid")
            for r in db.query(f"SELECT * FROM {t}")
        )
        for t in TABLES
    }


def assert_equals_rebuild(db: Store) -> None:
    """The rollup rows as they are equal those a rebuild of every service writes."""
    kept = dump(db)
    with db.transaction() as tx:
        services = [str(r[0]) for r in tx.execute("SELECT DISTINCT service FROM deployments")]
        REBUILD(tx, services)
    assert kept == dump(db)


def deploy(key: str, at: float, commit: str, status: str = "success") -> Deployment:
    return Deployment("github", "alpha", "production", True, key, commit, status, at - 60, at)


def write_one(db: Store, record: Any) -> None:
    with db.transaction() as tx:
        write_records(tx, [record])


class TestAppendingADeployment:
    def test_lead_times_and_totals_of_appended_deployments(
        self, db: Store, rebuilds: list[list[str]]
    ) -> None:
        """c0 <- c1 <- c2 <- c3. d1 (c1) ships c1 and the root c0: 1 h and 1 d 1 h; the
        failure d2 ships nothing; d3 (c2) ships c2: 2 h by commit time, 3 h by author
        time; d4 names an unknown commit: nothing; d5 (c3) follows d4, whose commit is
        unknown: nothing either (the rule of the full computation)."""
        base = NOW - 10 * D
        write_one(db, Commit("alpha", sha(0), base, base, ()))
        write_one(db, Commit("alpha", sha(1), base + D, base + D, (sha(0),)))
        write_one(db, Commit("alpha", sha(2), base + 2 * D - H, base + 2 * D, (sha(1),)))
        write_one(db, Commit("alpha", sha(3), base + 3 * D, base + 3 * D, (sha(2),)))
        write_one(db, deploy("d1", base + D + H, sha(1)))
        rebuilds.clear()  # the first deployment builds the service's rows
        write_one(db, deploy("d2", base + 2 * D + H, sha(2), "failure"))
        write_one(db, deploy("d3", base + 2 * D + 2 * H, sha(2)))
        write_one(db, deploy("d4", base + 2 * D + 3 * H, "f" * 40))
        write_one(db, deploy("d5", base + 3 * D + H, sha(3)))
        assert rebuilds == []
        rows = db.query(
            "SELECT deploy_key, sha, deployed_at - committed_at, deployed_at - authored_at "
            "FROM delivery_lead_times WHERE squash = 0 ORDER BY deployed_at, sha"
        )
        assert [tuple(r) for r in rows] == [
            ("github/d1", sha(0), D + H, D + H),
            ("github/d1", sha(1), H, H),
            ("github/d3", sha(2), 2 * H, 3 * H),
        ]
        totals = {
            str(r[0]): (json.loads(r[1]), r[2], r[3])
            for r in db.query(
                "SELECT clock, counts, sum, count FROM delivery_lead_totals WHERE squash = 0"
            )
        }
        assert {clock: t[1:] for clock, t in totals.items()} == {
            "committed": (D + 4 * H, 3),
            "authored": (D + 5 * H, 3),
        }
        assert db.query_one("SELECT has_deploys FROM delivery_services")[0] == 1
        assert_equals_rebuild(db)
        assert_views_equal(db, NOW)

    def test_what_is_not_an_append_rebuilds_the_service(
        self, db: Store, rebuilds: list[list[str]]
    ) -> None:
        """A deployment finished before the latest success, a finished one rewritten,
        and any deployment of a service with an incident naming a root cause rebuild
        the service; a pending one changes nothing the rollups count."""
        base = NOW - 10 * D
        write_one(db, Commit("alpha", sha(0), base, base, ()))
        write_one(db, Commit("alpha", sha(1), base + D, base + D, (sha(0),)))
        write_one(db, deploy("d2", base + 2 * D, sha(1)))
        rebuilds.clear()
        write_one(db, deploy("d1", base + D + H, sha(0)))  # before d2: d2 ships less
        assert rebuilds == [["alpha"]]
        write_one(db, deploy("d1", base + D + H, sha(0), "failure"))  # rewritten
        assert rebuilds == [["alpha"], ["alpha"]]
        write_one(db, Deployment("github", "alpha", "production", True, "d3", sha(1),
                                 "pending", base + 3 * D, None))  # fmt: skip
        assert len(rebuilds) == 2
        write_one(db, Incident("pagerduty", "alpha", "i1", base + 3 * D, None, sha(1)[:8]))
        rebuilds.clear()
        write_one(db, deploy("d3", base + 3 * D + H, sha(1)))
        assert rebuilds == [["alpha"]]
        assert_equals_rebuild(db)
        assert_views_equal(db, NOW)


class TestIncidents:
    def test_new_and_resolving_incidents_add_to_the_restore_totals(
        self, db: Store, rebuilds: list[list[str]]
    ) -> None:
        """i1 opens (nothing to restore yet), i2 opens and resolves in 30 min, then i1
        resolves after 2 h: totals of 2 restores, 2.5 h, without a rebuild; an incident
        naming a root cause, or a resolved one changed, rebuilds the service."""
        base = NOW - 5 * D
        write_one(db, deploy("d1", base, sha(1)))
        rebuilds.clear()
        write_one(db, Incident("pagerduty", "alpha", "i1", base + H, None))
        write_one(db, Incident("pagerduty", "alpha", "i2", base + 2 * H, base + 2.5 * H))
        write_one(db, Incident("pagerduty", "alpha", "i1", base + H, base + 3 * H))
        assert rebuilds == []
        row = db.query_one("SELECT counts, sum, count FROM delivery_restore_totals")
        assert (row[1], row[2]) == (2.5 * H, 2)
        # Buckets 300, 900, 1800 (i2), 3600, 7200 (i1), ...: cumulative.
        assert json.loads(row[0])[:5] == [0, 0, 1, 1, 2]
        assert_equals_rebuild(db)
        write_one(db, Incident("pagerduty", "alpha", "i1", base + H, base + 4 * H))
        assert rebuilds == [["alpha"]]
        write_one(db, Incident("pagerduty", "alpha", "i3", base + 5 * H, None, sha(1)[:8]))
        assert rebuilds == [["alpha"], ["alpha"]]
        assert_equals_rebuild(db)
        assert_views_equal(db, NOW)


class TestGeneratedHistories:
    @settings(
        max_examples=40,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(records=histories(), deploys_last=st.booleans())
    def test_one_deployment_per_transaction_equals_the_rebuild(
        self, db: Store, records: list[Any], deploys_last: bool
    ) -> None:
        """Each record in its own transaction (deployments after the rest, or mixed in as
        generated): the rollup rows equal a full rebuild's, and so does every KPI."""
        with db.transaction() as tx:
            for table in ("deployments", "commits", "incidents", "merge_requests"):
                tx.execute(f"DELETE FROM {table}")
            rollup.rebuild(tx, SERVICES)
        if deploys_last:
            records = sorted(records, key=lambda r: isinstance(r, Deployment))
        for record in records:
            write_one(db, record)
        assert_equals_rebuild(db)
        assert_views_equal(db, NOW)
