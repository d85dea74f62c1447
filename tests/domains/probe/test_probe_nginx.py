"""HTTP probes against a real nginx: outcomes, reasons, latency buckets and uptime ratios.

nginx (started by the test on a free loopback port) answers 200 on ``/ok``,
503 on ``/down``, and proxies ``/slow/`` to a Python upstream the test controls
(``/slow/sleep/<s>`` sleeps, ``/slow/flaky`` answers whatever status the test
sets). A fourth target is a port where nothing listens. Each daemon polls once
with a clock the test sets, so the uptime windows are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.sources.probe import ProbeSource
from tests.support.exposition import Exposition
from tests.support.net import closed_port
from tests.support.nginx import NginxServer
from tests.support.slow import SlowUpstream
from tests.support.tls import self_signed

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
SLOW = 0.3  # seconds the slow upstream sleeps: between the 0.25 and 0.5 buckets


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def nginx_locations(upstream: SlowUpstream) -> str:
    return f"""
        location = /ok {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
        location = /down {{ default_type application/json; return 503 '{{"status":"unavailable"}}'; }}
        location /slow/ {{
            proxy_pass http://127.0.0.1:{upstream.port}/;
            proxy_read_timeout 10s;
        }}
    """


def probe_config(base: str, refused: str, tmp_path: Path) -> Config:
    def check(name: str, url: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "url": url, "interval": "10s", "timeout": "2s", **kw}

    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {
                "name": "web",
                "team": "frontend",
                "probes": [
                    check("ok", f"{base}/ok", body_regex='"status":"ok"'),
                    check("body", f"{base}/ok", body_regex="degraded"),
                ],
            },
            {"name": "api", "team": "backend", "probes": [check("down", f"{base}/down")]},
            {
                "name": "reports",
                "team": "backend",
                "probes": [
                    check("slow", f"{base}/slow/sleep/{SLOW}"),
                    check("tooslow", f"{base}/slow/sleep/1.0", timeout="150ms"),
                ],
            },
            {"name": "gone", "team": "frontend", "probes": [check("refused", refused)]},
            {"name": "flaky", "team": "backend", "probes": [check("health", f"{base}/slow/flaky")]},
        ],
        sources={"probe": {"interval": "1s"}},
    )


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe-nginx")


@pytest.fixture(scope="module")
def scraped(state_dir: Path) -> Iterator[tuple[Exposition, Daemon]]:
    """Three polls: one two hours ago with /flaky down, two just now with it up."""
    upstream = SlowUpstream().start()
    server = NginxServer(state_dir / "nginx", nginx_locations(upstream)).start()
    try:
        yield run_polls(server, upstream, state_dir)
    finally:
        server.stop()
        upstream.stop()


class HeldTicker:
    """A grid clock whose slots never come: only each daemon's first poll probes."""

    def now(self) -> float:
        return 0.0

    async def sleep_until(self, when: float) -> None:
        await asyncio.Event().wait()


def run_polls(
    server: NginxServer, slow_upstream: SlowUpstream, tmp_path: Path
) -> tuple[Exposition, Daemon]:
    """Three daemons in turn on one state file, each polling once: every check is due
    at each start (its 10 s interval has passed by the test clock), so each runs once."""
    config = probe_config(server.url, f"http://127.0.0.1:{closed_port()}/health", tmp_path)
    clock = Clock(T0 - 7200)

    async def poll_once(flaky_status: int) -> Daemon:
        slow_upstream.flaky_status = flaky_status
        source = ProbeSource(config, config.sources.probe, ticker=HeldTicker())
        daemon = Daemon(config, clock=clock, sources=[source])
        assert await daemon.poll_all()  # its only poll, as `once` runs it
        await daemon.shutdown()
        return daemon

    async def polls() -> Daemon:
        await poll_once(503)
        clock.t = T0 - 10
        await poll_once(200)
        clock.t = T0
        return await poll_once(200)

    daemon = asyncio.run(polls())
    return Exposition.parse(daemon.holder.current.text), daemon


class TestProbeOutcomes:
    def test_each_check_counts_its_outcome_and_reason(
        self, scraped: tuple[Exposition, Daemon]
    ) -> None:
        """Three polls give three results per check, each with its bounded reason;
        every other outcome of a probe is exposed at 0 from its first check on."""
        exp, _ = scraped
        expected = {
            ("web", "ok", "success", "none"): 3,
            ("web", "body", "failure", "body"): 3,
            ("api", "down", "failure", "status"): 3,
            ("reports", "slow", "success", "none"): 3,
            ("reports", "tooslow", "failure", "timeout"): 3,
            ("gone", "refused", "failure", "connect"): 3,
            ("flaky", "health", "failure", "status"): 1,
            ("flaky", "health", "success", "none"): 2,
        }
        got = {
            (lb["service"], lb["probe"], lb["result"], lb["reason"]): v
            for lb, v in exp.samples("platform_probe_checks_total")
        }
        assert {k: v for k, v in got.items() if v} == expected
        probes = {(svc, probe) for svc, probe, _, _ in expected}
        zeros = {
            (svc, probe, o["result"], o["reason"]): 0
            for svc, probe in probes
            for o in probe_store.OUTCOMES
            if (svc, probe, o["result"], o["reason"]) not in expected
        }
        assert {k: v for k, v in got.items() if not v} == zeros

    def test_team_label_comes_from_the_catalog(self, scraped: tuple[Exposition, Daemon]) -> None:
        exp, _ = scraped
        teams = {lb["service"]: lb["team"] for lb, _ in exp.samples("platform_probe_checks_total")}
        assert teams == {
            "web": "frontend",
            "api": "backend",
            "reports": "backend",
            "gone": "frontend",
            "flaky": "backend",
        }

    def test_every_result_is_stored(
        self, scraped: tuple[Exposition, Daemon], state_dir: Path
    ) -> None:
        """The store holds one row per check run; failed checks keep their status code."""
        import sqlite3

        conn = sqlite3.connect(state_dir / "state.db")
        rows = conn.execute(
            "SELECT service, probe, COUNT(*), SUM(success), MAX(status_code) FROM probe_results "
            "GROUP BY service, probe ORDER BY service, probe"
        ).fetchall()
        conn.close()
        assert rows == [
            ("api", "down", 3, 0, 503),
            ("flaky", "health", 3, 2, 503),
            ("gone", "refused", 3, 0, None),
            ("reports", "slow", 3, 3, 200),
            ("reports", "tooslow", 3, 0, None),
            ("web", "body", 3, 0, 200),
            ("web", "ok", 3, 3, 200),
        ]


class TestProbeLatency:
    def test_slow_upstream_lands_in_the_bucket_of_its_delay(
        self, scraped: tuple[Exposition, Daemon]
    ) -> None:
        """0.3 s answers: none at or under 0.25 s, all three by 0.5 s."""
        exp, _ = scraped
        buckets = exp.buckets("platform_probe_duration_seconds", service="reports", probe="slow")
        assert buckets["0.25"] == 0
        assert buckets["0.5"] == 3
        assert buckets["+Inf"] == 3
        assert exp.value("platform_probe_duration_seconds_count", service="reports") == 3
        total = exp.value("platform_probe_duration_seconds_sum", service="reports")
        assert total is not None and 3 * SLOW <= total < 3 * 0.5

    def test_only_successful_checks_are_observed(self, scraped: tuple[Exposition, Daemon]) -> None:
        exp, _ = scraped
        observed = {
            (lb["service"], lb["probe"]): v
            for lb, v in exp.samples("platform_probe_duration_seconds_count")
        }
        assert observed == {("web", "ok"): 3, ("reports", "slow"): 3, ("flaky", "health"): 2}

    def test_fast_location_is_under_a_quarter_second(
        self, scraped: tuple[Exposition, Daemon]
    ) -> None:
        exp, _ = scraped
        buckets = exp.buckets("platform_probe_duration_seconds", service="web", probe="ok")
        assert buckets["0.25"] == 3

    def test_latency_quantiles_cover_successful_checks_only(
        self, scraped: tuple[Exposition, Daemon]
    ) -> None:
        exp, _ = scraped
        p50 = exp.value(
            "platform_service_probe_latency_seconds",
            service="reports",
            window="1h",
            quantile="0.5",
        )
        assert p50 is not None and SLOW <= p50 < 0.5
        assert exp.samples("platform_service_probe_latency_seconds", service="gone") == []
        labels = exp.samples("platform_service_probe_latency_seconds", service="reports")
        assert sorted((lb["window"], lb["quantile"]) for lb, _ in labels) == [
            ("1h", "0.5"),
            ("1h", "0.95"),
            ("1h", "0.99"),
            ("24h", "0.5"),
            ("24h", "0.95"),
            ("24h", "0.99"),
        ]


class TestUptime:
    def test_uptime_ratio_per_service_and_window(self, scraped: tuple[Exposition, Daemon]) -> None:
        """flaky failed two hours ago only: 1h sees 2/2, the longer windows 2/3. T0 is
        2023-11-14 22:13 UTC: this month holds all three polls, October none (no value)."""
        exp, _ = scraped
        got = {
            (lb["service"], lb["window"]): v
            for lb, v in exp.samples("platform_service_uptime_ratio")
        }
        expected = {}
        for window in ("1h", "24h", "7d", "30d", "mtd"):
            expected[("web", window)] = 0.5
            expected[("api", window)] = 0.0
            expected[("reports", window)] = 0.5
            expected[("gone", window)] = 0.0
            expected[("flaky", window)] = 1.0 if window == "1h" else pytest.approx(2 / 3)
        assert got == expected

    def test_samples_gauge_counts_checks_in_each_window(
        self, scraped: tuple[Exposition, Daemon]
    ) -> None:
        exp, _ = scraped
        assert exp.value("platform_service_uptime_samples", service="web", window="1h") == 4
        assert exp.value("platform_service_uptime_samples", service="web", window="24h") == 6
        assert exp.value("platform_service_uptime_samples", service="flaky", window="1h") == 2
        assert exp.value("platform_service_uptime_samples", service="flaky", window="30d") == 3

    def test_last_success_is_the_start_of_the_latest_good_check(
        self, scraped: tuple[Exposition, Daemon]
    ) -> None:
        exp, _ = scraped
        name = "platform_probe_last_success_timestamp_seconds"
        assert exp.value(name, service="web", probe="ok") == T0
        assert exp.value(name, service="flaky", probe="health") == T0
        assert exp.value(name, service="api", probe="down") is None

    def test_the_source_is_up_though_services_are_down(
        self, scraped: tuple[Exposition, Daemon]
    ) -> None:
        """A failing check is the service's outage, not the exporter's."""
        exp, _ = scraped
        assert exp.value("platform_exporter_source_up", source="probe") == 1
        codes = {
            lb["code"]: v
            for lb, v in exp.samples("platform_exporter_source_upstream_requests_total")
        }
        # The last daemon's one poll: /down answered 503; /ok (twice), /slow and /flaky 200.
        assert codes == {"503": 1, "200": 4}


class TestTLSProbes:
    def test_an_untrusted_certificate_fails_with_reason_tls_unless_verification_is_off(
        self, nginx: Callable[..., NginxServer], tmp_path: Path
    ) -> None:
        """nginx serves HTTPS with a self-signed certificate the probe does not trust."""
        server = nginx(
            'location = /ok { return 200 \'{"status":"ok"}\'; }',
            tls=self_signed(tmp_path / "tls"),
        )
        assert server.url.startswith("https://")
        config = Config(
            state={"path": str(tmp_path / "state.db")},
            services=[
                {
                    "name": "secure",
                    "team": "t",
                    "probes": [
                        {"name": "verified", "url": f"{server.url}/ok"},
                        {"name": "unverified", "url": f"{server.url}/ok", "tls_verify": False},
                    ],
                }
            ],
        )
        daemon = Daemon(config)

        async def go() -> None:
            assert await daemon.poll_all()
            await daemon.shutdown()

        asyncio.run(go())
        exp = Exposition.parse(daemon.holder.current.text)
        got = {
            (lb["probe"], lb["result"], lb["reason"]): v
            for lb, v in exp.samples("platform_probe_checks_total")
        }
        assert {k: v for k, v in got.items() if v} == {
            ("verified", "failure", "tls"): 1,
            ("unverified", "success", "none"): 1,
        }
        assert len(got) == 2 * len(probe_store.OUTCOMES)
