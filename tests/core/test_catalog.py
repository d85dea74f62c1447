"""The merged service catalog: config first, Backstage fills in, conflicts logged once."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exporter.config import Config, ServiceConfig
from exporter.core import catalog as catalog_module
from exporter.core.catalog import NO_OWNER, CatalogEntity, merge
from exporter.domains import open_store, render_context
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.catalog.store import load_catalog


def svc(name: str, team: str, **extra: Any) -> ServiceConfig:
    return ServiceConfig(name=name, team=team, **extra)


def comp(name: str, team: str, **extra: Any) -> CatalogEntity:
    return CatalogEntity(
        source="backstage", kind="component", namespace="default", name=name, team=team, **extra
    )


def group(name: str) -> CatalogEntity:
    return CatalogEntity(
        source="backstage", kind="group", namespace="default", name=name, team=name
    )


@pytest.fixture(autouse=True)
def _fresh_conflict_log() -> None:
    catalog_module._logged.clear()


class TestMerge:
    def test_backstage_adds_services_the_config_does_not_list(self) -> None:
        cat = merge([svc("checkout", "payments")], [comp("ledger", "payments", system="pay")])
        assert list(cat.services) == ["checkout", "ledger"]
        assert cat.services["ledger"].source == "backstage"
        assert cat.services["ledger"].system == "pay"
        assert cat.services["checkout"].source == "config"

    def test_the_config_wins_a_conflict_and_it_is_reported(self) -> None:
        cat = merge(
            [svc("search", "discovery", tags=["scala"])],
            [comp("search", "search-team", tags=("java",), repos=("github:acme/search",))],
        )
        assert cat.services["search"].team == "discovery"
        assert cat.services["search"].tags == frozenset({"scala"})
        # What the config leaves empty, Backstage fills in.
        assert cat.services["search"].repos == ("github:acme/search",)
        assert {(c.field, c.config_value, c.catalog_value) for c in cat.conflicts} == {
            ("team", "discovery", "search-team"),
            ("tags", "scala", "java"),
        }

    def test_annotations_merge_key_by_key_with_the_config_winning(self) -> None:
        cat = merge(
            [svc("a", "t", annotations={"x": "1", "y": "2"})],
            [comp("a", "t", annotations=(("x", "9"), ("z", "3")))],
        )
        assert dict(cat.services["a"].annotations) == {"x": "1", "y": "2", "z": "3"}
        assert [c.field for c in cat.conflicts] == ["annotation x"]

    def test_teams_come_from_owners_and_groups_even_without_services(self) -> None:
        cat = merge([svc("a", "payments")], [group("growth"), comp("b", "identity")])
        assert cat.teams == frozenset({"payments", "identity", "growth"})
        assert cat.services_of("growth") == []

    def test_a_component_without_owner_is_a_service_of_no_team(self) -> None:
        """No pseudo-team: it is a service, its team is empty, and the teams do not grow;
        "unknown" stays the team of what the catalog does not hold (unmapped traffic)."""
        cat = merge([svc("a", "payments")], [comp("orphan", "")])
        assert "orphan" in cat.services
        assert cat.team_of("orphan") == NO_OWNER == ""
        assert cat.teams == frozenset({"payments"})
        assert cat.without_owner == ["orphan"]
        assert cat.owning_teams(["a", "orphan"]) == frozenset({"payments"})
        assert cat.team_of("never-heard-of") == "unknown"

    def test_a_user_owned_component_has_no_team_unless_users_are_owner_kinds(self) -> None:
        user_owned = CatalogEntity("backstage", "component", "default", "tool", "jdoe", "user")
        assert merge([], [user_owned]).without_owner == ["tool"]
        assert merge([], [user_owned]).teams == frozenset()
        as_team = merge([], [user_owned], owner_kinds={"group", "user"})
        assert as_team.team_of("tool") == "jdoe" and as_team.without_owner == []

    def test_only_components_of_the_configured_lifecycles_are_services(self) -> None:
        def at(name: str, lifecycle: str) -> CatalogEntity:
            return CatalogEntity(
                "backstage", "component", "default", name, "t", lifecycle=lifecycle
            )

        entities = [at("live", "production"), at("old", "deprecated"), at("unstated", "")]
        cat = merge([], entities, lifecycles={"production", "experimental"})
        assert sorted(cat.services) == ["live", "unstated"]
        assert sorted(merge([], entities).services) == ["live", "old", "unstated"]

    def test_the_same_name_in_two_namespaces_keeps_the_default_one(self) -> None:
        other = CatalogEntity(
            source="backstage", kind="component", namespace="labs", name="a", team="lab"
        )
        cat = merge([], [other, comp("a", "main")])
        assert cat.team_of("a") == "main"
        assert [(c.field, c.catalog_value) for c in cat.conflicts] == [("namespace", "labs")]

    def test_a_repo_the_configs_ci_refs_claim_stays_with_that_service(self) -> None:
        """checkout claims acme/checkout exactly and payments-api claims acme/payments-*:
        Backstage naming either for ledger is a conflict the config wins; ledger keeps
        acme/ledger, and checkout's own annotation of acme/checkout is no conflict."""
        cat = merge(
            [
                svc("checkout", "payments", ci=[{"github": "acme/checkout"}]),
                svc("payments-api", "payments", ci=[{"github": "acme/payments-*"}]),
            ],
            [
                comp("checkout", "payments", repos=("github:acme/checkout",)),
                comp(
                    "ledger",
                    "finance",
                    repos=("github:acme/ledger", "github:ACME/Checkout", "github:acme/payments-x"),
                ),
            ],
        )
        assert cat.services["ledger"].repos == ("github:acme/ledger",)
        assert cat.services["checkout"].repos == ("github:acme/checkout",)
        assert {(c.service, c.field, c.config_value, c.catalog_value) for c in cat.conflicts} == {
            ("ledger", "owner of repo github:ACME/Checkout", "checkout", "ledger"),
            ("ledger", "owner of repo github:acme/payments-x", "payments-api", "ledger"),
        }


