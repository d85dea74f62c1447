"""Every poll has a deadline: an upstream that turns slow mid-backfill cannot hold a poll forever.

The simulated GitHub answers its first requests at once, then takes as long as
the whole deadline for each, so no repo in flight when it turns slow can finish
before the deadline. The poll (``poll_timeout: 5s``) is cancelled at its deadline, the source is
marked down with reason ``deadline``, the repos committed before stay committed,
and while the poll runs the in-flight gauge shows how long it has been going.

A repo starts only while the time left covers 1.5 times the longest repo so far
(so none is cut off when the upstream keeps its pace); the repos before the slow
turn take well under a second even on a loaded machine, so the repo that meets it
starts, and the deadline cuts it off. (An upstream only a little slower would let
the repos in flight finish, and the poll would end early, by the same rule.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from exporter.config import Config
from exporter.core.clock import ShiftedClock
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.delivery.sandbox.data import synthetic_org
from exporter.domains.delivery.sandbox.github import TOKEN, GitHubFake
from exporter.domains.delivery.sources.github import GitHubSource
from tests.domains.delivery.helpers import value

NOW = 1_803_859_500.0  # 2027-03-01T00:05:00Z
DEADLINE = 5.0
FAST_REQUESTS = 40  # answered at once; every later one takes SLOW seconds
SLOW = DEADLINE
REPOS = 10


def slow_after(fake: GitHubFake, fast: int) -> httpx.MockTransport:
    inner = fake.app.transport()
    sent = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        if sent > fast:
            await asyncio.sleep(SLOW)
        return await inner.handle_async_request(request)

    return httpx.MockTransport(handle)


def daemon_over(transport: httpx.AsyncBaseTransport, **github: Any) -> tuple[Daemon, GitHubSource]:
    services = [
        {"name": f"svc-{r:04d}", "team": "t", "ci": [{"github": f"bench/svc-{r:04d}"}]}
        for r in range(REPOS)
    ]
    config = Config(
        services=services,
        sources={
            "probe": {"enabled": False},
            "github": {"token": TOKEN, "requests_per_second": 10_000, "concurrency": 4, **github},
        },
        delivery={"backfill_days": 30},
        state={"path": ":memory:"},
    )
    assert config.sources.github is not None
    source = GitHubSource(config, config.sources.github)
    daemon = Daemon(
        config,
        transport=transport,
        sources=[source],
        store=open_store(":memory:"),
        clock=ShiftedClock(NOW),
    )
    return daemon, source


class TestPollDeadline:
    def test_a_poll_that_outruns_its_deadline_is_cancelled_and_marked_down(self) -> None:
        fake = GitHubFake(synthetic_org(NOW, REPOS, 30, 40, 6), clock=ShiftedClock(NOW))
        daemon, source = daemon_over(slow_after(fake, FAST_REQUESTS), poll_timeout="5s")
        in_flight: list[float | None] = []

        async def watch() -> None:
            await asyncio.sleep(DEADLINE / 2)
            text = daemon.render().text
            in_flight.append(
                value(
                    text,
                    "platform_exporter_source_poll_in_flight_seconds",
                    source="github",
                    kind="github",
                )
            )

        committed: list[int] = []

        async def go() -> bool:
            watcher = asyncio.create_task(watch())
            try:
                return await daemon.poll(source)
            finally:
                await watcher
                rows = daemon.store.query(
                    "SELECT COUNT(*) FROM cursors WHERE source = 'github' AND name LIKE '%:runs'"
                )
                committed.append(int(rows[0][0]))
                await daemon.shutdown()

        started = time.perf_counter()
        ok = asyncio.run(go())
        assert not ok
        health = daemon.health["github"]
        assert health.up is False
        assert health.errors["deadline"] == 1
        assert "deadline" in (health.last_error or "")
        # The poll itself ended at its deadline, +-10 %.
        assert health.last_duration is not None
        assert DEADLINE * 0.9 <= health.last_duration <= DEADLINE * 1.1
        assert time.perf_counter() - started < DEADLINE * 2
        # While it ran, the gauge showed it; after, it reads 0.
        assert in_flight and in_flight[0] is not None
        assert DEADLINE / 2 - 0.5 <= in_flight[0] <= DEADLINE
        assert health.in_flight(NOW + 10**6) == 0.0
        # What was committed before the upstream turned slow stays.
        assert 0 < committed[0] < REPOS

    def test_the_deadline_defaults_to_the_interval(self) -> None:
        fake = GitHubFake(synthetic_org(NOW, 2, 30, 40, 6), clock=ShiftedClock(NOW))
        daemon, source = daemon_over(slow_after(fake, 0), interval="2s", timeout="1s")

        async def go() -> bool:
            try:
                return await daemon.poll(source)
            finally:
                await daemon.shutdown()

        assert not asyncio.run(go())
        health = daemon.health["github"]
        assert health.errors["deadline"] == 1
        assert health.last_duration == pytest.approx(2.0, rel=0.1)
