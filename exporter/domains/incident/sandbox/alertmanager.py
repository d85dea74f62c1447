"""A simulated Alertmanager: posts its webhook notifications to the exporter's receiver.

As Alertmanager documents its webhook receiver
(https://prometheus.io/docs/alerting/latest/configuration/#webhook_config) and its
``http_config`` (same page, ``<http_config>``):

* each notification is a ``POST`` of JSON ``version: "4"``: ``groupKey``,
  ``truncatedAlerts``, ``status`` (``firing``, or ``resolved`` once every alert of the
  group is), ``receiver``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``,
  ``externalURL`` and ``alerts[]`` (``status``, ``labels``, ``annotations``,
  ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``); a firing alert's
  ``endsAt`` is Go's zero time, ``0001-01-01T00:00:00Z``;
* ``http_config.authorization`` sends ``Authorization: Bearer <credentials>``;
* with ``send_resolved`` (the webhook's default) the group's resolved notification
  follows; a firing group is notified again every ``repeat_interval``; a failed
  ``POST`` is retried with a growing back-off.

The groups are the scenario's (:attr:`IncidentScenario.alert_groups`). Started once the
exporter listens, the simulated Alertmanager delivers what it would have sent by the
scenario's "now" (each group's firing notification, and its resolved one if it has
resolved), then keeps the groups up to date as the scenario's clock moves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import httpx

from exporter.core.sandbox.fakes import iso
from exporter.core.sandbox.scenario import Scenario
from exporter.domains.incident.sandbox.data import (
    ALERTMANAGER_TOKEN,
    FakeAlertGroup,
    IncidentScenario,
)

log = logging.getLogger("exporter.sandbox.alertmanager")

ZERO_TIME = "0001-01-01T00:00:00Z"
RECEIVER = "platform-kpi-exporter"
#: Seconds between repeated notifications of a firing group (a short repeat_interval).
REPEAT_INTERVAL = 30.0
#: Retry back-off after a failed POST: first and longest wait (seconds).
RETRY_FIRST, RETRY_LONGEST = 0.2, 5.0


def notification(group: FakeAlertGroup, now: float) -> dict[str, Any]:
    """The group's webhook body (version 4) as it stands at ``now``."""
    resolved = group.resolved(now)
    labels = {**group.labels, "alertname": group.alertname}
    alert = {
        "status": "resolved" if resolved else "firing",
        "labels": labels,
        "annotations": {"summary": group.summary},
        "startsAt": iso(group.starts_at),
        "endsAt": iso(group.ends_at) if resolved and group.ends_at is not None else ZERO_TIME,
        "generatorURL": f"http://prometheus.sandbox/graph?g0.expr=ALERTS%7Balertname%3D%22{group.alertname}%22%7D",
        "fingerprint": hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16],
    }
    return {
        "version": "4",
        "groupKey": group.group_key,
        "truncatedAlerts": 0,
        "status": alert["status"],
        "receiver": RECEIVER,
        "groupLabels": {"alertname": group.alertname},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager.sandbox:9093",
        "alerts": [alert],
    }


class AlertmanagerSim:
    """Posts the scenario's alert groups to ``url`` (the exporter's receiver) from a
    thread of its own, until :meth:`stop`."""

    def __init__(self, incidents: IncidentScenario, scenario: Scenario, url: str) -> None:
        self.incidents = incidents
        self.scenario = scenario
        self.url = url
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        # Per group key: the status last delivered, and the scenario time it was sent.
        self._sent: dict[str, tuple[str, float]] = {}
        self._thread = threading.Thread(target=self._run, name="sandbox-alertmanager", daemon=True)

    def start(self) -> AlertmanagerSim:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def caught_up(self, timeout: float) -> bool:
        """Wait until every notification due by the scenario's "now" was accepted."""
        return self._caught_up.wait(timeout)

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                if self._deliver_due(client):
                    self._caught_up.set()
                self._stop.wait(1.0)

    def _deliver_due(self, client: httpx.Client) -> bool:
        """Post every notification due now; True when all were accepted."""
        now = self.scenario.now()
        for group in self.incidents.alert_groups:
            if group.starts_at > now:
                continue
            status = "resolved" if group.resolved(now) else "firing"
            last = self._sent.get(group.group_key)
            repeat = status == "firing" and last is not None and now - last[1] >= REPEAT_INTERVAL
            if last is not None and last[0] == status and not repeat:
                continue
            # A group seen first resolved: Alertmanager notified its firing before.
            first = status == "resolved" and last is None
            if first and not self._post(client, notification(group, group.starts_at)):
                return False
            if not self._post(client, notification(group, now)):
                return False
            self._sent[group.group_key] = (status, now)
        return True

    def _post(self, client: httpx.Client, body: dict[str, Any]) -> bool:
        """POST with retries (as Alertmanager's notifier does); False once stopped."""
        wait = RETRY_FIRST
        headers = {
            "Authorization": f"Bearer {ALERTMANAGER_TOKEN}",
            "User-Agent": "Alertmanager/0.27.0",
        }
        while not self._stop.is_set():
            try:
                resp = client.post(self.url, json=body, headers=headers)
                if resp.status_code < 300:
                    return True
                log.debug("alertmanager sim: %s answered %d", self.url, resp.status_code)
            except httpx.HTTPError as exc:
                log.debug("alertmanager sim: %s: %s", self.url, exc)
            self._stop.wait(wait)
            wait = min(2 * wait, RETRY_LONGEST)
        return False


def push(scenario: Scenario, exporter_url: str) -> AlertmanagerSim:
    """Start posting the scenario's alert groups to the exporter listening at ``exporter_url``."""
    from exporter.domains.incident.sandbox.data import incidents_of

    url = f"{exporter_url.rstrip('/')}/webhooks/alertmanager"
    return AlertmanagerSim(incidents_of(scenario), scenario, url).start()


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Turn the exporter's Alertmanager receiver on, with the simulated one's token."""
    del base_url, scenario, state_dir  # the simulated Alertmanager posts; nothing polls it
    config.setdefault("incidents", {})["alertmanager"] = {
        "auth": {"bearer_token": ALERTMANAGER_TOKEN},
        "matchers": ['severity=~"critical|page"'],
    }