class TestConflictLog:
    def test_each_conflict_is_logged_once_per_process(self, caplog: Any) -> None:
        store = open_store(":memory:")
        with store.transaction() as tx:
            from exporter.core.store import write_records

            write_records(tx, [CatalogListing("backstage", 1.0, (comp("a", "other"),))])
        config = Config(
            services=[{"name": "a", "team": "mine"}],
            sources={"backstage": {"base_url": "http://b/api/catalog"}},
        )
        with caplog.at_level(logging.WARNING, logger="exporter.catalog"):
            for _ in range(3):
                load_catalog(config, store)
        assert caplog.text.count("catalog conflict for service a") == 1


class TestCostAllocationFromTheMergedCatalog:
    def test_config_cost_rules_come_first_then_the_catalogs_cost_tags(self) -> None:
        """checkout's config tags win over its Backstage cost tags and over another
        entity claiming the same tag; ledger, only in Backstage, gets its own lines."""
        from exporter.domains.cost.allocation import allocator_for

        config = Config(
            services=[
                {"name": "checkout", "team": "payments", "cost": {"tags": {"app": "checkout"}}}
            ]
        )
        cat = merge(
            config.services,
            [
                comp("checkout", "payments", cost_tags=("app=shop",)),
                comp("ledger", "finance", cost_tags=("app=ledger",)),
                comp("pos", "retail", cost_tags=("app=checkout",)),
            ],
        )
        allocator = allocator_for(config, cat)
        assert allocator.allocate({"app": "checkout"}) == ("checkout", "payments")
        assert allocator.allocate({"app": "ledger"}) == ("ledger", "finance")
        assert allocator.allocate({"app": "shop"}) == ("unallocated", "unallocated")
        assert ("checkout", "cost_tags", "app=checkout", "app=shop") in {
            (c.service, c.field, c.config_value, c.catalog_value) for c in cat.conflicts
        }


