"""The sandbox's gateways through the real daemon: the demo shows traffic KPIs.

The platform and the daemon share one fixed clock (the suite's mid-month instant),
moved on between Kong's two polls.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config
from exporter.core.clock import FixedClock
from exporter.core.sandbox.scenario import Scenario
from exporter.daemon import Daemon
from exporter.sandbox import platform
from tests.support.instants import at
from tests.support.net import wait_until


def test_kong_and_the_access_log_give_traffic_kpis_per_service(tmp_path: Path) -> None:
    clock = FixedClock(at("mid-month"))
    scenario = Scenario(seed=42, clock=clock)
    sandbox = platform.start(scenario)
    try:
        data = platform.demo_config(sandbox.url, tmp_path, scenario, 0)
        # Only the gateway sources: the other fakes are tested by their own suites.
        data["sources"] = {k: v for k, v in data["sources"].items() if k in ("kong", "nginx")}
        data["sources"]["probe"] = {"enabled": False}
        log = Path(data["sources"]["nginx"]["access_log"])
        wait_until(lambda: log.stat().st_size > 100_000, timeout=10, what="the access-log backlog")
        daemon = Daemon(Config(**data), clock=clock)

        async def run() -> None:
            kong = next(s for s in daemon.sources if s.kind == "kong")
            nginx = next(s for s in daemon.sources if s.kind == "nginx")
            assert await daemon.poll(kong)
            clock.advance(1.1)  # Kong's counters grow by rps x elapsed
            assert await daemon.poll(kong), daemon.health["kong"].last_error
            assert await daemon.poll(nginx), daemon.health["nginx"].last_error
            for client in daemon.clients.values():
                await client.aclose()

        asyncio.run(run())
        text = daemon.render().text.decode()
        rates = {
            s.labels["service"]
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "platform_service_request_rate" and s.labels["window"] == "5m"
        }
        # Kong's services, the access log's recommendations, and both gateways' unmapped traffic.
        assert {
            "checkout",
            "payments-api",
            "search",
            "accounts",
            "recommendations",
            "unmapped",
        } <= rates
        assert 'platform_gateway_consumers{source="kong"} 7.0' in text
        assert (
            'platform_service_active_consumers{service="recommendations",team="discovery"} 4.0'
            in text
        )
        assert 'platform_service_latency_seconds{quantile="0.5",service="checkout"' in text
        daemon.store.close()
    finally:
        sandbox.stop()
        # The access-log writer stops once its directory is gone.
        for f in tmp_path.iterdir():
            if f.is_file():
                f.unlink()
        time.sleep(0.3)
