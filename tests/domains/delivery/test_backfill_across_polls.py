"""A backfill longer than one poll wastes no request: each poll stops starting repos in time.

A repo commits whole or not at all, so a repo cut off by the poll's deadline, or by a
rate-limit budget spent until a reset further off than a poll waits, is sent again by
the next poll. The source therefore starts a repo only while what is left of the
deadline and of the budget covers the costliest repo it has finished in this poll.

Each test runs a backfill of 12 simulated GitHub repos on virtual time
(:mod:`tests.support.virtual_time`): once in one poll with no limit (the reference
count of requests), then cut into several polls, one every interval, by a short
deadline or by a small hourly budget. Across those polls the fake receives exactly
the reference's requests, every poll but the last ends with ``deadline`` or
``rate_limited`` having committed whole repos only, and the final counters equal the
reference's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.delivery.sandbox.data import synthetic_org
from exporter.domains.delivery.sandbox.github import GitHubFake
from exporter.domains.delivery.sources.github import GitHubSource
from tests.domains.delivery.helpers import delivery_samples, synthetic_org_config
from tests.support.virtual_time import loop_epoch, run_virtual

NOW = 1_803_859_500.0  # 2027-03-01T00:05:00Z
REPOS = 12
LATENCY = 1.0  # virtual seconds per answer
INTERVAL = 300.0


@dataclass
class PacedGitHub:
    """The simulated GitHub answering after ``LATENCY``; with ``budget``, GitHub's primary
    limit over windows of ``window`` seconds: each answer states the budget left and
    its reset, and past it the answer is ``403`` with ``x-ratelimit-remaining: 0``
    (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api)."""

    clock: Callable[[], float]
    budget: int = 0
    window: float = 600.0
    sent: int = 0
    refused: int = 0
    used: dict[int, int] = field(default_factory=dict)

    def transport(self) -> httpx.MockTransport:
        inner = GitHubFake(synthetic_org(NOW, REPOS, 30, 40, 6), clock=self.clock).app.transport()

        async def handle(request: httpx.Request) -> httpx.Response:
            self.sent += 1
            await asyncio.sleep(LATENCY)
            if not self.budget:
                return await inner.handle_async_request(request)
            current = int(self.clock() // self.window)
            reset = str(int((current + 1) * self.window))
            if self.used.get(current, 0) >= self.budget:
                self.refused += 1
                body = {"message": "API rate limit exceeded for user ID 1."}
                return httpx.Response(403, json=body, headers=self._headers(0, reset))
            self.used[current] = self.used.get(current, 0) + 1
            response = await inner.handle_async_request(request)
            await response.aread()
            headers = [
                (k, v) for k, v in response.headers.items() if not k.lower().startswith("x-ratel")
            ]
            headers += self._headers(self.budget - self.used[current], reset).items()
            return httpx.Response(response.status_code, headers=headers, content=response.content)

        return httpx.MockTransport(handle)

    def _headers(self, left: int, reset: str) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.budget),
            "X-RateLimit-Remaining": str(left),
            "X-RateLimit-Reset": reset,
            "X-RateLimit-Resource": "core",
        }


@dataclass
class Backfill:
    requests: int
    polls: int
    errors: list[str]  # the reason of each poll that did not complete
    counters: dict[Any, float]
    committed_between: list[int]  # repos with committed runs after each poll
    refused: int


def backfill(budget: int = 0, **github: Any) -> Backfill:
    """Poll every ``INTERVAL`` (virtual) seconds until one poll completes the backfill."""

    async def main() -> Backfill:
        clock = loop_epoch(NOW)
        upstream = PacedGitHub(clock, budget)
        config = synthetic_org_config(REPOS, concurrency=8, interval=f"{INTERVAL:g}s", **github)
        assert config.sources.github is not None
        source = GitHubSource(config, config.sources.github)
        daemon = Daemon(
            config,
            transport=upstream.transport(),
            sources=[source],
            store=open_store(":memory:"),
            clock=clock,
        )
        errors: list[str] = []
        committed: list[int] = []
        polls = 0
        try:
            while True:
                polls += 1
                began = clock()
                before = dict(daemon.health["github"].errors)
                done = await daemon.poll(source)
                rows = daemon.store.query(
                    "SELECT COUNT(*) FROM cursors WHERE source = 'github' AND name LIKE '%:runs'"
                )
                committed.append(int(rows[0][0]))
                if done or polls > 20:
                    break
                after = daemon.health["github"].errors
                errors += [reason for reason, n in after.items() if n > before.get(reason, 0)]
                await asyncio.sleep(max(0.0, began + INTERVAL - clock()))
            text = daemon.holder.current.text
        finally:
            await daemon.shutdown()
        counters = {
            k: v for k, v in delivery_samples(text).items() if k[0].endswith(("_total", "_count"))
        }
        return Backfill(upstream.sent, polls, errors, counters, committed, upstream.refused)

    return run_virtual(main)


class TestBackfillAcrossPolls:
    def test_deadlines_cut_the_backfill_into_polls_without_a_wasted_request(self) -> None:
        reference = backfill()
        assert reference.polls == 1
        # Deadlines of about a quarter of the reference's virtual time: several polls.
        cut = backfill(poll_timeout="12s")
        assert cut.polls >= 3
        assert cut.requests == reference.requests
        assert cut.errors == ["deadline"] * (cut.polls - 1)
        # Each poll committed whole repos, more of them each time.
        assert cut.committed_between[0] > 0
        assert cut.committed_between == sorted(set(cut.committed_between))
        assert cut.committed_between[-1] == REPOS
        assert cut.counters == reference.counters

    def test_a_small_hourly_budget_cuts_it_into_polls_without_a_wasted_request(self) -> None:
        reference = backfill()
        per_repo = reference.requests // REPOS  # the synthetic repos are alike
        # Above a reserve of 5 (where requests would trickle until the reset), a window
        # grants four and a half repos' requests: the fifth must wait for the reset.
        cut = backfill(budget=per_repo * 9 // 2 + 5, rate_limit_reserve=5)
        assert cut.polls >= 3
        assert cut.refused == 0, "no request met a spent budget"
        assert cut.requests == reference.requests
        assert set(cut.errors) == {"rate_limited"}
        assert cut.committed_between[-1] == REPOS
        assert cut.counters == reference.counters
