"""The Azure Cost Management source against a fake that follows the documented
Query API and client-credentials token shapes (exporter/domains/cost/sandbox/azure.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.domains.cost.sandbox.azure import AzureCostFake
from tests.support.exposition import Exposition

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).timestamp()
SCOPE = "/subscriptions/00000000-0000-0000-0000-000000000001"


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def setup(tmp_path: Path, clock: Clock, **azure: Any) -> tuple[Daemon, AzureCostFake]:
    fake = AzureCostFake(clock=clock, page_size=2)
    fake.costs = {
        (SCOPE, "2026-11-20"): [("checkout", 3.0, "EUR"), ("", 1.0, "EUR")],
        (SCOPE, "2026-11-21"): [("checkout", 2.0, "EUR"), ("search", 0.5, "EUR")],
    }
    cfg = Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}},
            {"name": "search", "team": "discovery", "cost": {"tags": {"service": "search"}}},
        ],
        sources={
            "azure_cost": {
                "tenant_id": "tenant-1",
                "client_id": "client-1",
                "client_secret": "secret-1",
                "scopes": [SCOPE],
                "lookback_days": 3,
                "data_delay_days": 1,
                "max_retry_wait": "5s",
                **azure,
            }
        },
    )
    daemon = Daemon(cfg, transport=fake.app().transport(), clock=clock)
    return daemon, fake


def poll(daemon: Daemon) -> Exposition:
    asyncio.run(daemon.poll(daemon.sources[0]))
    return Exposition.parse(daemon.holder.current.text)


class TestQuery:
    def test_daily_costs_by_tag_across_pages(self, tmp_path: Path) -> None:
        daemon, fake = setup(tmp_path, Clock())
        exp = poll(daemon)
        assert daemon.health["azure_cost"].up is True, daemon.health["azure_cost"].last_error
        cost = "platform_cost"
        assert exp.value(cost, service="checkout", window="1d", currency="EUR") == 2.0
        assert exp.value(cost, service="checkout", window="7d", currency="EUR") == 5.0
        assert exp.value(cost, service="search", window="1d", provider="azure") == 0.5
        # An empty TagValue is an untagged line: unallocated, not dropped.
        assert exp.value(cost, service="unallocated", window="7d") == 1.0
        # The whole previous month (for last_month), then this month's closed days in
        # two pages (each page is a POST of the same body).
        november = {"from": "2026-11-01T00:00:00+00:00", "to": "2026-11-21T23:59:59+00:00"}
        assert [q["timePeriod"] for q in fake.queries] == [
            {"from": "2026-10-01T00:00:00+00:00", "to": "2026-10-31T23:59:59+00:00"},
            november,
            november,
        ]
        body = fake.queries[-1]
        assert body["dataset"]["grouping"] == [{"type": "TagKey", "name": "service"}]  # type: ignore[index]
        # A token, October (no rows) and 4 rows at 2 per page: the nextLink was followed.
        assert daemon.health["azure_cost"].requests == {"200": 4}
        asyncio.run(daemon.shutdown())

    def test_settled_days_are_not_queried_again(self, tmp_path: Path) -> None:
        daemon, fake = setup(tmp_path, Clock())
        poll(daemon)
        first_poll = len(fake.queries)
        poll(daemon)
        # The second poll's query starts at the first unsettled day (data_delay_days=1).
        assert len(fake.queries) == first_poll + 1
        assert fake.queries[-1]["timePeriod"]["from"].startswith("2026-11-21")  # type: ignore[index]
        asyncio.run(daemon.shutdown())


class TestAuth:
    def test_the_token_is_reused_then_refreshed_before_it_expires(self, tmp_path: Path) -> None:
        clock = Clock()
        daemon, fake = setup(tmp_path, clock)
        poll(daemon)
        poll(daemon)
        assert fake.token_requests == 1
        clock.t += 3599 - 200  # within five minutes of expiry
        poll(daemon)
        assert fake.token_requests == 2
        assert daemon.health["azure_cost"].up is True
        asyncio.run(daemon.shutdown())

    def test_a_rejected_token_is_refreshed_once(self, tmp_path: Path) -> None:
        daemon, fake = setup(tmp_path, Clock())
        poll(daemon)
        fake.revoke_tokens()
        poll(daemon)
        assert fake.token_requests == 2
        assert daemon.health["azure_cost"].up is True
        asyncio.run(daemon.shutdown())

    def test_a_bad_secret_is_an_auth_error(self, tmp_path: Path) -> None:
        daemon, fake = setup(tmp_path, Clock(), client_secret="wrong")
        poll(daemon)
        health = daemon.health["azure_cost"]
        assert health.up is False
        assert health.errors["auth"] == 1
        assert "invalid_client" in (health.last_error or "")
        assert fake.queries == []
        asyncio.run(daemon.shutdown())


class TestThrottling:
    def test_429_waits_for_the_qpu_retry_after_header(self, tmp_path: Path) -> None:
        daemon, fake = setup(tmp_path, Clock())
        fake.throttles.append({"x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "1"})
        started = time.monotonic()
        exp = poll(daemon)
        assert time.monotonic() - started >= 1.0
        assert daemon.health["azure_cost"].up is True
        assert daemon.health["azure_cost"].requests["429"] == 1
        assert exp.value("platform_cost", service="checkout", window="1d") == 2.0
        asyncio.run(daemon.shutdown())

    def test_a_wait_longer_than_allowed_fails_the_poll_as_rate_limited(
        self, tmp_path: Path
    ) -> None:
        clock = Clock()
        daemon, fake = setup(tmp_path, clock)
        fake.throttles.append(
            {
                "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after": "2",
                "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after": "120",
            }
        )
        poll(daemon)
        health = daemon.health["azure_cost"]
        assert health.up is False
        assert health.errors["rate_limited"] == 1
        # Nothing was committed. Until the named 120 s have passed, a poll sends nothing.
        asked = len(fake.queries)
        poll(daemon)
        assert health.up is False
        assert len(fake.queries) == asked
        # After them, the next poll succeeds.
        clock.t += 121
        exp = poll(daemon)
        assert health.up is True
        assert exp.value("platform_cost", service="checkout", window="7d") == 5.0
        asyncio.run(daemon.shutdown())


@pytest.mark.parametrize("value", ["20261121", 20261121, "2026-11-21T00:00:00"])
def test_usage_date_forms(value: Any) -> None:
    from exporter.domains.cost.sources.azure_cost import _usage_date

    assert _usage_date(value) == "2026-11-21"


class TestLookback:
    def test_on_the_20th_the_whole_previous_month_is_read_in_31_day_queries(
        self, tmp_path: Path
    ) -> None:
        """2027-04-20, lookback 31 days: 31 days back is March 20th, but last_month needs
        March 1st. The days asked are March 1st to April 19th, in queries of at most 31
        days (the Query API's limit for a daily granularity); March's cost is in
        last_month."""
        clock = Clock()
        clock.t = datetime(2027, 4, 20, 10, 0, tzinfo=UTC).timestamp()
        daemon, fake = setup(tmp_path, clock, lookback_days=31)
        fake.costs = {
            (SCOPE, "2027-03-02"): [("checkout", 7.0, "EUR")],
            (SCOPE, "2027-04-19"): [("checkout", 1.0, "EUR")],
        }
        exp = poll(daemon)
        assert [q["timePeriod"] for q in fake.queries] == [
            {"from": "2027-03-01T00:00:00+00:00", "to": "2027-03-31T23:59:59+00:00"},
            {"from": "2027-04-01T00:00:00+00:00", "to": "2027-04-19T23:59:59+00:00"},
        ]
        cost = "platform_cost"
        assert exp.value(cost, service="checkout", window="last_month", currency="EUR") == 7.0
        assert exp.value(cost, service="checkout", window="30d", currency="EUR") == 1.0
        asyncio.run(daemon.shutdown())


class TestAttribution:
    def test_a_subscription_claimed_after_its_cost_was_read_takes_it_without_a_query(
        self, tmp_path: Path
    ) -> None:
        """Azure's cost is stored under (tag value, subscription): a service that claims
        the subscription at the next start takes what no tag claims (the untagged 1.0 of
        the 20th) before any query; tagged cost stays with its tag's service."""
        clock = Clock()
        daemon, fake = setup(tmp_path, clock, data_delay_days=0)
        assert poll(daemon).value("platform_cost", service="unallocated", window="7d") == 1.0
        asyncio.run(daemon.shutdown())
        queries = len(fake.queries)
        data = daemon.config.model_dump(exclude_unset=True)
        platform = {"name": "platform", "team": "platform", "cost": {"accounts": [SCOPE[15:]]}}
        data["services"] = [*data["services"], platform]
        again = Daemon(Config(**data), transport=fake.app().transport(), clock=clock)
        exp = Exposition.parse(again.holder.current.text)  # rendered at start
        assert exp.value("platform_cost", service="platform", window="7d", currency="EUR") == 1.0
        assert exp.value("platform_cost", service="checkout", window="7d", currency="EUR") == 5.0
        assert exp.samples("platform_cost", service="unallocated") == []
        poll(again)
        assert len(fake.queries) == queries  # every day settled: nothing asked again
        asyncio.run(again.shutdown())
