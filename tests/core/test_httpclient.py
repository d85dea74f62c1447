"""The shared upstream client: request counting and the retry policy of ``send``.

Every upstream is an ``httpx.MockTransport`` that answers from a script; waits
between attempts are recorded instead of slept.
"""

from __future__ import annotations

import asyncio
import email.utils

import httpx
import pytest

from exporter.core.clock import FixedClock
from exporter.core.errors import AuthError, RateLimited, UpstreamStatusError, classify
from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client, parse_retry_after, send
from tests.support.slow import SlowUpstream

Script = list[httpx.Response | Exception]
NOW = 1_803_859_500.0  # 2027-03-01T00:05:00Z


class Upstream:
    """Answers each request with the next scripted response (or raises the scripted error)."""

    def __init__(self, script: Script) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


class Waits(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def call(
    script: Script, health: SourceHealth | None = None, **kwargs: object
) -> tuple[httpx.Response | Exception, Upstream, Waits, SourceHealth]:
    upstream = Upstream(script)
    waits = Waits()
    health = health or SourceHealth("test", "test", 60.0)
    # One clock for the client's pause and for send's reading of Retry-After.
    clock = kwargs.setdefault("clock", FixedClock(NOW))

    async def go() -> httpx.Response | Exception:
        client = build_client(
            health,
            timeout=1.0,
            base_url="https://api.example",
            transport=httpx.MockTransport(upstream),
            sleep=waits,
            clock=clock,  # type: ignore[arg-type]
        )
        try:
            return await send(client, "GET", "/things", sleep=waits, health=health, **kwargs)  # type: ignore[arg-type]
        except Exception as exc:
            return exc
        finally:
            await client.aclose()

    return asyncio.run(go()), upstream, waits, health


def ok(body: str = "{}") -> httpx.Response:
    return httpx.Response(200, text=body)


class TestRetries:
    def test_5xx_is_retried_with_growing_backoff(self) -> None:
        result, upstream, waits, _ = call(
            [httpx.Response(502), httpx.Response(503), httpx.Response(500), ok()], backoff=1.0
        )
        assert isinstance(result, httpx.Response) and result.status_code == 200
        assert len(upstream.requests) == 4
        # Exponential with up to 1s of jitter: 1, 2, 4 seconds plus jitter.
        assert len(waits) == 3
        for wait, base in zip(waits, (1.0, 2.0, 4.0), strict=True):
            assert base <= wait <= base + 1.0

    def test_backoff_is_capped(self) -> None:
        _, _, waits, _ = call([httpx.Response(500)] * 3 + [ok()], backoff=10.0, max_backoff=12.0)
        assert all(w <= 12.0 for w in waits)

    def test_5xx_gives_up_after_the_attempts(self) -> None:
        result, upstream, waits, _ = call([httpx.Response(503, text="busy")] * 3, attempts=3)
        assert isinstance(result, UpstreamStatusError)
        assert result.status_code == 503 and classify(result) == "http_5xx"
        assert "busy" in str(result)
        assert len(upstream.requests) == 3 and len(waits) == 2

    def test_other_4xx_fail_at_once(self) -> None:
        result, upstream, _, _ = call([httpx.Response(404), ok()])
        assert isinstance(result, UpstreamStatusError) and classify(result) == "http_4xx"
        assert len(upstream.requests) == 1

    def test_statuses_listed_as_ok_are_returned(self) -> None:
        result, _, _, _ = call([httpx.Response(304)], ok=(200, 304))
        assert isinstance(result, httpx.Response) and result.status_code == 304


class TestRateLimits:
    def test_429_waits_as_long_as_retry_after_says(self) -> None:
        result, upstream, waits, _ = call([httpx.Response(429, headers={"Retry-After": "7"}), ok()])
        assert isinstance(result, httpx.Response) and result.status_code == 200
        assert waits == [7.0]
        assert len(upstream.requests) == 2

    def test_403_with_retry_after_is_a_secondary_rate_limit(self) -> None:
        result, _, waits, _ = call([httpx.Response(403, headers={"Retry-After": "3"}), ok()])
        assert isinstance(result, httpx.Response)
        assert waits == [3.0]

    def test_403_with_exhausted_budget_is_rate_limited_not_auth(self) -> None:
        result, upstream, waits, _ = call(
            [httpx.Response(403, headers={"X-RateLimit-Remaining": "0"})] * 2,
            attempts=2,
            backoff=0.5,
        )
        assert isinstance(result, RateLimited) and classify(result) == "rate_limited"
        assert len(upstream.requests) == 2 and len(waits) == 1

    def test_retry_after_as_an_http_date_is_read_against_the_clock(self) -> None:
        """An HTTP-date Retry-After 30 s after the clock's now waits 30 s."""
        when = email.utils.formatdate(NOW + 30, usegmt=True)
        _, _, waits, _ = call(
            [httpx.Response(429, headers={"Retry-After": when}), ok()], clock=FixedClock(NOW)
        )
        assert waits == [30.0]

    def test_retry_after_beyond_the_cap_ends_the_poll_without_waiting(self) -> None:
        result, upstream, waits, _ = call(
            [httpx.Response(429, headers={"Retry-After": "3600"}), ok()], max_retry_after=60
        )
        assert isinstance(result, RateLimited)
        assert result.retry_after == 3600
        assert waits == [] and len(upstream.requests) == 1

    @pytest.mark.parametrize(
        ("header", "seconds"),
        [("5", 5.0), ("0", 0.0), ("-3", 0.0), ("2.5", 2.5), ("soon", None), ("", None)],
    )
    def test_parse_retry_after(self, header: str, seconds: float | None) -> None:
        assert parse_retry_after(header, NOW) == seconds

    def test_an_http_date_in_the_past_is_no_wait(self) -> None:
        assert parse_retry_after(email.utils.formatdate(NOW - 5, usegmt=True), NOW) == 0.0


class TestAuth:
    def test_401_fails_at_once_with_exactly_one_request(self) -> None:
        result, upstream, waits, _ = call([httpx.Response(401, text="Bad credentials"), ok()])
        assert isinstance(result, AuthError) and classify(result) == "auth"
        assert "Bad credentials" in str(result)
        assert len(upstream.requests) == 1 and waits == []

    def test_403_without_rate_limit_signs_is_auth(self) -> None:
        result, upstream, _, _ = call([httpx.Response(403), ok()])
        assert isinstance(result, AuthError)
        assert len(upstream.requests) == 1

    def test_the_query_string_is_kept_out_of_error_messages(self) -> None:
        upstream = Upstream([httpx.Response(401)])

        async def go() -> Exception:
            client = build_client(
                SourceHealth("t", "t", 1), timeout=1, transport=httpx.MockTransport(upstream)
            )
            try:
                await send(client, "GET", "https://api.example/x?token=abc")
            except AuthError as exc:
                return exc
            finally:
                await client.aclose()
            raise AssertionError("no error")

        assert "token=abc" not in str(asyncio.run(go()))


class TestTransportErrors:
    def test_timeouts_are_retried_then_raised_as_timeout(self) -> None:
        result, upstream, waits, health = call([httpx.ReadTimeout("slow")] * 3, attempts=3)
        assert isinstance(result, httpx.TimeoutException) and classify(result) == "timeout"
        assert len(upstream.requests) == 3 and len(waits) == 2
        assert health.requests == {"error": 3}

    def test_a_connect_error_then_success(self) -> None:
        result, _, waits, health = call([httpx.ConnectError("refused"), ok()])
        assert isinstance(result, httpx.Response)
        assert len(waits) == 1
        assert health.requests == {"error": 1, "200": 1}

    @pytest.mark.integration
    def test_a_real_slow_answer_past_the_timeout_is_retried_then_a_timeout(
        self, slow_upstream: SlowUpstream
    ) -> None:
        """MockTransport cannot time out, so this one talks to a real slow server."""
        health = SourceHealth("t", "t", 1)
        waits = Waits()

        async def go() -> BaseException | None:
            client = build_client(health, timeout=0.1, base_url=slow_upstream.url)
            try:
                await send(client, "GET", "/sleep/1", attempts=2, sleep=waits, health=health)
            except Exception as exc:
                return exc
            finally:
                await client.aclose()
            return None

        result = asyncio.run(go())
        assert isinstance(result, httpx.ReadTimeout) and classify(result) == "timeout"
        assert slow_upstream.requests == ["/sleep/1", "/sleep/1"]
        assert len(waits) == 1
        assert health.requests == {"error": 2}


class TestRequestCounting:
    def test_every_answer_is_counted_by_status_code(self) -> None:
        _, _, _, health = call([httpx.Response(500), httpx.Response(429), ok()], backoff=0.01)
        assert health.requests == {"500": 1, "429": 1, "200": 1}

    def test_requests_carry_the_user_agent(self) -> None:
        _, upstream, _, _ = call([ok()])
        assert upstream.requests[0].headers["User-Agent"].startswith("platform-kpi-exporter/")
