"""Counts over the merged catalog (docs/kpis.md, Catalog), on a hand-built catalog."""

from __future__ import annotations

from exporter.core.catalog import Catalog, CatalogService, Conflict
from exporter.domains.catalog.kpis import conflict_count, services_per_team, team_count

CATALOG = Catalog(
    services={
        "checkout": CatalogService("checkout", "payments", "config"),
        "ledger": CatalogService("ledger", "payments", "backstage"),
        "search": CatalogService("search", "discovery", "config"),
    },
    teams=frozenset({"payments", "discovery", "growth"}),
    conflicts=(Conflict("search", "team", "discovery", "search-team", "backstage"),),
)


class TestCatalogCounts:
    def test_services_per_team_in_name_order_with_zero_for_a_team_without_any(self) -> None:
        """growth owns no service: 0, not absent, since the team exists in the catalog."""
        got = services_per_team(CATALOG)
        assert list(got.items()) == [("discovery", 1), ("growth", 0), ("payments", 2)]

    def test_teams_and_conflicts(self) -> None:
        assert team_count(CATALOG) == 3
        assert conflict_count(CATALOG) == 1

    def test_an_empty_catalog_counts_nothing(self) -> None:
        empty = Catalog(services={}, teams=frozenset())
        assert services_per_team(empty) == {}
        assert team_count(empty) == 0 and conflict_count(empty) == 0
