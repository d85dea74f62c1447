"""Repos found through a GitLab group (keyset pages) or a Jenkins folder map to services by
the catalog's ``ci`` patterns; what no pattern matches is skipped."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.delivery.sandbox import data as delivery_data
from exporter.domains.delivery.sandbox.data import EXPECTED, FakeRepo
from exporter.domains.delivery.sandbox.gitlab import TOKEN, GitLabFake
from exporter.domains.delivery.sandbox.jenkins import API_TOKEN, USER, JenkinsFake
from exporter.domains.delivery.sources.gitlab import GitLabSource
from exporter.domains.delivery.sources.jenkins import JenkinsSource
from tests.domains.delivery.helpers import value


def _config(ci: dict[str, list[dict[str, str]]], sources: dict[str, Any]) -> Config:
    return Config(
        services=[{"name": name, "team": "t", "ci": refs} for name, refs in ci.items()],
        sources={"probe": {"enabled": False}, **sources},
        delivery=delivery_data.demo_delivery_rules(),
    )


def _poll(daemon: Daemon) -> bytes:
    async def go() -> bytes:
        try:
            assert await daemon.poll_all()
            return daemon.holder.current.text
        finally:
            await daemon.shutdown()

    return asyncio.run(go())


class TestGitLabGroup:
    def test_group_projects_map_by_pattern(self) -> None:
        scenario = delivery_data.build(time.time())
        scenario.gitlab["discovery/stray"] = FakeRepo("discovery/stray", 299, "nobody")
        fake = GitLabFake(scenario)
        cfg = _config(
            {"search": [{"gitlab": "discovery/sea*"}]},
            {
                "gitlab": {
                    "token": TOKEN,
                    "groups": [{"name": "discovery"}],
                    "requests_per_second": 10_000,
                }
            },
        )
        source = GitLabSource(cfg, cfg.sources.gitlab)  # type: ignore[arg-type]
        daemon = Daemon(
            cfg, transport=fake.app.transport(), sources=[source], store=open_store(":memory:")
        )
        text = _poll(daemon)
        assert (
            value(
                text,
                "platform_deployments_total",
                service="search",
                team="t",
                environment="production",
                result="success",
            )
            == 3
        )
        paths = [p for p, _, _ in fake.plan.log]
        assert any("pagination" in q for _, q, _ in fake.plan.log)  # keyset for the group
        assert not any("/projects/299/" in p for p in paths)  # the unmapped project


class TestJenkinsFolder:
    def test_folder_jobs_map_by_pattern(self) -> None:
        scenario = delivery_data.build(time.time())
        fake = JenkinsFake(scenario)
        cfg = _config(
            {"accounts": [{"jenkins": "identity/accounts-*"}]},
            {
                "jenkins": {
                    "base_url": "https://jenkins.example.com",
                    "username": USER,
                    "api_token": API_TOKEN,
                    "folders": ["identity"],
                    "deploy_jobs": ["*-deploy"],
                    "requests_per_second": 10_000,
                }
            },
        )
        source = JenkinsSource(cfg, cfg.sources.jenkins)  # type: ignore[arg-type]
        daemon = Daemon(
            cfg, transport=fake.app.transport(), sources=[source], store=open_store(":memory:")
        )
        text = _poll(daemon)
        for (pipeline, result), n in EXPECTED["accounts"]["runs"].items():
            assert (
                value(
                    text,
                    "platform_pipeline_runs_total",
                    service="accounts",
                    team="t",
                    pipeline=pipeline,
                    result=result,
                )
                == n
            )
        assert (
            value(
                text,
                "platform_lead_time_quantile_seconds",
                service="accounts",
                team="t",
                window="30d",
                quantile="0.5",
            )
            == 20 * 3600.0
        )
