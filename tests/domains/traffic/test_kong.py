"""The Kong source: 2.x and 3.x expositions, counter resets, Admin API pagination, units."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from exporter.config import Config
from exporter.core.sandbox.app import App, Request, Response, SandboxServer
from exporter.daemon import Daemon
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import LATENCY_BUCKETS
from exporter.domains.traffic.sandbox import KongFake, admin_app, admin_entities
from exporter.domains.traffic.sources.kong import KongSource, parse_exposition

NB = len(LATENCY_BUCKETS)
CK = 'service="checkout-svc",route="checkout-route"'

KONG3_BASELINE = f"""# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong
# TYPE kong_http_requests_total counter
kong_http_requests_total{{{CK},code="200",source="service",consumer=""}} 100
kong_http_requests_total{{{CK},code="503",source="kong",consumer=""}} 2
kong_http_requests_total{{service="legacy-svc",route="legacy-route",code="200",source="service",consumer=""}} 7
# HELP kong_request_latency_ms Total latency incurred during requests for each service/route in Kong
# TYPE kong_request_latency_ms histogram
kong_request_latency_ms_bucket{{{CK},le="00025.0"}} 50
kong_request_latency_ms_bucket{{{CK},le="00050.0"}} 80
kong_request_latency_ms_bucket{{{CK},le="00080.0"}} 90
kong_request_latency_ms_bucket{{{CK},le="00100.0"}} 95
kong_request_latency_ms_bucket{{{CK},le="00250.0"}} 102
kong_request_latency_ms_bucket{{{CK},le="00400.0"}} 102
kong_request_latency_ms_bucket{{{CK},le="60000.0"}} 102
kong_request_latency_ms_bucket{{{CK},le="+Inf"}} 102
kong_request_latency_ms_sum{{{CK}}} 5000
kong_request_latency_ms_count{{{CK}}} 102
# HELP kong_kong_latency_ms Latency added by Kong and enabled plugins for each service/route in Kong
# TYPE kong_kong_latency_ms histogram
kong_kong_latency_ms_bucket{{{CK},le="00001.0"}} 999
kong_kong_latency_ms_bucket{{{CK},le="+Inf"}} 999
kong_kong_latency_ms_sum{{{CK}}} 999
kong_kong_latency_ms_count{{{CK}}} 999
"""

# +60 x 200, +4 x 503, a new 404 series with 5, legacy +10; latency +69 requests, +6900 ms.
KONG3_NEXT = f"""# TYPE kong_http_requests_total counter
kong_http_requests_total{{{CK},code="200",source="service",consumer=""}} 160
kong_http_requests_total{{{CK},code="503",source="kong",consumer=""}} 6
kong_http_requests_total{{{CK},code="404",source="kong",consumer="partner-1"}} 3
kong_http_requests_total{{{CK},code="404",source="kong",consumer="partner-2"}} 2
kong_http_requests_total{{service="legacy-svc",route="legacy-route",code="200",source="service",consumer=""}} 17
# TYPE kong_request_latency_ms histogram
kong_request_latency_ms_bucket{{{CK},le="00025.0"}} 70
kong_request_latency_ms_bucket{{{CK},le="00050.0"}} 120
kong_request_latency_ms_bucket{{{CK},le="00080.0"}} 140
kong_request_latency_ms_bucket{{{CK},le="00100.0"}} 155
kong_request_latency_ms_bucket{{{CK},le="00250.0"}} 171
kong_request_latency_ms_bucket{{{CK},le="00400.0"}} 171
kong_request_latency_ms_bucket{{{CK},le="60000.0"}} 171
kong_request_latency_ms_bucket{{{CK},le="+Inf"}} 171
kong_request_latency_ms_sum{{{CK}}} 11900
kong_request_latency_ms_count{{{CK}}} 171
"""

PAY = 'service="payments-svc",route="payments-route"'


def kong2(ok: int, err: int, buckets: list[int], total_ms: float, consumer: int) -> str:
    """A Kong 2.x exposition: kong_http_status, kong_latency{type}, padded le, le="Inf"."""
    bounds = [
        "00001.0",
        "00005.0",
        "00010.0",
        "00025.0",
        "00050.0",
        "00100.0",
        "00200.0",
        "00300.0",
    ]
    lines = [
        "# HELP kong_http_status HTTP status codes per service/route in Kong",
        "# TYPE kong_http_status counter",
        f'kong_http_status{{{PAY},code="200"}} {ok}',
    ]
    if err:
        lines.append(f'kong_http_status{{{PAY},code="500"}} {err}')
    lines += [
        "# HELP kong_http_consumer_status HTTP status codes for customer per service/route in Kong",
        "# TYPE kong_http_consumer_status counter",
        f'kong_http_consumer_status{{{PAY},code="200",consumer="partner-9"}} {consumer}',
        "# HELP kong_latency Latency added by Kong, total request time and upstream latency",
        "# TYPE kong_latency histogram",
    ]
    for kind in ("request", "upstream"):
        for le, n in zip(bounds, buckets, strict=True):
            lines.append(f'kong_latency_bucket{{{PAY},type="{kind}",le="{le}"}} {n}')
        lines.append(f'kong_latency_bucket{{{PAY},type="{kind}",le="Inf"}} {buckets[-1]}')
        lines.append(f'kong_latency_count{{{PAY},type="{kind}"}} {buckets[-1]}')
        lines.append(f'kong_latency_sum{{{PAY},type="{kind}"}} {total_ms}')
    return "\n".join(lines) + "\n"


class Scripted:
    """A Kong Status API whose /metrics answers the given texts in turn."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.app = App()

        @self.app.route("GET", "/metrics")
        def metrics(request: Request) -> Response:
            return Response.text(self.texts.pop(0))


