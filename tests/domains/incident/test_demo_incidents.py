"""The demo's incidents: the simulated PagerDuty and Opsgenie beside the simulated CI/CD,
polled once at a fixed instant, after the simulated Alertmanager posted its notifications
to the webhook receiver; the accounts service's DORA keys must be the values
worked out by hand in ``exporter/domains/incident/sandbox/data.py``
(:data:`EXPECTED_ACCOUNTS`)."""

from __future__ import annotations

import asyncio

import pytest

from exporter.config import Config
from exporter.core.clock import FixedClock
from exporter.core.sandbox.scenario import Scenario
from exporter.daemon import Daemon
from exporter.domains.incident.sandbox.data import EXPECTED_ACCOUNTS
from exporter.sandbox import platform
from tests.domains.delivery.helpers import value
from tests.support.instants import at

H = 3600.0
KEPT = ("github", "gitlab", "jenkins", "pagerduty", "opsgenie")


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    clock = FixedClock(at("mid-month"))
    scenario = Scenario(seed=42, clock=clock)
    sandbox = platform.start(scenario)
    data = platform.demo_config(sandbox.url, tmp_path_factory.mktemp("demo"), scenario, port=0)
    data["sources"] = {k: v for k, v in data["sources"].items() if k in KEPT}
    data["sources"]["probe"] = {"enabled": False}
    config = Config(**data)

    async def run() -> bytes:
        daemon = Daemon(config, clock=clock)
        server = daemon.start_server()
        # The simulated Alertmanager posts its notifications to the receiver first.
        pushers = platform.push(scenario, f"http://127.0.0.1:{server.port}")
        try:
            assert [await asyncio.to_thread(p.caught_up, 60) for p in pushers] == [True]
            assert await daemon.poll_all(), {n: h.last_error for n, h in daemon.health.items()}
            return daemon.holder.current.text
        finally:
            for p in pushers:
                p.stop()
            await daemon.shutdown()

    try:
        return asyncio.run(run())
    finally:
        sandbox.stop()


LABELS = {"service": "accounts", "team": "identity"}


def test_change_failure_counts_the_incident_paged_twice_once(text: bytes) -> None:
    failed, total = EXPECTED_ACCOUNTS["change_failure"]  # type: ignore[misc]
    w = {**LABELS, "window": "30d"}
    assert value(text, "platform_change_failure_ratio", **w) == failed / total
    assert value(text, "platform_change_failure_samples", **w) == total


def test_time_to_restore_from_the_on_call_tools_and_alertmanager(text: bytes) -> None:
    exp = EXPECTED_ACCOUNTS["restore"]
    assert isinstance(exp, dict)
    w = {**LABELS, "window": "30d"}
    assert value(text, "platform_time_to_restore_samples", **w) == exp["n"]
    for q in ("0.5", "0.9"):
        got = value(text, "platform_time_to_restore_quantile_seconds", quantile=q, **w)
        assert got == pytest.approx(exp[q] * H)


def test_level_and_the_incident_families(text: bytes) -> None:
    assert (
        value(
            text, "platform_dora_performance_level", level=str(EXPECTED_ACCOUNTS["level"]), **LABELS
        )
        == 1
    )
    w = {**LABELS, "window": "30d"}
    ack = EXPECTED_ACCOUNTS["acknowledge"]
    assert isinstance(ack, dict)
    assert value(text, "platform_incident_time_to_acknowledge_samples", **w) == ack["n"]
    got = value(text, "platform_incident_time_to_acknowledge_quantile_seconds", quantile="0.5", **w)
    assert got == pytest.approx(ack["0.5"] * H)
    assert value(text, "platform_incidents_distinct", **w) == EXPECTED_ACCOUNTS["distinct_30d"]
    totals = EXPECTED_ACCOUNTS["totals"]
    assert isinstance(totals, dict)
    for (source, severity), n in totals.items():
        assert (
            value(text, "platform_incidents_total", source=source, severity=severity, **LABELS) == n
        )
    payments = {"service": "payments-api", "team": "payments"}
    assert value(text, "platform_incidents_open", source="opsgenie", **payments) == 1
