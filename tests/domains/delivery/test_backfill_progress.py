"""Backfill progress survives a fault: repos commit one after another, each whole, with its cursors.

A backfill of 20 simulated GitHub repos is run once cleanly (the reference counts and
the number of requests it takes). Then, on a fresh state, the fake starts answering
``500`` at 80 % of those requests. The poll fails fast (the retry budget), and:

* at least 15 repos are committed whole (each repo is one transaction: its records
  and its cursors), because the requests of the earliest-started repo go first;
* the next poll requests only the rest: no request for a committed repo, and
  each other repo read whole, as in the clean run;
* the final counters equal the clean run's (nothing counted twice, nothing lost).
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from exporter.config import Config
from exporter.core.clock import ShiftedClock
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.delivery.sandbox.data import synthetic_org
from exporter.domains.delivery.sandbox.github import TOKEN, GitHubFake
from exporter.domains.delivery.sources.github import GitHubSource
from tests.domains.delivery.helpers import delivery_samples

NOW = 1_803_859_500.0  # 2027-03-01T00:05:00Z
REPOS = 20
LATENCY = 0.002  # per answer: enough for requests to queue for connection slots
REPO_OF = re.compile(r"/repos/(bench/svc-\d{4})/")


@dataclass
class FaultyGitHub:
    """The simulated GitHub; from request ``fail_from`` on it answers 500 until ``healed``."""

    fake: GitHubFake
    fail_from: int | None = None
    healed: bool = False
    log: list[tuple[str, int]] = field(default_factory=list)  # (path, status)

    def transport(self) -> httpx.MockTransport:
        inner = self.fake.app.transport()

        async def handle(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(LATENCY)
            failing = self.fail_from is not None and not self.healed
            if failing and len(self.log) + 1 >= (self.fail_from or 0):
                response = httpx.Response(500, json={"message": "Server Error"})
            else:
                response = await inner.handle_async_request(request)
            self.log.append((request.url.path, response.status_code))
            return response

        return httpx.MockTransport(handle)


def new_daemon(upstream: FaultyGitHub) -> tuple[Daemon, GitHubSource]:
    services = [
        {"name": f"svc-{r:04d}", "team": "t", "ci": [{"github": f"bench/svc-{r:04d}"}]}
        for r in range(REPOS)
    ]
    config = Config(
        services=services,
        sources={
            "probe": {"enabled": False},
            "github": {"token": TOKEN, "requests_per_second": 10_000, "concurrency": 8},
        },
        delivery={"backfill_days": 30},
        state={"path": ":memory:"},
    )
    assert config.sources.github is not None
    source = GitHubSource(config, config.sources.github)
    source.backoff = 0.001
    daemon = Daemon(
        config,
        transport=upstream.transport(),
        sources=[source],
        store=open_store(":memory:"),
        clock=ShiftedClock(NOW),
    )
    return daemon, source


def counted(text: bytes) -> dict[Any, float]:
    return {k: v for k, v in delivery_samples(text).items() if k[0].endswith(("_total", "_count"))}


def committed_repos(daemon: Daemon) -> set[str]:
    rows = daemon.store.query(
        "SELECT name FROM cursors WHERE source = 'github' AND name LIKE '%:runs'"
    )
    return {str(r[0]).removesuffix(":runs") for r in rows}


def scenario() -> Any:
    return synthetic_org(NOW, REPOS, 30, 40, 6)


class TestFaultAt80Percent:
    def test_a_late_fault_keeps_the_repos_done_and_the_next_poll_fetches_only_the_rest(
        self,
    ) -> None:
        clean = FaultyGitHub(GitHubFake(scenario(), clock=ShiftedClock(NOW)))
        reference, ref_source = new_daemon(clean)

        async def clean_run() -> bytes:
            try:
                assert await reference.poll(ref_source)
                return reference.holder.current.text
            finally:
                await reference.shutdown()

        clean_text = asyncio.run(clean_run())
        needed = len(clean.log)

        faulty = FaultyGitHub(GitHubFake(scenario(), clock=ShiftedClock(NOW)))
        faulty.fail_from = math.ceil(0.8 * needed)
        daemon, source = new_daemon(faulty)
        seen: dict[str, Any] = {}

        async def faulted_then_resumed() -> None:
            try:
                seen["first"] = await daemon.poll(source)
                seen["committed"] = committed_repos(daemon)
                faulty.healed = True
                faulty.log.clear()
                seen["second"] = await daemon.poll(source)
                seen["text"] = daemon.holder.current.text
            finally:
                await daemon.shutdown()

        asyncio.run(faulted_then_resumed())
        assert seen["first"] is False
        committed: set[str] = seen["committed"]
        assert len(committed) >= 15, f"only {len(committed)} of {REPOS} repos committed"
        assert seen["second"] is True
        # The next poll requests only the repos that were not committed, each once whole.
        requested = [REPO_OF.search(path) for path, _ in faulty.log]
        assert all(m is not None for m in requested)
        repos = {m.group(1) for m in requested if m is not None}
        assert repos == {f"bench/svc-{r:04d}" for r in range(REPOS)} - committed
        assert {status for _, status in faulty.log} == {200}
        per_repo = len(clean.log) // REPOS  # the synthetic repos are alike
        assert len(faulty.log) == per_repo * (REPOS - len(committed))
        assert counted(seen["text"]) == counted(clean_text)
