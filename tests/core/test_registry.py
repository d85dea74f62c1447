"""The registry of domains: one declaration per domain, read by the daemon, the store and
the report; nothing is found by scanning folders."""

from __future__ import annotations

import pytest

from exporter.core.store import Schema, Store, write_records
from exporter.domains import domains, open_store, providers, source_classes
from exporter.domains.probe.records import ProbeResult


def test_domains_are_listed_in_the_config_order() -> None:
    names = [d.name for d in domains()]
    assert names == [
        "probe",
        "cost",
        "catalog",
        "traffic",
        "slo",
        "adoption",
        "delivery",
        "incident",
    ]


def test_source_kinds_come_from_the_domains_declarations() -> None:
    assert list(source_classes()) == [c.kind for d in domains() for c in d.sources]


def test_providers_are_own_health_first_then_the_domains_in_name_order_then_the_process() -> None:
    assert list(providers()) == [
        "self_health",
        "adoption",
        "catalog",
        "cost",
        "delivery",
        "incident",
        "probe",
        "slo",
        "traffic",
        "runtime",
    ]


def test_open_store_migrates_every_declared_component() -> None:
    store = open_store(":memory:")
    components = {c for d in domains() for c in d.migrations}
    assert components == {"probe", "cost", "catalog", "traffic", "delivery", "incident"}
    for d in domains():
        for component, migrations in d.migrations.items():
            assert store.schema_version(component) == len(migrations)


def test_a_store_without_a_schema_has_no_writer_for_domain_records() -> None:
    store = Store(":memory:")
    record = ProbeResult("web", "home", 1.0, 0.1, True, "")
    with (
        pytest.raises(TypeError, match="no store writer registered for ProbeResult"),
        store.transaction() as tx,
    ):
        write_records(tx, [record])


def test_a_component_or_record_type_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="component probe declared twice"):
        Schema.build([("probe", ()), ("probe", ())], [])
    writer = {ProbeResult: lambda tx, batch: None}
    with pytest.raises(ValueError, match="two store writers for ProbeResult"):
        Schema.build([], [writer, writer])
