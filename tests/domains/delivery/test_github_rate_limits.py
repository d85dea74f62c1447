"""One pause for the whole GitHub source: a rate-limit answer stops every request until it ends.

GitHub's documented behaviour
(https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit):
over the primary limit it answers ``403`` or ``429`` with ``x-ratelimit-remaining: 0``
and the client waits until ``x-ratelimit-reset`` (UTC epoch seconds); over a secondary
limit it answers ``403`` or ``429`` with a message saying so, the client waits
``Retry-After`` seconds if given, else at least one minute, and "continuing to make
requests while you are rate limited may result in the banning of your integration".

The fake is the simulated GitHub of the sandbox behind an ``httpx.MockTransport``
that, from its 100th request, answers a run of rate-limit responses. The test runs
on virtual time (:mod:`tests.support.virtual_time`): the pauses cost no real time,
and every request is stamped with the instant it reached the fake.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from exporter.config import Config
from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client
from exporter.core.source import PollContext
from exporter.core.upstream import poll_scope
from exporter.domains import open_store
from exporter.domains.delivery.sandbox.data import synthetic_org
from exporter.domains.delivery.sandbox.github import TOKEN, GitHubFake
from exporter.domains.delivery.sources.github import GitHubSource
from tests.support.virtual_time import loop_epoch, run_virtual

NOW = 1_803_859_500.0  # 2027-03-01T00:05:00Z
REPOS = 12
CONCURRENCY = 8
LIMITED_FROM = 100  # the first rate-limited answer
# How many answers in a row are rate limited: the first, and then the next two after its
# pause. A request refused four times gives up (GitHub: "throw an error after a specific
# number of retries"); with three, every request gets through, and the backfill completes.
LIMITED = 3

# (status, headers, body) of a rate-limited answer at `now`, and until when it forbids calling.
Answer = Callable[[float], tuple[int, dict[str, str], bytes, float]]


def too_many_requests(now: float) -> tuple[int, dict[str, str], bytes, float]:
    body = {"message": "Too Many Requests", "documentation_url": "https://docs.github.com/rest"}
    return 429, {"Retry-After": "5"}, json.dumps(body).encode(), now + 5


def secondary_limit(now: float) -> tuple[int, dict[str, str], bytes, float]:
    """No Retry-After: GitHub asks for at least one minute."""
    body = {
        "message": "You have exceeded a secondary rate limit. Please wait a few minutes "
        "before you try again.",
        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
    }
    return 403, {}, json.dumps(body).encode(), now + 60


def primary_limit(now: float) -> tuple[int, dict[str, str], bytes, float]:
    reset = float(int(now) + 5)
    body = {
        "message": "API rate limit exceeded for user ID 1.",
        "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
    }
    headers = {
        "X-RateLimit-Limit": "5000",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Used": "5000",
        "X-RateLimit-Reset": str(int(reset)),
        "X-RateLimit-Resource": "core",
    }
    return 403, headers, json.dumps(body).encode(), reset


@dataclass
class Event:
    kind: str  # "sent" (a request reached the fake) or "limited" (it answered a rate limit)
    at: float
    until: float = 0.0


@dataclass
class LimitingGitHub:
    """The simulated GitHub, answering ``LIMITED`` rate limits in a row from request 100.

    Each test reads one backfill per kind of answer (run once, then shared: the run is
    deterministic on virtual time)."""

    answer: Answer
    clock: Callable[[], float]
    fake: GitHubFake
    events: list[Event] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        inner = self.fake.app.transport()

        async def handle(request: httpx.Request) -> httpx.Response:
            now = self.clock()
            self.events.append(Event("sent", now))
            sent = sum(1 for e in self.events if e.kind == "sent")
            if LIMITED_FROM <= sent < LIMITED_FROM + LIMITED:
                status, headers, body, until = self.answer(now)
                self.events.append(Event("limited", now, until))
                headers = {"Content-Type": "application/json", **headers}
                return httpx.Response(status, headers=headers, content=body)
            return await inner.handle_async_request(request)

        return httpx.MockTransport(handle)


@functools.cache
def run_backfill(answer: Answer) -> tuple[LimitingGitHub, SourceHealth, str]:
    services = [
        {"name": f"svc-{r:04d}", "team": "t", "ci": [{"github": f"bench/svc-{r:04d}"}]}
        for r in range(REPOS)
    ]
    config = Config(
        services=services,
        sources={
            "probe": {"enabled": False},
            "github": {
                "token": TOKEN,
                "concurrency": CONCURRENCY,
                "requests_per_second": 10_000,
                "max_pause": "90s",
            },
        },
        delivery={"backfill_days": 30},
        state={"path": ":memory:"},
    )
    settings = config.sources.github
    assert settings is not None
    source = GitHubSource(config, settings)
    source.backoff = 0.01

    async def main() -> tuple[LimitingGitHub, SourceHealth, str]:
        clock = loop_epoch(NOW)
        fake = GitHubFake(synthetic_org(NOW, REPOS, 30, 40, 6), clock=clock)
        upstream = LimitingGitHub(answer, clock, fake)
        health = SourceHealth("github", "github", settings.interval)
        store = open_store(":memory:")
        options: dict[str, Any] = source.client_options()
        client = build_client(
            health,
            timeout=settings.timeout,
            transport=upstream.transport(),
            clock=clock,
            max_pause=settings.max_pause,
            **options,
        )
        ctx = PollContext(store=store, health=health, client=client, now=clock)
        error = ""
        try:
            with poll_scope():
                await source.poll(ctx)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            await client.aclose()
            store.close()
        return upstream, health, error

    return run_virtual(main)


@pytest.mark.parametrize(
    "answer",
    [too_many_requests, secondary_limit, primary_limit],
    ids=["429-retry-after", "403-secondary-limit-body", "403-ratelimit-remaining-0"],
)
class TestOnePauseForTheWholeSource:
    def test_no_request_is_sent_until_the_pause_ends(self, answer: Answer) -> None:
        """After a rate-limited answer, the fake receives 0 requests until the instant it
        named (Retry-After, one minute, or x-ratelimit-reset), queued requests included."""
        upstream, _, error = run_backfill(answer)
        assert error == "", "the backfill finishes once the limits have passed"
        events = upstream.events
        limited = [i for i, e in enumerate(events) if e.kind == "limited"]
        assert len(limited) == LIMITED
        for i in limited:
            until = events[i].until
            early = [e.at for e in events[i + 1 :] if e.kind == "sent" and e.at < until - 1e-6]
            assert early == [], f"{len(early)} requests sent during the pause"

    def test_after_the_pause_at_most_concurrency_requests_go_before_the_next_limit(
        self, answer: Answer
    ) -> None:
        """When a pause ends, only the requests holding a connection slot go out; the
        next rate-limited answer pauses everything again."""
        upstream, _, _ = run_backfill(answer)
        events = upstream.events
        first = next(i for i, e in enumerate(events) if e.kind == "limited")
        # Between one rate-limited answer that started a pause and the next one handled after
        # the pause ended, count the requests sent.
        burst = 0
        bursts: list[int] = []
        pause_end = events[first].until
        for e in events[first + 1 :]:
            if e.kind == "sent" and e.at >= pause_end - 1e-6:
                burst += 1
            elif e.kind == "limited" and e.at >= pause_end - 1e-6:
                bursts.append(burst)
                burst = 0
                pause_end = e.until
        assert bursts, "the limits after the first pause were met"
        assert max(bursts) <= CONCURRENCY

    def test_the_pause_is_counted(self, answer: Answer) -> None:
        upstream, health, _ = run_backfill(answer)
        starts = [e for e in upstream.events if e.kind == "limited"]
        # Each pause is counted once, overlapping ones by their union.
        expected = 0.0
        end = 0.0
        for e in starts:
            expected += max(0.0, e.until - max(e.at, end))
            end = max(end, e.until)
        assert health.paused_seconds == pytest.approx(expected, abs=1e-3)
        # Every refused request waited for its pause to end before its retry.
        assert health.paused_requests >= LIMITED
