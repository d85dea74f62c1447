"""Counts over the merged service catalog (see docs/kpis.md, Catalog).

Pure functions of :class:`~exporter.core.catalog.Catalog`: services per owning team
(0 for a team that owns none), services without owner, teams, and fields where the config and an external
catalog disagree.
"""

from __future__ import annotations

from collections import Counter

from exporter.core.catalog import Catalog


def services_per_team(catalog: Catalog) -> dict[str, int]:
    """team -> services it owns, for every team of the catalog in name order."""
    counts = Counter(svc.team for svc in catalog.services.values())
    return {team: counts.get(team, 0) for team in sorted(catalog.teams)}


def without_owner_count(catalog: Catalog) -> int:
    """Services no team owns (counted as services, in no team's figures)."""
    return len(catalog.without_owner)


def team_count(catalog: Catalog) -> int:
    """Teams in the catalog."""
    return len(catalog.teams)


def conflict_count(catalog: Catalog) -> int:
    """Fields where the config and an external catalog disagree (the config won)."""
    return len(catalog.conflicts)
