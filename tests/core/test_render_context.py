"""What providers know of the source kinds: each source class declares what it commits
and which facts it carries, and ``ctx.kinds(...)`` answers from that, never from a list
of kinds."""

from __future__ import annotations

from exporter.config import Config
from exporter.core.store import Store
from exporter.domains import render_context, source_classes, source_infos
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.cost.records import CostContribution
from exporter.domains.delivery.records import PipelineRun
from exporter.domains.probe.records import ProbeResult
from exporter.domains.traffic.records import TrafficDelta

ORDER = (
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
)


def test_every_block_under_sources_has_its_class_in_the_config_order() -> None:
    assert tuple(source_classes()) == ORDER == tuple(type(Config().sources).model_fields)
    for kind, cls in source_classes().items():
        field = type(Config().sources).model_fields[kind]
        assert cls.kind == kind
        assert cls.settings_model.__name__ in str(field.annotation)
        assert cls.default_on == (field.default_factory is not None)


def test_without_filters_kinds_lists_the_enabled_sources_only() -> None:
    config = Config(sources={"kong": {"status_url": "http://kong:8001/status"}})
    ctx = render_context(config, Store(":memory:"), 0.0)
    # probe is on by default (its block is always there); kong has a block.
    assert ctx.kinds() == ("probe", "kong")
    assert ctx.kinds(enabled_only=False) == ORDER


def test_kinds_by_record_type_in_the_config_order() -> None:
    ctx = render_context(Config(), Store(":memory:"), 0.0)
    every = {"enabled_only": False}
    assert ctx.kinds(producing=TrafficDelta, **every) == (
        "kong",
        "nginx",
        "cloudwatch",
        "prometheus",
    )
    assert ctx.kinds(producing=PipelineRun, **every) == ("github", "gitlab", "jenkins")
    assert ctx.kinds(producing=CostContribution, **every) == ("focus", "aws_cost", "azure_cost")
    assert ctx.kinds(producing=CatalogListing, **every) == ("backstage",)
    assert ctx.kinds(producing=ProbeResult, **every) == ("probe",)


def test_kinds_by_tag() -> None:
    ctx = render_context(Config(), Store(":memory:"), 0.0)
    assert ctx.kinds(tag="paid_api", enabled_only=False) == ("aws_cost",)
    assert ctx.kinds(tag="template:workflow", enabled_only=False) == ("github",)
    assert ctx.kinds(tag="template:include", enabled_only=False) == ("gitlab",)
    assert ctx.kinds(producing=PipelineRun, tag="template:include", enabled_only=False) == (
        "gitlab",
    )


def test_a_disabled_block_is_not_enabled() -> None:
    config = Config(sources={"kong": {"status_url": "http://kong:8001/status", "enabled": False}})
    infos = {i.kind: i for i in source_infos(config)}
    assert not infos["kong"].enabled
    assert infos["probe"].enabled
    assert not infos["nginx"].enabled  # no block
    ctx = render_context(config, Store(":memory:"), 0.0, infos=tuple(infos.values()))
    assert ctx.kinds(producing=TrafficDelta) == ()
