"""Every CI/CD pager stops at its bound per list and poll: an upstream whose cursor never
ends makes the poll fail with reason ``malformed`` and the numbers, and commits nothing of
that list.

The endless upstreams follow each API's documented paging: GitHub's ``Link: <...>;
rel="next"`` (https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api),
GitLab's keyset ``Link`` and offset ``X-Next-Page`` headers
(https://docs.gitlab.com/ee/api/rest/#pagination), and Jenkins' ``tree=builds[...]{m,n}``
ranges (https://www.jenkins.io/doc/book/using/remote-access-api/).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from exporter.core.source import Source
from exporter.daemon import Daemon
from exporter.domains.delivery.sources.github import GitHubSource
from exporter.domains.delivery.sources.gitlab import GitLabSource
from exporter.domains.delivery.sources.jenkins import JenkinsSource
from tests.domains.delivery.helpers import config

Handler = Callable[[httpx.Request], httpx.Response]


def poll_endless(source: Source, cfg: Any, handler: Handler) -> tuple[Any, list[str]]:
    """Poll ``source`` once over ``handler``; its health and the paths it asked for."""
    asked: list[str] = []

    def recording(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return handler(request)

    daemon = Daemon(cfg, transport=httpx.MockTransport(recording), sources=[source])
    try:
        assert asyncio.run(daemon.poll(source)) is False
        return daemon.health[source.name].copy(), asked
    finally:
        daemon.store.close()


def bounded(source: Any, pages: int, items: int = 10_000) -> Any:
    source.max_pages, source.max_items = pages, items
    source.backoff = 0.0
    return source


class TestEndlessCursors:
    def test_github_stops_at_the_page_bound_of_a_list(self) -> None:
        """An org's repo list whose ``next`` link never ends: 4 pages, then malformed."""
        cfg = config({"github": {"orgs": [{"name": "acme"}]}})

        def endless(request: httpx.Request) -> httpx.Response:
            page = int(request.url.params.get("page", "1"))
            nxt = f'<https://api.github.com/orgs/acme/repos?page={page + 1}>; rel="next"'
            repo = {"name": f"r{page}", "full_name": f"acme/r{page}", "archived": False}
            return httpx.Response(200, json=[repo], headers={"Link": nxt})

        source = bounded(GitHubSource(cfg, cfg.sources.github), pages=4)  # type: ignore[arg-type]
        health, asked = poll_endless(source, cfg, endless)
        assert asked == ["/orgs/acme/repos"] * 4
        assert health.errors["malformed"] == 1
        assert health.last_error == (
            "GET /orgs/acme/repos: still more pages after 4 pages and 4 items (bounds per "
            "list and poll: 4 pages, 10000 items); nothing of it committed"
        )

    def test_gitlab_stops_at_the_item_bound_of_a_keyset_list(self) -> None:
        """A group's project list (keyset ``Link``) of 50 a page: 3 pages, 150 items, stop."""
        cfg = config({"gitlab": {"groups": [{"name": "discovery"}]}})

        def endless(request: httpx.Request) -> httpx.Response:
            after = int(request.url.params.get("id_after", "0"))
            items = [
                {"id": i, "path": f"p{i}", "path_with_namespace": f"discovery/p{i}"}
                for i in range(after + 1, after + 51)
            ]
            nxt = (
                "<https://gitlab.com/api/v4/groups/discovery/projects?pagination=keyset"
                f'&order_by=id&id_after={after + 50}>; rel="next"'
            )
            return httpx.Response(200, json=items, headers={"Link": nxt})

        source = bounded(GitLabSource(cfg, cfg.sources.gitlab), pages=100, items=150)  # type: ignore[arg-type]
        health, asked = poll_endless(source, cfg, endless)
        assert len(asked) == 3
        assert health.errors["malformed"] == 1
        assert "after 3 pages and 150 items" in health.last_error
        assert "100 pages, 150 items" in health.last_error

    def test_gitlab_stops_at_the_page_bound_of_an_offset_list(self) -> None:
        """A project's pipelines whose ``X-Next-Page`` never runs out."""
        cfg = config({"gitlab": {}})

        def endless(request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/pipelines"):
                page = int(request.url.params.get("page", "1"))
                headers = {"X-Next-Page": str(page + 1)}
                return httpx.Response(200, json=[], headers=headers)
            return httpx.Response(200, json={"id": 7, "default_branch": "main"})

        source = bounded(GitLabSource(cfg, cfg.sources.gitlab), pages=5)  # type: ignore[arg-type]
        health, asked = poll_endless(source, cfg, endless)
        assert health.errors["malformed"] == 1, health.last_error
        assert health.last_error.startswith("GET /projects/7/pipelines: still more pages after 5")
        assert sum(p.endswith("/pipelines") for p in asked) == 5

    def test_jenkins_stops_at_the_page_bound_of_a_job_s_builds(self) -> None:
        """A job whose build ranges always hold 100 more recent builds."""
        cfg = config({"jenkins": {"base_url": "http://jenkins:8080"}})
        now = time.time()

        def endless(request: httpx.Request) -> httpx.Response:
            start = int(request.url.params["tree"].rsplit("{", 1)[1].split(",")[0])
            builds = [
                {
                    "number": 10**9 - n,
                    "result": "SUCCESS",
                    "building": False,
                    "timestamp": int(now * 1000),
                    "duration": 1000,
                }
                for n in range(start, start + 100)
            ]
            return httpx.Response(200, json={"builds": builds})

        source = bounded(JenkinsSource(cfg, cfg.sources.jenkins), pages=3)  # type: ignore[arg-type]
        health, asked = poll_endless(source, cfg, endless)
        assert health.errors["malformed"] == 1, health.last_error
        assert "builds: still more pages after 3 pages and 300 items" in health.last_error
        assert len(asked) == 3
