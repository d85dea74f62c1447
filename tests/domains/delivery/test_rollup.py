"""Delivery rollups: the windowed KPIs read from what the writers keep equal those
computed from the raw records, on generated histories, at window edges, and after an
upgrade from a database written before the rollups existed."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core.backend import PostgresTarget
from exporter.core.clock import FixedClock
from exporter.core.periods import last_month
from exporter.core.store import Store, write_records
from exporter.domains import open_store
from exporter.domains.delivery import kpis as kpi
from exporter.domains.delivery import rollup, store
from exporter.domains.delivery.records import Commit, Deployment, Incident, MergeRequest

H = 3600.0
D = 86400.0
# Mid-month, so that the rolling 30 days and last month overlap only in part.
NOW = 1_805_000_000.0  # 2027-03-14 ...
SERVICES = ("alpha", "beta")


def sha(i: int) -> str:
    return f"{i:02x}" * 20


@st.composite
def histories(draw: st.DrawFn) -> list[Any]:
    """A service's commits (a chain with a merge now and then), deployments around the
    windows' edges (some failed, some after now), incidents with and without a root
    cause, and squashes; the records of two services, in an arbitrary order."""
    records: list[Any] = []
    for service in SERVICES:
        n = draw(st.integers(1, 12))
        root = draw(st.booleans())
        times = sorted(draw(st.lists(st.floats(-70 * D, 2 * D), min_size=n, max_size=n)))
        for i, at in enumerate(times):
            parents: tuple[str, ...] = (sha(i - 1),) if i else (() if root else ("f" * 40,))
            if i > 2 and draw(st.booleans()):
                parents = (*parents, sha(draw(st.integers(0, i - 2))))
            authored = at - draw(st.sampled_from([0.0, H, 3 * D]))
            records.append(Commit(service, sha(i), NOW + authored, NOW + at, parents))
        edges = [-30 * D, -7 * D, -D, last_month(NOW).start - NOW, 0.0]
        for k in range(draw(st.integers(0, 10))):
            at = draw(st.one_of(st.floats(-70 * D, 3 * D), st.sampled_from(edges)))
            status = draw(st.sampled_from(["success", "success", "failure", "pending"]))
            records.append(
                Deployment(
                    "github", service, "production", draw(st.sampled_from([True, True, False])),
                    f"{service}-{k}", sha(draw(st.integers(0, n - 1))), status,
                    NOW + at - 60, None if status == "pending" else NOW + at,
                )
            )  # fmt: skip
        for k in range(draw(st.integers(0, 4))):
            opened = draw(st.floats(-65 * D, D))
            resolved = draw(st.one_of(st.none(), st.floats(0, 5 * D)))
            cause = draw(st.one_of(st.none(), st.integers(0, n - 1).map(lambda i: sha(i)[:9])))
            records.append(
                Incident(
                    "pagerduty", service, f"{service}-i{k}", NOW + opened,
                    None if resolved is None else NOW + opened + resolved, cause,
                )
            )  # fmt: skip
        if n > 2 and draw(st.booleans()):
            squashed = sha(draw(st.integers(1, n - 1)))
            records.append(
                MergeRequest(
                    "gitlab", service, f"{service}!1", NOW, squashed, None, squashed, True,
                    ("e" * 40, sha(0)),
                )
            )  # fmt: skip
    return draw(st.permutations(records))


def write(db: Store, records: Sequence[Any], batches: int) -> None:
    size = max(1, len(records) // batches)
    for i in range(0, len(records), size):
        with db.transaction() as tx:
            write_records(tx, records[i : i + size])


def assert_views_equal(db: Store, now: float) -> None:
    for squash in ("original_commits", "squash_commit"):
        for commit_time in ("authored", "committed"):
            rules = kpi.DeliveryRules(squash_lead_time=squash, incident_link_window=D)
            registered = {"alpha": now - 3 * D, "beta": None}
            raw = store.load(db, commit_time)
            got = rollup.views(db, [*SERVICES, "gamma"], rules, commit_time, registered, now)
            for service in (*SERVICES, "gamma"):
                d = raw.get(service) or kpi.ServiceDelivery()
                want = kpi.view_of(d, rules, registered.get(service), now)
                assert_same(got[service], want)
                assert_same_kpis(
                    kpi.view_kpis(got[service], rules, now),
                    kpi.service_kpis(d, rules, registered.get(service), now),
                )


def assert_same(got: kpi.DeliveryView, want: kpi.DeliveryView) -> None:
    assert got.has_deploys == want.has_deploys
    assert sorted(got.deploys, key=repr) == sorted(want.deploys, key=repr)
    assert sorted(got.leads, key=repr) == sorted(want.leads, key=repr)
    assert got.linked == want.linked
    assert sorted(got.timed_incidents) == sorted(want.timed_incidents)
    assert sorted(got.restores) == sorted(want.restores)
    for g, w in ((got.lead_histogram, want.lead_histogram), (got.restore_histogram, want.restore_histogram)):  # fmt: skip
        assert (g[0], g[2]) == (w[0], w[2])
        # The same values summed; in another order only when some are dated after now.
        assert g[1] == pytest.approx(w[1], rel=1e-12, abs=1e-6)
    assert (got.production_start, got.first_production) == (
        want.production_start,
        want.first_production,
    )


def assert_same_kpis(got: kpi.ServiceKpis, want: kpi.ServiceKpis) -> None:
    assert got.frequency == want.frequency
    assert got.lead == want.lead
    assert got.change_failure == want.change_failure
    assert got.restore == want.restore
    assert (got.ttp_known, got.time_to_production, got.level) == (
        want.ttp_known,
        want.time_to_production,
        want.level,
    )


@pytest.fixture
def db(state_location: Path | PostgresTarget) -> Any:
    """A store on each backend (tests/conftest.py's ``state_location``)."""
    s = open_store(state_location, FixedClock(NOW))
    yield s
    s.close()


def clear(db: Store) -> None:
    with db.transaction() as tx:
        for table in ("deployments", "commits", "incidents", "merge_requests"):
            tx.execute(f"DELETE FROM {table}")
        rollup.rebuild(tx, SERVICES)


class TestRollupsEqualRaw:
    @settings(
        max_examples=40,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        records=histories(), batches=st.integers(1, 4), shift=st.sampled_from([0.0, 1e-3, -1e-3])
    )
    def test_generated_histories(self, db: Store, records: list[Any], batches: int, shift: float) -> None:  # fmt: skip
        """Written in any order and batching, every view and KPI equals the raw
        computation, also with now a hair either side of a window edge."""
        clear(db)
        write(db, records, batches)
        assert_views_equal(db, NOW + shift)

    def test_rewriting_the_same_records_changes_nothing(self, db: Store) -> None:
        """Rollups are idempotent: the same records again leave every row as it was, and
        the transaction changes nothing (no provider is recomputed for it)."""
        records = [
            Commit("alpha", sha(0), NOW - 5 * D, NOW - 5 * D, ()),
            Commit("alpha", sha(1), NOW - 4 * D, NOW - 4 * D, (sha(0),)),
            Deployment("github", "alpha", "production", True, "a-1", sha(1), "success",
                       NOW - 3 * D, NOW - 3 * D),
            Incident("pagerduty", "alpha", "i1", NOW - 2 * D, NOW - D, sha(1)[:8]),
        ]  # fmt: skip
        write(db, records, 1)
        before = db.versions()["*"]
        rows = db.query("SELECT * FROM delivery_lead_times ORDER BY deploy_key, sha, squash")
        write(db, records, 2)
        assert db.versions()["*"] == before
        assert (
            db.query("SELECT * FROM delivery_lead_times ORDER BY deploy_key, sha, squash") == rows
        )
        assert [tuple(r) for r in db.query("SELECT deploy_key FROM delivery_links")] == [
            ("github/a-1",)
        ]
        assert_views_equal(db, NOW)


def downgrade(path: Path) -> None:
    """Make ``path`` what a release before the rollups wrote: no rollup tables or
    indexes, the delivery schema at v2."""
    conn = sqlite3.connect(path)
    for name, kind in conn.execute(
        "SELECT name, type FROM sqlite_master WHERE name LIKE 'delivery_%' "
        "OR name IN ('deployments_finished', 'deployments_first', 'incidents_service', "
        "'incidents_opened', 'incidents_resolved')"
    ).fetchall():
        if not name.startswith("sqlite_"):
            conn.execute(f"DROP {'TABLE' if kind == 'table' else 'INDEX'} IF EXISTS {name}")
    # Nor the repo columns of a later version.
    for table in ("pipeline_runs", "deployments", "commits", "merge_requests", "incidents"):
        conn.execute(f"DROP INDEX IF EXISTS {table}_repo")
        conn.execute(f"ALTER TABLE {table} DROP COLUMN repo")
    conn.execute("UPDATE schema_version SET version = 2 WHERE component = 'delivery'")
    conn.commit()
    conn.close()


class TestUpgrade:
    @settings(max_examples=8, derandomize=True, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
    @given(records=histories())
    def test_a_database_without_rollups_gives_the_same_kpis(
        self, tmp_path_factory: pytest.TempPathFactory, records: list[Any]
    ) -> None:
        """After the upgrade every service is pending and its view comes from its raw
        records; once caught up, from the rollups: the same KPIs either way."""
        path = tmp_path_factory.mktemp("upgrade") / "state.db"
        db = open_store(str(path), FixedClock(NOW))
        write(db, records, 2)
        db.close()
        downgrade(path)
        db = open_store(str(path), FixedClock(NOW))
        try:
            assert sorted(rollup.pending(db)) == sorted({r.service for r in records})
            assert db.query_one("SELECT COUNT(*) FROM delivery_lead_times")[0] == 0
            assert_views_equal(db, NOW)
            rollup.catch_up(None, db, NOW)
            assert rollup.pending(db) == []
            assert_views_equal(db, NOW)
        finally:
            db.close()

    def test_catching_up_logs_its_progress_per_batch(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "state.db"
        db = open_store(str(path), FixedClock(NOW))
        write(db, [Commit(f"s{i}", sha(0), NOW, NOW, ()) for i in range(5)], 1)
        db.close()
        downgrade(path)
        db = open_store(str(path), FixedClock(NOW))
        monkeypatch.setattr(rollup, "BATCH", 2)
        with caplog.at_level("INFO", logger="exporter.delivery.rollup"):
            rollup.catch_up(None, db, NOW)
        db.close()
        assert [r.getMessage() for r in caplog.records] == [
            "delivery rollups: 2 of 5 services built",
            "delivery rollups: 4 of 5 services built",
            "delivery rollups: 5 of 5 services built",
        ]
