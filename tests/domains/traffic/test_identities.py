"""The gateway identities traffic is stored under, and how they resolve to services."""

from __future__ import annotations

import pytest

from exporter.config import Config
from exporter.core.catalog import CatalogEntity, merge
from exporter.domains.traffic import accesslog
from exporter.domains.traffic.accesslog import Aggregator
from exporter.domains.traffic.routes import RouteMap, path_key, pinned

CONFIG = Config(
    services=[
        {"name": "checkout", "team": "payments", "routes": ["shop.test/checkout"]},
        {"name": "deep", "team": "payments", "routes": ["/api/v1/orders/export"]},
        {"name": "search", "team": "discovery", "routes": ["/search", "kong-search"]},
    ]
)


def with_catalog(*entities: CatalogEntity) -> RouteMap:
    return RouteMap(CONFIG, merge(CONFIG.services, entities))


class TestRequestKeys:
    def test_a_request_is_kept_by_host_and_its_first_two_path_segments(self) -> None:
        routes = RouteMap(CONFIG)
        assert routes.request_key("Shop.Test:8443", "/checkout/cart/42?x=1") == (
            "req:shop.test\t/checkout/cart",
            "checkout",
        )
        assert path_key("/a/b/c", 1) == "/a" and path_key("", 2) == "/"

    def test_ids_in_a_path_are_one_identity(self) -> None:
        """All digits, a UUID or hash, or three digits or more: ``*``; ``v1`` stays."""
        assert path_key("/orders/123/items", 2) == "/orders/*"
        assert path_key("/u/550e8400-e29b-41d4-a716-446655440000", 2) == "/u/*"
        assert path_key("/img/abc123def", 2) == "/img/*"
        assert path_key("/v1/orders/9", 2) == "/v1/orders"
        routes = RouteMap(CONFIG)
        keys = {routes.request_key("shop.test", f"/checkout/{i}")[0] for i in range(100)}
        assert keys == {"req:shop.test\t/checkout/*"}
        assert RouteMap(CONFIG).resolve("req:shop.test\t/checkout/*") == "checkout"

    def test_a_longer_matching_route_prefix_is_kept_whole(self) -> None:
        ident, service = RouteMap(CONFIG).request_key("any.test", "/api/v1/orders/export/7")
        assert service == "deep"
        assert RouteMap(CONFIG).resolve(ident) == "deep"

    def test_a_key_resolves_to_what_the_request_resolved_to_under_the_same_catalog(self) -> None:
        routes = RouteMap(CONFIG)
        for host, uri in [
            ("shop.test", "/checkout"),
            ("shop.test", "/checkoutx/a"),
            ("any.test", "/search/q?term=a"),
            ("other.test", "/"),
            ("any.test", ""),
        ]:
            ident, service = routes.request_key(host, uri)
            assert RouteMap(CONFIG).resolve(ident) == service, (host, uri)

    def test_a_route_claimed_later_takes_the_stored_key(self) -> None:
        ident, service = RouteMap(CONFIG).request_key("shop.test", "/payments/charge/9")
        assert service == "unmapped"
        claim = CatalogEntity(
            "backstage", "component", "default", "payments-api", "payments",
            routes=("shop.test/payments",),
        )  # fmt: skip
        assert with_catalog(claim).resolve(ident) == "payments-api"


class TestNamesAndPins:
    def test_names_resolve_in_order_and_pins_keep_their_service(self) -> None:
        routes = RouteMap(CONFIG)
        ident, service = routes.name_key("unknown-route", "kong-search")
        assert (ident, service) == ("name:unknown-route\tkong-search", "search")
        assert routes.resolve(pinned("checkout")) == "checkout"
        assert routes.resolve("name:") == "unmapped"
        assert routes.resolve("something else") == "unmapped"


class TestIdentityBound:
    def test_past_the_bound_new_identities_are_pinned_to_their_service(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(accesslog, "MAX_IDENTS", 2)
        agg = Aggregator(RouteMap(CONFIG))
        lines = [
            f'{{"msec":"1790000000.000","host":"shop.test","request_uri":"/checkout/p{i}",'
            f'"status":"200","request_time":"0.01"}}'
            for i in range(4)
        ]
        agg.add_lines(lines)
        idents = sorted(d.ident for d in agg.deltas("b"))
        assert idents == [
            "req:shop.test\t/checkout/p0",
            "req:shop.test\t/checkout/p1",
            "service:checkout",
        ]
        assert sum(d.codes[1] for d in agg.deltas("b")) == 4
