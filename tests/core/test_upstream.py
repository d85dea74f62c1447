"""The gate every upstream request passes: rate-limit rules, slot order and timeout, retry budget.

Rate-limit rules are GitHub's
(https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit)
and GitLab's ``RateLimit-*`` headers
(https://docs.gitlab.com/administration/settings/user_and_ip_rate_limits/#response-headers).
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from exporter.core.clock import FixedClock
from exporter.core.errors import DeadlineExceeded, RateLimited, UpstreamStatusError
from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client, describe, send
from exporter.core.upstream import (
    PollScope,
    PrioritySlots,
    UnitPlan,
    pause_until,
    poll_scope,
    working_on,
)
from tests.support.virtual_time import loop_epoch, run_virtual

NOW = 1_803_859_500.0  # 2027-03-01T00:05:00Z


def answer(status: int, headers: dict[str, str] | None = None, message: str = "") -> httpx.Response:
    body = json.dumps({"message": message}).encode() if message else b""
    return httpx.Response(status, headers=headers or {}, content=body)


class TestPauseRules:
    @pytest.mark.parametrize(
        ("response", "until"),
        [
            (answer(429, {"Retry-After": "5"}), NOW + 5),
            (answer(429), NOW + 60),  # no time named: at least one minute
            (answer(403, message="You have exceeded a secondary rate limit."), NOW + 60),
            (
                answer(403, {"Retry-After": "30"}, "You have exceeded a secondary rate limit."),
                NOW + 30,
            ),
            (
                answer(
                    403, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 900)}
                ),
                NOW + 900,
            ),
            # The budget is spent: the next request would be refused, so wait for the reset.
            (
                answer(
                    200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 40)}
                ),
                NOW + 40,
            ),
            (
                answer(429, {"RateLimit-Remaining": "0", "RateLimit-Reset": str(int(NOW) + 20)}),
                NOW + 20,
            ),
            (answer(403, message="Resource not accessible by integration"), None),  # permissions
            (answer(200, {"X-RateLimit-Remaining": "12"}), None),
            (answer(500), None),
            (
                answer(
                    429,
                    {
                        "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "2",
                        "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after": "120",
                    },
                ),
                NOW + 120,
            ),
        ],
        ids=[
            "429-retry-after",
            "429-bare",
            "403-secondary-body",
            "403-secondary-retry-after",
            "403-primary-spent",
            "200-spent",
            "gitlab-429",
            "403-forbidden",
            "200-budget-left",
            "500",
            "azure-429-longest-quota-wait",
        ],
    )
    def test_when_the_upstream_may_be_called_again(
        self, response: httpx.Response, until: float | None
    ) -> None:
        assert pause_until(response, response.content, NOW) == until


class TestSlots:
    def test_waiters_get_slots_lowest_priority_first_then_in_arrival_order(self) -> None:
        async def main() -> list[str]:
            slots = PrioritySlots(1)
            await slots.acquire(0, lambda: None)
            order: list[str] = []

            async def take(name: str, priority: int) -> None:
                await slots.acquire(priority, lambda: None)
                order.append(name)
                slots.release()

            tasks = [
                asyncio.create_task(take(n, p))
                for n, p in [("late-1", 3), ("early-1", 1), ("late-2", 3), ("early-2", 1)]
            ]
            await asyncio.sleep(0)
            slots.release()
            await asyncio.gather(*tasks)
            return order

        assert run_virtual(main) == ["early-1", "early-2", "late-1", "late-2"]

    def test_the_wait_for_a_slot_counts_toward_the_request_timeout(self) -> None:
        """Two slots held by answers that take 10 s: a third request with a 2 s timeout
        gives up after 2 s in the queue, with a PoolTimeout, never reaching the upstream."""

        async def main() -> tuple[list[str], float, BaseException | None]:
            seen: list[str] = []

            async def slow(request: httpx.Request) -> httpx.Response:
                seen.append(request.url.path)
                await asyncio.sleep(10)
                return httpx.Response(200)

            client = build_client(
                SourceHealth("t", "t", 60),
                timeout=2.0,
                base_url="https://up.example",
                transport=httpx.MockTransport(slow),
                max_connections=2,
                clock=loop_epoch(NOW),
            )
            loop = asyncio.get_running_loop()
            busy = [asyncio.create_task(client.get(f"/busy/{i}")) for i in range(2)]
            await asyncio.sleep(0.1)
            started = loop.time()
            error: BaseException | None = None
            try:
                await client.get("/queued")
            except httpx.PoolTimeout as exc:
                error = exc
            waited = loop.time() - started
            for task in busy:
                task.cancel()
            await asyncio.gather(*busy, return_exceptions=True)
            await client.aclose()
            return seen, waited, error

        seen, waited, error = run_virtual(main)
        assert isinstance(error, httpx.PoolTimeout)
        assert waited == pytest.approx(2.0, abs=0.01)
        assert seen == ["/busy/0", "/busy/1"]


class TestRetryBudget:
    def test_5xx_retries_stop_when_the_polls_budget_is_spent(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Budget: 10 % of requests, at least 2 here. Ten requests to an upstream answering
        500 each get their first attempt; only 2 retries follow, then each fails at once."""
        sent: list[str] = []

        def always_500(request: httpx.Request) -> httpx.Response:
            sent.append(request.url.path)
            return httpx.Response(500, text="down")

        async def main() -> list[BaseException | httpx.Response]:
            client = build_client(
                SourceHealth("t", "t", 60),
                timeout=1.0,
                base_url="https://up.example",
                transport=httpx.MockTransport(always_500),
                max_connections=1,
            )
            with poll_scope(PollScope(retry_ratio=0.1, retry_floor=2)):
                results = await asyncio.gather(
                    *(send(client, "GET", f"/r/{i}", backoff=0.01, attempts=4) for i in range(10)),
                    return_exceptions=True,
                )
            await client.aclose()
            return results

        with caplog.at_level(logging.WARNING, "exporter.httpclient"):
            results = run_virtual(main)
        assert all(isinstance(r, UpstreamStatusError) for r in results)
        assert len(sent) == 10 + 2
        assert "retry budget is spent" in caplog.text

    def test_without_a_poll_every_request_keeps_its_attempts(self) -> None:
        sent: list[str] = []

        def always_500(request: httpx.Request) -> httpx.Response:
            sent.append(request.url.path)
            return httpx.Response(500)

        async def main() -> None:
            client = build_client(
                SourceHealth("t", "t", 60),
                timeout=1.0,
                transport=httpx.MockTransport(always_500),
                clock=FixedClock(NOW),
            )
            with pytest.raises(UpstreamStatusError):
                await send(client, "GET", "https://up.example/x", backoff=0.01, attempts=3)
            await client.aclose()

        run_virtual(main)
        assert len(sent) == 3


