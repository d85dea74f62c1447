"""Helpers for the delivery tests: configs over the simulated upstreams, metric lookups."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config
from exporter.core.settings import SourceConfig
from exporter.core.source import PollContext, Source
from exporter.domains.delivery.records import PipelineRun
from exporter.domains.delivery.sandbox import data as delivery_data

SERVICES: list[dict[str, Any]] = [
    {"name": "checkout", "team": "payments", "ci": [{"github": "acme/checkout"}]},
    {"name": "payments-api", "team": "payments", "ci": [{"github": "acme/payments-*"}]},
    {"name": "recommendations", "team": "discovery", "ci": [{"github": "acme/recommendations"}]},
    {"name": "search", "team": "discovery", "ci": [{"gitlab": "discovery/search"}]},
    {
        "name": "accounts",
        "team": "identity",
        "ci": [{"jenkins": "identity/accounts-deploy"}, {"jenkins": "identity/accounts-ci"}],
    },
]

DELIVERY_FAMILIES = (
    "platform_deployment",
    "platform_lead_time",
    "platform_change_failure",
    "platform_time_to",
    "platform_pipeline",
    "platform_dora",
)


def config(sources: dict[str, Any], state: str = ":memory:", **extra: Any) -> Config:
    return Config(
        services=SERVICES,
        sources={"probe": {"enabled": False}, **sources},
        delivery=delivery_data.demo_delivery_rules(),
        state={"path": state},
        **extra,
    )


def synthetic_org_config(repos: int, **github: Any) -> Config:
    """A config over :func:`~exporter.domains.delivery.sandbox.data.synthetic_org`'s repos
    (``bench/svc-NNNN``, one service each), 30 days of backfill, in memory; ``github``
    adds to (or overrides) its GitHub source block."""
    from exporter.domains.delivery.sandbox.github import TOKEN

    return Config(
        services=[
            {"name": f"svc-{r:04d}", "team": "t", "ci": [{"github": f"bench/svc-{r:04d}"}]}
            for r in range(repos)
        ],
        sources={
            "probe": {"enabled": False},
            "github": {"token": TOKEN, "requests_per_second": 10_000, **github},
        },
        delivery={"backfill_days": 30},
        state={"path": ":memory:"},
    )


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by (name, sorted labels)."""
    out = {}
    body = text.decode() if isinstance(text, bytes) else text
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: bytes | str, name: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    return samples(text).get((name, want))


def delivery_samples(text: bytes | str, service: str | None = None) -> dict[Any, float]:
    return {
        k: v
        for k, v in samples(text).items()
        if k[0].startswith(DELIVERY_FAMILIES) and (service is None or ("service", service) in k[1])
    }


def add_hotfix(repo: delivery_data.FakeRepo, name: str, deploy_id: int) -> delivery_data.FakeCommit:
    """A commit ``name``, committed 2h ago on a branch off the repo's last commit (not in the
    default branch's history), deployed to production 1h ago (deployment ``deploy_id``)."""
    now = time.time()
    parent = repo.commits[-1].sha
    hotfix = delivery_data.FakeCommit(
        delivery_data.sha_of(name), now - 7200, now - 7200, [parent], "fix", False
    )
    repo.commits.append(hotfix)
    statuses = [
        (deploy_id * 10 + 1, "in_progress", now - 3800),
        (deploy_id * 10 + 2, "success", now - 3600),
    ]
    repo.deployments.append(
        delivery_data.FakeDeployment(deploy_id, hotfix.sha, "production", now - 3900, statuses)
    )
    repo.touch()
    return hotfix


class MarkerSource(Source):
    """Another source: commits one pipeline run of `accounts` so its metrics can be watched."""

    kind: ClassVar[str] = "marker"

    def __init__(self, config: Config) -> None:
        super().__init__(config, SourceConfig())

    async def poll(self, ctx: PollContext) -> None:
        now = 1_700_000_000.0
        await ctx.commit(
            [PipelineRun("marker", "accounts", "nightly", "n/1", "success", now, now + 5, now + 65)]
        )


def statuses_by_path(log: Sequence[tuple[str, str, int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for path, _, status in log:
        out.setdefault(path, []).append(status)
    return out


def now() -> float:
    return time.time()
