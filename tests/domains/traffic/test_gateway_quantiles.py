"""Quantiles a gateway computed itself (CloudWatch percentiles, Prometheus queries) follow
the catalog at the next refresh, like the counts: they are stored under the gateway
identity they were read for and resolved to a service when rendered.

The Prometheus fake answers ``POST /api/v1/query`` with the documented instant-vector
shape (https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries:
``status``, ``data.resultType``, ``data.result[].metric`` / ``value``).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.config import Config
from exporter.core.clock import FixedClock
from exporter.core.sandbox.app import App, Request, Response
from exporter.core.store import Store
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.settings import CloudWatchApiConfig
from exporter.domains.traffic.sources.cloudwatch import window_latencies
from exporter.domains.traffic.store import MIGRATIONS
from tests.support.exposition import Exposition
from tests.support.instants import at

NOW = at("mid-month")
# The quantile answered for every window, by the `quantile` the query asks for.
SECONDS = {"0.5": 0.12, "0.95": 0.34, "0.99": 0.81}
CHECKOUT = {"name": "checkout", "team": "shop"}


def prometheus() -> httpx.MockTransport:
    """A Prometheus whose latency query returns one series, ``service="payments"``."""
    app = App()

    @app.route("POST", "/api/v1/query")
    def query(request: Request) -> Response:
        form = httpx.QueryParams(request.body.decode())
        value = next(v for k, v in SECONDS.items() if f'quantile="{k}"' in form["query"])
        sample = {"metric": {"service": "payments"}, "value": [float(form["time"]), str(value)]}
        body = {"status": "success", "data": {"resultType": "vector", "result": [sample]}}
        return Response(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    return app.transport()


def daemon(tmp_path: Path, services: list[dict[str, Any]]) -> Daemon:
    config = Config(
        state={"path": str(tmp_path / "state.db")},
        services=services,
        sources={
            "prometheus": {
                "url": "http://prom.test:9090",
                "queries": {
                    "requests": "r[$window]",
                    "errors_5xx": "e[$window]",
                    "latency_seconds": 'lat{quantile="$quantile"}[$window]',
                },
                "latency_windows": ["1h"],
            }
        },
    )
    return Daemon(config, transport=prometheus(), clock=FixedClock(NOW))


def poll(d: Daemon) -> bool:
    async def go() -> bool:
        try:
            return bool(await d.poll(d.sources[0]))
        finally:
            for client in d.clients.values():
                await client.aclose()
            d.clients.clear()

    return asyncio.run(go())


def latency(d: Daemon, service: str) -> dict[str, float | None]:
    m = Exposition.parse(d.render().text)
    return {
        q: m.value("platform_service_latency_seconds", service=service, window="1h", quantile=q)
        for q in SECONDS
    }


class TestPrometheusQuantiles:
    def test_a_label_claimed_later_takes_its_quantiles_without_a_new_poll(
        self, tmp_path: Path
    ) -> None:
        """Read while no service claims ``payments``: unmapped. The config then declares
        payments (its name is the label's value): the next start's render shows the same
        quantiles under payments, before Prometheus is polled again."""
        first = daemon(tmp_path, [CHECKOUT])
        assert poll(first), first.health["prometheus"].last_error
        assert latency(first, "unmapped") == SECONDS
        first.store.close()

        claimed = daemon(tmp_path, [CHECKOUT, {"name": "payments", "team": "shop"}])
        try:
            assert latency(claimed, "payments") == SECONDS
            assert latency(claimed, "unmapped") == dict.fromkeys(SECONDS)
        finally:
            claimed.store.close()


class TestCloudWatchQuantiles:
    def test_percentiles_keep_the_identity_of_their_api(self) -> None:
        ts = datetime.fromtimestamp(NOW, UTC)
        results = [{"Id": "q_0_p95", "Timestamps": [ts], "Values": [340.0]}]
        apis = [CloudWatchApiConfig(type="rest", name="shop", stage="prod")]
        got = window_latencies(apis, ["unmapped"], ["p95"], "1h", results, NOW, ["name:shop"])
        assert [(p.ident, p.service, p.seconds) for p in got] == [
            ("name:shop", "unmapped", pytest.approx(0.34))
        ]


class TestUpgrade:
    def test_quantiles_stored_before_keep_their_service(self, tmp_path: Path) -> None:
        """A database from before: its rows are pinned to the service they were read for."""
        path = str(tmp_path / "state.db")
        old = Store(path, FixedClock(NOW))
        renamed = next(i for i, m in enumerate(MIGRATIONS) if "RENAME COLUMN service" in m)
        old.migrate("traffic", MIGRATIONS[:renamed])
        with old.transaction() as tx:
            tx.execute(
                "INSERT INTO traffic_latency (service, source, window, quantile, seconds, at) "
                "VALUES ('checkout', 'cloudwatch', '1h', 0.95, 0.34, ?)",
                (NOW - 60,),
            )
        old.close()
        store = open_store(path, FixedClock(NOW))
        try:
            got = traffic_store.gateway_latencies(store, NOW - 3600)
            assert got == {("checkout", "1h", 0.95): pytest.approx(0.34)}
        finally:
            store.close()
