"""A database outage under running replicas: PostgreSQL stops for 30 s and starts again.

Two daemon processes share one PostgreSQL state; one probe checks the test's upstream
every 100 ms, polled by whichever replica holds the probe source's lease. While the
database is down, both keep serving their last snapshot (the KPIs do not vanish), the
holder's polls fail with reason ``state`` (``platform_exporter_source_up`` 0) until its
lease runs out, and after that it goes on reporting the source down (``up`` 0, not
absent: no replica is known to poll it) while the peer, which never held it, reports no
verdict of it (so the alerts see one down source); once the database is back, the same
processes reconnect, a replica holds the lease again and ``up`` is 1 again, and what is
stored is consistent: every check counted once, never committed twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from exporter.core.backend import PostgresTarget
from tests.support.daemon import DaemonProcess
from tests.support.exposition import Exposition
from tests.support.net import wait_until
from tests.support.postgres import PASSWORD, PostgresServer
from tests.support.slow import SlowUpstream

pytestmark = pytest.mark.integration

OUTAGE = 30.0
TTL = 6.0  # a replica starved of CPU still renews in time
CHECKS = "platform_probe_checks_total"


@pytest.fixture
def target(pg_schema: PostgresTarget) -> PostgresTarget:
    return pg_schema


def replica_config(target: PostgresTarget, name: str, upstream: SlowUpstream) -> dict[str, Any]:
    return {
        "server": {"startup_grace": "1s"},
        "metrics": {"min_refresh": "0.5s"},
        "state": {
            "url": target.url,
            "password": {"env": "PKE_STATE_PASSWORD"},
            "schema": target.schema,
            "replica": name,
            "lease_ttl": f"{TTL:g}s",
            # An unreachable server is refused at once; a reconnection waits no longer.
            "connect_timeout": "2s",
        },
        "services": [
            {
                "name": "svc",
                "team": "t",
                "probes": [
                    {"name": "up", "url": f"{upstream.url}/status/200", "interval": "100ms"}
                ],
            }
        ],
        "sources": {"probe": {"interval": "200ms"}},
    }


class Stored:
    """The replicas' shared state, read from PostgreSQL directly."""

    def __init__(self, server: PostgresServer, target: PostgresTarget) -> None:
        self.server = server
        self.target = target

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(
            self.server.dsn(self.target.url.rsplit("/", 1)[1]),
            autocommit=True,
            options=f"-c search_path={self.target.schema}",
            connect_timeout=10,
        ) as conn:
            return conn.execute(sql).fetchall()

    def rows(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM probe_results")[0][0])

    def distinct_checks(self) -> int:
        return int(self.query("SELECT COUNT(DISTINCT started_at) FROM probe_results")[0][0])

    def counted(self) -> float:
        return sum(
            float(v)
            for labels, v in self.query(
                f"SELECT labels, value FROM counters WHERE metric = '{CHECKS}'"
            )
            if json.loads(labels)["probe"] == "up"
        )

    def observed(self) -> int:
        rows = self.query(
            "SELECT count FROM histograms WHERE metric = 'platform_probe_duration_seconds'"
        )
        return sum(int(r[0]) for r in rows)

    def rollups(self) -> dict[tuple[int, float], tuple[int, int]]:
        rows = self.query("SELECT size, bucket, checks, successes FROM probe_rollup")
        return {(int(z), float(b)): (int(c), int(s)) for z, b, c, s in rows}

    def rolled_from_raw(self) -> dict[tuple[int, float], tuple[int, int]]:
        out: dict[tuple[int, float], tuple[int, int]] = {}
        for started, success in self.query("SELECT started_at, success FROM probe_results"):
            for size in (60, 3600):
                key = (size, float(int(started // size) * size))
                c, s = out.get(key, (0, 0))
                out[key] = (c + 1, s + int(success))
        return out


def served(d: DaemonProcess) -> Exposition:
    return Exposition.parse(d.metrics())


def checks(exp: Exposition) -> float:
    """The successful checks a replica serves (from the shared store: every replica)."""
    return sum(v for _, v in exp.samples(CHECKS, probe="up", result="success"))


def up(exp: Exposition) -> float | None:
    return exp.value("platform_exporter_source_up", source="probe")


class TestDatabaseOutage:
    def test_replicas_serve_their_last_snapshot_and_reconnect_without_a_restart(
        self,
        postgres_server: PostgresServer,
        target: PostgresTarget,
        slow_upstream: SlowUpstream,
        daemon_process: Callable[..., DaemonProcess],
    ) -> None:
        group = [
            daemon_process(
                replica_config(target, f"r{i}", slow_upstream), env={"PKE_STATE_PASSWORD": PASSWORD}
            )
            for i in range(2)
        ]
        for d in group:
            d.start(wait=False)
        for d in group:
            wait_until(lambda d=d: d._healthy(), timeout=120, what=f"replica on {d.port}")
        pids = [d.proc.pid for d in group if d.proc is not None]
        wait_until(
            lambda: all(checks(served(d)) >= 5 for d in group), timeout=30, what="checks served"
        )
        (holder,) = [d for d in group if up(served(d)) == 1]
        (peer,) = [d for d in group if d is not holder]

        postgres_server.stop()
        stopped = time.monotonic()
        seen_down = False
        lapsed = 0  # looks at the holder once its lease has surely run out
        last: list[float] = []
        try:
            while time.monotonic() - stopped < OUTAGE:
                # The last snapshot, served throughout: the KPIs stay, their values frozen
                # once the last commit before the stop is rendered.
                views = [served(d) for d in group]
                now = [checks(v) for v in views]
                assert all(n >= 5 for n in now), now
                last = now
                held, other = views[group.index(holder)], views[group.index(peer)]
                seen_down = seen_down or up(held) == 0
                # Past the TTL, the lease has run out on the holder's own clock (two thirds
                # of the TTL after its last renewal): it still reports the source, down.
                if time.monotonic() - stopped > TTL + 1:
                    assert up(held) == 0, "the last holder stopped reporting the source"
                    assert held.value("platform_exporter_source_leased", source="probe") == 0
                    assert up(other) is None, "the peer reported a verdict it never made"
                    lapsed += 1
                time.sleep(0.2)
        finally:
            postgres_server.start()
        assert seen_down, "the holder never served up 0 while the database was down"
        assert lapsed >= 10
        errors = served(holder).value(
            "platform_exporter_source_errors_total", source="probe", reason="state"
        )
        assert errors is not None and errors >= 1

        # Back: a replica holds the lease again and polls; both serve the new checks.
        wait_until(lambda: any(up(served(d)) == 1 for d in group), timeout=60, what="up 1 again")
        wait_until(
            lambda: all(checks(served(d)) > max(last) + 5 for d in group),
            timeout=60,
            what="new checks served by both replicas",
        )
        assert [d.proc.pid for d in group if d.proc is not None and d.proc.poll() is None] == pids
        for d in group:
            d.stop()

        stored = Stored(postgres_server, target)
        rows = stored.rows()
        assert rows == stored.distinct_checks()  # one row per check
        # Nothing committed twice: the counter, the histogram and the rollups count each
        # stored check exactly once, and no more checks are stored than reached the upstream.
        assert stored.counted() == rows
        assert stored.observed() == rows
        assert stored.rollups() == stored.rolled_from_raw()
        assert rows <= len([p for p in slow_upstream.requests if p == "/status/200"])
