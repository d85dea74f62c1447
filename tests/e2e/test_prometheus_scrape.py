"""The real Prometheus scrapes the running daemon; promtool lints the exposition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from exporter.domains.probe.kpis import FAILURE_REASONS
from tests.support.daemon import DaemonProcess
from tests.support.exposition import Exposition
from tests.support.net import wait_until
from tests.support.prometheus import PrometheusServer, promtool_check_metrics
from tests.support.slow import SlowUpstream

pytestmark = pytest.mark.integration


def daemon_config(upstream: SlowUpstream) -> dict[str, Any]:
    return {
        "server": {
            "startup_grace": "1h",
            "basic_auth": {"username": "prom", "password": {"env": "TEST_SCRAPE_PASSWORD"}},
            # The harness waits on /healthz without credentials, as a kubelet probe does.
            "health_without_auth": True,
        },
        "services": [
            {
                "name": "checkout",
                "team": "payments",
                "probes": [
                    # Each runs once at start (no cursor yet), then not for an hour: the
                    # uptime ratio is exactly one success in two.
                    {"name": "health", "url": f"{upstream.url}/status/200", "interval": "1h"},
                    {"name": "deep", "url": f"{upstream.url}/status/503", "interval": "1h"},
                ],
            }
        ],
        "sources": {"probe": {"interval": "200ms"}},
    }


@pytest.fixture
def running(
    daemon_process: Callable[..., DaemonProcess], slow_upstream: SlowUpstream
) -> DaemonProcess:
    proc = daemon_process(daemon_config(slow_upstream), env={"TEST_SCRAPE_PASSWORD": "pw"})
    proc.start()
    # Until every kind of family the tests read is populated: a successful check of the
    # health probe among the first results, not only the first result of any check (on a
    # busy machine the first ones to land can all be failures).
    wait_until(lambda: _populated(scrape(proc)), what="first results of each kind")
    return proc


def _populated(body: bytes) -> bool:
    exp = Exposition.parse(body)
    return (
        exp.value("platform_probe_duration_seconds_count", probe="health") is not None
        and bool(exp.samples("platform_probe_checks_total", reason="status"))
        and bool(exp.samples("platform_service_uptime_ratio"))
    )


def scrape(proc: DaemonProcess) -> bytes:
    import base64

    from tests.support.net import http_get

    auth = base64.b64encode(b"prom:pw").decode()
    status, _, body = http_get(f"{proc.url}/metrics", {"Authorization": f"Basic {auth}"})
    assert status == 200
    return body


class TestPromtool:
    def test_promtool_check_metrics_reports_nothing(self, running: DaemonProcess) -> None:
        body = scrape(running)
        exp = Exposition.parse(body)
        # Every kind of family is populated, so the lint sees all of them.
        assert exp.value("platform_probe_duration_seconds_count", probe="health") is not None
        assert exp.samples("platform_probe_checks_total", reason="status")
        assert exp.samples("platform_service_uptime_ratio")
        assert promtool_check_metrics(body) == ""


class TestRealPrometheus:
    def test_prometheus_scrapes_the_daemon_and_serves_its_series(
        self, running: DaemonProcess, prometheus: Callable[..., PrometheusServer]
    ) -> None:
        prom = prometheus(
            [f"127.0.0.1:{running.port}"],
            job={"basic_auth": {"username": "prom", "password": "pw"}},
        )

        def scraped() -> bool:
            return bool(prom.query('platform_exporter_source_up{source="probe"} == 1'))

        wait_until(scraped, timeout=30, interval=0.25, what="prometheus to scrape the exporter")
        (target,) = prom.targets()
        assert target["health"] == "up", target

        (build,) = prom.query("platform_exporter_build_info")
        assert build["metric"]["job"] == "exporter"
        assert build["value"][1] == "1"

        ratio = prom.query('platform_service_uptime_ratio{service="checkout",window="1h"}')
        assert [float(r["value"][1]) for r in ratio] == [0.5]  # health passes, deep fails
        assert ratio[0]["metric"]["team"] == "payments"

        failures = prom.query(
            'platform_probe_checks_total{service="checkout",probe="deep",result="failure"} > 0'
        )
        assert [r["metric"]["reason"] for r in failures] == ["status"]
        assert float(failures[0]["value"][1]) >= 1
        # The other failure reasons are there too, at 0, ready for rate() and increase().
        idle = prom.query(
            'platform_probe_checks_total{service="checkout",probe="deep",result="failure"} == 0'
        )
        assert sorted(r["metric"]["reason"] for r in idle) == sorted(
            set(FAILURE_REASONS) - {"status"}
        )

        buckets = prom.query('platform_probe_duration_seconds_bucket{probe="health",le="+Inf"}')
        count = prom.query('platform_probe_duration_seconds_count{probe="health"}')
        assert buckets[0]["value"][1] == count[0]["value"][1]

        # The series Prometheus holds agree with what the daemon serves right now.
        exp = Exposition.parse(scrape(running))
        served = exp.value(
            "platform_probe_checks_total", probe="deep", result="failure", reason="status"
        )
        assert served is not None and float(failures[0]["value"][1]) <= served