class TestRenderContext:
    def test_team_of_knows_backstage_services_and_the_config_wins(self) -> None:
        store = open_store(":memory:")
        with store.transaction() as tx:
            from exporter.core.store import write_records

            write_records(
                tx,
                [
                    CatalogListing(
                        "backstage", 1.0, (comp("a", "other"), comp("ledger", "payments"))
                    )
                ],
            )
        config = Config(
            services=[{"name": "a", "team": "mine"}],
            sources={"backstage": {"base_url": "http://b/api/catalog"}},
        )
        ctx = render_context(config, store, 2.0)
        assert ctx.team_of("a") == "mine"
        assert ctx.team_of("ledger") == "payments"
        assert ctx.team_of("nope") == "unknown"
        assert ctx.known_services() == {"a", "ledger"}

    def test_entities_of_a_catalog_source_no_longer_configured_are_ignored(self) -> None:
        store = open_store(":memory:")
        with store.transaction() as tx:
            from exporter.core.store import write_records

            write_records(tx, [CatalogListing("backstage", 1.0, (comp("ledger", "payments"),))])
        disabled = {"backstage": {"base_url": "http://b/api/catalog", "enabled": False}}
        for config in (Config(), Config(sources=disabled)):
            assert render_context(config, store, 2.0).known_services() == frozenset()

    def test_repo_and_route_indexes_map_to_services(self) -> None:
        from exporter.core.catalog import repo_index, route_index

        cat = merge(
            [svc("a", "t")],
            [
                comp("a", "t", repos=("github:Acme/A",), routes=("a-route",)),
                comp("b", "t", routes=("b",)),
            ],
        )
        assert repo_index(cat) == {"github:acme/a": "a"}
        assert route_index(cat) == {"a-route": "a", "b": "b"}

    def test_a_store_without_the_catalog_tables_is_just_the_config(self) -> None:
        from exporter.core.store import Store

        ctx = render_context(Config(services=[{"name": "a", "team": "t"}]), Store(":memory:"), 0)
        assert ctx.known_services() == {"a"}


class TestListingReplacesTheSourcesEntities:
    def test_unlisted_entities_are_deleted_and_first_seen_is_kept(self) -> None:
        store = open_store(":memory:")
        from exporter.core.store import write_records
        from exporter.domains.catalog import store as catalog_store

        with store.transaction() as tx:
            write_records(tx, [CatalogListing("backstage", 10.0, (comp("a", "t"), comp("b", "t")))])
        with store.transaction() as tx:
            write_records(tx, [CatalogListing("backstage", 20.0, (comp("a", "u"),))])
        assert [(e.name, e.team) for e in catalog_store.entities(store)] == [("a", "u")]
        row = store.query_one("SELECT first_seen FROM catalog_entities WHERE name = 'a'")
        assert row is not None and row[0] == 10.0
        assert catalog_store.listings(store) == {"backstage": (20.0, 1)}


class TestGatewayRoutesFromTheCatalog:
    def test_backstage_services_and_their_routes_map_traffic_and_the_config_wins(self) -> None:
        from exporter.domains.traffic.routes import RouteMap

        config = Config(
            services=[{"name": "checkout", "team": "payments", "routes": ["shop-route"]}]
        )
        cat = merge(
            config.services,
            [
                comp("ledger", "payments", routes=("ledger-route", "api.acme/ledger")),
                # Backstage also claims shop-route for ledger: the config's mapping stays.
                comp("ledger2", "payments", routes=("shop-route",)),
            ],
        )
        routes = RouteMap(config, cat)
        assert routes.by_name("ledger-route") == "ledger"
        assert routes.by_name("ledger") == "ledger"
        assert routes.by_name("shop-route") == "checkout"
        assert routes.by_request("api.acme", "/ledger/entries?x=1") == "ledger"
        assert RouteMap(config).by_name("ledger-route") == "unmapped"