def make_config(tmp_path: Path, **kong: object) -> Config:
    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {"name": "checkout", "team": "payments", "routes": ["checkout-route"]},
            {"name": "payments-api", "team": "payments", "routes": ["payments-svc"]},
        ],
        sources={"kong": {"status_url": "http://kong.test:8100", **kong}},
    )


def run_polls(daemon: Daemon, n: int) -> list[bool]:
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


def histogram(daemon: Daemon, service: str) -> tuple[list[int], float, int]:
    for labels, _bounds, cumulative, total, n in daemon.store.histograms(traffic_store.DURATION):
        if labels["service"] == service:
            return cumulative, total, n
    raise AssertionError(f"no histogram for {service}")


class TestKong3:
    def test_increases_are_counted_by_catalog_service_and_the_first_read_is_a_baseline(
        self, tmp_path: Path
    ) -> None:
        kong = Scripted(KONG3_BASELINE, KONG3_NEXT)
        daemon = Daemon(make_config(tmp_path), transport=kong.app.transport())
        assert run_polls(daemon, 1) == [True]
        assert by_class(daemon) == {}
        assert run_polls(daemon, 1) == [True]
        assert by_class(daemon) == {
            ("checkout", "2xx"): 60,
            ("checkout", "4xx"): 5,  # a series born after the baseline counts in full
            ("checkout", "5xx"): 4,
            ("unmapped", "2xx"): 10,
        }
        daemon.store.close()

    def test_latency_arrives_in_seconds_on_the_exporter_buckets(self, tmp_path: Path) -> None:
        """+69 requests: 20 <= 25 ms, 40 <= 50 ms, 60 <= 100 ms, all <= 250 ms; +6900 ms."""
        kong = Scripted(KONG3_BASELINE, KONG3_NEXT)
        daemon = Daemon(make_config(tmp_path), transport=kong.app.transport())
        run_polls(daemon, 2)
        cumulative, total, n = histogram(daemon, "checkout")
        at = dict(zip(LATENCY_BUCKETS, cumulative, strict=True))
        assert n == 69
        assert total == pytest.approx(6.9)  # seconds, not 6900
        assert at[0.025] == 20 and at[0.05] == 40 and at[0.1] == 60 and at[0.25] == 69
        # 5 ms and 10 ms are not Kong 3.x bounds: interpolated inside (0, 25 ms].
        assert at[0.005] == 4 and at[0.01] == 8
        assert at[60.0] == 69
        daemon.store.close()

    def test_consumers_with_traffic_are_active(self, tmp_path: Path) -> None:
        kong = Scripted(KONG3_BASELINE, KONG3_NEXT)
        daemon = Daemon(make_config(tmp_path), transport=kong.app.transport())
        run_polls(daemon, 2)
        assert traffic_store.active_consumers(daemon.store, 0) == {"checkout": 2}
        daemon.store.close()

    def test_a_restart_counts_everything_after_it(self, tmp_path: Path) -> None:
        """100 -> 160 -> (restart) 9: 60 + 9 requests of class 2xx."""
        restarted = KONG3_BASELINE.replace("} 100\n", "} 9\n").replace("} 2\n", "} 1\n")
        kong = Scripted(KONG3_BASELINE, KONG3_NEXT, restarted)
        daemon = Daemon(make_config(tmp_path), transport=kong.app.transport())
        assert run_polls(daemon, 3) == [True, True, True]
        got = by_class(daemon)
        assert got[("checkout", "2xx")] == 60 + 9
        assert got[("checkout", "5xx")] == 4 + 1
        assert got[("unmapped", "2xx")] == 10 + 7
        daemon.store.close()

    def test_a_repoll_of_the_same_values_adds_nothing(self, tmp_path: Path) -> None:
        kong = Scripted(KONG3_BASELINE, KONG3_NEXT, KONG3_NEXT)
        daemon = Daemon(make_config(tmp_path), transport=kong.app.transport())
        run_polls(daemon, 3)
        assert by_class(daemon)[("checkout", "2xx")] == 60
        daemon.store.close()

    def test_a_garbled_exposition_fails_the_poll_and_commits_nothing(self, tmp_path: Path) -> None:
        kong = Scripted(KONG3_BASELINE, "kong_http_requests_total{code=200 oops\n")
        daemon = Daemon(make_config(tmp_path), transport=kong.app.transport())
        assert run_polls(daemon, 2) == [True, False]
        assert daemon.health["kong"].errors["malformed"] == 1
        assert by_class(daemon) == {}
        daemon.store.close()


