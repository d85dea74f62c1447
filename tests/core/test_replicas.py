"""Several replicas in one process, sharing one PostgreSQL state: each source is polled by
exactly one of them, the leases are spread, and a poll's commits are fenced by its lease."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.backend import PostgresTarget
from exporter.core.clock import FixedClock
from exporter.core.errors import AuthError
from exporter.core.source import PollContext
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.records import ProbeResult
from tests.support.exposition import Exposition
from tests.support.fakes import ScriptedSource
from tests.support.postgres import PASSWORD

NAMES = [f"source{i}" for i in range(9)]


@pytest.fixture
def target(pg_schema: PostgresTarget) -> PostgresTarget:
    return pg_schema


def config(target: PostgresTarget, replica: str) -> Config:
    return Config(
        server={"listen_address": "127.0.0.1", "port": 0},
        state={
            "url": target.url,
            "password": PASSWORD,
            "schema": target.schema,
            "replica": replica,
            # Renewed every 2 s, a lease lasts 4 s past its renewal: a renewal thread starved
            # for a second on a loaded machine (27 sources in one process) does not lose it.
            "lease_ttl": "6s",
        },
        services=[{"name": "a", "team": "x"}],
    )


class Upstream:
    """The fake upstream every replica's sources call: who polled what, and when."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, str]] = []
        # The polls whose commit returned (a poll in flight at shutdown is cancelled).
        self.committed = 0

    def behaviour(self, replica: str, source: str) -> Any:
        async def poll(ctx: PollContext, n: int) -> None:
            at = time.monotonic()
            self.calls.append((at, replica, source))
            # One check result per poll: the stored rows count the committed polls.
            await ctx.commit(
                [ProbeResult("a", source, 1_000_000.0 + len(self.calls), 0.01, True, "")]
            )
            self.committed += 1

        return poll

    def each_polled(self, since: float, times: int) -> bool:
        """Whether every source was polled ``times`` times after ``since``."""
        made = Counter(source for at, _, source in self.calls if at > since)
        return all(made[name] >= times for name in NAMES)


def replicas(target: PostgresTarget, upstream: Upstream, n: int = 3) -> list[Daemon]:
    made = []
    for i in range(n):
        cfg = config(target, f"replica{i}")
        sources = [
            ScriptedSource(
                cfg, name=s, interval=1.0, behaviour=upstream.behaviour(f"replica{i}", s)
            )
            for s in NAMES
        ]
        # A fixed clock near the results' times: retention keeps them all.
        made.append(
            Daemon(cfg, sources=sources, store=open_store(target), clock=FixedClock(2_000_000.0))
        )
    return made


