"""Services only an external catalog lists get delivery data through their repo annotations.

Backstage's ``github.com/project-slug`` / ``gitlab.com/project-slug`` annotations
(https://backstage.io/docs/features/software-catalog/well-known-annotations) name a
component's repo. When a configured GitHub org or GitLab group lists that repo (and its
include and exclude patterns select it), its runs and deployments are the component's,
labelled with the component's team; a repo that a config service's ``ci`` refs claim
stays with the config. Entities are written to the store as the Backstage source
would, so these tests poll only the CI source, over the simulated API in-process.

The ledger repo (``acme/ledger`` on GitHub, ``discovery/ledger`` on GitLab), in hours
before the anchor: commits l1 at 50, l2 at 30, l3 at 10; production deployments of l1
(success, finished at 48: the first known, no lead time) and of l3 (success, at 6: it
ships l2 after 24 h and l3 after 4 h); one "CI" run of l3, successful, at 8.

* deployments: 2 successful production deployments;
* frequency: 1 in the last day (1.0 a day), 2 in 7 days (2/7 a day);
* lead time over 7 days: samples 4 h and 24 h, median 4 + 0.5 * 20 = 14 h, p90 4 + 0.9 * 20 = 22 h.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from exporter.config import Config
from exporter.core import catalog as catalog_module
from exporter.core.catalog import CatalogEntity
from exporter.core.source import Source
from exporter.core.store import write_records
from exporter.daemon import Daemon
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.delivery.sandbox import data as delivery_data
from exporter.domains.delivery.sandbox.data import EXPECTED, DeliveryScenario, FakeRepo
from exporter.domains.delivery.sandbox.github import TOKEN as GH_TOKEN
from exporter.domains.delivery.sandbox.github import GitHubFake
from exporter.domains.delivery.sandbox.gitlab import TOKEN as GL_TOKEN
from exporter.domains.delivery.sandbox.gitlab import GitLabFake
from tests.domains.delivery.helpers import delivery_samples, value

H = 3600.0


def add_ledger(scenario: DeliveryScenario, repos: dict[str, FakeRepo], name: str) -> None:
    repo = repos[name] = FakeRepo(name, 104, "ledger")
    b = delivery_data._Builder(scenario, repo)
    b.commits(("l1", 50), ("l2", 30), ("l3", 10))
    b.deploy("l1", "success", 48)
    b.deploy("l3", "success", 6)
    b.run("CI", "l3", "success", 8)


def ledger(*repos: str, team: str = "finance") -> CatalogEntity:
    return CatalogEntity(
        source="backstage",
        kind="component",
        namespace="default",
        name="ledger",
        team=team,
        repos=repos,
    )


def github_config(**org: Any) -> Config:
    return Config(
        services=[
            {"name": "checkout", "team": "payments", "ci": [{"github": "acme/checkout"}]},
            {"name": "payments-api", "team": "payments", "ci": [{"github": "acme/payments-*"}]},
        ],
        sources={
            "probe": {"enabled": False},
            "github": {
                "token": GH_TOKEN,
                "orgs": [{"name": "acme", **org}],
                "deploy_workflows": ["Deploy"],
                "requests_per_second": 10_000,
            },
            "backstage": {"base_url": "http://backstage.test/api/catalog"},
        },
        delivery=delivery_data.demo_delivery_rules(),
        state={"path": ":memory:"},
    )


class GitHubHarness:
    """The GitHub source over the simulated org (acme/checkout, payments-api,
    recommendations, and acme/ledger), with the catalog written to the store."""

    def __init__(self, config: Config, *entities: CatalogEntity) -> None:
        self.scenario = delivery_data.build(time.time())
        add_ledger(self.scenario, self.scenario.github, "acme/ledger")
        self.fake = GitHubFake(self.scenario)
        self.daemon = Daemon(config, transport=self.fake.app.transport())
        self.source: Source = next(s for s in self.daemon.sources if s.kind == "github")
        self.list(*entities)

    def list(self, *entities: CatalogEntity) -> None:
        """The catalog as Backstage lists it now (the whole listing replaces the last)."""
        with self.daemon.store.transaction() as tx:
            write_records(tx, [CatalogListing("backstage", time.time(), tuple(entities))])

    def poll(self) -> bytes:
        assert asyncio.run(self.daemon.poll(self.source))
        return self.daemon.holder.current.text

    def requested(self, prefix: str) -> list[str]:
        return [path for path, _, _ in self.fake.plan.log if path.startswith(prefix)]

    def close(self) -> None:
        asyncio.run(self.daemon.shutdown())


def deployments_of(text: bytes, service: str, team: str) -> dict[tuple[str, str], float]:
    """(environment, result) -> finished deployments of one service, with its team label."""
    out: dict[tuple[str, str], float] = {}
    for (name, key), v in delivery_samples(text, service).items():
        labels = dict(key)
        if name == "platform_deployments_total":
            assert labels["team"] == team
            out[(labels["environment"], labels["result"])] = v
    return out


def assert_ledger_delivery(text: bytes, team: str) -> None:
    def v(name: str, **labels: str) -> float | None:
        return value(text, name, service="ledger", team=team, **labels)

    assert deployments_of(text, "ledger", team) == {("production", "success"): 2}
    assert v("platform_deployment_frequency_per_day", window="1d") == pytest.approx(1.0)
    assert v("platform_deployment_frequency_per_day", window="7d") == pytest.approx(2 / 7)
    assert v("platform_lead_time_samples", window="7d") == 2
    assert v("platform_lead_time_quantile_seconds", window="7d", quantile="0.5") == pytest.approx(
        14 * H
    )
    assert v("platform_lead_time_quantile_seconds", window="7d", quantile="0.9") == pytest.approx(
        22 * H
    )
    assert v("platform_pipeline_runs_total", pipeline="CI", result="success") == 1


def assert_checkout_as_configured(text: bytes) -> None:
    assert deployments_of(text, "checkout", "payments") == EXPECTED["checkout"]["deployments"]


class TestBackstageOnlyServiceOnGitHub:
    def test_its_annotated_repo_in_a_configured_org_gives_its_deployments_and_lead_time(
        self,
    ) -> None:
        """ledger is not in the config; Backstage says team finance owns it and names
        acme/ledger, which the acme org lists: its delivery KPIs carry its own labels."""
        h = GitHubHarness(github_config(), ledger("github:acme/ledger"))
        try:
            text = h.poll()
            assert_ledger_delivery(text, team="finance")
            assert_checkout_as_configured(text)
            assert h.requested("/repos/acme/ledger/actions/runs") != []
        finally:
            h.close()

    def test_a_repo_the_config_claims_stays_with_the_configs_service(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Backstage also names acme/checkout (the config's checkout, exactly) and
        acme/payments-api (the config's payments-api, by the pattern acme/payments-*)
        for ledger: both stay with the config's services, each conflict is logged once and
        counted, and ledger keeps only its own repo."""
        catalog_module._logged.clear()  # conflicts are logged once per process
        h = GitHubHarness(
            github_config(),
            ledger("github:acme/ledger", "github:acme/checkout", "github:acme/payments-api"),
        )
        try:
            with caplog.at_level(logging.WARNING, logger="exporter.catalog"):
                text = h.poll()
                h.poll()
            assert_checkout_as_configured(text)
            assert_ledger_delivery(text, team="finance")
            assert (
                deployments_of(text, "payments-api", "payments")
                == EXPECTED["payments-api"]["deployments"]
            )
            assert value(text, "platform_catalog_conflicts") == 2
            for repo, owner in (
                ("acme/checkout", "checkout"),
                ("acme/payments-api", "payments-api"),
            ):
                message = (
                    f"catalog conflict for service ledger: owner of repo github:{repo} is "
                    f"'{owner}' in the config but 'ledger' in backstage; using the config"
                )
                assert caplog.text.count(message) == 1
        finally:
            h.close()

    def test_removing_the_entity_drops_its_delivery_series_and_its_repo_is_no_longer_read(
        self,
    ) -> None:
        h = GitHubHarness(github_config(), ledger("github:acme/ledger"))
        try:
            assert_ledger_delivery(h.poll(), team="finance")
            before = len(h.requested("/repos/acme/ledger/"))
            h.list()  # Backstage no longer lists ledger
            text = h.poll()
            assert delivery_samples(text, "ledger") == {}
            assert len(h.requested("/repos/acme/ledger/")) == before
            assert_checkout_as_configured(text)
        finally:
            h.close()

    def test_an_org_exclude_pattern_still_keeps_the_repo_out(self) -> None:
        """The config's selection wins: acme/ledger is excluded, so it is not read, and
        ledger's delivery shows no deployments (its samples say 0)."""
        h = GitHubHarness(github_config(exclude=["led*"]), ledger("github:acme/ledger"))
        try:
            text = h.poll()
            assert h.requested("/repos/acme/ledger/") == []
            assert (
                value(
                    text,
                    "platform_deployment_frequency_samples",
                    service="ledger",
                    team="finance",
                    window="7d",
                )
                == 0
            )
            assert (
                value(
                    text,
                    "platform_deployment_frequency_per_day",
                    service="ledger",
                    team="finance",
                    window="7d",
                )
                is None
            )
        finally:
            h.close()

    def test_a_repo_outside_every_configured_org_is_not_read(self) -> None:
        """Annotations map repos the source reads; they do not add repos to read."""
        h = GitHubHarness(github_config(), ledger("github:elsewhere/ledger"))
        try:
            h.poll()
            assert h.requested("/repos/elsewhere/") == []
        finally:
            h.close()


