"""Settings: the config is assembled from the core's bases and each domain's keys.

The public models keep their names and their key order (``check-config`` prints them in
this order, and error messages name ``ServiceConfig``); product code reads a domain's keys
through the typed views ``Section.of(config)`` and ``ServiceFields.of(service)``.
"""

from __future__ import annotations

import pytest

from exporter.config import Config, ServiceConfig, SourcesConfig
from exporter.core.catalog import repo_claims
from exporter.core.settings import ServiceBase, source_block, source_enabled
from exporter.domains.adoption.settings import AdoptionSection
from exporter.domains.catalog.settings import CatalogServiceFields
from exporter.domains.cost.settings import CostSection, CostServiceFields
from exporter.domains.delivery.settings import DeliverySection, DeliveryServiceFields
from exporter.domains.probe.settings import ProbeServiceFields
from exporter.domains.slo.settings import SloServiceFields
from exporter.domains.traffic.settings import TrafficSection, TrafficServiceFields


class TestAssembledModels:
    def test_top_level_keys_keep_their_order(self) -> None:
        assert list(Config.model_fields) == [
            "server",
            "state",
            "metrics",
            "services",
            "sources",
            "cost",
            "catalog",
            "capabilities",
            "delivery",
            "incidents",
        ]

    def test_service_keys_keep_their_order(self) -> None:
        assert list(ServiceConfig.model_fields) == [
            "name",
            "team",
            "probes",
            "cost",
            "registered_at",
            "tags",
            "annotations",
            "routes",
            "slo",
            "ci",
            "pagerduty_services",
            "pagerduty_escalation_policies",
            "opsgenie_query",
        ]

    def test_source_blocks_keep_their_order(self) -> None:
        assert list(SourcesConfig.model_fields) == [
            "probe",
            "focus",
            "aws_cost",
            "azure_cost",
            "request_totals",
            "backstage",
            "kong",
            "nginx",
            "cloudwatch",
            "prometheus",
            "github",
            "gitlab",
            "jenkins",
            "pagerduty",
            "opsgenie",
        ]

    def test_a_service_carries_every_domains_keys(self) -> None:
        for mixin in (
            ProbeServiceFields,
            CostServiceFields,
            CatalogServiceFields,
            TrafficServiceFields,
            SloServiceFields,
            DeliveryServiceFields,
        ):
            assert issubclass(ServiceConfig, mixin)
        for section in (CostSection, TrafficSection, AdoptionSection, DeliverySection):
            assert issubclass(Config, section)


class TestTypedViews:
    def test_a_service_view_is_the_service_itself(self) -> None:
        svc = ServiceConfig(name="checkout", team="payments", routes=["checkout-api"])
        assert TrafficServiceFields.of(svc) is svc
        assert TrafficServiceFields.of(svc).routes == ["checkout-api"]

    def test_a_service_without_the_domains_keys_is_refused(self) -> None:
        bare = ServiceBase(name="checkout", team="payments")
        with pytest.raises(TypeError, match="ServiceBase has no TrafficServiceFields keys"):
            TrafficServiceFields.of(bare)

    def test_a_section_view_is_the_config_itself(self) -> None:
        config = Config(cost={"amount": "billed"})
        assert CostSection.of(config) is config
        assert CostSection.of(config).cost.amount == "billed"

    def test_source_block_and_enabled(self) -> None:
        config = Config(sources={"jenkins": {"base_url": "http://jenkins:8080", "enabled": False}})
        block = source_block(config, "jenkins")
        assert block is not None and block.enabled is False
        assert source_enabled(config, "jenkins") is False
        assert source_block(config, "github") is None
        assert source_enabled(config, "github") is False
        # The probe block is there without being written.
        assert source_enabled(config, "probe") is True


class TestCatalogFields:
    def test_each_domain_adds_its_part_of_the_catalog_entry(self) -> None:
        svc = ServiceConfig(
            name="checkout",
            team="payments",
            probes=[{"name": "health", "url": "http://checkout/healthz"}],
            cost={"tags": {"team": "payments", "app": "checkout"}},
            registered_at="2027-01-31T00:00:00Z",
            tags=["Tier-1"],
            annotations={"a": "b"},
            routes=["checkout-api"],
        )
        assert svc.catalog_fields() == {
            "has_probes": True,
            "cost_tags": ("app=checkout", "team=payments"),
            "tags": frozenset({"tier-1"}),
            "annotations": {"a": "b"},
            # 2027-01-01 is day 20819 since 1970 (57 years, 14 leap days); plus 30 days.
            "registered_at": (20819 + 30) * 86400.0,
            "routes": ("checkout-api",),
        }

    def test_a_bare_service_adds_nothing(self) -> None:
        assert ServiceBase(name="x", team="y").catalog_fields() == {}


class TestRepoClaims:
    def test_exact_refs_win_over_patterns_and_case_is_ignored(self) -> None:
        services = [
            ServiceConfig(name="all", team="t", ci=[{"github": "acme/*"}]),
            ServiceConfig(name="checkout", team="t", ci=[{"github": "acme/checkout"}]),
        ]
        owner = repo_claims(services)
        assert owner("github:ACME/Checkout") == "checkout"
        assert owner("github:acme/other") == "all"
        assert owner("gitlab:acme/checkout") is None

    def test_a_service_claims_its_ci_refs(self) -> None:
        svc = ServiceConfig(
            name="checkout", team="t", ci=[{"github": "acme/checkout"}, {"jenkins": "pay/*"}]
        )
        assert svc.repo_refs() == [("github", "acme/checkout"), ("jenkins", "pay/*")]
