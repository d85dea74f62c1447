"""Sync discipline over HTTP: incremental polls, restarts, kill -9 mid-backfill, and faults.

Upstream behaviour relied on: GitHub answers ``304`` to a matching ``If-None-Match``
at no rate-limit cost
(https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api);
GitLab's ``updated_after`` with ``order_by=updated_at`` returns only what changed
(https://docs.gitlab.com/api/deployments/#list-project-deployments) and pages with
``X-Next-Page`` (https://docs.gitlab.com/api/rest/#pagination); Jenkins'
``tree=`` with ``{M,N}`` ranges (https://www.jenkins.io/doc/book/using/remote-access-api/).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import Config
from exporter.core.sandbox.fakes import Fault
from exporter.daemon import Daemon
from exporter.domains.delivery.sandbox.data import EXPECTED
from tests.domains.delivery.helpers import delivery_samples, value
from tests.e2e.test_delivery_e2e import Upstreams
from tests.support.paths import REPO_ROOT


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    ups = Upstreams()
    try:
        yield ups
    finally:
        ups.stop()


def make_daemon(ups: Upstreams, state_dir: Path, **source_settings: Any) -> Daemon:
    data = ups.config_data(state_dir)
    for kind, extra in source_settings.items():
        data["sources"][kind].update(extra)
    daemon = Daemon(Config(**data))
    for src in daemon.sources:
        src.backoff = 0.01  # type: ignore[attr-defined]
        if hasattr(src, "max_retry_after"):
            src.max_retry_after = 0.5  # type: ignore[attr-defined]
    return daemon


def run(daemon: Daemon, steps: list[Any]) -> list[Any]:
    """Run ``steps`` (callables returning awaitables or values) in one event loop."""

    async def go() -> list[Any]:
        out = []
        try:
            for step in steps:
                result = step()
                if asyncio.iscoroutine(result):
                    result = await result
                out.append(result)
        finally:
            await daemon.shutdown()
        return out

    return asyncio.run(go())


def counted_values(text: bytes) -> dict[Any, float]:
    """Counters and histogram counts: what must never be counted twice."""
    return {k: v for k, v in delivery_samples(text).items() if k[0].endswith(("_total", "_count"))}


class TestIncremental:
    def test_second_poll_without_change_is_conditional_or_cursor_bounded(
        self, upstreams: Upstreams, tmp_path: Path
    ) -> None:
        daemon = make_daemon(upstreams, tmp_path)
        texts: list[bytes] = []
        run(
            daemon,
            [
                daemon.poll_all,
                lambda: texts.append(daemon.holder.current.text),
                upstreams.clear,
                daemon.poll_all,
                lambda: texts.append(daemon.holder.current.text),
            ],
        )
        # GitHub: one conditional request per repo and resource (runs, deployments,
        # incidents; commits wait for a new deployment), plus the org list, all 304.
        gh = upstreams.github.plan.log
        assert {status for _, _, status in gh} == {304}
        assert len(gh) == 1 + 3 * 3
        # GitLab: the lists only, each bounded by its cursor or answered 304; nothing re-read.
        gl = upstreams.gitlab.plan.log
        # pipelines, deployments, commits, merged merge requests, incidents by type and by label.
        assert len(gl) == 6
        for path, query, status in gl:
            assert status == 304 or "updated_after=" in query or "since=" in query, path
            assert "/pipelines/" not in path  # no detail re-read
            assert "/merge_requests/" not in path  # no merge request's commits re-read
        # Jenkins: one bounded tree request per job.
        jk = upstreams.jenkins.plan.log
        assert len(jk) == 2 and all("tree=" in q and "{0,100}" in q for _, q, _ in jk)
        assert delivery_samples(texts[1]) == delivery_samples(texts[0])

    def test_restart_counts_nothing_twice(self, upstreams: Upstreams, tmp_path: Path) -> None:
        first = make_daemon(upstreams, tmp_path)
        before = run(first, [first.poll_all, lambda: first.holder.current.text])[1]
        second = make_daemon(upstreams, tmp_path)
        upstreams.clear()
        after = run(second, [second.poll_all, lambda: second.holder.current.text])[1]
        assert counted_values(after) == counted_values(before)
        assert {s for _, _, s in upstreams.github.plan.log} == {304}

    def test_kill_9_mid_backfill_then_restart_counts_each_event_once(
        self, upstreams: Upstreams, tmp_path: Path
    ) -> None:
        """The daemon (a real process) is killed after checkout's repo committed and before
        the last repo did; a restart finishes the backfill, every count is exact, and what
        was committed is not fetched again (its lists answer 304 to their ETags)."""
        data = upstreams.config_data(tmp_path)
        data["server"] = {"listen_address": "127.0.0.1", "port": 0}
        data["sources"]["github"]["concurrency"] = 1
        data["sources"]["github"]["interval"] = "1h"
        for kind in ("gitlab", "jenkins"):
            data["sources"][kind]["enabled"] = False
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
        db = tmp_path / "state.db"
        upstreams.github.plan.latency = 0.15
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "-c", str(config_file)],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            committed: set[str] = set()
            while time.monotonic() < deadline:
                if db.exists():
                    try:
                        with sqlite3.connect(db, timeout=1) as conn:
                            committed = {
                                r[0]
                                for r in conn.execute(
                                    "SELECT name FROM cursors WHERE source='github'"
                                )
                            }
                    except sqlite3.Error:
                        committed = set()
                if "acme/checkout:runs" in committed:
                    break
                time.sleep(0.05)
            assert "acme/checkout:runs" in committed
            assert "acme/recommendations:runs" not in committed  # mid-backfill
            killed_after = {
                name.removesuffix(":runs") for name in committed if name.endswith(":runs")
            }
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            upstreams.github.plan.latency = 0.0
            if proc.poll() is None:
                proc.kill()
        restarted = make_daemon(
            upstreams, tmp_path, gitlab={"enabled": False}, jenkins={"enabled": False}
        )
        upstreams.github.plan.clear()
        text = run(restarted, [restarted.poll_all, lambda: restarted.holder.current.text])[1]
        of_committed = [
            (path, status)
            for path, _, status in upstreams.github.plan.log
            if path.startswith(tuple(f"/repos/{repo}/" for repo in killed_after))
        ]
        assert of_committed, "the committed repos were checked"
        assert [(p, s) for p, s in of_committed if s != 304] == []
        for service in ("checkout", "payments-api", "recommendations"):
            team = "payments" if service != "recommendations" else "discovery"
            for (env, result), n in EXPECTED[service]["deployments"].items():
                assert (
                    value(
                        text,
                        "platform_deployments_total",
                        service=service,
                        team=team,
                        environment=env,
                        result=result,
                    )
                    == n
                )
            for (pipeline, result), n in EXPECTED[service]["runs"].items():
                assert (
                    value(
                        text,
                        "platform_pipeline_runs_total",
                        service=service,
                        team=team,
                        pipeline=pipeline,
                        result=result,
                    )
                    == n
                )


FAULTS = [
    ("github", Fault("/actions/runs", 429, {"Retry-After": "120"}, b'{"message":"slow"}')),
    (
        "github",
        Fault(
            "/deployments",
            403,
            {"Retry-After": "120"},
            b'{"message":"You have exceeded a secondary rate limit."}',
        ),
    ),
    ("github", Fault("/commits", 503, times=20)),
    ("github", Fault("/issues", 200, truncate=True)),
    ("github", Fault("/actions/runs", 200, delay=0.6, times=10)),
    ("gitlab", Fault("/deployments", 429, {"Retry-After": "120"}, b'{"message":"Retry later"}')),
    ("gitlab", Fault("/pipelines", 502, times=20)),
    ("gitlab", Fault("/repository/commits", 200, truncate=True)),
    ("gitlab", Fault("/issues", 200, delay=0.6, times=10)),
    ("jenkins", Fault("/api/json", 500, times=20)),
    ("jenkins", Fault("/api/json", 200, truncate=True)),
    ("jenkins", Fault("/api/json", 200, delay=0.6, times=10)),
]


class TestFaults:
    """Each fault marks its source down without crashing the daemon or touching the other
    sources' metrics; the next poll recovers it and the counts are exact."""

    @pytest.mark.parametrize(
        ("kind", "fault"),
        FAULTS,
        ids=[f"{k}-{f.path}-{f.status}-{i}" for i, (k, f) in enumerate(FAULTS)],
    )
    def test_fault(
        self,
        upstreams: Upstreams,
        tmp_path: Path,
        kind: str,
        fault: Fault,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        import exporter.domains.delivery.sources.gitlab as gitlab_source

        monkeypatch.setattr(gitlab_source, "PER_PAGE", 2)
        upstreams.clear()
        settings = {k: {"timeout": "0.25s"} for k in ("github", "gitlab", "jenkins")}
        daemon = make_daemon(upstreams, tmp_path, **settings)
        others = [k for k in ("github", "gitlab", "jenkins") if k != kind]
        fake = getattr(upstreams, kind)
        texts: list[bytes] = []
        sources = {s.kind: s for s in daemon.sources}

        def clock_forward() -> None:
            daemon.clock = lambda: time.time() + 600  # past any Retry-After

        run(
            daemon,
            [
                daemon.poll_all,
                lambda: texts.append(daemon.holder.current.text),
                lambda: fake.plan.add(fault),
                lambda: _touch_all(upstreams),
                lambda: daemon.poll(sources[kind]),
                lambda: texts.append(daemon.holder.current.text),
                lambda: _assert_down(daemon, kind, others),
                clock_forward,
                fake.plan.clear,
                lambda: daemon.poll(sources[kind]),
                lambda: texts.append(daemon.holder.current.text),
            ],
        )
        assert daemon.health[kind].up is True
        for other in others:
            services = _services_of(other)
            for service in services:
                assert delivery_samples(texts[1], service) == delivery_samples(texts[0], service)
        assert counted_values(texts[2]) == counted_values(texts[0])


def _touch_all(ups: Upstreams) -> None:
    from exporter.domains.delivery.sandbox.data import delivery_of

    delivery = delivery_of(ups.scenario)
    for repos in (delivery.github, delivery.gitlab, delivery.jenkins):
        for repo in repos.values():
            repo.touch()


def _assert_down(daemon: Daemon, kind: str, others: list[str]) -> None:
    assert daemon.health[kind].up is False, kind
    for other in others:
        assert daemon.health[other].up is True, other


def _services_of(kind: str) -> list[str]:
    return {
        "github": ["checkout", "payments-api", "recommendations"],
        "gitlab": ["search"],
        "jenkins": ["accounts"],
    }[kind]


class TestMidPagination:
    def test_gitlab_page_failing_mid_pagination_commits_nothing_of_that_project(
        self, upstreams: Upstreams, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import exporter.domains.delivery.sources.gitlab as gitlab_source

        monkeypatch.setattr(gitlab_source, "PER_PAGE", 2)
        upstreams.clear()
        daemon = make_daemon(upstreams, tmp_path)
        gitlab = next(s for s in daemon.sources if s.kind == "gitlab")
        # Page 1 of the deployments answers, page 2 fails (5 deployments, 2 a page).
        upstreams.gitlab.plan.add(Fault("/deployments", 500, times=20, after=1))
        rows: list[Any] = []
        run(
            daemon,
            [
                lambda: daemon.poll(gitlab),
                lambda: rows.append(
                    daemon.store.query("SELECT COUNT(*) FROM deployments WHERE source='gitlab'")
                ),
                lambda: rows.append(daemon.store.get_cursor("gitlab", "discovery/search:state")),
                lambda: rows.append(daemon.health["gitlab"].up),
                upstreams.gitlab.plan.clear,
                lambda: daemon.poll(gitlab),
                lambda: rows.append(daemon.holder.current.text),
            ],
        )
        assert rows[0][0][0] == 0 and rows[1] is None and rows[2] is False
        text = rows[3]
        assert daemon.health["gitlab"].up is True
        for (env, result), n in EXPECTED["search"]["deployments"].items():
            assert (
                value(
                    text,
                    "platform_deployments_total",
                    service="search",
                    team="discovery",
                    environment=env,
                    result=result,
                )
                == n
            )


class TestBadCredentials:
    def test_gitlab_and_jenkins_stop_on_401_without_hammering(
        self, upstreams: Upstreams, tmp_path: Path
    ) -> None:
        upstreams.clear()
        daemon = make_daemon(
            upstreams, tmp_path, gitlab={"token": "wrong"}, jenkins={"api_token": "wrong"}
        )
        sources = {s.kind: s for s in daemon.sources}
        counts: list[int] = []

        def requests() -> int:
            return len(upstreams.gitlab.plan.log) + len(upstreams.jenkins.plan.log)

        run(
            daemon,
            [
                lambda: daemon.poll(sources["gitlab"]),
                lambda: daemon.poll(sources["jenkins"]),
                lambda: counts.append(requests()),
                lambda: daemon.poll(sources["gitlab"]),
                lambda: daemon.poll(sources["jenkins"]),
                lambda: counts.append(requests()),
            ],
        )
        for kind in ("gitlab", "jenkins"):
            assert daemon.health[kind].up is False
            assert daemon.health[kind].errors["auth"] == 2
        assert counts[0] <= 4  # the first request of each job or project in flight
        assert counts[1] == counts[0]  # stopped: nothing more asked
        assert daemon.health["github"].up is None  # not polled here, untouched
