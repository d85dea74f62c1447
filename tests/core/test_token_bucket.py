"""The per-host token bucket and rate-limit header reading of exporter.core.httpclient."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from exporter.core.errors import RateLimited
from exporter.core.health import SourceHealth
from exporter.core.httpclient import TokenBucket, build_client, host_bucket, read_rate_limit


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class TestTokenBucket:
    def test_burst_then_paced(self) -> None:
        """Rate 10/s with a burst of 3: three tokens at once, then one every 100 ms."""
        clock = Clock()
        bucket = TokenBucket(10.0, burst=3, clock=clock)
        waits = [bucket.reserve() for _ in range(5)]
        assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2])

    def test_idle_bucket_refills_to_burst_only(self) -> None:
        clock = Clock()
        bucket = TokenBucket(10.0, burst=2, clock=clock)
        bucket.reserve()
        clock.t += 60
        waits = [bucket.reserve() for _ in range(3)]
        assert waits == pytest.approx([0.0, 0.0, 0.1])

    def test_slow_down_spreads_the_remaining_budget_until_reset(self) -> None:
        """10 requests left, reset in 100 s: one request every 10 s, not all at once."""
        clock = Clock()
        bucket = TokenBucket(100.0, burst=1, clock=clock)
        bucket.slow_down(remaining=10, reset_in=100)
        waits = [bucket.reserve() for _ in range(3)]
        assert waits == pytest.approx([0.0, 10.0, 20.0])
        clock.t += 200  # past the reset: full speed again
        assert bucket.reserve() == 0.0

    def test_a_wait_beyond_the_cap_raises_rate_limited(self) -> None:
        clock = Clock()
        bucket = TokenBucket(1.0, burst=1, clock=clock)
        bucket.slow_down(remaining=0, reset_in=3600)
        bucket.reserve()
        with pytest.raises(RateLimited):
            asyncio.run(bucket.acquire(max_wait=5))

    def test_one_bucket_per_host(self) -> None:
        assert host_bucket("a.example", 5.0) is host_bucket("a.example", 5.0)
        assert host_bucket("a.example", 5.0) is not host_bucket("b.example", 5.0)

    def test_a_bucket_does_not_outlive_its_event_loop(self) -> None:
        """Its tokens are reserved on the loop's clock: a later loop (whose clock may
        start anywhere, as a virtual-time loop's does) gets a bucket of its own."""

        async def bucket() -> TokenBucket:
            return host_bucket("loop.example", 5.0)

        async def twice() -> tuple[TokenBucket, TokenBucket]:
            return await bucket(), await bucket()

        first, again = asyncio.run(twice())
        assert first is again
        assert asyncio.run(bucket()) is not first


class TestRateLimitHeaders:
    def test_github_headers(self) -> None:
        headers = httpx.Headers(
            {
                "X-RateLimit-Remaining": "42",
                "X-RateLimit-Reset": "1100",
                "X-RateLimit-Resource": "core",
            }
        )
        assert read_rate_limit(headers, now=1000.0) == ("core", 42.0, 100.0)

    def test_gitlab_headers(self) -> None:
        headers = httpx.Headers({"RateLimit-Remaining": "7", "RateLimit-Reset": "1060"})
        assert read_rate_limit(headers, now=1000.0) == ("core", 7.0, 60.0)

    def test_budget_is_recorded_and_bucket_slowed_near_the_reserve(self) -> None:
        health = SourceHealth("github", "github", 60.0)

        def handler(request: httpx.Request) -> httpx.Response:
            import time

            return httpx.Response(
                200,
                json={},
                headers={
                    "X-RateLimit-Remaining": "5",
                    "X-RateLimit-Reset": str(int(time.time()) + 50),
                },
            )

        async def go() -> float:
            async with build_client(
                health,
                timeout=5,
                transport=httpx.MockTransport(handler),
                base_url="https://slow.example",
                rate=1000.0,
                reserve=10,
            ) as client:
                await client.get("/x")
            bucket = host_bucket("slow.example", 1000.0)
            bucket.reserve()
            return bucket.reserve()

        wait = asyncio.run(go())
        assert health.rate_limit_remaining == {"core": 5.0}
        assert wait > 5.0  # ~50 s / 5 requests apart