class TestReasons:
    def test_a_timeout_without_a_message_is_described(self) -> None:
        """httpx raises ReadTimeout('') on a silent upstream: the log line names it anyway."""
        assert describe(httpx.ReadTimeout("")) == "ReadTimeout: no answer within the timeout"
        assert describe(httpx.ConnectError("refused")) == "refused"

    def test_units_mark_their_requests_with_their_order(self) -> None:
        """A task marked as unit 3 is served after unit 1's waiting requests."""

        async def main() -> list[int]:
            slots = PrioritySlots(1)
            await slots.acquire(0, lambda: None)
            got: list[int] = []

            async def unit(order: int) -> None:
                working_on(order)
                from exporter.core.upstream import _PRIORITY

                await slots.acquire(_PRIORITY.get(), lambda: None)
                got.append(order)
                slots.release()

            tasks = [asyncio.create_task(unit(o)) for o in (3, 1, 2)]
            await asyncio.sleep(0)
            slots.release()
            await asyncio.gather(*tasks)
            return got

        assert run_virtual(main) == [1, 2, 3]


class TestUnitPlan:
    """A unit (a repo of a backfill) starts only when it can finish: before the poll's
    deadline, and within the rate-limit budget unless its reset is near enough to wait."""

    @staticmethod
    def plan_after_one_unit(seconds: float, requests: int) -> UnitPlan:
        """A plan of the current poll that has seen one unit take ``seconds`` and ``requests``."""
        plan = UnitPlan(FixedClock(NOW))
        work = plan.start()
        work.started -= seconds
        work.requests = requests
        plan.finish(work)
        return plan

    def test_with_no_unit_finished_units_start_freely(self) -> None:
        async def main() -> object:
            loop = asyncio.get_running_loop()
            with poll_scope(PollScope(deadline=loop.time() + 0.001, budget_left=0.0)):
                return UnitPlan(FixedClock(NOW)).refusal(3, 3)

        assert run_virtual(main) is None

    def test_a_unit_starts_while_its_time_with_a_margin_is_left(self) -> None:
        async def main() -> tuple[object, object]:
            loop = asyncio.get_running_loop()
            with poll_scope(PollScope(deadline=loop.time() + 16.0)):
                plan = self.plan_after_one_unit(10.0, 5)
                early = plan.refusal(2, 3)
                await asyncio.sleep(2.0)  # 14 s left, under 1.5 x 10 s
                return early, plan.refusal(2, 3)

        early, late = run_virtual(main)
        assert early is None
        assert isinstance(late, DeadlineExceeded)
        assert "2 of 3 units are left for the next poll" in str(late)

    def test_the_budget_must_cover_the_next_unit_and_what_the_ones_in_flight_still_send(
        self,
    ) -> None:
        """The costliest unit sent 10 requests; one in flight has sent 4 (so 6 may follow),
        one of them still unanswered. The next unit needs 1 + 6 + 10 = 17 of the budget."""

        async def main() -> list[object]:
            out: list[object] = []
            for left in (17.0, 16.0):
                scope = PollScope(budget_left=left, budget_reset=NOW + 600, in_flight=1)
                with poll_scope(scope):
                    plan = self.plan_after_one_unit(1.0, 10)
                    plan.start().requests = 4
                    out.append(plan.refusal(5, 6))
            return out

        enough, short = run_virtual(main)
        assert enough is None
        assert isinstance(short, RateLimited)
        assert short.retry_after == pytest.approx(600.0)

    def test_an_estimate_from_an_earlier_poll_of_the_backfill_holds_from_the_first_unit(
        self,
    ) -> None:
        """The round of a backfill starts over with committed repos answered 304 (cheap):
        the costliest unit of its earlier polls still decides."""

        async def main() -> object:
            loop = asyncio.get_running_loop()
            with poll_scope(PollScope(deadline=loop.time() + 14.0)):
                return UnitPlan(FixedClock(NOW), seen=(10.0, 5)).refusal(4, 4)

        assert isinstance(run_virtual(main), DeadlineExceeded)

    def test_a_spent_budget_whose_reset_the_gate_waits_for_does_not_stop_units(self) -> None:
        async def main() -> object:
            scope = PollScope(budget_left=0.0, budget_reset=NOW + 30, max_pause=60.0)
            with poll_scope(scope):
                return self.plan_after_one_unit(1.0, 10).refusal(1, 2)

        assert run_virtual(main) is None
