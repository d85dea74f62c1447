"""Deployment webhooks over HTTP, against the running daemon and the simulated GitHub and
GitLab: a webhook then the poll of the same deployment (and the other way round) counts it
once, a replay is ignored, a bad signature or token gets 401 and is counted, and what a
webhook missed the poll finds.

Bodies are built like the documented events
(https://docs.github.com/en/webhooks/webhook-events-and-payloads#deployment_status,
https://docs.gitlab.com/user/project/integrations/webhook_events/#deployment-events) from
the same fake deployments the simulated APIs serve, so the webhook and the poll describe
one deployment. Everything runs on the suite's fixed mid-month clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from exporter.config import Config
from exporter.core.clock import FixedClock, utc_datetime
from exporter.core.webhooks import PREFIX
from exporter.daemon import Daemon
from exporter.domains.delivery.sandbox import github as gh_fake
from exporter.domains.delivery.sandbox.data import FakeCommit, FakeDeployment, FakeRepo, sha_of
from exporter.domains.delivery.webhooks.gitlab import gitlab_time
from tests.domains.delivery.helpers import samples
from tests.e2e.test_delivery_e2e import Upstreams
from tests.support.instants import at
from tests.support.net import http_get

SECRET = "gh-webhook-secret-0123456789"
TOKEN = "gl-webhook-token-0123456789"


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("POST", parts.path, body, {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def github_headers(body: bytes, delivery: str, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-GitHub-Event": "deployment_status",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={digest}",
        "User-Agent": "GitHub-Hookshot/044aadd",
    }


def github_body(repo: FakeRepo, dep: FakeDeployment) -> bytes:
    """A ``deployment_status`` ``created`` event for the deployment's newest status."""
    return json.dumps(
        {
            "action": "created",
            "deployment_status": gh_fake.deployment_status(repo, dep, dep.statuses[-1]),
            "deployment": gh_fake.deployment(repo, dep),
            "repository": gh_fake.repository(repo),
            "sender": gh_fake.user("deploy-bot", 4242, "Bot"),
        }
    ).encode()


def gitlab_body(repo: FakeRepo, dep: FakeDeployment) -> bytes:
    """A ``Deployment Hook`` for the deployment's newest status."""
    _, state, changed = dep.statuses[-1]
    web = f"https://gitlab.example.com/{repo.full_name}"
    return json.dumps(
        {
            "object_kind": "deployment",
            "status": "failed" if state == "failure" else state,
            "status_changed_at": utc_datetime(changed).strftime("%Y-%m-%d %H:%M:%S +0000"),
            "deployment_id": dep.id,
            "deployable_id": dep.id * 10,
            "environment": dep.environment,
            "project": {"id": repo.id, "path_with_namespace": repo.full_name, "web_url": web},
            "short_sha": dep.sha[:8],
            "commit_url": f"{web}/-/commit/{dep.sha}",
            "commit_title": "change",
        }
    ).encode()


def gitlab_headers(delivery: str, token: str = TOKEN) -> dict[str, str]:
    return {
        "X-Gitlab-Event": "Deployment Hook",
        "X-Gitlab-Token": token,
        "Idempotency-Key": delivery,
    }


def deployments_of(text: bytes, service: str) -> float:
    return sum(
        v
        for (name, labels), v in samples(text).items()
        if name == "platform_deployments_total" and ("service", service) in labels
    )


def lead_times_of(text: bytes, service: str) -> float:
    labels = dict(service=service)
    return sum(
        v
        for (name, lbls), v in samples(text).items()
        if name == "platform_lead_time_seconds_count" and ("service", labels["service"]) in lbls
    )


def requests_of(text: bytes, endpoint: str, outcome: str) -> float | None:
    labels = (("endpoint", endpoint), ("outcome", outcome))
    return samples(text).get(("platform_exporter_webhook_requests_total", labels))


