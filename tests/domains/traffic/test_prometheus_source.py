"""The Prometheus source against a real Prometheus scraping a small fixture target.

The daemon's clock is Prometheus' own "now" (a Go binary, which faketime does not move),
because the queries ask for the samples Prometheus has scraped up to then.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.config import Config
from exporter.core.sandbox.app import App, Request, Response
from exporter.daemon import Daemon
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.sources.prometheus import parse_result
from exporter.domains.traffic.store import WARNINGS_TOTAL
from tests.support.net import wait_until
from tests.support.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

# What a mesh's exporter might show; the queries below read it back exactly.
TARGET = """# TYPE fixture_requests gauge
fixture_requests{service="checkout"} 100
fixture_requests{service="legacy"} 10
# TYPE fixture_errors_5xx gauge
fixture_errors_5xx{service="checkout"} 4
# TYPE fixture_errors_4xx gauge
fixture_errors_4xx{service="checkout"} 6
# TYPE fixture_latency_seconds summary
fixture_latency_seconds{service="checkout",quantile="0.5"} 0.12
fixture_latency_seconds{service="checkout",quantile="0.95"} 0.34
fixture_latency_seconds{service="checkout",quantile="0.99"} 0.81
fixture_latency_seconds_sum{service="checkout"} 12
fixture_latency_seconds_count{service="checkout"} 100
"""

QUERIES = {
    "requests": "sum by (service) (last_over_time(fixture_requests[$window]))",
    "errors_5xx": "sum by (service) (last_over_time(fixture_errors_5xx[$window]))",
    "errors_4xx": "sum by (service) (last_over_time(fixture_errors_4xx[$window]))",
    "latency_seconds": 'max by (service) (last_over_time(fixture_latency_seconds{quantile="$quantile"}[$window]))',
}


class _Target(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = TARGET.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One Prometheus for the module, scraping the fixture target every second."""
    target = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    target.daemon_threads = True
    threading.Thread(target=target.serve_forever, daemon=True).start()
    server = PrometheusServer(
        tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{target.server_address[1]}"]
    ).start()
    # Polls evaluate at whole seconds: wait for a few scrapes, so the first is safely past.
    wait_until(
        lambda: bool(server.query('count_over_time(fixture_requests{service="checkout"}[1m]) > 2')),
        timeout=30,
        what="three scrapes of the fixture target",
    )
    yield server
    server.stop()
    target.shutdown()
    target.server_close()


def make_daemon(tmp_path: Path, url: str, clock: Callable[[], float], **extra: Any) -> Daemon:
    settings: dict[str, Any] = {"url": url, "timeout": "5s", "queries": dict(QUERIES)}
    for k, v in extra.items():
        if k in QUERIES:
            settings["queries"][k] = v
        else:
            settings[k] = v
    config = Config(
        state={"path": str(tmp_path / "state.db")},
        services=[{"name": "checkout", "team": "payments", "routes": ["checkout"]}],
        sources={"prometheus": settings},
    )
    return Daemon(config, clock=clock)


def polls(daemon: Daemon, n: int) -> list[bool]:
    async def go() -> list[bool]:
        try:
            return [await daemon.poll(daemon.sources[0]) for _ in range(n)]
        finally:
            for client in daemon.clients.values():
                await client.aclose()
            daemon.clients.clear()

    return asyncio.run(go())


def by_class(daemon: Daemon) -> dict[tuple[str, str], float]:
    return {
        (lab["service"], lab["code_class"]): v
        for lab, v in daemon.store.counters(traffic_store.REQUESTS_TOTAL)
    }