class TestBackstageOnlyServiceOnGitLab:
    def test_its_annotated_project_in_a_configured_group_gives_its_deployments(self) -> None:
        """The discovery group lists discovery/search (the config's search) and
        discovery/ledger, which Backstage names for ledger (team finance)."""
        scenario = delivery_data.build(time.time())
        add_ledger(scenario, scenario.gitlab, "discovery/ledger")
        fake = GitLabFake(scenario)
        config = Config(
            services=[
                {"name": "search", "team": "discovery", "ci": [{"gitlab": "discovery/search"}]}
            ],
            sources={
                "probe": {"enabled": False},
                "gitlab": {
                    "base_url": "http://gitlab.test",
                    "token": GL_TOKEN,
                    "groups": [{"name": "discovery"}],
                    "requests_per_second": 10_000,
                },
                "backstage": {"base_url": "http://backstage.test/api/catalog"},
            },
            delivery=delivery_data.demo_delivery_rules(),
            state={"path": ":memory:"},
        )
        daemon = Daemon(config, transport=fake.app.transport())
        with daemon.store.transaction() as tx:
            entity = ledger("gitlab:discovery/ledger")
            write_records(tx, [CatalogListing("backstage", time.time(), (entity,))])
        try:
            source = next(s for s in daemon.sources if s.kind == "gitlab")
            assert asyncio.run(daemon.poll(source))
            text = daemon.holder.current.text
            assert deployments_of(text, "ledger", "finance") == {("production", "success"): 2}
            assert value(
                text,
                "platform_lead_time_quantile_seconds",
                service="ledger",
                team="finance",
                window="7d",
                quantile="0.5",
            ) == pytest.approx(14 * H)
            assert deployments_of(text, "search", "discovery") == EXPECTED["search"]["deployments"]
        finally:
            asyncio.run(daemon.shutdown())
