"""End to end: the daemon against the whole sandbox over HTTP, adoption read from /metrics.

The demo catalog holds 7 services: the scenario's 5 (from the config, each with a
health probe) and ledger and notifications, which only Backstage lists. Backstage
tags checkout, payments-api and ledger ``golden-path``. So golden-path is adopted
by 3/7 services (1 team: payments) and observability (a probe configured) by 5/7
(3 teams). Backstage says search is owned by search-team; the config says
discovery and wins. Teams: payments, discovery, identity, and growth with no services.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.sandbox import platform
from exporter.sandbox.backstage import EXPECTED_RATIOS
from exporter.sandbox.scenario import Scenario
from tests.support.exposition import Exposition


@pytest.fixture
def demo_config(tmp_path: Path) -> Iterator[Config]:
    scenario = Scenario()
    server = platform.start(scenario)
    yield Config(**platform.demo_config(server.url, tmp_path, scenario, 0))
    server.stop()


async def scrape_after_one_poll(config: Config) -> bytes:
    daemon = Daemon(config)
    try:
        await daemon.poll_all()
        server = daemon.start_server()
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{server.url}/metrics", timeout=10)).content
    finally:
        await daemon.shutdown()


class TestDemoAdoption:
    def test_adoption_ratios_equal_the_scenarios_known_values(self, demo_config: Config) -> None:
        assert pytest.approx({"golden-path": 3 / 7, "observability": 5 / 7}) == EXPECTED_RATIOS
        exp = Exposition.parse(asyncio.run(scrape_after_one_poll(demo_config)))

        assert exp.value("platform_exporter_source_up", source="backstage") == 1
        for capability, ratio in EXPECTED_RATIOS.items():
            got = exp.value("platform_capability_adoption_ratio", capability=capability)
            assert got == pytest.approx(ratio), capability
        assert exp.value("platform_capability_adopting_services", capability="golden-path") == 3
        assert exp.value("platform_capability_adopting_teams", capability="golden-path") == 1
        assert exp.value("platform_capability_adopting_services", capability="observability") == 5
        assert exp.value("platform_capability_adopting_teams", capability="observability") == 3
        assert exp.value("platform_teams_onboarded") == 3

        assert exp.value("platform_catalog_teams") == 4
        assert exp.value("platform_catalog_services", team="growth") == 0
        assert exp.value("platform_catalog_services", team="payments") == 3
        assert exp.value("platform_catalog_entity_info", service="search", team="discovery") == 1
        assert exp.value("platform_catalog_entity_info", service="ledger", source="backstage") == 1
        assert exp.value("platform_catalog_conflicts") == 1
        # Registered in the last 12 months: recommendations (12 days ago) and ledger (200 days).
        new = exp.samples("platform_new_services")
        assert len(new) == 12 and sum(v for _, v in new) == 2
        assert exp.value("platform_catalog_services_without_registration") == 1
