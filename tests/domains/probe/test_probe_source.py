"""The probe source in-process: classification of outcomes, concurrency, cursors."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.config import Config
from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client
from exporter.core.source import PollContext
from exporter.domains import open_store
from exporter.domains.probe.settings import ProbeCheckConfig
from exporter.domains.probe.sources.probe import ProbeSource, run_check


def check(**kw: Any) -> ProbeCheckConfig:
    return ProbeCheckConfig(**{"name": "health", "url": "http://svc.test/health", **kw})


def outcome(handler: Any, **kw: Any) -> tuple[bool, str, int | None]:
    async def go() -> tuple[bool, str, int | None]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            r = await run_check(client, "svc", check(**kw), clock=lambda: 100.0)
        assert r.started_at == 100.0 and r.duration_seconds >= 0
        return r.success, r.reason, r.status_code

    return asyncio.run(go())


def raising(exc: Exception) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


class TestClassification:
    def test_expected_status_and_body_is_success(self) -> None:
        got = outcome(lambda r: httpx.Response(200, text='{"status":"ok"}'), body_regex='"ok"')
        assert got == (True, "", 200)

    def test_unexpected_status(self) -> None:
        assert outcome(lambda r: httpx.Response(503)) == (False, "status", 503)

    def test_other_expected_statuses(self) -> None:
        assert outcome(lambda r: httpx.Response(204), expect_status=[200, 204]) == (True, "", 204)

    def test_body_mismatch(self) -> None:
        got = outcome(lambda r: httpx.Response(200, text="degraded"), body_regex="^ok$")
        assert got == (False, "body", 200)

    def test_status_is_judged_before_the_body(self) -> None:
        got = outcome(lambda r: httpx.Response(500, text="ok"), body_regex="ok")
        assert got == (False, "status", 500)

    def test_timeout(self) -> None:
        assert outcome(raising(httpx.ReadTimeout("slow"))) == (False, "timeout", None)
        assert outcome(raising(httpx.ConnectTimeout("slow"))) == (False, "timeout", None)

    def test_connection_refused(self) -> None:
        assert outcome(raising(httpx.ConnectError("refused"))) == (False, "connect", None)

    def test_certificate_error_is_tls(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            try:
                raise ssl.SSLCertVerificationError("certificate verify failed")
            except ssl.SSLError as exc:
                raise httpx.ConnectError("handshake failed") from exc

        assert outcome(handler) == (False, "tls", None)

    def test_method_and_headers_are_sent(self) -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200)

        outcome(handler, method="HEAD", headers={"X-Probe": "1"})
        assert seen[0].method == "HEAD" and seen[0].headers["X-Probe"] == "1"


def config_with(
    tmp_path: Path, checks: int, interval: str = "30s", concurrency: int = 16
) -> Config:
    return Config(
        state={"path": str(tmp_path / "s.db")},
        services=[
            {
                "name": "svc",
                "team": "t",
                "probes": [
                    {"name": f"p{i}", "url": f"http://svc.test/{i}", "interval": interval}
                    for i in range(checks)
                ],
            }
        ],
        sources={"probe": {"concurrency": concurrency}},
    )


def poll_once(src: ProbeSource, store: Any, handler: Any, now: float) -> None:
    async def go() -> None:
        health = SourceHealth("probe", "probe", 5)
        client = build_client(health, timeout=5, transport=httpx.MockTransport(handler))
        async with client:
            await src.poll(PollContext(store=store, health=health, client=client, now=lambda: now))

    asyncio.run(go())


class TestScheduling:
    def test_concurrency_is_bounded(self, tmp_path: Path) -> None:
        config = config_with(tmp_path, checks=6, concurrency=2)
        running, peak = [0], [0]

        async def handler(request: httpx.Request) -> httpx.Response:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            await asyncio.sleep(0.02)
            running[0] -= 1
            return httpx.Response(200)

        src = ProbeSource(config, config.sources.probe)
        poll_once(src, open_store(str(tmp_path / "s.db")), handler, 100.0)
        assert peak[0] == 2

    def test_a_check_runs_again_only_after_its_interval(self, tmp_path: Path) -> None:
        config = config_with(tmp_path, checks=1, interval="1h")
        store = open_store(str(tmp_path / "s.db"))
        src = ProbeSource(config, config.sources.probe)
        calls: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request.url.path)
            return httpx.Response(200)

        poll_once(src, store, handler, 100.0)
        poll_once(src, store, handler, 101.0)
        assert calls == ["/0"]

    def test_each_result_advances_its_checks_cursor_in_the_same_commit(
        self, tmp_path: Path
    ) -> None:
        config = config_with(tmp_path, checks=2)
        store = open_store(str(tmp_path / "s.db"))
        src = ProbeSource(config, config.sources.probe)
        poll_once(src, store, lambda r: httpx.Response(200), 1234.5)
        assert store.cursors("probe") == {"svc/p0": "1234.5", "svc/p1": "1234.5"}

    @pytest.mark.parametrize(
        ("last_run_ago", "runs"), [(10.0, False), (29.0, False), (31.0, True), (None, True)]
    )
    def test_after_a_restart_the_cursor_says_when_a_check_is_due(
        self, tmp_path: Path, last_run_ago: float | None, runs: bool
    ) -> None:
        """A check with a 30 s interval that ran 10 s before the restart waits; 31 s ago runs."""
        config = config_with(tmp_path, checks=1, interval="30s")
        store = open_store(str(tmp_path / "s.db"))
        now = 10_000.0
        if last_run_ago is not None:
            with store.transaction() as tx:
                tx.set_cursor("probe", "svc/p0", repr(now - last_run_ago))
        calls: list[str] = []

        def handler(request: httpx.Request) -> httpx.Response:
            calls.append(request.url.path)
            return httpx.Response(200)

        restarted = ProbeSource(config, config.sources.probe)
        poll_once(restarted, store, handler, now)
        assert bool(calls) is runs
