"""The GitLab source against the simulated GitLab API (httpx.MockTransport): merge requests and
hotfix deployments.

GitLab behaviour relied on: ``GET /projects/:id/repository/compare?from=&to=`` lists
in ``commits`` the commits of ``to`` since its merge base with ``from`` (``straight``
defaults to false), each with ``parent_ids``, ``authored_date`` and
``committed_date``, and says ``compare_timeout`` when GitLab gave up computing it
(https://docs.gitlab.com/api/repositories/#compare-branches-tags-or-commits); a merge
request's ``/commits`` lists its own commits whatever their dates
(https://docs.gitlab.com/api/merge_requests/#get-single-merge-request-commits).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

import pytest

from exporter.core.sandbox.fakes import Fault
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.delivery.sandbox import data as delivery_data
from exporter.domains.delivery.sandbox.data import (
    EXPECTED,
    FakeCommit,
    FakeDeployment,
    FakeMergeRequest,
)
from exporter.domains.delivery.sandbox.gitlab import TOKEN, GitLabFake
from exporter.domains.delivery.sources.gitlab import GitLabSource
from tests.domains.delivery.helpers import add_hotfix, config, value

H = 3600.0
PROJECT = "discovery/search"


class Harness:
    """A daemon with the GitLab source (fast retries) over the simulated API."""

    def __init__(self) -> None:
        self.scenario = delivery_data.build(time.time())
        self.fake = GitLabFake(self.scenario)
        cfg = config({"gitlab": {"token": TOKEN, "requests_per_second": 10_000}})
        source = GitLabSource(cfg, cfg.sources.gitlab)  # type: ignore[arg-type]
        source.backoff = 0.01
        self.source = source
        self.daemon = Daemon(
            cfg,
            transport=self.fake.app.transport(),
            sources=[source],
            store=open_store(":memory:"),
        )

    def poll(self) -> bool:
        return asyncio.run(self.daemon.poll(self.source))

    @property
    def text(self) -> bytes:
        return self.daemon.holder.current.text

    def lead_samples(self) -> float | None:
        return value(
            self.text, "platform_lead_time_samples", service="search", team="discovery", window="7d"
        )

    def deploy_hotfix(self) -> tuple[FakeCommit, str]:
        """h1, committed 2h ago on a branch off s4 (not in the default branch's history), is
        deployed to production 1h ago. Returns h1 and s4's SHA."""
        repo = self.scenario.gitlab[PROJECT]
        s4 = repo.commits[-1].sha
        hotfix = add_hotfix(repo, "search-hotfix", 777)
        self.fake.plan.clear()
        return hotfix, s4

    def compares(self) -> list[dict[str, list[str]]]:
        return [parse_qs(q) for p, q, _ in self.fake.plan.log if p.endswith("/repository/compare")]


class TestMergeRequests:
    def test_a_merge_commit_brings_branch_commits_the_history_cursor_skipped(self) -> None:
        """After the first poll the history is read from ``since`` = s4's commit time less
        1h (13h ago). A merge request's branch commits g1 (committed 30h ago) and g2 (20h
        ago) are merged by m (1.5h ago) and m is deployed 1h ago: the listing from
        ``since`` holds m only, but the merge request's commits bring g1 and g2, so the
        deployment counts three lead times, 0.5h, 19h and 29h (not just m's)."""
        h = Harness()
        assert h.poll()
        repo = h.scenario.gitlab[PROJECT]
        s4 = repo.commits[-1].sha
        now = time.time()
        g1 = FakeCommit(delivery_data.sha_of("g1"), now - 30 * H, now - 30 * H, [s4], "g1")
        g2 = FakeCommit(delivery_data.sha_of("g2"), now - 20 * H, now - 20 * H, [g1.sha], "g2")
        m = FakeCommit(delivery_data.sha_of("m"), now - 1.5 * H, now - 1.5 * H, [s4, g2.sha])
        repo.commits += [g1, g2, m]
        repo.merge_requests.append(
            FakeMergeRequest(9, "feature-g", g1.authored_at, m.committed_at, [g1, g2], None, m.sha)
        )
        repo.deployments.append(
            FakeDeployment(779, m.sha, "production", now - H - 300, [(7791, "success", now - H)])
        )
        repo.touch()
        h.fake.plan.clear()
        assert h.poll()
        assert any(p.endswith("/merge_requests/9/commits") for p, _, _ in h.fake.plan.log)
        assert h.lead_samples() == EXPECTED["search"]["lead_time"]["n"] + 3
        within = {
            le: value(
                h.text,
                "platform_lead_time_seconds_bucket",
                service="search",
                team="discovery",
                le=le,
            )
            for le in ("3600", "86400", "172800")
        }
        # Before: 4h, 17h, 27h, 54h. Now also 0.5h, 19h and 29h.
        assert within == {"3600": 1, "86400": 4, "172800": 6}


class TestHotfixDeployments:
    def test_a_hotfix_deployed_off_the_default_branch_is_linked_through_compare(self) -> None:
        """h1 is not in the default branch's listing, so compare from=s4 (the previous
        production deployment) to=h1 brings it in: one more lead time, 2h - 1h = 1h."""
        h = Harness()
        assert h.poll()
        assert h.lead_samples() == EXPECTED["search"]["lead_time"]["n"]
        assert h.compares() == []  # every deployed commit was in the history
        hotfix, s4 = h.deploy_hotfix()
        assert h.poll()
        assert h.compares() == [{"from": [s4], "to": [hotfix.sha]}]
        rows = h.daemon.store.query("SELECT committed_at FROM commits WHERE sha = ?", (hotfix.sha,))
        assert [r[0] for r in rows] == [pytest.approx(hotfix.committed_at, abs=0.01)]
        assert h.lead_samples() == EXPECTED["search"]["lead_time"]["n"] + 1
        bucket = value(
            h.text,
            "platform_lead_time_seconds_bucket",
            service="search",
            team="discovery",
            le="3600",
        )
        assert bucket == 1  # only h1's lead time is within 1h (the others are 4h and more)

    def test_the_compare_is_made_once(self) -> None:
        """The next poll knows h1: no second compare."""
        h = Harness()
        assert h.poll()
        h.deploy_hotfix()
        assert h.poll()
        h.fake.plan.clear()
        assert h.poll()
        assert h.compares() == []

    def test_a_compare_that_timed_out_is_not_trusted(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """With ``compare_timeout`` true the listed commits may be partial: the hotfix keeps
        no lead time (rather than a wrong one), the source stays up, and the log says why."""
        h = Harness()
        assert h.poll()
        hotfix, _ = h.deploy_hotfix()
        partial: dict[str, Any] = {
            "commit": None,
            "commits": [{"id": hotfix.sha, "parent_ids": []}],
            "diffs": [],
            "compare_timeout": True,
            "compare_same_ref": False,
        }
        h.fake.plan.add(Fault("/repository/compare", 200, body=json.dumps(partial).encode()))
        with caplog.at_level(logging.INFO, logger="exporter.sources.gitlab"):
            assert h.poll()
        assert "timed out" in caplog.text
        assert not h.daemon.store.query("SELECT 1 FROM commits WHERE sha = ?", (hotfix.sha,))
        assert h.lead_samples() == EXPECTED["search"]["lead_time"]["n"]
