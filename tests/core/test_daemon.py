"""The daemon in-process: scheduling, readiness, failing sources and provider errors."""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import exporter.daemon as daemon_module
from exporter.config import Config
from exporter.core.errors import ERROR_REASONS, UpstreamStatusError
from exporter.core.provider import RenderContext
from exporter.core.source import PollContext
from exporter.daemon import Daemon
from exporter.domains import providers
from exporter.domains.probe.records import ProbeResult
from tests.support.exposition import Exposition
from tests.support.fakes import ScriptedSource
from tests.support.net import http_get, wait_until


def make_config(tmp_path: Path, **server: Any) -> Config:
    return Config(
        server={"listen_address": "127.0.0.1", "port": 0, **server},
        state={"path": str(tmp_path / "state.db")},
        services=[{"name": "a", "team": "x"}, {"name": "b", "team": "y"}],
    )


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


class TestScheduler:
    def test_each_source_runs_once_at_start(self, tmp_path: Path) -> None:
        """With a 60 s interval, the first poll still happens right away, and only once."""
        src = ScriptedSource(make_config(tmp_path), interval=60)
        daemon = Daemon(make_config(tmp_path), sources=[src])

        async def go() -> float:
            t0 = time.monotonic()
            daemon.start_scheduler()
            await wait_for(lambda: src.finished == 1)
            elapsed = time.monotonic() - t0
            await asyncio.sleep(0.3)
            await daemon.shutdown()
            return elapsed

        assert asyncio.run(go()) < 4.0  # at once, not after the 60 s interval
        assert src.polls == 1

    def test_an_overrunning_poll_is_skipped_and_counted_not_stacked(self, tmp_path: Path) -> None:
        """Interval 0.1 s, each poll 0.45 s: never two at once; the skipped runs are counted."""

        async def slow(ctx: PollContext, n: int) -> None:
            await asyncio.sleep(0.45)

        src = ScriptedSource(make_config(tmp_path), interval=0.1, behaviour=slow)
        daemon = Daemon(make_config(tmp_path), sources=[src])

        async def go() -> None:
            daemon.start_scheduler()
            await wait_for(lambda: src.finished >= 2)
            await daemon.shutdown()

        asyncio.run(go())
        assert src.max_running == 1
        skipped = daemon.health["scripted"].skipped
        assert skipped >= 2
        # Far fewer polls than the interval would have stacked up.
        assert src.polls <= 3
        exp = Exposition.parse(daemon.render().text)
        assert (
            exp.value("platform_exporter_source_polls_skipped_total", source="scripted") == skipped
        )

    def test_a_poll_asked_for_while_the_source_polls_runs_right_after_it(
        self, tmp_path: Path
    ) -> None:
        """``poll_soon`` during a poll (a catalog poll that left this source's data out of
        date, say) gives exactly one more poll as soon as the running one ends, however the
        scheduler counts the running one, not one at the next hourly interval."""
        release = asyncio.Event()

        async def first_waits(ctx: PollContext, n: int) -> None:
            if n == 1:
                await release.wait()

        src = ScriptedSource(make_config(tmp_path), interval=3600, behaviour=first_waits)
        daemon = Daemon(make_config(tmp_path), sources=[src])

        async def go() -> None:
            daemon.start_scheduler()
            await wait_for(lambda: src.polls == 1)
            daemon.poll_soon("scripted")
            daemon.poll_soon("scripted")  # asked twice while polling: still one more poll
            release.set()
            await wait_for(lambda: src.finished == 2)
            await asyncio.sleep(0.3)
            await daemon.shutdown()

        asyncio.run(go())
        assert (src.polls, src.max_running, daemon.health["scripted"].skipped) == (2, 1, 0)

    def test_an_overrunning_poll_is_warned_about_once(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One warning per overrunning poll, naming the source; later skips of it log at debug."""

        async def slow(ctx: PollContext, n: int) -> None:
            await asyncio.sleep(0.45)

        src = ScriptedSource(make_config(tmp_path), interval=0.1, behaviour=slow)
        daemon = Daemon(make_config(tmp_path), sources=[src])

        async def go() -> None:
            daemon.start_scheduler()
            await wait_for(lambda: src.finished >= 2)
            await daemon.shutdown()

        with caplog.at_level("DEBUG", logger="exporter.daemon"):
            asyncio.run(go())
        skips = [r for r in caplog.records if "this run is skipped" in r.getMessage()]
        assert len(skips) == daemon.health["scripted"].skipped >= 2
        warnings = [r for r in skips if r.levelname == "WARNING"]
        assert 1 <= len(warnings) <= src.polls
        assert all("source scripted" in r.getMessage() for r in warnings)
        assert len(warnings) < len(skips)

    def test_a_first_poll_outlasting_its_interval_is_start_up_work_not_a_warning(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """First poll 0.45 s (a backfill, the probes due at start), later ones quick, interval
        0.1 s: its skipped runs are counted and logged at info as the first poll's, with no
        warning."""

        async def first_slow(ctx: PollContext, n: int) -> None:
            await asyncio.sleep(0.45 if n == 1 else 0.0)

        src = ScriptedSource(make_config(tmp_path), interval=0.1, behaviour=first_slow)
        daemon = Daemon(make_config(tmp_path), sources=[src])

        async def go() -> None:
            daemon.start_scheduler()
            await wait_for(lambda: src.finished >= 3)
            await daemon.shutdown()

        with caplog.at_level("DEBUG", logger="exporter.daemon"):
            asyncio.run(go())
        skips = [r for r in caplog.records if "this run is skipped" in r.getMessage()]
        assert len(skips) == daemon.health["scripted"].skipped >= 1
        assert not [r for r in skips if r.levelname == "WARNING"]
        first = [r for r in skips if r.levelname == "INFO"]
        assert len(first) == 1
        assert "source scripted: first poll (start-up work) still running" in first[0].getMessage()

    def test_sources_run_independently(self, tmp_path: Path) -> None:
        """A slow source does not hold back a fast one."""

        async def stuck(ctx: PollContext, n: int) -> None:
            await asyncio.sleep(30)

        config = make_config(tmp_path)
        slow = ScriptedSource(config, name="slow", behaviour=stuck)
        fast = ScriptedSource(config, name="fast", interval=0.05)
        daemon = Daemon(config, sources=[slow, fast])

        async def go() -> None:
            daemon.start_scheduler()
            await wait_for(lambda: fast.finished >= 3)
            await daemon.shutdown()

        asyncio.run(go())
        assert slow.finished == 0 and slow.cancelled == 1

    def test_shutdown_cancels_the_in_flight_poll_and_commits_nothing_of_it(
        self, tmp_path: Path
    ) -> None:
        async def commit_late(ctx: PollContext, n: int) -> None:
            await asyncio.sleep(30)
            await ctx.commit([ProbeResult("a", "p", 1.0, 0.1, True, "")])

        src = ScriptedSource(make_config(tmp_path), behaviour=commit_late)
        daemon = Daemon(make_config(tmp_path), sources=[src])

        async def go() -> float:
            daemon.start_scheduler()
            await wait_for(lambda: src.running == 1)
            t0 = time.monotonic()
            await daemon.shutdown()
            return time.monotonic() - t0

        assert asyncio.run(go()) < 3.0  # not the 30 s the poll would have taken
        assert src.cancelled == 1
        import sqlite3

        conn = sqlite3.connect(tmp_path / "state.db")
        assert conn.execute("SELECT COUNT(*) FROM probe_results").fetchone() == (0,)
        conn.close()


class TestReadiness:
    def test_ready_after_every_source_refreshed_once(self, tmp_path: Path) -> None:
        config = make_config(tmp_path, startup_grace="1h")
        a = ScriptedSource(config, name="one")
        b = ScriptedSource(config, name="two")
        daemon = Daemon(config, sources=[a, b])
        server = daemon.start_server()
        try:
            assert http_get(f"{server.url}/readyz")[0] == 503
            status, _, body = http_get(f"{server.url}/healthz")
            assert (status, body) == (200, b"ok\n")  # alive, though not ready
            asyncio.run(daemon.poll(a))
            assert http_get(f"{server.url}/readyz")[0] == 503  # "two" has not refreshed yet
            asyncio.run(daemon.poll(b))
            status, _, body = http_get(f"{server.url}/readyz")
            assert (status, body) == (200, b"ready\n")
        finally:
            server.stop()

    def test_a_source_failing_its_first_poll_keeps_it_unready_until_the_grace_ends(
        self, tmp_path: Path
    ) -> None:
        async def fail(ctx: PollContext, n: int) -> None:
            raise UpstreamStatusError("503 from upstream", 503)

        config = make_config(tmp_path, startup_grace="2s")
        src = ScriptedSource(config, behaviour=fail)
        t0 = time.monotonic()
        daemon = Daemon(config, sources=[src])
        server = daemon.start_server()
        try:
            assert asyncio.run(daemon.poll(src)) is False
            assert http_get(f"{server.url}/readyz")[0] == 503
            wait_until(lambda: http_get(f"{server.url}/readyz")[0] == 200, timeout=10)
            assert time.monotonic() - t0 >= 2.0
        finally:
            server.stop()

    def test_no_sources_is_ready_at_once(self, tmp_path: Path) -> None:
        daemon = Daemon(make_config(tmp_path, startup_grace="1h"), sources=[])
        assert daemon.ready()


def probe(service: str, t: float, success: bool = True) -> ProbeResult:
    return ProbeResult(service, "health", t, 0.05, success, "" if success else "status", 200)


class TestFailingSource:
    def test_a_failing_source_keeps_its_values_and_flips_only_its_own_up(
        self, tmp_path: Path
    ) -> None:
        config = make_config(tmp_path)

        async def alpha(ctx: PollContext, n: int) -> None:
            await ctx.commit([probe("a", 1000.0 + n)])

        async def beta(ctx: PollContext, n: int) -> None:
            if n >= 2:
                raise UpstreamStatusError("503 from https://beta.example/api: busy", 503)
            await ctx.commit([probe("b", 1000.0 + n, success=False)])

        now = [2000.0]
        a = ScriptedSource(config, name="alpha", behaviour=alpha)
        b = ScriptedSource(config, name="beta", behaviour=beta)
        daemon = Daemon(config, sources=[a, b], clock=lambda: now[0])

        async def go() -> tuple[Exposition, Exposition]:
            assert await daemon.poll_all()
            first = Exposition.parse(daemon.holder.current.text)
            now[0] = 2100.0
            assert not await daemon.poll_all()
            second = Exposition.parse(daemon.holder.current.text)
            await daemon.shutdown()
            return first, second

        first, second = asyncio.run(go())
        up = "platform_exporter_source_up"
        assert (first.value(up, source="alpha"), first.value(up, source="beta")) == (1, 1)
        assert (second.value(up, source="alpha"), second.value(up, source="beta")) == (1, 0)
        # beta's data is still served, unchanged, with its freshness timestamp.
        checks = "platform_probe_checks_total"
        failed_b = {"service": "b", "result": "failure", "reason": "status"}
        assert second.value(checks, **failed_b) == first.value(checks, **failed_b) == 1
        assert second.value(checks, service="a", result="success") == 2
        fresh = "platform_exporter_source_last_success_timestamp_seconds"
        assert second.value(fresh, source="beta") == 2000.0
        assert second.value(fresh, source="alpha") == 2100.0
        errors = "platform_exporter_source_errors_total"
        assert second.value(errors, source="beta", reason="http_5xx") == 1
        assert second.value(errors, source="alpha", reason="http_5xx") == 0
        # Every bounded reason is present from the start, at 0.
        reasons = {labels["reason"] for labels, _ in first.samples(errors, source="alpha")}
        assert reasons == set(ERROR_REASONS) and "deadline" in reasons

    @pytest.mark.internal_reason
    def test_an_unexpected_exception_is_counted_as_internal(self, tmp_path: Path) -> None:
        async def bug(ctx: PollContext, n: int) -> None:
            raise KeyError("oops")

        config = make_config(tmp_path)
        src = ScriptedSource(config, behaviour=bug)
        daemon = Daemon(config, sources=[src])
        assert asyncio.run(daemon.poll(src)) is False
        exp = Exposition.parse(daemon.holder.current.text)
        assert exp.value("platform_exporter_source_errors_total", reason="internal") == 1

    def test_the_suite_guard_sees_reason_internal(self, tmp_path: Path) -> None:
        """The suite fails any test that sees reason internal unless it is marked
        internal_reason: the guard records the poll above, and a subprocess's log line."""
        from tests.support import internal

        async def bug(ctx: PollContext, n: int) -> None:
            raise KeyError("oops")

        config = make_config(tmp_path)
        src = ScriptedSource(config, behaviour=bug)
        daemon = Daemon(config, sources=[src])
        with internal.watch() as seen:
            asyncio.run(daemon.poll(src))
            internal.note_log("daemon", "ERROR source x: poll failed (internal)\nINFO fine")
            found = list(seen)
        assert found == [
            f"source {src.name}: 'oops'",
            "daemon: ERROR source x: poll failed (internal)",
        ]


@pytest.fixture
def flaky_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Adds a provider that works on its first call and raises on later ones."""
    calls = [0]
    real = providers()

    def flaky(ctx: RenderContext) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("bug in a provider")
        g = GaugeMetricFamily("platform_test_value", "A test value.", labels=["k"])
        g.add_metric(["v"], 42)
        yield g

    monkeypatch.setattr(daemon_module, "providers", lambda **_: {**real, "flaky": flaky})
    yield calls


class TestProviders:
    def test_a_failing_provider_keeps_its_previous_families(
        self, tmp_path: Path, flaky_provider: list[int]
    ) -> None:
        daemon = Daemon(make_config(tmp_path), sources=[])
        again = Exposition.parse(daemon.render().text)
        assert flaky_provider[0] == 2
        assert again.value("platform_test_value", k="v") == 42
        assert again.value("platform_exporter_build_info") == 1


class TestRenderingAtShutdown:
    def test_shutdown_waits_for_a_render_left_running_by_a_cancelled_refresh(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The store is closed only once the render thread is done with it."""
        real = providers()
        started = threading.Event()

        def slow(ctx: RenderContext) -> Iterator[Any]:
            started.set()
            time.sleep(0.3)
            ctx.store.counters("platform_probe_checks_total")  # reads the store late
            return iter(())

        daemon = Daemon(make_config(tmp_path), sources=[])
        monkeypatch.setattr(daemon_module, "providers", lambda **_: {**real, "slow": slow})

        async def go() -> None:
            task = asyncio.create_task(daemon.refresh())
            await asyncio.to_thread(started.wait, 5)
            task.cancel()
            await daemon.shutdown()

        asyncio.run(go())
        assert "failed" not in caplog.text


    def test_a_refresh_job_cancelled_by_the_schedulers_shutdown_ends_quietly(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The cadence refresh is waiting for its render when shutdown stops the scheduler
        (which cancels the jobs still running): nothing is logged as an error (APScheduler
        logged the cancellation with a traceback)."""
        config = Config(
            state={"path": str(tmp_path / "state.db")},
            metrics={"min_refresh": "0.1s"},
            services=[{"name": "a", "team": "x"}],
        )
        real = providers()
        rendering = threading.Event()

        def slow(ctx: RenderContext) -> Iterator[Any]:
            rendering.set()
            time.sleep(0.3)
            return iter(())

        daemon = Daemon(config, sources=[])
        # Rendered first by the cadence refresh (it is new since the start's rendering).
        monkeypatch.setattr(daemon_module, "providers", lambda **_: {**real, "slow": slow})

        async def go() -> None:
            daemon.start_scheduler()
            await asyncio.to_thread(rendering.wait, 5)
            await daemon.shutdown()

        with caplog.at_level(logging.INFO):
            asyncio.run(go())
        assert rendering.is_set()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


class TestSnapshotParts:
    def test_parts_rendered_apart_join_into_the_single_rendering(self) -> None:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from exporter.core.snapshot import Snapshot, render_part

        g = GaugeMetricFamily("platform_a_ratio", "A.", labels=["s"])
        g.add_metric(["x"], 0.5)
        c = CounterMetricFamily("platform_b", "B.", labels=["s"])
        c.add_metric(["y"], 3)
        whole = Snapshot.render([g, c], 1.0)
        joined = Snapshot.assemble([render_part([g]), render_part([c])], 1.0)
        assert (joined.text, joined.openmetrics_text) == (whole.text, whole.openmetrics_text)
        assert gzip.decompress(joined.text_gzip) == whole.text
        assert gzip.decompress(joined.openmetrics_gzip) == whole.openmetrics_text
        assert whole.openmetrics_text.count(b"# EOF") == 1
        assert whole.openmetrics_text.endswith(b"# EOF\n")
