"""The Opsgenie source against the simulated Alert API.

The fake follows Opsgenie's documented shapes (docs.opsgenie.com): "Alert API" ("List
Alerts": ``GET /v2/alerts`` with ``query``, ``offset``, ``limit``, ``sort``, ``order``;
each alert's ``report.ackTime`` and ``report.closeTime`` in milliseconds),
"Pagination" (``paging.next`` and ``X-Paging-Next`` while more follow), "Search Query
Help" (``tag:``, ``status:``, ``createdAt`` comparisons in epoch milliseconds), "API
Rate Limiting" (``429``, ``X-RateLimit-State: THROTTLED``) and "Authentication"
(``Authorization: GenieKey …``; ``api.eu.opsgenie.com`` for the EU instance).
"""

from __future__ import annotations

from typing import Any

from exporter.core.sandbox.fakes import Fault
from exporter.core.sandbox.scenario import Scenario
from exporter.core.store import write_records
from exporter.domains.catalog.records import CatalogEntity, CatalogListing
from exporter.domains.incident.sandbox.data import API_KEY, FakeOgAlert, IncidentScenario
from exporter.domains.incident.sandbox.opsgenie import OpsgenieFake
from exporter.domains.incident.sources.opsgenie import OpsgenieSource
from tests.domains.incident.helpers import NOW, H, MovableClock, config, poller, stored

SERVICES: list[dict[str, Any]] = [
    {"name": "accounts", "team": "identity", "opsgenie_query": 'tag:"service:accounts"'},
]


def source(services: list[dict[str, Any]] = SERVICES, **extra: Any) -> OpsgenieSource:
    cfg = config(services, {"opsgenie": {"api_key": API_KEY, "max_pause": "5s", **extra}})
    settings = cfg.sources.opsgenie
    assert settings is not None
    return OpsgenieSource(cfg, settings)


def fake(clock: MovableClock, *alerts: FakeOgAlert) -> OpsgenieFake:
    return OpsgenieFake(IncidentScenario(anchor=NOW, opsgenie=list(alerts)), Scenario(clock=clock))


def alert(n: int, tag: str = "service:accounts", priority: str = "P1", **kw: Any) -> FakeOgAlert:
    return FakeOgAlert(f"alert-{n:03d}", str(n), priority, [tag], **kw)


class TestListing:
    def test_every_page_of_the_services_query(self) -> None:
        """Five alerts of accounts over pages of two, one of another service: five stored,
        each read with the service's query and the window's createdAt bound."""
        clock = MovableClock(NOW)
        og = fake(
            clock,
            *(alert(n, created_at=NOW - (6 - n) * H) for n in range(5)),
            alert(9, "service:search", created_at=NOW - H),
        )
        src = source(backfill_days=1)
        src.page_size = 2
        with poller(src, og.app, clock) as p:
            assert p.poll() == [""]
            assert sorted(stored(p.store)) == [f"opsgenie/alert-{n:03d}" for n in range(5)]
        queries = [q for path, q, _ in og.faults.log]
        assert len(queries) == 3
        assert all(
            f'query=(tag:"service:accounts") AND createdAt >= {int((NOW - 86400) * 1000)}' in q
            for q in queries
        )

    def test_ack_and_close_from_the_report(self) -> None:
        """Acknowledged at createdAt + ackTime, closed at createdAt + closeTime; P4 does not
        count with the default priorities (P1 to P3)."""
        clock = MovableClock(NOW)
        og = fake(
            clock,
            alert(1, created_at=NOW - 3 * H, acknowledged_at=NOW - 2.75 * H, closed_at=NOW - H),
            alert(2, priority="P4", created_at=NOW - 2 * H),
        )
        with poller(source(), og.app, clock) as p:
            assert p.poll() == [""]
            rows = stored(p.store)
        assert rows["opsgenie/alert-001"] == (
            "accounts",
            NOW - 3 * H,
            NOW - 2.75 * H,
            NOW - H,
            "P1",
            1,
        )
        assert rows["opsgenie/alert-002"] == ("accounts", NOW - 2 * H, None, None, "P4", 0)

    def test_open_across_two_polls_then_closed(self) -> None:
        clock = MovableClock(NOW)
        og = fake(clock, alert(1, created_at=NOW - 2 * H, closed_at=NOW + H))
        with poller(source(), og.app, clock) as p:

            def later() -> None:
                assert stored(p.store)["opsgenie/alert-001"][3] is None
                clock.at = NOW + 2 * H

            assert p.poll(2, later) == ["", ""]
            assert stored(p.store)["opsgenie/alert-001"][3] == NOW + H


class TestRateLimitAndAuth:
    def test_a_429_with_retry_after_is_waited_out(self) -> None:
        clock = MovableClock(NOW)
        og = fake(clock, alert(1, created_at=NOW - H))
        og.faults.add(
            Fault(
                "/v2/alerts",
                429,
                {"X-RateLimit-State": "THROTTLED", "Retry-After": "1"},
                b'{"message":"Too many requests","took":0.0,"requestId":"r"}',
            )
        )
        with poller(source(), og.app, clock) as p:
            assert p.poll() == [""]
            assert sorted(stored(p.store)) == ["opsgenie/alert-001"]
        assert og.faults.statuses()[429] == 1

    def test_a_throttled_answer_without_retry_after_waits_its_period(self) -> None:
        clock = MovableClock(NOW)
        og = fake(clock, alert(1, created_at=NOW - H))
        og.faults.add(
            Fault(
                "/v2/alerts",
                429,
                {"X-RateLimit-State": "THROTTLED", "X-RateLimit-Period-In-Sec": "1"},
            )
        )
        with poller(source(), og.app, clock) as p:
            assert p.poll() == [""]

    def test_a_bad_key_is_an_auth_error(self) -> None:
        clock = MovableClock(NOW)
        og = fake(clock, alert(1, created_at=NOW - H))
        og.api_key = "other"
        with poller(source(), og.app, clock) as p:
            [error] = p.poll()
        assert error.startswith("AuthError")

    def test_regions(self) -> None:
        eu = source(region="eu")
        assert eu.client_options()["base_url"] == "https://api.eu.opsgenie.com"
        assert source().client_options()["base_url"] == "https://api.opsgenie.com"
        assert eu.client_options()["headers"] == {"Authorization": f"GenieKey {API_KEY}"}


class TestCatalogAnnotation:
    def test_a_component_selector_is_the_services_query(self) -> None:
        clock = MovableClock(NOW)
        og = fake(clock, alert(1, "team:billing", created_at=NOW - H))
        cfg = config(
            [],
            {
                "opsgenie": {"api_key": API_KEY},
                "backstage": {"base_url": "http://backstage.invalid/api/catalog"},
            },
        )
        settings = cfg.sources.opsgenie
        assert settings is not None
        entity = CatalogEntity(
            "backstage",
            "component",
            "default",
            "billing",
            "payments",
            annotations=(("opsgenie.com/component-selector", 'tag:"team:billing"'),),
        )
        with poller(OpsgenieSource(cfg, settings), og.app, clock) as p:
            with p.store.transaction() as tx:
                write_records(tx, [CatalogListing("backstage", NOW - H, (entity,))])
            assert p.poll() == [""]
            assert stored(p.store)["opsgenie/alert-001"][0] == "billing"