class TestRealPrometheus:
    def test_requests_and_errors_per_service_and_unmapped(
        self, tmp_path: Path, scraped: PrometheusServer
    ) -> None:
        """The first poll sets the cursor; the second counts its span."""
        now = scraped.now() - 30  # the second poll spans the last 30 s
        daemon = make_daemon(tmp_path, scraped.url, lambda: now, latency_seconds=None)
        assert polls(daemon, 1) == [True]
        assert by_class(daemon) == {}
        now += 30
        assert polls(daemon, 1) == [True], daemon.health["prometheus"].last_error
        assert by_class(daemon) == {
            ("checkout", "2xx"): 90,
            ("checkout", "4xx"): 6,
            ("checkout", "5xx"): 4,
            ("unmapped", "2xx"): 10,
        }
        daemon.store.close()

    def test_latency_quantiles_arrive_in_seconds_for_every_window(
        self, tmp_path: Path, scraped: PrometheusServer
    ) -> None:
        now = scraped.now()
        daemon = make_daemon(tmp_path, scraped.url, lambda: now)
        assert polls(daemon, 1) == [True], daemon.health["prometheus"].last_error
        got = traffic_store.gateway_latencies(daemon.store, 0)
        for window in ("5m", "1h", "1d", "30d"):
            assert got[("checkout", window, 0.5)] == pytest.approx(0.12)
            assert got[("checkout", window, 0.95)] == pytest.approx(0.34)
            assert got[("checkout", window, 0.99)] == pytest.approx(0.81)
        text = daemon.render().text.decode()
        assert (
            'platform_service_latency_seconds{quantile="0.95",service="checkout",team="payments",window="1h"} 0.34'
            in text
        )
        daemon.store.close()

    def test_a_scalar_result_belongs_to_scalar_service(
        self, tmp_path: Path, scraped: PrometheusServer
    ) -> None:
        now = scraped.now() - 30  # the second poll spans the last 30 s
        daemon = make_daemon(
            tmp_path,
            scraped.url,
            lambda: now,
            scalar_service="checkout",
            requests='scalar(sum(last_over_time(fixture_requests{service="checkout"}[$window])))',
            errors_5xx="vector(0)",
            errors_4xx=None,
            latency_seconds=None,
        )
        polls(daemon, 1)
        now += 30
        assert polls(daemon, 1) == [True], daemon.health["prometheus"].last_error
        assert by_class(daemon) == {("checkout", "2xx"): 100}
        daemon.store.close()

    def test_an_empty_result_is_no_traffic_not_an_error(
        self, tmp_path: Path, scraped: PrometheusServer
    ) -> None:
        now = scraped.now() - 30  # the second poll spans the last 30 s
        daemon = make_daemon(
            tmp_path,
            scraped.url,
            lambda: now,
            requests='sum by (service) (fixture_requests{service="nope"})',
            errors_5xx='sum by (service) (fixture_errors_5xx{service="nope"})',
            latency_seconds='fixture_latency_seconds{service="nope",quantile="$quantile"}',
        )
        polls(daemon, 1)
        now += 30
        assert polls(daemon, 1) == [True]
        assert by_class(daemon) == {}
        assert traffic_store.gateway_latencies(daemon.store, 0) == {}
        daemon.store.close()

    def test_a_query_error_fails_the_poll_with_prometheus_message(
        self, tmp_path: Path, scraped: PrometheusServer
    ) -> None:
        now = scraped.now() - 30  # the second poll spans the last 30 s
        daemon = make_daemon(
            tmp_path,
            scraped.url,
            lambda: now,
            requests="sum by (service) (rate(fixture_requests[$window]",
        )
        polls(daemon, 1)
        now += 30
        assert polls(daemon, 1) == [False]
        health = daemon.health["prometheus"]
        assert health.errors["http_4xx"] == 1
        assert health.last_error is not None and "bad_data" in health.last_error
        assert by_class(daemon) == {}
        daemon.store.close()


class TestAnswers:
    """Answer shapes Prometheus documents that a small fixture cannot provoke."""

    def scripted(self, *answers: tuple[int, dict[str, Any]]) -> httpx.MockTransport:
        queue = list(answers)
        app = App()

        @app.route("POST", "/api/v1/query")
        def query(request: Request) -> Response:
            status, body = queue.pop(0) if len(queue) > 1 else queue[0]
            return Response(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

        return app.transport()

    def test_warnings_are_counted_and_the_values_kept(self, tmp_path: Path) -> None:
        answer = {
            "status": "success",
            "warnings": ["PromQL info: metric might not be a counter"],
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"service": "checkout"}, "value": [1.7e9, "5"]}],
            },
        }
        now = time.time()
        config = Config(
            state={"path": str(tmp_path / "s.db")},
            services=[{"name": "checkout", "team": "payments"}],
            sources={
                "prometheus": {
                    "url": "http://prom.test:9090",
                    "queries": {"requests": "x[$window]", "errors_5xx": "y[$window]"},
                }
            },
        )
        daemon = Daemon(config, transport=self.scripted((200, answer)), clock=lambda: now)
        polls(daemon, 1)
        now += 60
        assert polls(daemon, 1) == [True]
        assert daemon.store.counters(WARNINGS_TOTAL) == [({"source": "prometheus"}, 2.0)]
        daemon.store.close()

    def test_a_query_timeout_is_reported_as_a_timeout(self, tmp_path: Path) -> None:
        timeout = {
            "status": "error",
            "errorType": "timeout",
            "error": "query timed out in expression evaluation",
        }
        config = Config(
            state={"path": str(tmp_path / "s.db")},
            sources={
                "prometheus": {
                    "url": "http://prom.test:9090",
                    "queries": {
                        "requests": "x",
                        "errors_5xx": "y",
                        "latency_seconds": 'z{quantile="$quantile"}',
                    },
                }
            },
        )
        daemon = Daemon(config, transport=self.scripted((503, timeout)))
        assert polls(daemon, 1) == [False]
        assert daemon.health["prometheus"].errors["timeout"] == 1
        daemon.store.close()

    def test_nan_samples_are_no_value(self) -> None:
        payload = {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"service": "a"}, "value": [1, "NaN"]},
                    {"metric": {"service": "b"}, "value": [1, "0.25"]},
                ],
            },
        }
        assert parse_result(payload, "service") == ({"b": 0.25}, [])