class TestKong2:
    def test_status_and_request_latency_in_seconds(self, tmp_path: Path) -> None:
        """4 -> 10 x 200 and 0 -> 1 x 500; request latency +7 requests, +200 ms."""
        kong = Scripted(
            kong2(4, 0, [0, 1, 2, 3, 4, 4, 4, 4], 100, consumer=1),
            kong2(10, 1, [0, 2, 5, 8, 10, 11, 11, 11], 300, consumer=3),
        )
        daemon = Daemon(make_config(tmp_path), transport=kong.app.transport())
        run_polls(daemon, 2)
        assert by_class(daemon) == {("payments-api", "2xx"): 6, ("payments-api", "5xx"): 1}
        cumulative, total, n = histogram(daemon, "payments-api")
        at = dict(zip(LATENCY_BUCKETS, cumulative, strict=True))
        assert n == 7 and total == pytest.approx(0.2)
        assert [at[b] for b in (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 60.0)] == [1, 3, 5, 6, 7, 7, 7]
        assert traffic_store.active_consumers(daemon.store, 0) == {"payments-api": 1}
        daemon.store.close()

    def test_only_the_request_latency_type_is_read(self) -> None:
        series = parse_exposition(kong2(1, 0, [0, 0, 0, 0, 1, 1, 1, 1], 40, consumer=0))
        assert series
        assert not any('"upstream"' in key for key in series)


class TestAdminApi:
    def test_pages_are_followed_through_next(self) -> None:
        """7 consumers in pages of 2: four requests, every consumer once."""
        calls: list[str] = []
        app = admin_app()
        inner = app.transport()

        async def handler(request: httpx.Request) -> httpx.Response:
            calls.append(str(request.url))
            return await inner.handle_async_request(request)

        config = make_config(Path("/nonexistent"), admin_url="http://kong.test:8001", page_size=2)
        assert config.sources.kong is not None
        source = KongSource(config, config.sources.kong)

        async def go() -> list[str]:
            from exporter.core.health import SourceHealth
            from exporter.core.source import PollContext

            async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
                ctx = PollContext(
                    store=None,  # type: ignore[arg-type]
                    health=SourceHealth("kong", "kong", 30),
                    client=client,
                )
                return [c["username"] for c in await source.list_all(ctx, "consumers")]

        names = asyncio.run(go())
        assert names == [f"partner-{i}" for i in range(7)]
        assert len(calls) == 4
        assert calls[0] == "http://kong.test:8001/consumers?size=2"
        assert "offset=" in calls[1]

    def test_routes_map_through_kong_services_behind_a_path_prefix(self, tmp_path: Path) -> None:
        """A route named only in the exposition's ``route`` label, served over real HTTP."""
        entities = admin_entities()
        text = (
            "# TYPE kong_http_requests_total counter\n"
            'kong_http_requests_total{service="",route="payments-route",code="200",'
            'source="service",consumer=""} %d\n'
        )
        kong = Scripted(text % 1, text % 5)
        server = SandboxServer(
            {"/kong-admin": admin_app(entities), "/kong-status": kong.app}
        ).start()
        try:
            daemon = Daemon(
                make_config(
                    tmp_path,
                    status_url=f"{server.url}/kong-status",
                    admin_url=f"{server.url}/kong-admin",
                    page_size=2,
                )
            )
            assert run_polls(daemon, 2) == [True, True]
            # payments-route belongs to the Kong service payments-svc, which the catalog claims.
            assert by_class(daemon) == {("payments-api", "2xx"): 4}
            raw = daemon.store.get_cursor("kong", "consumers_registered")
            assert raw is not None and '"count": 7' in raw
            daemon.store.close()
        finally:
            server.stop()

    def test_a_bad_page_size_is_a_config_error(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="page_size"):
            make_config(tmp_path, page_size=5000)


class TestSandboxKong:
    def test_the_fake_counts_up_and_restarts(self) -> None:
        now = [1000.0]
        fake = KongFake(clock=lambda: now[0], started=1000.0)
        now[0] = 1010.0
        first = parse_exposition(fake.exposition(now[0]))
        fake.restart()
        now[0] = 1011.0
        second = parse_exposition(fake.exposition(now[0]))
        key = next(k for k in first if "checkout-svc" in k and '"200"' in k)
        assert first[key] > second[key] > 0
