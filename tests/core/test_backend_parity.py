"""Every domain's store on PostgreSQL gives what it gives on SQLite.

The query-plan seed (tests/test_query_plans.py: a few days of every record type every
domain writes) is stored in a SQLite file and in a PostgreSQL schema by the same writers,
each domain's refresh runs on both, and then the stored history's report (every
provider at the instant, as ``once --as-of`` prints it) and the weekly review are the
same, value for value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.core.backend import PostgresTarget
from exporter.core.clock import FixedClock
from exporter.core.store import Store, write_records
from exporter.domains import domains, open_store, render_context
from exporter.report import report_of
from exporter.review.build import build_review
from exporter.review.render import render
from tests import test_query_plans as plans


@pytest.fixture
def target(pg_schema: PostgresTarget) -> PostgresTarget:
    return pg_schema


def _seeded(location: Path | PostgresTarget, tmp_path: Path) -> Store:
    store = open_store(location, FixedClock(plans.NOW))
    with store.transaction() as tx:
        write_records(tx, plans.records())
    cfg = plans.config(tmp_path)
    for domain in domains():
        if domain.refresh is not None:
            domain.refresh(cfg, store, plans.NOW)
    return store


def test_every_domain_reports_the_same_on_both_backends(
    tmp_path: Path, target: PostgresTarget
) -> None:
    (tmp_path / "sqlite").mkdir()
    (tmp_path / "postgres").mkdir()
    lite = _seeded(tmp_path / "sqlite" / "state.db", tmp_path / "sqlite")
    pg = _seeded(target, tmp_path / "postgres")
    try:
        cfg = plans.config(tmp_path)
        want, failed = report_of(cfg, lite, plans.NOW)
        assert failed == []
        got, failed = report_of(cfg, pg, plans.NOW)
        assert failed == []
        text = want.text.decode()
        for family in (  # the seed reached every domain
            "platform_service_request_rate",
            "platform_service_uptime_ratio",
            "platform_slo_burn_rate",
            "platform_deployment_frequency_per_day",
            "platform_incidents_distinct",
            "platform_cost_per_transaction_requests",
            "platform_catalog_services",
            "platform_active_services",
        ):
            assert f"\n{family}{{" in text, family
        assert got.text.decode() == text
        reviews = [
            json.loads(render(build_review(render_context(cfg, s, plans.NOW), None), "json"))
            for s in (lite, pg)
        ]
        assert reviews[0] == reviews[1]
    finally:
        lite.close()
        pg.close()