class Harness:
    """The daemon with both webhooks on, over the simulated upstreams, on loopback."""

    def __init__(self, ups: Upstreams, state_dir: Path, kind: str) -> None:
        data = ups.config_data(state_dir)
        data["server"] = {"listen_address": "127.0.0.1", "port": 0}
        data["sources"]["github"]["webhook"] = {"secret": SECRET}
        data["sources"]["gitlab"]["webhook"] = {"token": TOKEN}
        for other in {"github", "gitlab", "jenkins"} - {kind}:
            data["sources"][other]["enabled"] = False  # a shorter backfill
        self.ups = ups
        self.daemon = Daemon(Config(**data), clock=ups.clock)
        self.url = ""
        self.made = 0

    def new_deployment(self, repo: FakeRepo, state: str = "success") -> FakeDeployment:
        """A production deployment of the repo's newest commit, finished 5 minutes ago (not
        yet served by the simulated API: see :meth:`publish`)."""
        now = self.ups.clock()
        self.made += 1
        dep_id = 9_000_000 + self.made  # above every id the scenario holds
        statuses = [
            (dep_id * 10 + 1, "in_progress", now - 600),
            (dep_id * 10 + 2, state, now - 300),
        ]
        return FakeDeployment(dep_id, repo.commits[-1].sha, "production", now - 660, statuses)

    @staticmethod
    def publish(repo: FakeRepo, dep: FakeDeployment) -> None:
        repo.deployments.append(dep)
        repo.touch()

    async def metrics(self) -> bytes:
        status, _, body = await asyncio.to_thread(http_get, f"{self.url}/metrics")
        assert status == 200
        return body

    async def push(self, kind: str, body: bytes, headers: dict[str, str]) -> int:
        status, _ = await asyncio.to_thread(post, f"{self.url}{PREFIX}{kind}", body, headers)
        return status

    async def until(self, check: Callable[[bytes], bool], within: float) -> bytes:
        """The first /metrics body that passes ``check``, read within ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            text = await self.metrics()
            if check(text) or time.monotonic() > deadline:
                return text
            await asyncio.sleep(0.05)

    def run(self, steps: Callable[[Harness], Any]) -> None:
        async def go() -> None:
            server = self.daemon.start_server()
            self.url = server.url
            try:
                await self.daemon.poll_all()
                await steps(self)
            finally:
                await self.daemon.shutdown()

        asyncio.run(go())


def test_github_webhook_then_poll_counts_once(tmp_path: Path) -> None:
    ups = Upstreams(FixedClock(at("mid-month")))
    try:
        harness = Harness(ups, tmp_path, "github")
        repo = ups.github.scenario.github["acme/checkout"]
        service = repo.service
        assert service == "checkout"

        async def steps(h: Harness) -> None:
            before = deployments_of(await h.metrics(), service)
            refresh = h.daemon.config.metrics.min_refresh

            # A webhook: counted at the next refresh, before any poll.
            dep = h.new_deployment(repo)
            body = github_body(repo, dep)
            assert await h.push("github", body, github_headers(body, "d-1")) == 200
            text = await h.until(lambda t: deployments_of(t, service) == before + 1, refresh)
            assert deployments_of(text, service) == before + 1

            # The same delivery again: a replay, ignored; a bad signature: 401, counted.
            assert await h.push("github", body, github_headers(body, "d-1")) == 200
            assert await h.push("github", body, github_headers(body, "d-2", "wrong")) == 401
            # A signed body that is not a deployment_status: 400, nothing stored; a body
            # over sources.github.webhook.max_body_bytes (1 MiB): 413, not even verified.
            broken = body.replace(b'"sha"', b'"shaa"')
            assert await h.push("github", broken, github_headers(broken, "d-4")) == 400
            big = b" " * (1024 * 1024 + 1)
            assert await h.push("github", big, github_headers(big, "d-5")) == 413
            # Then the poll of the same deployment: still once.
            h.publish(repo, dep)
            assert await h.daemon.poll(next(s for s in h.daemon.sources if s.kind == "github"))
            text = await h.metrics()
            assert deployments_of(text, service) == before + 1
            assert requests_of(text, "github", "accepted") == 1
            assert requests_of(text, "github", "replayed") == 1
            assert requests_of(text, "github", "unauthorized") == 1
            assert requests_of(text, "github", "malformed") == 1
            assert requests_of(text, "github", "too_large") == 1

            # The other way round: polled first, then its webhook: once.
            polled = h.new_deployment(repo, "failure")
            h.publish(repo, polled)
            assert await h.daemon.poll(next(s for s in h.daemon.sources if s.kind == "github"))
            late = github_body(repo, polled)
            assert await h.push("github", late, github_headers(late, "d-3")) == 200
            # A deployment no webhook told of: the poll finds it (the reconciler).
            missed = h.new_deployment(repo)
            h.publish(repo, missed)
            assert await h.daemon.poll(next(s for s in h.daemon.sources if s.kind == "github"))
            await asyncio.sleep(0.6)  # a push's refresh settles for half a second
            text = await h.metrics()
            assert deployments_of(text, service) == before + 3

            # A hotfix off the default branch, told by webhook: the poll still reads its commit
            # (compare with the previous production deployment), so its lead time is known.
            now = h.ups.clock()
            fix = FakeCommit(
                sha_of("webhook-hotfix"),
                now - 7200,
                now - 7200,
                [repo.commits[-1].sha],
                "fix",
                False,
            )
            repo.commits.append(fix)
            hotfix = h.new_deployment(repo)
            hotfix.sha = fix.sha
            lead_before = lead_times_of(text, service)
            hooked = github_body(repo, hotfix)
            assert await h.push("github", hooked, github_headers(hooked, "d-6")) == 200
            h.publish(repo, hotfix)
            assert await h.daemon.poll(next(s for s in h.daemon.sources if s.kind == "github"))
            text = await h.metrics()
            assert deployments_of(text, service) == before + 4
            assert lead_times_of(text, service) == lead_before + 1  # the hotfix commit, once

        harness.run(steps)
    finally:
        ups.stop()


def test_gitlab_webhook_then_poll_counts_once(tmp_path: Path) -> None:
    ups = Upstreams(FixedClock(at("mid-month")))
    try:
        harness = Harness(ups, tmp_path, "gitlab")
        path, repo = next(iter(ups.gitlab.scenario.gitlab.items()))
        service = repo.service

        async def steps(h: Harness) -> None:
            before = deployments_of(await h.metrics(), service)
            refresh = h.daemon.config.metrics.min_refresh
            dep = h.new_deployment(repo)
            body = gitlab_body(repo, dep)
            assert gitlab_time(json.loads(body)["status_changed_at"]) == dep.statuses[-1][2]
            assert await h.push("gitlab", body, gitlab_headers("e-1", "not-the-token")) == 401
            assert await h.push("gitlab", body, gitlab_headers("e-1")) == 200
            text = await h.until(lambda t: deployments_of(t, service) == before + 1, refresh)
            assert deployments_of(text, service) == before + 1
            h.publish(repo, dep)
            assert await h.daemon.poll(next(s for s in h.daemon.sources if s.kind == "gitlab"))
            text = await h.metrics()
            assert deployments_of(text, service) == before + 1
            row = h.daemon.store.query_one(
                "SELECT sha, finished_at FROM deployments WHERE key = ?",
                (f"gitlab/{path}/{dep.id}",),
            )
            assert row is not None and tuple(row) == (dep.sha, dep.statuses[-1][2])
            assert requests_of(text, "gitlab", "unauthorized") == 1
            assert requests_of(text, "gitlab", "accepted") == 1

        harness.run(steps)
    finally:
        ups.stop()
