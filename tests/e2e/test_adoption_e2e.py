"""End to end: the daemon against the whole sandbox over HTTP, adoption read from /metrics.

The demo catalog holds 7 services: the scenario's 5 (from the config, each with a
health probe) and ledger and notifications, which only Backstage lists.

* golden-path (catalog tag): Backstage tags checkout, payments-api and ledger: 3/7, 1 team.
* observability (a probe configured): the 5 config services: 5/7, 3 teams.
* ci-template (GitHub workflow path or GitLab include): checkout, payments-api and
  recommendations run the shared CI workflow on the simulated GitHub, and search's GitLab
  configuration includes acme/platform-templates/gitlab/build.gitlab-ci.yml, recorded at its
  latest pipeline 4 hours ago (accounts builds on Jenkins): 4/7; teams payments (checkout,
  payments-api) and discovery (recommendations, search): 2.
* api-gateway (gateway traffic): Kong routes checkout, payments-api, search and accounts;
  NGINX serves recommendations: 5/7, 3 teams (after a second poll: a counter's first
  reading is its baseline).

api-gateway's running cost is the bill's untagged network cost (USD 17.5 a day), so over
30 closed days it is USD 525, or USD 105 per adopting service.

The platform and the daemon share one fixed clock (the suite's mid-month instant, moved
on by a second between the polls), so no value depends on today's date.

Backstage says search is owned by search-team; the config says discovery and wins.
Registrations, each service counted once when first seen: payments 3 (checkout,
payments-api, ledger), discovery 2 (recommendations, search), identity 2 (accounts,
notifications).
Teams: payments, discovery, identity, and growth with no services. recommendations was
registered 12 days ago and first deployed to production 120 hours ago: 7 days to production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.config import Config
from exporter.core.clock import FixedClock
from exporter.core.sandbox.scenario import Scenario
from exporter.daemon import Daemon
from exporter.domains.catalog.sandbox import EXPECTED_RATIOS
from exporter.sandbox import platform
from tests.support.exposition import Exposition
from tests.support.instants import at


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(at("mid-month"))


@pytest.fixture
def demo_config(tmp_path: Path, clock: FixedClock) -> Iterator[Config]:
    scenario = Scenario(clock=clock)
    server = platform.start(scenario)
    yield Config(**platform.demo_config(server.url, tmp_path, scenario, 0))
    server.stop()


async def scrape_after_two_polls(config: Config, clock: FixedClock) -> bytes:
    daemon = Daemon(config, clock=clock)
    try:
        await daemon.poll_all()
        clock.advance(1.0)  # Kong's counters grow by rps x elapsed: the second poll sees traffic
        await daemon.poll_all()
        server = daemon.start_server()
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{server.url}/metrics", timeout=10)).content
    finally:
        await daemon.shutdown()


class TestDemoAdoption:
    def test_adoption_ratios_equal_the_scenarios_known_values(
        self, demo_config: Config, clock: FixedClock
    ) -> None:
        assert EXPECTED_RATIOS == {
            "golden-path": 3 / 7,
            "observability": 5 / 7,
            "ci-template": 4 / 7,
            "api-gateway": 5 / 7,
        }
        exp = Exposition.parse(asyncio.run(scrape_after_two_polls(demo_config, clock)))

        assert exp.value("platform_exporter_source_up", source="backstage") == 1
        for capability, ratio in EXPECTED_RATIOS.items():
            got = exp.value("platform_capability_adoption_ratio", capability=capability)
            assert got == pytest.approx(ratio), capability
        assert exp.value("platform_capability_adopting_services", capability="golden-path") == 3
        assert exp.value("platform_capability_adopting_teams", capability="golden-path") == 1
        assert exp.value("platform_capability_adopting_services", capability="observability") == 5
        assert exp.value("platform_capability_adopting_teams", capability="observability") == 3
        assert exp.value("platform_capability_adopting_teams", capability="ci-template") == 2
        assert (
            exp.value(
                "platform_service_capability_adopted", service="search", capability="ci-template"
            )
            == 1
        )
        assert exp.value("platform_capability_adopting_teams", capability="api-gateway") == 3
        assert (
            exp.value(
                "platform_service_capability_adopted", service="ledger", capability="api-gateway"
            )
            == 0
        )
        assert exp.value("platform_teams_onboarded") == 3
        # The bill's untagged network cost (USD 17.5 a day, exporter/domains/cost/sandbox/billing.py) over
        # 30 closed days, shared by the 5 services adopting the gateway: USD 105 each.
        [(labels, per_service)] = exp.samples("platform_cost_per_adopting_service")
        assert labels == {"capability": "api-gateway", "currency": "USD"}
        assert per_service == pytest.approx(17.5 * 30 / 5)

        assert exp.value("platform_onboarding_services", state="deployed") == 1
        assert exp.value("platform_onboarding_services", state="waiting") == 0
        assert exp.value("platform_onboarding_time_to_first_deploy_seconds_gcount") == 1
        seven_days = exp.value("platform_onboarding_time_to_first_deploy_seconds_gsum")
        assert seven_days == pytest.approx(7 * 86400, abs=60)

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
        registered = {
            labels["team"]: value
            for labels, value in exp.samples("platform_catalog_services_registered_total")
        }
        assert registered == {"payments": 3, "discovery": 2, "identity": 2}
