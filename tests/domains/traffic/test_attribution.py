"""Service attribution that survives the catalog's timing.

Traffic is stored under its gateway identity (host and path) and resolved to a service
through the catalog as it is at each refresh; gateway sources wait for the catalog's
first load before their first poll (bounded). The platform: Backstage lists
payments-api (``shop.test/payments``), search (``/search``) and ledger (no routes);
the config lists checkout (``shop.test/checkout``).

The access log of every test, hand-counted:

* checkout: 3 x 200 and 1 x 502 -> 4 requests, availability 3/4;
* payments-api: 5 x 200 (``/payments/charge?id=N``, a path per request);
* search: 2 x 200 and 1 x 404 -> 3 requests, availability 1;
* unmapped: 2 x 200 on ``other.test``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from exporter.core.clock import utc_datetime
from tests.domains.traffic.attribution_platform import Platform, component, group, line
from tests.support.exposition import Exposition
from tests.support.instants import at, each_instant

NOW = at("mid-month")
CHECKOUT = {"name": "checkout", "team": "payments", "routes": ["shop.test/checkout"]}


def catalog(payments_routes: str | None = "shop.test/payments") -> list[dict[str, object]]:
    return [
        group("payments"),
        group("discovery"),
        group("finance"),
        component("payments-api", "group:default/payments", payments_routes),
        component("search", "discovery", "/search"),  # a ref without kind names a Group
        component("ledger", "group:default/finance"),
    ]


def access_log(start: float) -> list[str]:
    """The hand-counted lines above, one a second from ``start``."""
    requests = (
        [("shop.test", "/checkout/cart", 200)] * 3
        + [("shop.test", "/checkout/pay", 502)]
        + [("shop.test", f"/payments/charge?id={i}", 200) for i in range(5)]
        + [("any.test", "/search/q?term=shoes", 200)] * 2
        + [("any.test", "/search/q", 404)]
        + [("other.test", "/elsewhere", 200)] * 2
    )
    return [line(start + i, host, uri, status) for i, (host, uri, status) in enumerate(requests)]


def samples(m: Exposition, service: str, window: str) -> float | None:
    return m.value("platform_service_request_samples", service=service, window=window)


def availability(m: Exposition, service: str, window: str) -> float | None:
    return m.value("platform_service_availability_ratio", service=service, window=window)


def counted(m: Exposition, service: str) -> float:
    """Requests the exported counter holds for ``service``, over status classes."""
    return sum(v for _, v in m.samples("platform_service_requests_total", service=service))


class TestFirstStartOnAnExistingAccessLog:
    """The log is already written when the daemon first starts, Backstage up."""

    def test_every_line_is_attributed_to_its_service_and_adoption_is_exact(
        self, tmp_path: Path
    ) -> None:
        p = Platform(tmp_path, NOW, catalog(), services=[CHECKOUT])
        p.write(*access_log(NOW - 1800))
        try:
            assert p.poll_all()
            m = p.metrics()
            # The counters too: the NGINX source read the log after the catalog's first load.
            assert counted(m, "checkout") == 4
            assert counted(m, "payments-api") == 5
            assert counted(m, "search") == 3
            assert counted(m, "unmapped") == 2
            for window in ("1h", "1d", "7d", "30d"):
                assert samples(m, "checkout", window) == 4
                assert samples(m, "payments-api", window) == 5
                assert samples(m, "search", window) == 3
                assert samples(m, "unmapped", window) == 2
                assert availability(m, "checkout", window) == pytest.approx(0.75)
            assert m.value("platform_service_requests_total", service="search", code_class="4xx")
            # Adoption: 3 of the 4 catalog services served gateway traffic; ledger did not.
            gateway = {"capability": "api-gateway"}
            assert m.value("platform_capability_adopting_services", **gateway) == 3
            assert m.value("platform_capability_adopting_teams", **gateway) == 2
            assert m.value("platform_capability_adoption_ratio", **gateway) == pytest.approx(0.75)
            assert m.value("platform_active_services") == 3
            assert m.value("platform_teams_onboarded") == 2
            assert m.value("platform_exporter_source_without_catalog", source="nginx") == 0
        finally:
            p.close()


class TestCatalogDownAtFirstStart:
    """Backstage answers 503 at first start; it comes back later."""

    def test_the_others_go_ahead_after_the_bound_and_are_corrected_when_it_returns(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        p = Platform(tmp_path, NOW, catalog(), services=[CHECKOUT], first_load_timeout=0.3)
        p.write(*access_log(NOW - 1800))
        p.down = True
        try:
            with caplog.at_level(logging.WARNING, logger="exporter.daemon"):
                assert not p.poll_all()  # Backstage failed; NGINX polled after the bound
            assert any(
                "source nginx: the catalog (backstage) has not loaded within 0.3s" in r.message
                for r in caplog.records
            )
            m = p.metrics()
            assert m.value("platform_exporter_source_up", source="backstage") == 0
            assert m.value("platform_exporter_source_up", source="nginx") == 1
            assert m.value("platform_exporter_source_without_catalog", source="nginx") == 1
            # Only the config's services: Backstage's traffic is unmapped for now.
            assert samples(m, "checkout", "1h") == 4
            assert samples(m, "unmapped", "1h") == 2 + 5 + 3
            assert samples(m, "payments-api", "1h") is None

            p.down = False
            p.clock.advance(60)
            assert p.poll("backstage")
            m = p.metrics()
            assert m.value("platform_exporter_source_without_catalog", source="nginx") == 0
            for window in ("1h", "1d", "7d", "30d"):
                assert samples(m, "payments-api", window) == 5
                assert samples(m, "search", window) == 3
                assert availability(m, "search", window) == 1.0
                assert samples(m, "unmapped", window) == 2
            # An exported counter only counts forward: it keeps what it counted then.
            assert counted(m, "unmapped") == 10
            assert counted(m, "payments-api") == 0
            # Adoption reads the corrected attribution.
            gateway = {"capability": "api-gateway"}
            assert m.value("platform_capability_adopting_services", **gateway) == 3
        finally:
            p.close()


class TestRouteClaimedAfterItsTrafficArrived:
    @each_instant
    def test_its_windows_include_the_hour_before_the_claim(
        self, tmp_path: Path, instant: float
    ) -> None:
        """payments-api claims ``shop.test/payments`` an hour after its 5 requests
        arrived (58 minutes before now): from the next refresh on, its 1h, 1d (24 h), 7d and 30d
        traffic and availability, and the calendar window holding them, include them,
        and unmapped no longer does."""
        arrived = instant - 58 * 60
        p = Platform(tmp_path, arrived + 60, catalog(payments_routes=None), services=[CHECKOUT])
        p.write(*access_log(arrived))
        try:
            assert p.poll_all()
            before = p.metrics()
            assert samples(before, "unmapped", "1h") == 2 + 5
            assert samples(before, "payments-api", "1h") is None
            p.clock.set(instant)
            p.set_routes("payments-api", "shop.test/payments")
            assert p.poll("backstage")
            m = p.metrics()
            for window in ("1h", "1d", "7d", "30d"):
                assert samples(m, "payments-api", window) == 5
                assert availability(m, "payments-api", window) == 1.0
                assert samples(m, "unmapped", window) == 2
                assert samples(m, "checkout", window) == 4
            this_month = utc_datetime(instant).month == utc_datetime(arrived).month
            calendar = "mtd" if this_month else "last_month"
            assert samples(m, "payments-api", calendar) == 5
            assert samples(m, "unmapped", calendar) == 2
        finally:
            p.close()

    def test_traffic_of_three_days_ago_moves_in_its_7d_and_30d_windows(
        self, tmp_path: Path
    ) -> None:
        """The same claim, the 5 requests 3 days old (7d and 30d read them from hour
        buckets): 7d and 30d take them; 1h and 1d never held them (samples 0)."""
        arrived = NOW - 3 * 86400
        p = Platform(tmp_path, NOW, catalog(payments_routes=None), services=[CHECKOUT])
        p.write(*access_log(arrived))
        try:
            assert p.poll_all()
            before = p.metrics()
            assert samples(before, "unmapped", "7d") == 2 + 5
            assert samples(before, "unmapped", "1d") == 0
            p.set_routes("payments-api", "shop.test/payments")
            assert p.poll("backstage")
            m = p.metrics()
            for window in ("7d", "30d"):
                assert samples(m, "payments-api", window) == 5
                assert availability(m, "payments-api", window) == 1.0
                assert samples(m, "unmapped", window) == 2
                assert samples(m, "checkout", window) == 4
                assert availability(m, "checkout", window) == pytest.approx(0.75)
            for window in ("1h", "1d"):
                assert samples(m, "payments-api", window) == 0
                assert availability(m, "payments-api", window) is None
        finally:
            p.close()

    @pytest.mark.parametrize(("depth", "moved"), [(2, 0), (3, 2)])
    def test_a_route_deeper_than_the_attribution_depth_takes_stored_traffic_only_within_it(
        self, tmp_path: Path, depth: int, moved: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        """search (``/search``) served 4 requests: 2 on ``/search/q/shoes``, 1 on
        ``/search/q/boots``, 1 on ``/search/admin/reindex``. Then a new component, shoes,
        claims ``/search/q/shoes``: 3 segments deep. At ``attribution_depth`` 2 the stored
        traffic was kept as ``/search/q`` (shoes and boots together) and
        ``/search/admin``: nothing stored can be told to be shoes', so all 4 stay with
        search. At depth 3 the 2 shoes requests were kept apart and move. Requests read
        after the claim are kept under the claimed prefix and go to shoes at any depth;
        at depth 2 the NGINX source names the route in a warning."""
        shoes = [("any.test", "/search/q/shoes", 200)] * 2
        others = [("any.test", "/search/q/boots", 200), ("any.test", "/search/admin/reindex", 200)]
        lines = [line(NOW - 1800 + i, h, u, s) for i, (h, u, s) in enumerate(shoes + others)]
        p = Platform(
            tmp_path, NOW, catalog(), services=[CHECKOUT], nginx={"attribution_depth": depth}
        )
        p.write(*lines)
        try:
            assert p.poll_all()
            assert samples(p.metrics(), "search", "1h") == 4
            p.catalog.entities = [
                *p.catalog.entities,
                component("shoes", "discovery", "/search/q/shoes"),
            ]
            assert p.poll("backstage")
            m = p.metrics()
            assert samples(m, "shoes", "1h") == moved
            assert samples(m, "search", "1h") == 4 - moved
            # Read after the claim: its identity holds the claimed prefix, at any depth.
            p.write(*[line(NOW - 60 + i, h, u, s) for i, (h, u, s) in enumerate(shoes)])
            with caplog.at_level(logging.WARNING):
                assert p.poll("nginx")
            warned = [
                r.getMessage() for r in caplog.records if "attribution_depth" in r.getMessage()
            ]
            assert warned == (
                ["route '/search/q/shoes' is deeper than attribution_depth (2): it takes the "
                 "traffic read from now on; what was stored before stays with its service"]
                if depth == 2 else []
            )  # fmt: skip
            m = p.metrics()
            assert samples(m, "shoes", "1h") == moved + 2
            assert samples(m, "search", "1h") == 4 - moved
        finally:
            p.close()

    def test_a_renamed_service_takes_its_traffic_with_it(self, tmp_path: Path) -> None:
        """The route's component is renamed (payments-api -> payments): the traffic follows."""
        p = Platform(tmp_path, NOW, catalog(), services=[CHECKOUT])
        p.write(*access_log(NOW - 1800))
        try:
            assert p.poll_all()
            renamed = [
                component("payments", "group:default/payments", "shop.test/payments")
                if e["kind"] == "Component" and e["metadata"]["name"] == "payments-api"
                else e
                for e in p.catalog.entities
            ]
            p.catalog.entities = renamed
            assert p.poll("backstage")
            m = p.metrics()
            assert samples(m, "payments", "1h") == 5
            assert samples(m, "payments-api", "1h") is None
        finally:
            p.close()
