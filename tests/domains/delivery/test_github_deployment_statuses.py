"""A repo's deployment statuses are read a few at a time, only for deployments not yet final.

``GET /repos/{owner}/{repo}/deployments/{deployment_id}/statuses``
(https://docs.github.com/en/rest/deployments/statuses#list-deployment-statuses) is one
request per deployment. A backfill of a repo with many deployments used to send them
all at once, and a failure of one left the rest running for a repo that could no
longer commit. Now:

* at most the repo's share of the connection slots are in flight at once (here 16
  slots over 2 repos in flight: 8), newest deployment first;
* after one fails, no further one is sent, and the repo commits nothing;
* a later poll asks only for the deployments whose status was not yet final.

The simulated GitHub runs behind an ``httpx.MockTransport`` on virtual time
(:mod:`tests.support.virtual_time`), answering each request after 0.1 s.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client
from exporter.core.source import PollContext
from exporter.core.upstream import poll_scope
from exporter.domains import open_store
from exporter.domains.delivery.sandbox.data import synthetic_org
from exporter.domains.delivery.sandbox.github import GitHubFake
from exporter.domains.delivery.sources.github import GitHubSource
from tests.domains.delivery.helpers import synthetic_org_config
from tests.support.virtual_time import loop_epoch, run_virtual

NOW = 1_803_859_500.0  # 2027-03-01T00:05:00Z
REPOS = 2
DEPLOYS = 30
STATUSES = re.compile(r"/repos/([^/]+/[^/]+)/deployments/(\d+)/statuses$")


@dataclass
class CountingGitHub:
    """The simulated GitHub, recording the status requests in flight per repo; the
    status request of deployment ``broken`` answers a body without ``state``."""

    fake: GitHubFake
    broken: str | None = None
    in_flight: dict[str, int] = field(default_factory=dict)
    most: dict[str, int] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)  # (repo, deployment id)

    def transport(self) -> httpx.MockTransport:
        inner = self.fake.app.transport()

        async def handle(request: httpx.Request) -> httpx.Response:
            match = STATUSES.search(request.url.path)
            if match is None:
                await asyncio.sleep(0.1)
                return await inner.handle_async_request(request)
            repo, dep = match.groups()
            self.asked.append((repo, dep))
            self.in_flight[repo] = self.in_flight.get(repo, 0) + 1
            self.most[repo] = max(self.most.get(repo, 0), self.in_flight[repo])
            try:
                await asyncio.sleep(0.1)
                if dep == self.broken:
                    return httpx.Response(200, json=[{"created_at": "2027-02-01T00:00:00Z"}])
                return await inner.handle_async_request(request)
            finally:
                self.in_flight[repo] -= 1

        return httpx.MockTransport(handle)


def polls(upstream: CountingGitHub, *between: Callable[[], None]) -> list[str]:
    """Poll once, then once more after each of ``between``, into one store; each poll's
    error (or "")."""
    config = synthetic_org_config(REPOS, concurrency=16)
    settings = config.sources.github
    assert settings is not None
    source = GitHubSource(config, settings)

    async def main() -> list[str]:
        clock = loop_epoch(NOW)
        health = SourceHealth("github", "github", settings.interval)
        store = open_store(":memory:")
        client = build_client(
            health,
            timeout=settings.timeout,
            transport=upstream.transport(),
            clock=clock,
            **source.client_options(),
        )
        ctx = PollContext(store=store, health=health, client=client, now=clock)
        errors = []
        try:
            for step in [None, *between]:
                if step is not None:
                    step()
                try:
                    with poll_scope():
                        await source.poll(ctx)
                    errors.append("")
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            await client.aclose()
            store.close()
        return errors

    return run_virtual(main)


def scenario(days: int = 30) -> Any:
    return synthetic_org(NOW, REPOS, days, 40, DEPLOYS)


FIRST = "bench/svc-0000"


def of_first(asked: list[tuple[str, str]]) -> list[str]:
    return [dep for repo, dep in asked if repo == FIRST]


class TestDeploymentStatuses:
    def test_at_most_the_repos_share_of_slots_is_in_flight_newest_first(self) -> None:
        upstream = CountingGitHub(GitHubFake(scenario(), clock=lambda: NOW))
        assert polls(upstream) == [""]
        assert upstream.most == {FIRST: 8, "bench/svc-0001": 8}
        asked = of_first(upstream.asked)
        assert len(asked) == DEPLOYS
        assert asked == sorted(asked, key=int, reverse=True)  # newest (highest id) first

    def test_after_a_failed_status_no_further_one_is_sent(self) -> None:
        ids = sorted((str(d.id) for d in scenario().github[FIRST].deployments), key=int)
        broken = ids[-5]  # the fifth asked
        upstream = CountingGitHub(GitHubFake(scenario(), clock=lambda: NOW), broken=broken)
        (error,) = polls(upstream)
        assert "deployment statuses" in error
        asked = of_first(upstream.asked)
        # The ones in flight with it end; none starts after its answer: at most the
        # fifth and the 8 after it, of 30.
        assert broken in asked
        assert len(asked) <= 5 + 8

    def test_a_later_poll_asks_only_for_the_deployments_not_yet_final(self) -> None:
        """The three newest deployments are still in progress at the first poll, and
        finished at the second: only theirs are asked again. (A day of history: a
        deployment pending for longer no longer holds the list's cursor.)"""
        world = scenario(days=1)
        repo = world.github[FIRST]
        newest = sorted(repo.deployments, key=lambda d: d.id)[-3:]
        finals = {d.id: d.statuses.pop() for d in newest}
        upstream = CountingGitHub(GitHubFake(world, clock=lambda: NOW))
        first: list[tuple[str, str]] = []

        def finish() -> None:
            first.extend(upstream.asked)
            for dep in newest:
                dep.statuses.append(finals[dep.id])
            repo.touch()

        assert polls(upstream, finish) == ["", ""]
        assert len(of_first(first)) == DEPLOYS
        again = of_first(upstream.asked[len(first) :])
        assert sorted(again) == sorted(str(d.id) for d in newest)
