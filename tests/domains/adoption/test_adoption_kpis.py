"""Adoption KPIs on hand-checked tables.

The catalog below has five services owned by three teams, plus a fourth team,
growth, that owns nothing::

    service       team       probes  tags / annotations           registered
    checkout      payments   yes     golden-path                  2025-01-10
    payments-api  payments   no                                   2026-09-02
    search        discovery  yes     platform.io/tier=gold        2026-08-31 23:59:59
    accounts      identity   no                                   (unknown)
    ledger        payments   no      (from Backstage)             2025-10-01

"now" is 2026-09-21 12:00 UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.config import ServiceConfig
from exporter.core.catalog import Catalog, CatalogEntity, merge
from exporter.core.stats import histogram
from exporter.domains.adoption import kpis as kpi
from exporter.domains.adoption.kpis import Evidence, PipelineFact, TrafficFact
from exporter.domains.adoption.settings import CapabilityConfig

DAY = 86400.0


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


NOW = ts(2026, 9, 21, 12)
PROBE = [{"name": "health", "url": "http://x/health"}]


def cap(name: str, **detect: Any) -> CapabilityConfig:
    return CapabilityConfig(name=name, detect=detect)  # type: ignore[arg-type]


def catalog() -> Catalog:
    services = [
        ServiceConfig(
            name="checkout", team="payments", probes=PROBE, tags=["golden-path"],
            registered_at=datetime(2025, 1, 10, tzinfo=UTC),
        ),
        ServiceConfig(
            name="payments-api", team="payments", registered_at=datetime(2026, 9, 2, tzinfo=UTC)
        ),
        ServiceConfig(
            name="search", team="discovery", probes=PROBE,
            annotations={"platform.io/tier": "gold"},
            registered_at=datetime(2026, 8, 31, 23, 59, 59, tzinfo=UTC),
        ),
        ServiceConfig(name="accounts", team="identity"),
    ]  # fmt: skip
    entities = [
        CatalogEntity(
            "backstage", "component", "default", "ledger", "payments",
            registered_at=ts(2025, 10, 1),
        ),
        CatalogEntity("backstage", "group", "default", "growth", "growth"),
    ]  # fmt: skip
    return merge(services, entities)


TRAFFIC = [
    TrafficFact("checkout", NOW - 1 * DAY, 500),
    TrafficFact("search", NOW - 40 * DAY, 100),  # outside 30 days
    TrafficFact("search", NOW - 29 * DAY, 0),
    TrafficFact("accounts", NOW - 10 * DAY, 3),
    TrafficFact("not-in-catalog", NOW - 1 * DAY, 10),
]
TEMPLATE = "acme/templates/.github/workflows/build.yml"
PIPELINES = [
    PipelineFact("checkout", "workflow", f"{TEMPLATE}@v2", NOW - 2 * DAY),
    # payments-api used the template until 45 days ago, then moved to its own workflow.
    PipelineFact("payments-api", "workflow", f"{TEMPLATE}@v1", NOW - 45 * DAY),
    PipelineFact("payments-api", "workflow", ".github/workflows/ci.yml", NOW - 1 * DAY),
    PipelineFact("search", "include", "acme/ci-templates/python.yml", NOW - 5 * DAY),
    PipelineFact("accounts", "workflow", ".github/workflows/ci.yml", NOW - 1 * DAY),
    PipelineFact("accounts", "pipeline", "platform-build", NOW - 3 * DAY),
]
EVIDENCE = Evidence(traffic=TRAFFIC, pipelines=PIPELINES)
CI_TEMPLATE = cap(
    "ci-template",
    rule="pipeline_template",
    workflow_paths=["acme/templates/.github/workflows/*.yml"],
    gitlab_includes=["acme/ci-templates/*"],
)


class TestCapabilityRules:
    @pytest.mark.parametrize(
        ("capability", "services", "teams", "ratio"),
        [
            (cap("obs", rule="probe"), {"checkout", "search"}, {"payments", "discovery"}, 2 / 5),
            (cap("gp", rule="catalog", tag="golden-path"), {"checkout"}, {"payments"}, 1 / 5),
            (cap("gp", rule="catalog", tag="GOLDEN-PATH"), {"checkout"}, {"payments"}, 1 / 5),
            (cap("t", rule="catalog", annotation="platform.io/tier"), {"search"}, {"discovery"}, 0.2),
            (
                cap("t", rule="catalog", annotation="platform.io/tier", value="gold"),
                {"search"},
                {"discovery"},
                0.2,
            ),
            (cap("t", rule="catalog", annotation="platform.io/tier", value="silver"), set(), set(), 0.0),
            (
                cap("gw", rule="gateway_traffic"),
                {"checkout", "accounts"},
                {"payments", "identity"},
                2 / 5,
            ),
            (cap("gw", rule="gateway_traffic", min_requests=5), {"checkout"}, {"payments"}, 0.2),
            (cap("gw", rule="gateway_traffic", window="60d"), {"checkout", "search", "accounts"}, {"payments", "discovery", "identity"}, 3 / 5),
            (CI_TEMPLATE, {"checkout", "search"}, {"payments", "discovery"}, 2 / 5),
            (
                cap("ci", rule="pipeline_template", pipeline_names=["platform-*"]),
                {"accounts"},
                {"identity"},
                1 / 5,
            ),
        ],
    )  # fmt: skip
    def test_adopting_services_teams_and_ratio(
        self, capability: CapabilityConfig, services: set[str], teams: set[str], ratio: float
    ) -> None:
        result = kpi.adoption(capability, catalog(), EVIDENCE, NOW)
        assert result is not None
        assert result.services == services
        assert result.teams == teams
        assert result.ratio == pytest.approx(ratio)
        assert result.catalog_services == 5
        assert (result.adopting_services, result.adopting_teams) == (len(services), len(teams))
        assert {s for s in catalog().services if result.adopted(s) == 1} == services

    def test_a_service_that_adopted_and_later_stopped(self) -> None:
        """payments-api's last template run was 45 days ago: adopting 20 days ago, not now."""
        earlier = kpi.adoption(CI_TEMPLATE, catalog(), EVIDENCE, NOW - 20 * DAY)
        now = kpi.adoption(CI_TEMPLATE, catalog(), EVIDENCE, NOW)
        assert earlier is not None and now is not None
        assert "payments-api" in earlier.services
        assert "payments-api" not in now.services

    def test_a_team_with_no_services_adopts_nothing_and_counts_in_the_catalog(self) -> None:
        cat = catalog()
        assert "growth" in cat.teams and cat.services_of("growth") == []
        results = [
            kpi.adoption(c, cat, EVIDENCE, NOW)
            for c in (cap("obs", rule="probe"), cap("gw", rule="gateway_traffic"), CI_TEMPLATE)
        ]
        assert all(r is not None and "growth" not in r.teams for r in results)
        onboarded = kpi.teams_onboarded(cat, [r for r in results if r is not None])
        assert onboarded == {"payments", "discovery", "identity"}
        assert kpi.teams_onboarded_count(cat, [r for r in results if r is not None]) == 3

    def test_rules_on_data_that_is_not_collected_have_no_value(self) -> None:
        nothing = Evidence()
        assert kpi.adoption(cap("gw", rule="gateway_traffic"), catalog(), nothing, NOW) is None
        assert kpi.adoption(CI_TEMPLATE, catalog(), nothing, NOW) is None
        probe = kpi.adoption(cap("obs", rule="probe"), catalog(), nothing, NOW)
        assert probe is not None and probe.ratio == pytest.approx(0.4)

    def test_an_empty_catalog_has_no_ratio(self) -> None:
        result = kpi.adoption(cap("obs", rule="probe"), merge([], []), EVIDENCE, NOW)
        assert result is not None and result.ratio is None and result.services == frozenset()


