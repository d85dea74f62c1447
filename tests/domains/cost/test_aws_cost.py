"""The Cost Explorer source through boto3 against moto in server mode, with
GetCostAndUsage results queued through moto's own API
(``POST /moto-api/static/ce/cost-and-usage-results``). The tests of what is stored (across
restarts, re-queried days, the daily cap, attribution) run on SQLite and on PostgreSQL
(tests/conftest.py's ``state_location``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.config import Config
from exporter.core.backend import PostgresTarget
from exporter.daemon import Daemon
from exporter.domains import open_store
from tests.support.exposition import Exposition
from tests.support.moto import fresh_account, moto_server
from tests.support.prometheus import promtool_check_metrics
from tests.support.state import state_block

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).timestamp()
ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
State = Path | PostgresTarget  # where a test keeps its state, on either backend


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def moto(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return fresh_account(moto_url, monkeypatch)


def queue(moto: str, account: str, *results: dict[str, Any]) -> None:
    response = httpx.post(
        f"{moto}/moto-api/static/ce/cost-and-usage-results",
        json={"results": list(results), "account_id": account},
    )
    assert response.status_code == 201


def day(start: str, *groups: tuple[str, float]) -> dict[str, Any]:
    end = {"2026-11-19": "2026-11-20", "2026-11-20": "2026-11-21", "2026-11-21": "2026-11-22"}
    return {
        "TimePeriod": {"Start": start, "End": end[start]},
        "Total": {},
        "Groups": [
            {"Keys": [key], "Metrics": {"UnblendedCost": {"Amount": f"{v}", "Unit": "USD"}}}
            for key, v in groups
        ],
        "Estimated": start == "2026-11-21",
    }


def config(state: State, moto: str, **aws: Any) -> Config:
    """The config of a daemon keeping its state at ``state`` (either backend)."""
    return Config(
        state=state_block(state),
        services=[
            {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}},
            {
                "name": "payments-api",
                "team": "payments",
                "cost": {"tags": {"service": "payments-api"}},
            },
        ],
        sources={
            "aws_cost": {
                "endpoint_url": moto,
                "lookback_days": 3,
                "data_delay_days": 0,
                "timeout": "10s",
                **aws,
            }
        },
    )


TWO_ACCOUNTS = [
    {"name": "shop", "role_arn": f"arn:aws:iam::{ACCOUNT_A}:role/cost-reader"},
    {"name": "pay", "role_arn": f"arn:aws:iam::{ACCOUNT_B}:role/cost-reader", "external_id": "x-1"},
]


def poll(daemon: Daemon) -> Exposition:
    if daemon.leases is not None:
        daemon.renew_leases()  # PostgreSQL: the poll's commits need its lease
    asyncio.run(daemon.poll(daemon.sources[0]))
    return Exposition.parse(daemon.holder.current.text)


def paid(exp: Exposition) -> float | None:
    return exp.value("platform_exporter_paid_api_calls_total", source="aws_cost")


def queue_two_accounts(moto: str) -> None:
    # Account A answers in two pages; the first carries a NextPageToken.
    page1 = {
        "ResultsByTime": [
            day("2026-11-19", ("service$checkout", 1.5)),
            day("2026-11-20", ("service$checkout", 2.5), ("service$", 0.75)),
        ],
        "NextPageToken": "page-2",
        "DimensionValueAttributes": [],
    }
    page2 = {"ResultsByTime": [day("2026-11-21", ("service$checkout", 4.0))]}
    queue(moto, ACCOUNT_A, page1, page2)
    queue(moto, ACCOUNT_B, {"ResultsByTime": [day("2026-11-21", ("service$payments-api", 3.25))]})


class TestCostExplorer:
    def test_pages_and_two_accounts_through_assumed_roles(self, tmp_path: Path, moto: str) -> None:
        queue_two_accounts(moto)
        daemon = Daemon(
            config(tmp_path / "state.db", moto, accounts=TWO_ACCOUNTS), clock=lambda: NOW
        )
        exp = poll(daemon)
        assert daemon.health["aws_cost"].up is True, daemon.health["aws_cost"].last_error

        def cost(service: str, window: str) -> float | None:
            return exp.value("platform_cost", service=service, window=window, provider="aws")

        # Account A, page 2 (the 21st) and both pages over the week.
        assert cost("checkout", "1d") == pytest.approx(4.0)
        assert cost("checkout", "7d") == pytest.approx(8.0)
        # An untagged group ("service$") is kept as unallocated.
        assert cost("unallocated", "7d") == pytest.approx(0.75)
        # Account B, read through its own role: its queue is separate in moto.
        assert cost("payments-api", "1d") == pytest.approx(3.25)
        assert paid(exp) == 3  # two pages for A, one for B
        assert daemon.health["aws_cost"].requests == {"200": 3}
        end = datetime(2026, 11, 22, tzinfo=UTC).timestamp()
        assert exp.value("platform_cost_data_end_timestamp_seconds", source="aws_cost") == end
        assert promtool_check_metrics(daemon.holder.current.text) == ""
        asyncio.run(daemon.shutdown())

    def test_a_restart_makes_no_paid_call_for_closed_days(
        self, state_location: State, moto: str
    ) -> None:
        queue_two_accounts(moto)
        first = Daemon(config(state_location, moto, accounts=TWO_ACCOUNTS), clock=lambda: NOW)
        assert paid(poll(first)) == 3
        exp = poll(first)
        assert paid(exp) == 3  # a second poll: every day is settled
        asyncio.run(first.shutdown())

        second = Daemon(config(state_location, moto, accounts=TWO_ACCOUNTS), clock=lambda: NOW)
        exp = poll(second)
        assert second.health["aws_cost"].up is True
        assert second.health["aws_cost"].requests == {}
        assert paid(exp) == 3  # persisted across the restart, and not one more
        assert exp.value("platform_cost", service="checkout", window="7d") == pytest.approx(8.0)
        asyncio.run(second.shutdown())

    def test_unsettled_days_are_requeried_and_replaced(
        self, state_location: State, moto: str
    ) -> None:
        """With data_delay_days=1, the 21st is re-read (one call) and its new amount replaces the old."""
        queue(
            moto,
            "123456789012",
            {
                "ResultsByTime": [
                    day("2026-11-19"),
                    day("2026-11-20"),
                    day("2026-11-21", ("service$checkout", 1.0)),
                ]
            },
            {"ResultsByTime": [day("2026-11-21", ("service$checkout", 1.4))]},
        )
        cfg = config(state_location, moto, data_delay_days=1)
        first = Daemon(cfg, clock=lambda: NOW)
        assert first.health  # default credentials: one "default" scope
        exp = poll(first)
        assert exp.value("platform_cost", service="checkout", window="1d") == pytest.approx(1.0)
        asyncio.run(first.shutdown())
        second = Daemon(cfg, clock=lambda: NOW)
        exp = poll(second)
        assert paid(exp) == 2
        assert exp.value("platform_cost", service="checkout", window="1d") == pytest.approx(1.4)
        assert exp.value("platform_cost", service="checkout", window="7d") == pytest.approx(1.4)
        asyncio.run(second.shutdown())

    def test_the_daily_cap_holds(self, state_location: State, moto: str) -> None:
        queue_two_accounts(moto)
        clock: list[float] = [NOW]
        daemon = Daemon(
            config(state_location, moto, accounts=TWO_ACCOUNTS[:1], daily_call_cap=1),
            clock=lambda: clock[0],
        )
        exp = poll(daemon)
        health = daemon.health["aws_cost"]
        assert health.up is False
        assert health.errors["rate_limited"] == 1
        assert "daily cap of 1 paid Cost Explorer requests reached" in (health.last_error or "")
        assert paid(exp) == 1
        # A pagination cut short by the cap commits nothing partial.
        assert exp.samples("platform_cost") == []
        assert exp.value("platform_exporter_rate_limit_remaining", resource="paid_calls_today") == 0
        exp = poll(daemon)
        assert paid(exp) == 1  # still the same UTC day: no call at all
        clock[0] = NOW + 86400  # the next UTC day has a fresh budget
        exp = poll(daemon)
        assert paid(exp) == 2
        asyncio.run(daemon.shutdown())

    def test_denied_credentials_mark_the_source_down_as_auth(
        self, tmp_path: Path, moto: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from botocore.exceptions import ClientError

        from exporter.domains.cost.sources import aws_cost

        def deny(self: Any, account: Any, ctx: Any) -> Any:
            raise ClientError(
                {"Error": {"Code": "AccessDeniedException", "Message": "no ce:GetCostAndUsage"}},
                "GetCostAndUsage",
            )

        monkeypatch.setattr(aws_cost.AwsCostSource, "_ce_client", deny)
        daemon = Daemon(config(tmp_path / "state.db", moto), clock=lambda: NOW)
        poll(daemon)
        assert daemon.health["aws_cost"].errors["auth"] == 1
        asyncio.run(daemon.shutdown())


class TestLookback:
    def test_on_the_20th_the_whole_previous_month_is_asked_for(
        self, tmp_path: Path, moto: str
    ) -> None:
        """2026-11-20 with lookback_days 3: the request reaches back to October 1st (so
        last_month is whole), in one paid request, and every day of it is stored."""
        from exporter.domains.cost import store as cost_store

        queue(
            moto, "123456789012", {"ResultsByTime": [day("2026-11-19", ("service$checkout", 1.0))]}
        )
        now = datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp()
        daemon = Daemon(config(tmp_path / "state.db", moto), clock=lambda: now)
        exp = poll(daemon)
        assert daemon.health["aws_cost"].up is True, daemon.health["aws_cost"].last_error
        assert paid(exp) == 1
        days = sorted(o.split("/", 1)[1] for o in cost_store.origins(daemon.store, "aws_cost"))
        assert days[0] == "2026-10-01"
        assert days[-1] == "2026-11-19"
        assert len(days) == 31 + 19
        asyncio.run(daemon.shutdown())


class TestAttribution:
    """Cost Explorer's cost is stored under its groups' keys (tag value, linked account)
    and resolved to a service when the KPIs are computed (on SQLite and PostgreSQL)."""

    def ledger(self, state: State, moto: str) -> Config:
        cfg = config(state, moto)
        data = cfg.model_dump(exclude_unset=True, by_alias=True)
        ledger = {"name": "ledger", "team": "finance", "cost": {"tags": {"service": "ledger"}}}
        data["services"] = [*data["services"], ledger]
        return Config(**data)

    def first_poll(self, state: State, moto: str) -> None:
        """The 21st: checkout 4.0, and 2.0 tagged service=ledger, which nobody claims yet."""
        queue(
            moto,
            "123456789012",
            {
                "ResultsByTime": [
                    day("2026-11-21", ("service$checkout", 4.0), ("service$ledger", 2))
                ]
            },
        )
        first = Daemon(config(state, moto), clock=lambda: NOW)
        exp = poll(first)
        assert exp.value("platform_cost", service="unallocated", window="1d") == pytest.approx(2.0)
        assert paid(exp) == 1
        asyncio.run(first.shutdown())

    def test_a_tag_claimed_after_its_cost_was_read_moves_it_without_a_paid_call(
        self, state_location: State, moto: str
    ) -> None:
        self.first_poll(state_location, moto)
        second = Daemon(self.ledger(state_location, moto), clock=lambda: NOW)
        exp = Exposition.parse(second.holder.current.text)  # rendered at start
        assert exp.value("platform_cost", service="ledger", team="finance", window="1d") == 2.0
        assert exp.value("platform_cost", service="checkout", window="1d") == 4.0
        assert exp.samples("platform_cost", service="unallocated") == []
        exp = poll(second)  # every day is settled: nothing to ask
        assert second.health["aws_cost"].requests == {}
        assert paid(exp) == 1
        assert exp.value("platform_cost", service="ledger", window="7d") == 2.0
        asyncio.run(second.shutdown())

    def test_days_stored_before_keys_are_rebuilt_from_their_groups_without_a_paid_call(
        self, state_location: State, moto: str
    ) -> None:
        """The state an upgrade leaves: every row pinned to the service it had, and each
        origin's signature the old one, with the allocation rules in it."""
        self.first_poll(state_location, moto)
        store = open_store(state_location)
        with store.transaction() as tx:
            tx.execute(
                "UPDATE cost_daily SET ident = 'service:' || "
                "(SELECT service FROM cost_idents i WHERE i.ident = cost_daily.ident)"
            )
            tx.execute("DELETE FROM cost_idents WHERE ident NOT LIKE 'service:%'")
            tx.execute(
                "INSERT INTO cost_idents (ident, service, team) "
                "VALUES ('service:checkout', 'checkout', 'payments'), "
                "('service:unallocated', 'unallocated', 'unallocated')"
            )
            tx.execute(
                "UPDATE cost_origins SET signature = "
                "replace(signature, '|keyed|', '|alloc=0123456789abcdef|')"
            )
        store.close()
        second = Daemon(self.ledger(state_location, moto), clock=lambda: NOW)
        exp = Exposition.parse(second.holder.current.text)
        assert exp.value("platform_cost", service="unallocated", window="1d") == 2.0  # pinned
        exp = poll(second)
        assert second.health["aws_cost"].requests == {}
        assert paid(exp) == 1
        assert exp.value("platform_cost", service="ledger", window="1d") == 2.0
        assert exp.value("platform_cost", service="checkout", window="1d") == 4.0
        assert exp.samples("platform_cost", service="unallocated") == []
        asyncio.run(second.shutdown())
