"""GitLab CI includes as evidence of platform template use, read frugally.

``GET /projects/:id/ci/lint`` (https://docs.gitlab.com/api/lint/#validate-a-projects-ci-configuration)
validates the default branch's ``.gitlab-ci.yml`` and lists its ``includes`` (``type``,
``location``, ``blob``, ``raw``, ``extra``, ``context_project``, ``context_sha``; the API's
``Entities::Ci::Lint::Result::Include``). The GitLab source calls it only when the default
branch's head moved since it last did, keeps what it read in the project's state, and
records each include as used by the project's latest pipeline.

Hand-checked scenario (``exporter/domains/delivery/sandbox/data.py``, ``exporter/domains/delivery/sandbox/gitlab.py``):
discovery/search (service search, team discovery) has its head at commit s4 (12 h before
the anchor) and its latest pipeline finished 4 h before the anchor; its configuration
includes ``gitlab/build.gitlab-ci.yml`` of acme/platform-templates, a local file and the
GitLab template ``Jobs/SAST.gitlab-ci.yml``. The catalog is search and accounts (no CI), and
the capability ``gitlab-template`` matches ``acme/platform-templates/*``: 1 of 2 services.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.core.sandbox.fakes import Fault
from exporter.daemon import Daemon
from exporter.domains.delivery.sandbox import data as delivery_data
from exporter.domains.delivery.sandbox.data import DeliveryScenario, sha_of
from exporter.domains.delivery.sandbox.gitlab import TOKEN, GitLabFake
from exporter.domains.delivery.sources.gitlab import include_refs
from tests.support.exposition import Exposition

H = 3600.0
TEMPLATE = "acme/platform-templates/gitlab/build.gitlab-ci.yml"
LOCAL = ".gitlab/ci/test.gitlab-ci.yml"
SAST = "Jobs/SAST.gitlab-ci.yml"


def make_config(state: Path) -> Config:
    return Config(
        state={"path": str(state)},
        services=[
            {"name": "search", "team": "discovery", "ci": [{"gitlab": "discovery/search"}]},
            {"name": "accounts", "team": "identity"},
        ],
        sources={
            "probe": {"enabled": False},
            "gitlab": {
                "base_url": "http://gitlab.test",
                "token": TOKEN,
                "requests_per_second": 10_000,
            },
        },
        delivery=delivery_data.demo_delivery_rules(),
        capabilities=[
            {
                "name": "gitlab-template",
                "detect": {
                    "rule": "pipeline_template",
                    "gitlab_includes": ["acme/platform-templates/*"],
                },
            }
        ],
    )


def at_ms(expected: dict[str, float]) -> dict[str, object]:
    """GitLab's timestamps carry milliseconds."""
    return {ref: pytest.approx(t, abs=1e-3) for ref, t in expected.items()}


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.scenario: DeliveryScenario = delivery_data.build(time.time())
        self.fake = GitLabFake(self.scenario)
        self.state = tmp_path / "state.db"
        self.daemon = self.new_daemon()

    def new_daemon(self) -> Daemon:
        daemon = Daemon(make_config(self.state), transport=self.fake.app.transport())
        for src in daemon.sources:
            src.backoff = 0.01  # type: ignore[attr-defined]
        return daemon

    def poll(self) -> bool:
        source = next(s for s in self.daemon.sources if s.kind == "gitlab")
        return asyncio.run(self.daemon.poll(source))

    def restart(self) -> None:
        asyncio.run(self.daemon.shutdown())
        self.daemon = self.new_daemon()

    def close(self) -> None:
        asyncio.run(self.daemon.shutdown())

    def lint_queries(self) -> list[str]:
        return [query for path, query, _ in self.fake.plan.log if path.endswith("/ci/lint")]

    def lint_calls(self) -> int:
        return len(self.lint_queries())

    def uses(self) -> dict[str, float]:
        rows = self.daemon.store.query(
            "SELECT service, source, kind, ref, last_at FROM template_uses ORDER BY ref"
        )
        assert all(tuple(r[:3]) == ("search", "gitlab", "include") for r in rows)
        return {str(r[3]): float(r[4]) for r in rows}

    def push(self, hours_before_anchor: float) -> None:
        """A new commit on the default branch and a pipeline for it that finishes 30 min later."""
        repo = self.scenario.gitlab["discovery/search"]
        b = delivery_data._Builder(self.scenario, repo)
        b._ids = 900_000 + len(repo.runs)
        b.commits(("s5", hours_before_anchor))
        b.run("build", "s5", "success", hours_before_anchor - 0.5)
        repo.touch()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


