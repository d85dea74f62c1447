"""End to end over HTTP: the daemon against the sandbox's simulated GitHub, GitLab and Jenkins.

The sandbox serves the seeded delivery scenario; every KPI the exporter reports
must equal the value worked out by hand in ``exporter/domains/delivery/sandbox/data.py``
(:data:`EXPECTED`). GitLab fields follow https://docs.gitlab.com/api/deployments/,
https://docs.gitlab.com/api/pipelines/, https://docs.gitlab.com/api/commits/ and
https://docs.gitlab.com/api/rest/#pagination; Jenkins fields follow
https://www.jenkins.io/doc/book/using/remote-access-api/ (``tree=``, ranges
``{M,N}``) and the git plugin's ``BuildData`` (``lastBuiltRevision.SHA1``).
The upstreams and the daemon share one fixed clock (the suite's mid-month instant), so
no value depends on today's date.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.clock import Clock, FixedClock, system_clock
from exporter.core.sandbox.app import SandboxServer
from exporter.core.sandbox.scenario import Scenario
from exporter.daemon import Daemon
from exporter.domains.delivery.sandbox import github as gh_sandbox
from exporter.domains.delivery.sandbox import gitlab as gl_sandbox
from exporter.domains.delivery.sandbox import jenkins as jk_sandbox
from exporter.domains.delivery.sandbox.data import EXPECTED, delivery_of
from exporter.domains.delivery.sandbox.github import GitHubFake
from exporter.domains.delivery.sandbox.gitlab import GitLabFake
from exporter.domains.delivery.sandbox.jenkins import JenkinsFake
from tests.domains.delivery.helpers import delivery_samples, value
from tests.support.instants import at
from tests.support.prometheus import promtool_check_metrics

H = 3600.0


class Upstreams:
    """The three simulated CI/CD upstreams on one loopback server, and a config watching them,
    all on ``clock``."""

    def __init__(self, clock: Clock = system_clock) -> None:
        self.clock = clock
        self.scenario = Scenario(seed=42, clock=clock)
        delivery = delivery_of(self.scenario)
        self.github = GitHubFake(delivery, clock=clock, prefix="/github")
        self.gitlab = GitLabFake(delivery, clock=clock, prefix="/gitlab")
        self.jenkins = JenkinsFake(delivery, prefix="/jenkins")
        self.server = SandboxServer(
            {"/github": self.github.app, "/gitlab": self.gitlab.app, "/jenkins": self.jenkins.app}
        ).start()

    def config_data(self, state_dir: Path) -> dict[str, Any]:
        data: dict[str, Any] = {
            "state": {"path": str(state_dir / "state.db")},
            "services": [{"name": s.name, "team": s.team} for s in self.scenario.services],
            "sources": {"probe": {"enabled": False}},
        }
        for hook in (gh_sandbox.configure, gl_sandbox.configure, jk_sandbox.configure):
            hook(data, self.server.url, self.scenario, state_dir)
        return data

    def daemon(self, state_dir: Path) -> Daemon:
        daemon = Daemon(Config(**self.config_data(state_dir)), clock=self.clock)
        for src in daemon.sources:
            src.backoff = 0.01  # type: ignore[attr-defined]
        return daemon

    def clear(self) -> None:
        for fake in (self.github, self.gitlab, self.jenkins):
            fake.plan.clear()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    ups = Upstreams(FixedClock(at("mid-month")))
    try:
        yield ups
    finally:
        ups.stop()


def poll_once(daemon: Daemon, times: int = 1) -> list[bytes]:
    """Poll every source ``times`` times in one event loop; the exposition after each."""

    async def go() -> list[bytes]:
        out = []
        try:
            for _ in range(times):
                await daemon.poll_all()
                out.append(daemon.holder.current.text)
        finally:
            await daemon.shutdown()
        return out

    return asyncio.run(go())


@pytest.fixture(scope="module")
def polled(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> tuple[Daemon, bytes]:
    daemon = upstreams.daemon(tmp_path_factory.mktemp("e2e"))
    texts = poll_once(daemon)
    return daemon, texts[0]


def _v(text: bytes, name: str, service: str, team: str, **labels: str) -> float | None:
    return value(text, name, service=service, team=team, **labels)


TEAMS = {
    "checkout": "payments",
    "payments-api": "payments",
    "recommendations": "discovery",
    "search": "discovery",
    "accounts": "identity",
}


@pytest.mark.parametrize("service", sorted(EXPECTED))
class TestKnownValues:
    def test_every_source_is_up(self, polled: tuple[Daemon, bytes], service: str) -> None:
        daemon, _ = polled
        for kind in ("github", "gitlab", "jenkins"):
            assert daemon.health[kind].up is True, daemon.health[kind].last_error

    def test_deployment_counts(self, polled: tuple[Daemon, bytes], service: str) -> None:
        _, text = polled
        exp: dict[str, Any] = EXPECTED[service]
        got = {
            (dict(k[1])["environment"], dict(k[1])["result"]): v
            for k, v in delivery_samples(text, service).items()
            if k[0] == "platform_deployments_total"
        }
        assert got == exp["deployments"]

    def test_frequency(self, polled: tuple[Daemon, bytes], service: str) -> None:
        _, text = polled
        for window, per_day in EXPECTED[service]["frequency"].items():
            got = _v(
                text,
                "platform_deployment_frequency_per_day",
                service,
                TEAMS[service],
                window=window,
            )
            assert got == pytest.approx(per_day), window

    def test_lead_time(self, polled: tuple[Daemon, bytes], service: str) -> None:
        _, text = polled
        exp = EXPECTED[service]["lead_time"]
        for window in ("7d", "30d"):
            n = _v(text, "platform_lead_time_samples", service, TEAMS[service], window=window)
            assert n == exp["n"]
            for q in ("0.5", "0.9"):
                got = _v(
                    text,
                    "platform_lead_time_quantile_seconds",
                    service,
                    TEAMS[service],
                    window=window,
                    quantile=q,
                )
                if exp["n"]:
                    assert got == pytest.approx(exp[q] * H), (window, q)
                else:
                    assert got is None  # no data: absent, not 0

    def test_change_failure(self, polled: tuple[Daemon, bytes], service: str) -> None:
        _, text = polled
        failed, total = EXPECTED[service]["change_failure"]
        team = TEAMS[service]
        assert _v(text, "platform_change_failure_samples", service, team, window="30d") == total
        assert _v(text, "platform_change_failure_ratio", service, team, window="30d") == (
            pytest.approx(failed / total)
        )

    def test_time_to_restore(self, polled: tuple[Daemon, bytes], service: str) -> None:
        _, text = polled
        exp = EXPECTED[service]["restore"]
        team = TEAMS[service]
        assert _v(text, "platform_time_to_restore_samples", service, team, window="30d") == exp["n"]
        for q in ("0.5", "0.9"):
            got = _v(
                text,
                "platform_time_to_restore_quantile_seconds",
                service,
                team,
                window="30d",
                quantile=q,
            )
            assert got == (pytest.approx(exp[q] * H) if exp["n"] else None)

    def test_time_to_production(self, polled: tuple[Daemon, bytes], service: str) -> None:
        _, text = polled
        exp = EXPECTED[service]["time_to_production"]
        got = _v(text, "platform_time_to_production_seconds", service, TEAMS[service])
        assert got == (None if exp is None else pytest.approx(exp * H))

    def test_dora_level(self, polled: tuple[Daemon, bytes], service: str) -> None:
        _, text = polled
        levels = {
            lvl: _v(text, "platform_dora_performance_level", service, TEAMS[service], level=lvl)
            for lvl in ("elite", "high", "medium", "low")
        }
        assert levels == {lvl: float(lvl == EXPECTED[service]["level"]) for lvl in levels}

    def test_pipeline_runs(self, polled: tuple[Daemon, bytes], service: str) -> None:
        _, text = polled
        got = {
            (dict(k[1])["pipeline"], dict(k[1])["result"]): v
            for k, v in delivery_samples(text, service).items()
            if k[0] == "platform_pipeline_runs_total"
        }
        assert got == EXPECTED[service]["runs"]


class TestExplicitIncidentLinks:
    def test_root_causes_are_read_from_issue_bodies_and_descriptions(
        self, polled: tuple[Daemon, bytes], upstreams: Upstreams
    ) -> None:
        """GitHub's issue body and GitLab's incident description each name a commit by a
        short prefix ("root cause: <sha>"); the stored incidents carry those prefixes."""
        daemon, _ = polled
        delivery = delivery_of(upstreams.scenario)
        checkout_c2 = delivery.github["acme/checkout"].commits[1].sha
        search_s4 = delivery.gitlab["discovery/search"].commits[3].sha
        with closing(sqlite3.connect(daemon.config.state.path)) as db:
            rows = dict(
                db.execute(
                    "SELECT key, deployment_sha FROM incidents WHERE deployment_sha IS NOT NULL"
                ).fetchall()
            )
        assert rows == {
            "github/acme/checkout#3": checkout_c2[:7],
            "gitlab/discovery/search#1": search_s4[:8],
        }

    def test_a_named_root_cause_fails_a_deployment_outside_the_link_window(
        self, polled: tuple[Daemon, bytes]
    ) -> None:
        """checkout's 48h deploy and search's 3h deploy are failed changes only through
        the links (their incidents opened 18h and 2.5h later, beyond the 2h window)."""
        _, text = polled
        assert _v(text, "platform_change_failure_ratio", "checkout", "payments", window="30d") == (
            pytest.approx(3 / 6)
        )
        assert _v(text, "platform_change_failure_ratio", "search", "discovery", window="30d") == (
            pytest.approx(1 / 3)
        )


class TestSquashMerges:
    def test_lead_time_from_the_squash_commit_when_configured(
        self, upstreams: Upstreams, tmp_path: Path
    ) -> None:
        """With ``squash_lead_time: squash_commit`` search's 3h deploy counts s4 itself (12h
        - 3h = 9h) instead of f1 and f2: lead times 54, 4, 9 -> median 9h, p90 9 + 0.8 * 45."""
        data = upstreams.config_data(tmp_path)
        data.setdefault("delivery", {})["squash_lead_time"] = "squash_commit"
        daemon = Daemon(Config(**data), clock=upstreams.clock)
        text = poll_once(daemon)[0]
        team = TEAMS["search"]
        assert _v(text, "platform_lead_time_samples", "search", team, window="7d") == 3
        for q, hours in (("0.5", 9.0), ("0.9", 45.0)):
            got = _v(
                text,
                "platform_lead_time_quantile_seconds",
                "search",
                team,
                window="7d",
                quantile=q,
            )
            assert got == pytest.approx(hours * H)


class TestExposition:
    def test_promtool_check_metrics_is_clean(self, polled: tuple[Daemon, bytes]) -> None:
        _, text = polled
        assert promtool_check_metrics(text) == ""

    def test_no_sha_run_id_or_branch_in_any_label(
        self, polled: tuple[Daemon, bytes], upstreams: Upstreams
    ) -> None:
        _, text = polled
        delivery = delivery_of(upstreams.scenario)
        scenario_shas = {
            c.sha
            for repos in (delivery.github, delivery.gitlab, delivery.jenkins)
            for r in repos.values()
            for c in r.commits
        }
        for (name, labels), _v2 in delivery_samples(text).items():
            for key, val in labels:
                assert key not in ("sha", "run_id", "branch", "run_number"), name
                assert val not in scenario_shas and val != "main", (name, key)

    def test_time_to_first_production_histogram(self, polled: tuple[Daemon, bytes]) -> None:
        _, text = polled
        assert value(text, "platform_time_to_first_production_seconds_count") == 1
        assert value(text, "platform_time_to_first_production_seconds_sum") == pytest.approx(
            168 * H
        )
