"""A real Alertmanager (Debian ``prometheus-alertmanager``) notifying the exporter.

Its receiver is a ``webhook_configs`` entry pointing at ``/webhooks/alertmanager`` with
``send_resolved: true`` and an ``http_config.authorization`` bearer token. Alerts are fed
through Alertmanager's API (``POST /api/v2/alerts``), fired with an explicit
``startsAt`` and resolved by posting them again with ``endsAt``. The exporter must record
the opening within the group wait and the resolution within the group interval (plus a
scheduling allowance for a loaded machine), and time to restore must be ``endsAt -
startsAt`` exactly.

Alertmanager runs on the machine's real clock, even when the suite runs under faketime:
the times posted and the daemon's clock are read off Alertmanager's own (its
``/api/v2/status`` start time, moved on by the monotonic clock).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.clock import utc_datetime
from exporter.daemon import Daemon
from tests.domains.delivery.helpers import value
from tests.domains.incident.helpers import stored
from tests.support.alertmanager import AlertmanagerServer

pytestmark = pytest.mark.integration

TOKEN = "real-am-token"
GROUP_WAIT = 1.0
GROUP_INTERVAL = 2.0
# How late past Alertmanager's own timers a notification may be recorded on a loaded
# machine (Alertmanager's dispatcher, the POST and the exporter's commit).
ALLOWANCE = 4.0


def iso(t: float) -> str:
    return utc_datetime(t).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def post_alerts(am: AlertmanagerServer, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        f"{am.url}/api/v2/alerts",
        json.dumps(alerts).encode(),
        {"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200


class AlertmanagerClock:
    """Alertmanager's "now", at least: its start time plus the monotonic time since read."""

    def __init__(self) -> None:
        self.base = 0.0
        self.mono = time.monotonic()

    def read(self, am: AlertmanagerServer) -> None:
        with urllib.request.urlopen(f"{am.url}/api/v2/status", timeout=5) as resp:
            uptime = json.loads(resp.read())["uptime"]
        self.mono = time.monotonic()
        self.base = datetime.fromisoformat(uptime.replace("Z", "+00:00")).timestamp()

    def __call__(self) -> float:
        return self.base + time.monotonic() - self.mono


def wait_for(predicate: Callable[[], Any], timeout: float) -> float:
    """Seconds until ``predicate()`` is truthy; fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


def test_alertmanager_opens_and_resolves_the_incident(tmp_path: Path) -> None:
    config = Config(
        server={"listen_address": "127.0.0.1", "port": 0},
        state={"path": str(tmp_path / "state.db")},
        services=[
            {
                "name": "accounts",
                "team": "identity",
                "ci": [{"jenkins": "identity/accounts-deploy"}],
            }
        ],
        sources={"probe": {"enabled": False}},
        incidents={
            "alertmanager": {
                "auth": {"bearer_token": TOKEN},
                "matchers": ['severity=~"critical|page"'],
            }
        },
    )
    clock = AlertmanagerClock()
    daemon = Daemon(config, sources=[], clock=clock)
    found: dict[str, Any] = {}

    def scenario(url: str) -> None:
        am = AlertmanagerServer(tmp_path / "alertmanager", url)
        am.config["route"].update(
            group_by=["alertname", "service"],
            group_wait=f"{GROUP_WAIT:g}s",
            group_interval=f"{GROUP_INTERVAL:g}s",
        )
        am.config["receivers"][0]["webhook_configs"][0]["http_config"] = {
            "authorization": {"type": "Bearer", "credentials": TOKEN}
        }
        am.start()
        try:
            clock.read(am)
            starts = float(int(clock())) - 600
            ends = float(int(clock())) - 1
            labels = {"alertname": "AccountsDown", "service": "accounts", "severity": "critical"}
            noise = {"alertname": "DiskFilling", "service": "accounts", "severity": "info"}
            post_alerts(am, [{"labels": labels, "startsAt": iso(starts)}, {"labels": noise}])
            found["opened in"] = wait_for(lambda: stored(daemon.store), GROUP_WAIT + ALLOWANCE)
            found["open"] = stored(daemon.store)
            post_alerts(am, [{"labels": labels, "startsAt": iso(starts), "endsAt": iso(ends)}])
            found["resolved in"] = wait_for(
                lambda: all(r[3] is not None for r in stored(daemon.store).values()),
                GROUP_INTERVAL + ALLOWANCE,
            )
            found["rows"] = stored(daemon.store)
            found["span"] = (starts, ends)
            wait_for(
                lambda: value(
                    daemon.holder.current.text,
                    "platform_time_to_restore_samples",
                    service="accounts",
                    team="identity",
                    window="30d",
                ),
                10,
            )
            found["text"] = daemon.holder.current.text
        finally:
            am.stop()

    async def main() -> None:
        server = daemon.start_server()
        try:
            await asyncio.to_thread(scenario, f"{server.url}/webhooks/alertmanager")
        finally:
            await daemon.shutdown()

    asyncio.run(main())
    starts, ends = found["span"]
    [(key, open_row)] = found["open"].items()
    assert open_row[:4] == ("accounts", starts, None, None)
    assert found["rows"] == {key: ("accounts", starts, None, ends, "critical", 1)}
    assert found["opened in"] <= GROUP_WAIT + ALLOWANCE
    assert found["resolved in"] <= GROUP_INTERVAL + ALLOWANCE
    restore = value(
        found["text"],
        "platform_time_to_restore_quantile_seconds",
        service="accounts",
        team="identity",
        window="30d",
        quantile="0.5",
    )
    assert restore == ends - starts
    assert daemon.intake.counts()["alertmanager"].get("unauthorized", 0) == 0
