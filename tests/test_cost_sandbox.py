"""The demo's billing: the sandbox writes FOCUS exports and serves request totals
and an Azure fake; the real sources read them and the cost KPIs come out as the
scenario says."""

from __future__ import annotations

import asyncio
import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.sandbox import billing, platform
from exporter.sandbox.scenario import Scenario
from tests.support.exposition import Exposition
from tests.support.prometheus import promtool_check_metrics

COST_SOURCES = {"focus", "request_totals", "azure_cost"}


class TestBillingScenario:
    def test_exports_hold_a_correction_a_credit_and_untagged_lines(self, tmp_path: Path) -> None:
        files = billing.write_exports(Scenario(), tmp_path)
        text = "".join(gzip.decompress(f.read_bytes()).decode() for f in files)
        assert ",Correction," in text
        assert ",Credit," in text
        assert ",AWS Data Transfer,Networking," in text

    def test_the_demo_shows_cost_and_cost_per_transaction(self, tmp_path: Path) -> None:
        scenario = Scenario()
        server = platform.start(scenario)
        try:
            data = platform.demo_config(server.url, tmp_path, scenario, 0)
            config = Config(**data)
            daemon = Daemon(config)
            mine = [s for s in daemon.sources if s.kind in COST_SOURCES]
            assert {s.kind for s in mine} == COST_SOURCES

            async def poll() -> None:
                try:
                    for src in mine:
                        assert await daemon.poll(src), daemon.health[src.name].last_error
                finally:
                    # The HTTP clients belong to this event loop: close them in it.
                    await daemon.shutdown()

            asyncio.run(poll())
            exp = Exposition.parse(daemon.holder.current.text)
            today = datetime.now(UTC).date()
            week = [today - timedelta(days=n) for n in range(1, 8)]
            cost = (
                sum(
                    billing.daily_cost(scenario, "checkout", cat, d)
                    for d in week
                    for _, cat, _ in billing.DAILY_COST["checkout"]
                )
                - 12.0
            )  # the correction, three days ago
            requests = sum(billing.daily_requests(scenario, "checkout", d) for d in week)
            assert exp.value(
                "platform_cost_per_transaction", service="checkout", window="7d", currency="USD"
            ) == pytest.approx(cost / requests, rel=1e-6)
            got = sum(v for _, v in exp.samples("platform_cost", service="checkout", window="7d"))
            assert got == pytest.approx(cost, rel=1e-6)
            assert exp.value(
                "platform_cost", service="unallocated", window="1d", currency="USD"
            ) == pytest.approx(billing.UNTAGGED_NETWORK)
            # Recommendations also runs on Azure, billed in EUR: its own series.
            assert exp.samples("platform_cost", service="recommendations", currency="EUR")
            assert exp.samples("platform_budget_used_ratio", scope="team", team="payments")
            assert promtool_check_metrics(daemon.holder.current.text) == ""
        finally:
            server.stop()
