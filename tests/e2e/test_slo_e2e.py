"""End to end: an outage in the sandbox pages through real Prometheus and Alertmanager, then resolves.

The exporter runs as a real process against the simulated platform; a real
Prometheus scrapes it every second and evaluates the rules generated from the
same config (a 12-hour SLO with ``alert_windows: scaled``: page at 14.4x over
1m and 5s, or 6x over 6m and 30s); a real Alertmanager delivers to a webhook
receiver run by the test.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.sandbox.app import SandboxServer
from exporter.core.sandbox.scenario import Scenario
from exporter.rules import write_rules
from exporter.sandbox import platform
from tests.support.alertmanager import AlertmanagerServer, WebhookReceiver
from tests.support.daemon import DaemonProcess
from tests.support.net import wait_until
from tests.support.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

SERVICE = "accounts"  # no scheduled outages: only the forced one counts


@pytest.fixture
def sandbox() -> Iterator[tuple[Scenario, SandboxServer]]:
    scenario = Scenario(seed=42)
    server = platform.start(scenario)
    yield scenario, server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver().start()
    yield hook
    hook.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[AlertmanagerServer]:
    server = AlertmanagerServer(tmp_path / "alertmanager", receiver.url).start()
    yield server
    server.stop()


def _config(sandbox: SandboxServer, scenario: Scenario, state_dir: Path) -> dict[str, Any]:
    data = platform.demo_config(sandbox.url, state_dir, scenario, 0)
    data["server"].pop("port")
    for service in data["services"]:
        # Only the service under test has objectives: the scenario's scheduled outages of
        # other services must not page during the test.
        service.pop("slo", None)
        if service["name"] == SERVICE:
            service["probes"][0]["interval"] = "1s"
            service["slo"] = {
                "window": "12h",
                "alert_windows": "scaled",
                "availability": {"objective": 99},
            }
    return data


def _control(sandbox: SandboxServer, method: str) -> None:
    req = urllib.request.Request(f"{sandbox.url}/control/outage/{SERVICE}", method=method)
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


class TestOutagePagesAndResolves:
    def test_page_alert_reaches_alertmanager_and_resolves(
        self,
        tmp_path: Path,
        sandbox: tuple[Scenario, SandboxServer],
        daemon_process: Callable[..., DaemonProcess],
        prometheus: Callable[..., PrometheusServer],
        alertmanager: AlertmanagerServer,
        receiver: WebhookReceiver,
    ) -> None:
        scenario, server = sandbox
        data = _config(server, scenario, tmp_path)
        daemon = daemon_process(data).start()
        rules = write_rules(Config(**daemon.config), tmp_path / "rules")
        prom = prometheus(
            [f"127.0.0.1:{daemon.port}"],
            rule_files=[str(p) for p in rules],
            extra={
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": [alertmanager.address]}]}]
                }
            },
        )
        selector = f'sloth_id="{SERVICE}-availability"'

        # Healthy first: the SLI exists and reads 0 (not absent, not NaN), and nothing pages.
        def healthy() -> bool:
            found = prom.query(f"slo:sli_error:ratio_rate1m{{{selector}}}")
            return bool(found) and float(found[0]["value"][1]) == 0.0

        wait_until(healthy, timeout=45, what="a healthy 1m SLI reading 0")
        assert receiver.alerts(alertname="SLOErrorBudgetBurn") == []

        _control(server, "PUT")
        wait_until(
            lambda: (
                receiver.alerts(
                    "firing", alertname="SLOErrorBudgetBurn", severity="page", service=SERVICE
                )
                != []
            ),
            timeout=45,
            interval=0.25,
            what="the page alert at the webhook",
        )
        (page,) = receiver.alerts("firing", alertname="SLOErrorBudgetBurn", severity="page")
        assert page["labels"]["sloth_service"] == SERVICE
        assert page["labels"]["team"] == "identity"
        assert "burn rate is too fast" in page["annotations"]["summary"]

        # The exporter's own burn rate, from its stored history, tells the same story while
        # the outage lasts. It counts checks, the rules count scraped counters, so at the
        # instant the page fires one may stand a check behind the other: wait for it.
        def exporter_burn() -> float:
            burn = prom.query(f'platform_slo_burn_rate{{service="{SERVICE}",window="1m"}}')
            return float(burn[0]["value"][1]) if burn else 0.0

        wait_until(
            lambda: exporter_burn() > 14.4,
            timeout=20,
            interval=0.25,
            what="the exporter's 1m burn rate above 14.4 during the outage",
        )
        assert exporter_burn() > 14.4

        _control(server, "DELETE")
        wait_until(
            lambda: (
                receiver.alerts(
                    "resolved", alertname="SLOErrorBudgetBurn", severity="page", service=SERVICE
                )
                != []
            ),
            timeout=75,
            interval=0.25,
            what="the page alert to resolve",
        )
        # No other service paged.
        others = [
            a
            for a in receiver.alerts(alertname="SLOErrorBudgetBurn")
            if a["labels"]["service"] != SERVICE
        ]
        assert others == []
