"""Adoption rules on data stored by the other domains, read back through /metrics families.

Hand-checked: "now" is 2026-09-21 12:00 UTC; the catalog is checkout (payments),
search (discovery) and accounts (identity).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from exporter.config import Config
from exporter.core.snapshot import Snapshot
from exporter.core.store import write_records
from exporter.domains import open_store, render_context
from exporter.domains.adoption.metrics import collect
from exporter.domains.traffic.records import ConsumerSeen, TrafficDelta
from tests.support.exposition import Exposition

NOW = datetime(2026, 9, 21, 12, tzinfo=UTC).timestamp()
DAY = 86400.0
SERVICES = [
    {"name": "checkout", "team": "payments"},
    {"name": "search", "team": "discovery"},
    {"name": "accounts", "team": "identity"},
]
PLATFORM_GW = {"name": "platform-gw", "team": "platform"}
GATEWAY = {"nginx": {"access_log": "/var/log/nginx/access.json"}}
CAPS = [{"name": "api-gateway", "detect": {"rule": "gateway_traffic", "min_requests": 10}}]


def delta(service: str, minute: float, ok: int, batch: str = "b1") -> TrafficDelta:
    return TrafficDelta("nginx", service, minute, batch, (0, ok, 0, 0, 0))


def render(config: Config, records: list[Any]) -> Exposition:
    store = open_store(":memory:")
    with store.transaction() as tx:
        write_records(tx, records)
    families = list(collect(render_context(config, store, NOW)))
    return Exposition.parse(Snapshot.render(families).text)


class TestGatewayTrafficRule:
    def test_services_with_enough_gateway_traffic_in_30_days_adopt(self) -> None:
        config = Config(services=SERVICES, sources=GATEWAY, capabilities=CAPS)
        exp = render(
            config,
            [
                delta("checkout", NOW - 2 * DAY, 12),
                delta("search", NOW - 40 * DAY, 500),  # too old
                delta("search", NOW - 3 * DAY, 4),  # too few (min 10)
                delta("accounts", NOW - 29 * DAY, 6),
                delta("accounts", NOW - 1 * DAY, 4),  # 6 + 4 = 10 in the window
                delta("unmapped", NOW - 1 * DAY, 99),  # not a catalog service
            ],
        )
        assert exp.value("platform_capability_adopting_services", capability="api-gateway") == 2
        assert exp.value("platform_capability_adopting_teams", capability="api-gateway") == 2
        assert exp.value("platform_capability_adoption_ratio", capability="api-gateway") == 2 / 3
        assert (
            exp.value(
                "platform_service_capability_adopted", service="search", capability="api-gateway"
            )
            == 0
        )
        # Active: served traffic (any amount) in 30 days: checkout, search, accounts.
        assert exp.value("platform_active_services", window="30d") == 3

    def test_without_a_gateway_source_the_rule_has_no_value(self) -> None:
        config = Config(services=SERVICES, capabilities=CAPS)
        exp = render(config, [delta("checkout", NOW - 2 * DAY, 12)])
        assert exp.value("platform_capability_info", capability="api-gateway") == 1
        assert exp.value("platform_capability_adoption_ratio", capability="api-gateway") is None
        assert exp.value("platform_active_services", window="30d") is None
        assert exp.value("platform_active_api_consumers", window="30d") is None


class TestActiveApiConsumers:
    def test_distinct_consumers_across_services_in_30_days(self) -> None:
        config = Config(services=SERVICES, sources=GATEWAY)
        exp = render(
            config,
            [
                ConsumerSeen("nginx", "checkout", "c-1", NOW - DAY),
                ConsumerSeen("nginx", "search", "c-1", NOW - DAY),  # the same consumer
                ConsumerSeen("nginx", "search", "c-2", NOW - 10 * DAY),
                ConsumerSeen("nginx", "accounts", "c-3", NOW - 31 * DAY),  # too old
            ],
        )
        assert exp.value("platform_active_api_consumers", window="30d") == 2


class TestTemplateUses:
    def test_the_latest_use_of_each_definition_is_kept_and_matched(self) -> None:
        """checkout used the template 2 days ago (older uses do not matter); search last used
        it 31 days ago; accounts runs its own workflow."""
        from exporter.config import ServiceConfig
        from exporter.core.catalog import merge
        from exporter.core.provider import RenderContext, SourceInfo
        from exporter.domains.adoption import evidence
        from exporter.domains.adoption import kpis as kpi
        from exporter.domains.adoption.settings import CapabilityConfig
        from exporter.domains.catalog.records import TemplateUse
        from exporter.domains.delivery.records import PipelineRun

        tmpl = "acme/templates/.github/workflows/build.yml"
        store = open_store(":memory:")
        with store.transaction() as tx:
            write_records(
                tx,
                [
                    TemplateUse("github", "checkout", "workflow", f"{tmpl}@v1", NOW - 40 * DAY),
                    TemplateUse("github", "checkout", "workflow", f"{tmpl}@v1", NOW - 2 * DAY),
                    TemplateUse("github", "checkout", "workflow", f"{tmpl}@v1", NOW - 50 * DAY),
                    TemplateUse("github", "search", "workflow", f"{tmpl}@v2", NOW - 31 * DAY),
                    TemplateUse("github", "accounts", "workflow", ".github/workflows/ci.yml", NOW),
                ],
            )
        # An enabled CI source makes the data "collected"; GitHub also records workflows.
        github = SourceInfo(
            "github", frozenset({PipelineRun, TemplateUse}), frozenset({"template:workflow"}), True
        )
        off = SourceInfo("jenkins", frozenset({PipelineRun}), frozenset({"template:x"}), False)
        ctx = RenderContext(Config(), store, (), NOW, (github, off), lambda: merge([], []))
        seen = evidence.collected(ctx)
        assert (seen.ci, seen.gateway, seen.cost) == (True, False, False)
        facts = evidence.pipeline_templates(seen, store, NOW - 30 * DAY)
        assert facts is not None
        assert sorted((f.service, f.last_at) for f in facts) == [
            ("accounts", NOW),
            ("checkout", NOW - 2 * DAY),
        ]
        assert seen.template_kinds == {"pipeline", "workflow"}
        cat = merge([ServiceConfig(**s) for s in SERVICES], [])
        rule = CapabilityConfig(
            name="ci-template",
            detect={"rule": "pipeline_template", "workflow_paths": [tmpl]},  # type: ignore[arg-type]
        )
        ev = kpi.Evidence(pipelines=facts, pipeline_kinds=seen.template_kinds)
        result = kpi.adoption(rule, cat, ev, NOW)
        assert result is not None and result.services == {"checkout"}

    def test_without_a_ci_source_template_use_is_unknown(self) -> None:
        from exporter.domains.adoption import evidence

        store = open_store(":memory:")
        seen = evidence.collected(render_context(Config(), store, NOW))
        assert seen == evidence.Collected(False, False, False, frozenset())
        assert evidence.pipeline_templates(seen, store, NOW) is None


class TestCostPerAdoptingService:
    def test_capability_cost_over_30_closed_days_divided_by_adopters(self) -> None:
        """USD 60 + 30 in the window (2026-08-22..2026-09-20), 1000 the day before it, EUR 10;
        3 adopting services: USD 30 and EUR 3.33 per service."""
        from exporter.domains.cost.records import CostContribution, CostDay

        def day(d: str, service: str, amount: float, currency: str = "USD") -> CostDay:
            return CostDay(d, service, "platform", "aws", "compute", currency, amount, amount)

        tagged = [{**s, "tags": ["gw"]} for s in SERVICES]
        config = Config(
            # The gateway's own service carries its cost; it does not adopt itself.
            services=[*tagged, PLATFORM_GW],
            sources={"focus": {"paths": ["/data/focus"]}},
            capabilities=[
                {
                    "name": "api-gateway",
                    "detect": {"rule": "catalog", "tag": "gw"},
                    "cost_services": ["platform-gw"],
                }
            ],
        )
        days = (
            day("2026-09-20", "platform-gw", 60.0),
            day("2026-08-22", "platform-gw", 30.0),
            day("2026-08-21", "platform-gw", 1000.0),
            day("2026-09-01", "platform-gw", 10.0, "EUR"),
            day("2026-09-01", "checkout", 500.0),
        )
        arrived = tuple(sorted({d.day for d in days}))
        exp = render(
            config, [CostContribution("focus", "file-1", "sig", days, covered_days=arrived)]
        )
        assert (
            exp.value(
                "platform_cost_per_adopting_service", capability="api-gateway", currency="USD"
            )
            == 30.0
        )
        assert (
            exp.value(
                "platform_cost_per_adopting_service", capability="api-gateway", currency="EUR"
            )
            == 10.0 / 3
        )
        # The 20th's usage not arrived yet (the file proves days through the 19th only):
        # its 60 is not counted, USD 30 / 3.
        early = tuple(d for d in arrived if d < "2026-09-20")
        exp = render(config, [CostContribution("focus", "file-1", "sig", days, covered_days=early)])
        assert (
            exp.value(
                "platform_cost_per_adopting_service", capability="api-gateway", currency="USD"
            )
            == 10.0
        )

    def test_no_cost_source_no_value(self) -> None:
        config = Config(
            services=[*SERVICES, PLATFORM_GW],
            capabilities=[
                {"name": "obs", "detect": {"rule": "probe"}, "cost_services": ["platform-gw"]}
            ],
        )
        assert render(config, []).samples("platform_cost_per_adopting_service") == []


class TestGitHubTemplateUse:
    def test_a_runs_workflow_file_and_reusable_workflows_are_template_uses(self) -> None:
        """Fields of a workflow run (GET /repos/{owner}/{repo}/actions/runs): ``path`` and
        ``referenced_workflows[].path``, as in the GitHub OpenAPI description."""
        from exporter.domains.delivery.sources.github import _workflow_paths

        run = {
            "path": ".github/workflows/build.yml",
            "referenced_workflows": [
                {"path": "acme/platform-templates/.github/workflows/ci.yml@v3", "sha": "abc"},
                {"sha": "no-path"},
            ],
        }
        assert _workflow_paths(run) == [
            ".github/workflows/build.yml",
            "acme/platform-templates/.github/workflows/ci.yml@v3",
        ]
        assert _workflow_paths({"path": "", "referenced_workflows": None}) == []