class TestActivity:
    def test_active_services_deployed_or_serving_traffic_in_30_days(self) -> None:
        evidence = Evidence(
            traffic=TRAFFIC,
            last_deploy={"ledger": NOW - 3 * DAY, "payments-api": NOW - 31 * DAY},
        )
        # checkout and accounts by traffic, ledger by deploy; search's traffic is 40 days old
        # (and 0 requests at 29 days); payments-api deployed 31 days ago.
        assert kpi.active_services(catalog(), evidence, NOW) == {"checkout", "accounts", "ledger"}
        assert kpi.active_service_count(catalog(), evidence, NOW) == 3
        assert kpi.active_since(NOW) == NOW - 30 * DAY

    def test_active_services_without_deploy_or_traffic_data_has_no_value(self) -> None:
        assert kpi.active_services(catalog(), Evidence(), NOW) is None
        assert kpi.active_service_count(catalog(), Evidence(), NOW) is None
        only_deploys = Evidence(last_deploy={})
        assert kpi.active_services(catalog(), only_deploys, NOW) == frozenset()

    def test_new_services_per_month_over_the_last_12_months(self) -> None:
        months = kpi.new_services_per_month(catalog(), NOW)
        assert list(months) == [
            "2025-10", "2025-11", "2025-12", "2026-01", "2026-02", "2026-03",
            "2026-04", "2026-05", "2026-06", "2026-07", "2026-08", "2026-09",
        ]  # fmt: skip
        assert {m: n for m, n in months.items() if n} == {"2025-10": 1, "2026-08": 1, "2026-09": 1}
        assert kpi.unregistered(catalog()) == 1  # accounts

    def test_last_months_wraps_the_year(self) -> None:
        assert kpi.last_months(ts(2026, 2, 1), 3) == ["2025-12", "2026-01", "2026-02"]