class TestIncludeRefs:
    def test_a_file_of_another_project_is_named_project_slash_path_others_by_location(
        self,
    ) -> None:
        body = {
            "valid": True,
            "includes": [
                {"type": "file", "location": "/ci/go.yml", "extra": {"project": "acme/tpl"}},
                {"type": "local", "location": ".gitlab/x.yml", "extra": {}},
                {"type": "template", "location": "Jobs/SAST.gitlab-ci.yml", "extra": {}},
                {
                    "type": "component",
                    "location": "gitlab.example.com/acme/components/build@1.2.0",
                    "extra": {},
                },
                {"type": "remote", "location": "https://example.com/ci.yml", "extra": {}},
                {"type": "file", "location": "/ci/go.yml", "extra": {"project": "acme/tpl"}},
            ],
        }
        assert include_refs(body) == [
            ".gitlab/x.yml",
            "Jobs/SAST.gitlab-ci.yml",
            "acme/tpl/ci/go.yml",
            "gitlab.example.com/acme/components/build@1.2.0",
            "https://example.com/ci.yml",
        ]

    def test_an_answer_without_includes_names_none(self) -> None:
        assert include_refs({"valid": False, "errors": ["no config"]}) == []


class TestIncludesAreReadWhenTheHeadMoves:
    def test_first_poll_records_each_include_at_the_latest_pipeline(self, harness: Harness) -> None:
        assert harness.poll()
        # At the head the commits list showed: s4.
        assert harness.lint_queries() == [f"content_ref={sha_of('discovery/search', 's4')}"]
        latest = harness.scenario.at(4)
        assert harness.uses() == at_ms({LOCAL: latest, SAST: latest, TEMPLATE: latest})

    def test_an_unchanged_head_is_not_linted_again_even_after_a_restart(
        self, harness: Harness
    ) -> None:
        assert harness.poll()
        assert harness.poll()
        harness.restart()
        assert harness.poll()
        assert harness.lint_calls() == 1
        latest = harness.scenario.at(4)
        assert harness.uses() == at_ms({LOCAL: latest, SAST: latest, TEMPLATE: latest})

    def test_a_new_head_is_linted_once_and_its_pipeline_uses_the_new_includes(
        self, harness: Harness
    ) -> None:
        """The push drops the SAST template: the new pipeline (finished 0.5 h before the
        anchor) used the other two; SAST's last use stays at the earlier pipeline."""
        assert harness.poll()
        harness.fake.includes["discovery/search"] = [
            i for i in harness.fake.includes["discovery/search"] if i[0] != "template"
        ]
        harness.push(hours_before_anchor=1.0)
        assert harness.poll()
        assert harness.poll()
        assert harness.lint_calls() == 2
        assert harness.uses() == at_ms(
            {
                LOCAL: harness.scenario.at(0.5),
                SAST: harness.scenario.at(4),
                TEMPLATE: harness.scenario.at(0.5),
            }
        )

    def test_a_refused_lint_leaves_includes_unknown_without_failing_the_project(
        self, harness: Harness
    ) -> None:
        """A token without access to CI lint (403): pipelines and deployments still sync,
        no include is recorded, and the same head is not asked again."""
        harness.fake.plan.add(Fault("/ci/lint", status=403, body=b'{"message":"403 Forbidden"}'))
        assert harness.poll()
        assert harness.poll()
        assert harness.lint_calls() == 1
        assert harness.uses() == {}
        runs = harness.daemon.store.query_one(
            "SELECT COUNT(*) FROM pipeline_runs WHERE service = 'search'"
        )
        assert runs is not None and runs[0] == 2


class TestCapabilityThroughGitLabIncludes:
    def test_the_service_whose_pipeline_includes_the_template_adopts(
        self, harness: Harness
    ) -> None:
        assert harness.poll()
        exp = Exposition.parse(harness.daemon.holder.current.text)
        cap = {"capability": "gitlab-template"}
        assert exp.value("platform_capability_adopting_services", **cap) == 1
        assert exp.value("platform_capability_adopting_teams", **cap) == 1
        assert exp.value("platform_capability_adoption_ratio", **cap) == pytest.approx(1 / 2)
        assert exp.value("platform_service_capability_adopted", service="search", **cap) == 1
        assert exp.value("platform_service_capability_adopted", service="accounts", **cap) == 0
