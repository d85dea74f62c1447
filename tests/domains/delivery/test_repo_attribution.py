"""Delivery records keep the repo they were read from, and follow the service that claims
it in the catalog as it is at each refresh.

Backstage (the documented fake, ``GET /api/catalog/entities/by-query``) lists a
component named by the test whose ``github.com/project-slug`` annotation
(https://backstage.io/docs/features/software-catalog/well-known-annotations) is
``acme/ledger``; GitHub (the simulated org) serves that repo. Hand-counted, in hours
before now: commits l1 at 50, l2 at 30, l3 at 10; successful production deployments of
l1 (at 48: the first, no lead time) and of l3 (at 6: it ships l2 after 24 h and l3
after 4 h); one successful "CI" run of l3 at 8. So: frequency 1 in 1d, 2 in 7d (2/7 a
day); lead time over 7d from samples 4 h and 24 h: median 14 h, p90 22 h.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from exporter.config import Config
from exporter.core.clock import FixedClock
from exporter.daemon import Daemon
from exporter.domains.catalog.sandbox import TOKEN, FakeCatalog, backstage_app
from exporter.domains.delivery.sandbox import data as delivery_data
from exporter.domains.delivery.sandbox.github import TOKEN as GH_TOKEN
from exporter.domains.delivery.sandbox.github import GitHubFake
from tests.domains.delivery.helpers import delivery_samples, value
from tests.domains.delivery.test_catalog_delivery import add_ledger
from tests.domains.traffic.attribution_platform import group
from tests.support.instants import at

NOW = at("mid-month")
H = 3600.0


def component(name: str, repo: str | None = "acme/ledger") -> dict[str, Any]:
    annotations = {"github.com/project-slug": repo} if repo else {}
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "annotations": annotations},
        "spec": {"type": "service", "lifecycle": "production", "owner": "group:default/finance"},
    }  # fmt: skip


class Platform:
    """Backstage and GitHub, read by one daemon at NOW."""

    def __init__(self, *entities: dict[str, Any], issue: bool = False) -> None:
        scenario = delivery_data.build(NOW)
        add_ledger(scenario, scenario.github, "acme/ledger")
        if issue:  # an incident issue of acme/ledger, opened 5 h before now, closed at 3
            delivery_data._Builder(scenario, scenario.github["acme/ledger"]).incident(5, 3)
        self.catalog = FakeCatalog([group("finance"), *entities])
        github = GitHubFake(scenario).app.transport()
        backstage = backstage_app(self.catalog).transport()

        async def route(request: httpx.Request) -> httpx.Response:
            inner = backstage if request.url.host == "backstage.test" else github
            return await inner.handle_async_request(request)

        config = Config(
            services=[{"name": "checkout", "team": "payments", "ci": [{"github": "acme/checkout"}]}],
            sources={
                "probe": {"enabled": False},
                "github": {
                    "token": GH_TOKEN,
                    "orgs": [{"name": "acme", "include": ["ledger", "checkout"]}],
                    "deploy_workflows": ["Deploy"],
                    "requests_per_second": 10_000,
                },
                "backstage": {"base_url": "http://backstage.test/api/catalog", "token": TOKEN},
            },
            delivery=delivery_data.demo_delivery_rules(),
            state={"path": ":memory:"},
        )  # fmt: skip
        self.daemon = Daemon(config, transport=httpx.MockTransport(route), clock=FixedClock(NOW))

    def poll(self, kind: str) -> bytes:
        src = next(s for s in self.daemon.sources if s.kind == kind)
        assert asyncio.run(self.daemon.poll(src)), self.daemon.health[kind].last_error
        return self.daemon.holder.current.text

    def close(self) -> None:
        asyncio.run(self.daemon.shutdown())


def windowed(text: bytes, service: str) -> dict[str, float | None]:
    def v(name: str, **labels: str) -> float | None:
        return value(text, name, service=service, team="finance", **labels)

    lead = "platform_lead_time_quantile_seconds"
    return {
        "frequency 1d": v("platform_deployment_frequency_per_day", window="1d"),
        "frequency 7d": v("platform_deployment_frequency_per_day", window="7d"),
        "lead samples 7d": v("platform_lead_time_samples", window="7d"),
        "lead p50 7d": v(lead, window="7d", quantile="0.5"),
        "lead p90 7d": v(lead, window="7d", quantile="0.9"),
    }


LEDGER = {
    "frequency 1d": pytest.approx(1.0),
    "frequency 7d": pytest.approx(2 / 7),
    "lead samples 7d": 2,
    "lead p50 7d": pytest.approx(14 * H),
    "lead p90 7d": pytest.approx(22 * H),
}


def deployments_total(text: bytes, service: str) -> float | None:
    return value(
        text, "platform_deployments_total", service=service, team="finance",
        environment="production", result="success",
    )  # fmt: skip


class TestARepoThatChangesService:
    def test_a_renamed_component_takes_its_repos_history_at_the_next_refresh(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """ledger is renamed ledger-v2 in Backstage. After the next catalog poll, with no
        GitHub poll in between, ledger-v2's windowed KPIs are ledger's, and ledger has no
        series. The deployment counter counts forward: ledger-v2 has none yet."""
        p = Platform(component("ledger"))
        try:
            p.poll("backstage")
            text = p.poll("github")
            assert windowed(text, "ledger") == LEDGER
            assert deployments_total(text, "ledger") == 2
            p.catalog.entities = [group("finance"), component("ledger-v2")]
            with caplog.at_level(logging.INFO, logger="exporter.delivery"):
                text = p.poll("backstage")
            assert windowed(text, "ledger-v2") == LEDGER
            assert delivery_samples(text, "ledger") == {}
            assert deployments_total(text, "ledger-v2") is None
            assert (
                "delivery records re-attributed after a catalog change: "
                "'github:acme/ledger': ledger -> ledger-v2" in caplog.messages
            )
        finally:
            p.close()

    def test_a_repo_claimed_by_another_component_moves_to_it(self) -> None:
        """ledger gives up acme/ledger and books claims it: books' windowed KPIs are the
        repo's, and ledger (still listed) has none in any window."""
        p = Platform(component("ledger"))
        try:
            p.poll("backstage")
            assert windowed(p.poll("github"), "ledger") == LEDGER
            p.catalog.entities = [group("finance"), component("ledger", None), component("books")]
            text = p.poll("backstage")
            assert windowed(text, "books") == LEDGER
            assert windowed(text, "ledger") == dict.fromkeys(LEDGER)
            # Exported counters keep what they counted (they only count forward).
            assert deployments_total(text, "ledger") == 2
        finally:
            p.close()

    def test_its_issue_incidents_move_with_it(self) -> None:
        """ledger's incident issue (open 5 h to 3 h before now) gives ledger a time to
        restore of 2 h; renamed ledger-v2, the component takes the incident with the repo's
        other records at the next catalog poll, and ledger has no time to restore left."""
        p = Platform(component("ledger"), issue=True)
        try:
            p.poll("backstage")
            text = p.poll("github")
            assert restore_p50(text, "ledger") == pytest.approx(2 * H)
            p.catalog.entities = [group("finance"), component("ledger-v2")]
            text = p.poll("backstage")
            assert restore_p50(text, "ledger-v2") == pytest.approx(2 * H)
            assert restore_p50(text, "ledger") is None
            rows = p.daemon.store.query(
                "SELECT service, repo FROM incidents WHERE source = 'github'"
                " AND key LIKE 'github/acme/ledger#%'"
            )
            assert [tuple(r) for r in rows] == [("ledger-v2", "github:acme/ledger")]
        finally:
            p.close()


def restore_p50(text: bytes, service: str) -> float | None:
    """The median time to restore over 30 days."""
    return value(
        text, "platform_time_to_restore_quantile_seconds", service=service, team="finance",
        window="30d", quantile="0.5",
    )  # fmt: skip