class TestThreeReplicas:
    def test_each_source_is_polled_by_one_replica_and_the_leases_are_spread(
        self, target: PostgresTarget
    ) -> None:
        """3 replicas, 9 sources: once the leases settle (a renewal round or two), each
        holds 3, every source is polled by exactly one replica, every poll it made is
        committed, and every replica serves the same stored values."""
        upstream = Upstream()
        group = replicas(target, upstream)

        async def go() -> tuple[list[int], float, float]:
            for d in group:
                d.start_scheduler()
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                held = [len(d.leases.held_now()) for d in group if d.leases is not None]
                if held == [3, 3, 3]:
                    break
                await asyncio.sleep(0.1)
            settled = time.monotonic()
            # Until every source was polled twice since (at least three intervals): on a
            # loaded machine 27 sources in one process poll late, never wrongly.
            await asyncio.sleep(3.0)
            while time.monotonic() < settled + 30 and not upstream.each_polled(settled, 2):
                await asyncio.sleep(0.1)
            # Replicas shut down one after another, each handing its leases to those still
            # running (a takeover, as it should be): only polls made while all ran count.
            ended = time.monotonic()
            for d in group:
                await d.shutdown()
            return held, settled, ended

        held, settled, ended = asyncio.run(go())
        assert held == [3, 3, 3]
        after = [(r, s) for at, r, s in upstream.calls if settled < at < ended]
        pollers: dict[str, set[str]] = {}
        for replica, source in after:
            pollers.setdefault(source, set()).add(replica)
        assert sorted(pollers) == NAMES  # every source still polled
        assert all(len(who) == 1 for who in pollers.values()), pollers
        per_replica = Counter(next(iter(who)) for who in pollers.values())
        assert max(per_replica.values()) <= 4
        # No double count: the counter equals the stored results, each poll's one result
        # stored at most once. A poll cancelled at shutdown may or may not have committed
        # (its commit can finish in its thread after the cancel): the polls whose commit
        # returned are stored, and none beyond the polls made.
        store = open_store(target)
        stored = store.query("SELECT COUNT(*) FROM probe_results")[0][0]
        counted = sum(
            v for lb, v in store.counters(probe_store.CHECKS_TOTAL) if lb["result"] == "success"
        )
        store.close()
        assert stored == counted
        assert upstream.committed <= stored <= len(upstream.calls)
        assert len(upstream.calls) - upstream.committed <= len(group) * len(NAMES)

    def test_every_replica_serves_the_same_kpis_with_its_own_health_labels(
        self, target: PostgresTarget
    ) -> None:
        upstream = Upstream()
        group = replicas(target, upstream, n=2)

        async def go() -> list[bytes]:
            for d in group:
                d.start_scheduler()
            await asyncio.sleep(3.0)
            for d in group:
                await d.shutdown()  # stops polling; the last committed state is the same
            return [d.render().text for d in group]

        bodies = asyncio.run(go())
        views = [Exposition.parse(b) for b in bodies]
        checks = [
            v.value(
                "platform_probe_checks_total",
                service="a",
                probe="source0",
                result="success",
                reason="none",
            )
            for v in views
        ]
        assert checks[0] == checks[1] and checks[0] >= 1
        for i, v in enumerate(views):
            assert v.value("platform_exporter_leases_held", replica=f"replica{i}") is not None
            stamp = "platform_exporter_last_refresh_timestamp_seconds"
            assert v.value(stamp, replica=f"replica{i}") == 2_000_000.0


class TestTakeover:
    def test_a_replica_taking_over_an_overdue_source_polls_it_at_once(
        self, target: PostgresTarget
    ) -> None:
        """A source polled every 10 minutes: its holder dies (stops renewing and polling)
        and the source falls due; the replica that takes the lease over polls it within
        seconds of taking it, not at its own next run (10 minutes after its start), and
        until then reports the previous holder's verdict (its poll failed: down)."""
        clock = FixedClock(2_000_000.0)
        # Each poll: by whom, and the verdict its replica reported as it started.
        polls: list[tuple[str, bool | None]] = []

        def daemon(replica: str) -> Daemon:
            cfg = config(target, replica)

            async def poll(ctx: PollContext, n: int) -> None:
                polls.append((replica, ctx.health.up))
                if replica == "replica0":
                    raise AuthError("token revoked")

            source = ScriptedSource(cfg, name="slow", interval=600.0, behaviour=poll)
            return Daemon(cfg, sources=[source], store=open_store(target), clock=clock)

        first, second = daemon("replica0"), daemon("replica1")

        async def recorded() -> bool:
            """Whether the holder's renewal round has recorded its failed poll."""
            rows = await asyncio.to_thread(first.store.query, "SELECT polled_at, up FROM leases")
            return [tuple(r) for r in rows] == [(2_000_000.0, 0)]

        async def go() -> float:
            first.start_scheduler()
            while not await recorded():
                await asyncio.sleep(0.05)
            second.start_scheduler()  # its own first run finds the lease held: no poll
            assert first.scheduler is not None and first.leases is not None
            first.scheduler.pause()  # dead: no more polls, no more renewals
            await asyncio.to_thread(first.leases.stop)
            killed = time.monotonic()
            clock.advance(700.0)  # past the source's next poll
            while len(polls) < 2 and time.monotonic() < killed + 20:
                await asyncio.sleep(0.05)
            took = time.monotonic() - killed
            for d in (second, first):
                await d.shutdown()
            return took

        took = asyncio.run(go())
        assert polls == [("replica0", None), ("replica1", False)]
        assert took < 20  # the TTL (6 s) and a renewal round, not 600 s
        assert second.health["slow"].up is True