class TestOnboarding:
    def test_time_to_first_production_deploy_for_recent_registrations(self) -> None:
        first = {
            "payments-api": ts(2026, 9, 4),  # registered 2026-09-02: 2 days
            "checkout": ts(2025, 2, 1),  # registered too long ago: not in the cohort
        }
        result = kpi.onboarding(catalog(), first, NOW)
        assert result.seconds == {"payments-api": 2 * DAY}
        assert result.waiting == {"search"}
        assert (result.deployed_count, result.waiting_count) == (1, 1)
        # 2 days exactly: counted from the 2-day bound on (a bound holds what is at or below it).
        counts, total, n = result.histogram()
        assert counts == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
        assert (total, n) == (2 * DAY, 1)

    def test_live_before_registration_counts_as_zero(self) -> None:
        cat = merge(
            [ServiceConfig(name="a", team="t", registered_at=datetime(2026, 9, 10, tzinfo=UTC))],
            [],
        )
        assert kpi.onboarding(cat, {"a": ts(2026, 9, 1)}, NOW).seconds == {"a": 0.0}

    def test_histogram_buckets_are_cumulative(self) -> None:
        counts, total, n = histogram([2 * DAY, 0.0], kpi.ONBOARDING_BUCKETS)
        assert counts == [1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
        assert (total, n) == (2 * DAY, 2)


class TestEvidenceWindow:
    def test_is_the_activity_window_or_a_longer_rule_window(self) -> None:
        assert kpi.evidence_window([cap("obs", rule="probe")]) == 30 * DAY
        longer = cap("gw", rule="gateway_traffic", window="45d")
        assert kpi.evidence_window([longer, CI_TEMPLATE]) == 45 * DAY


class TestCost:
    @pytest.mark.parametrize(
        ("cost", "adopting", "expected"),
        [(300.0, 3, 100.0), (None, 3, None), (300.0, 0, None), (0.0, 2, 0.0)],
    )
    def test_cost_per_adopting_service(
        self, cost: float | None, adopting: int, expected: float | None
    ) -> None:
        assert kpi.cost_per_adopting_service(cost, adopting) == expected


class TestTemplateKinds:
    def test_a_rule_on_definitions_no_ci_source_records_has_no_value(self) -> None:
        """Only pipeline names are recorded: a workflow-path rule is unknown, not 0."""
        only_names = Evidence(pipelines=PIPELINES, pipeline_kinds=frozenset({"pipeline"}))
        paths_only = cap("ci", rule="pipeline_template", workflow_paths=["acme/*"])
        assert kpi.adoption(paths_only, catalog(), only_names, NOW) is None
        by_name = cap("ci", rule="pipeline_template", pipeline_names=["platform-*"])
        result = kpi.adoption(by_name, catalog(), only_names, NOW)
        assert result is not None and result.services == {"accounts"}
