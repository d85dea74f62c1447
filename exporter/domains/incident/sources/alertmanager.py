"""Alertmanager's webhook receiver, ``POST /webhooks/alertmanager``: alert groups become
incidents.

Alertmanager posts its documented webhook JSON (``version: "4"``) for each group:
``groupKey``, ``status`` (``firing`` or ``resolved``: resolved once every alert of the
group is), ``commonLabels`` and ``alerts[]`` with ``startsAt`` and ``endsAt``
(https://prometheus.io/docs/alerting/latest/configuration/#webhook_config). A group whose
common labels match every configured matcher, and whose ``service_label`` names a
service of the catalog, is an :class:`AlertGroupNotice`: its episode opens at the
earliest ``startsAt`` and closes, with the ``resolved`` notification, at the latest
``endsAt`` (see :mod:`exporter.domains.incident.store`). Other groups are acknowledged
and ignored. A body that is not such a document is 400, and nothing of it is stored.

Alertmanager authenticates with its ``http_config``: a bearer token (``authorization``)
or ``basic_auth``; the receiver is configured under ``incidents.alertmanager``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from exporter.core.store import Store
from exporter.core.webhooks import Endpoint, Malformed, Parsed, WebhookRequest, json_body
from exporter.domains.delivery.records import Incident
from exporter.domains.incident.records import AlertGroupNotice, bounded_severity
from exporter.domains.incident.settings import AlertmanagerWebhookConfig, IncidentSection
from exporter.domains.incident.store import group_key_hash

NAME = "alertmanager"
#: The merged catalog's service names are read again at most this often (seconds).
CATALOG_TTL = 30.0


def endpoints(config: Any) -> list[Endpoint]:
    """The receiver, if ``incidents.alertmanager`` configures it."""
    settings = IncidentSection.of(config).incidents.alertmanager
    if settings is None:
        return []
    return [
        Endpoint(NAME, settings, receiver(config, settings), produces=(AlertGroupNotice, Incident))
    ]


def receiver(
    config: Any, settings: AlertmanagerWebhookConfig
) -> Callable[[WebhookRequest], Parsed]:
    """The parser of the receiver's notifications under this config."""
    matchers = settings.parsed_matchers()
    known = _KnownServices(config)

    def parse(request: WebhookRequest) -> Parsed:
        data = json_body(request.body)
        group = _group(data)
        labels = group["commonLabels"]
        if not all(m.matches(labels) for m in matchers):
            return Parsed()
        service = labels.get(settings.service_label, "")
        if not known.has(service, request.store):
            return Parsed()
        starts, ends = _span(group["alerts"])
        firing = group["status"] == "firing"
        notice = AlertGroupNotice(
            dedup_key=group_key_hash(group["groupKey"]),
            service=service,
            firing=firing,
            starts_at=starts,
            ends_at=None if firing else ends,
            severity=bounded_severity(labels.get(settings.severity_label, "")),
        )
        return Parsed([notice])

    return parse


def _group(data: Any) -> dict[str, Any]:
    """The notification, checked for the fields used; Malformed otherwise."""
    if not isinstance(data, dict):
        raise Malformed("expected a JSON object (Alertmanager webhook, version 4)")
    if data.get("version") != "4":
        raise Malformed(f"unsupported webhook version {data.get('version')!r}: expected '4'")
    if data.get("status") not in ("firing", "resolved"):
        raise Malformed("status must be 'firing' or 'resolved'")
    if not isinstance(data.get("groupKey"), str) or not data["groupKey"]:
        raise Malformed("groupKey must be a non-empty string")
    labels = data.get("commonLabels")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise Malformed("commonLabels must be an object of strings")
    alerts = data.get("alerts")
    if not isinstance(alerts, list) or not alerts or not all(isinstance(a, dict) for a in alerts):
        raise Malformed("alerts must be a non-empty list of objects")
    return data


def _span(alerts: list[dict[str, Any]]) -> tuple[float, float | None]:
    """(earliest startsAt, latest endsAt) of the group's alerts."""
    starts = [_time(a.get("startsAt"), "startsAt") for a in alerts]
    ends = [_time(a.get("endsAt"), "endsAt", optional=True) for a in alerts]
    if any(s is None for s in starts):
        raise Malformed("every alert needs a startsAt")
    known_ends = [e for e in ends if e is not None]
    return min(s for s in starts if s is not None), max(known_ends) if known_ends else None


def _time(value: Any, field: str, *, optional: bool = False) -> float | None:
    """Unix seconds of an RFC 3339 time; Alertmanager's zero time (year 1) is none."""
    if value in (None, "") and optional:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{field} must be an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"{field} is not an RFC 3339 time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise Malformed(f"{field} has no time zone: {value[:40]!r}")
    if parsed.year < 1970:
        if optional:
            return None
        raise Malformed(f"{field} is before 1970: {value[:40]!r}")
    return parsed.timestamp()


class _KnownServices:
    """The merged catalog's service names, re-read at most every :data:`CATALOG_TTL`."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.configured = frozenset(s.name for s in config.services)
        self._lock = threading.Lock()
        self._names: frozenset[str] = frozenset()
        self._at = -CATALOG_TTL

    def has(self, service: str, store: Store) -> bool:
        if not service:
            return False
        if service in self.configured:
            return True
        with self._lock:
            # Monotonic: a cache age, not a time of the data.
            if time.monotonic() - self._at >= CATALOG_TTL:
                from exporter.domains.catalog.store import load_catalog

                self._names = frozenset(load_catalog(self.config, store).services)
                self._at = time.monotonic()
            return service in self._names
