"""Incident: on-call incidents from PagerDuty, Opsgenie and Alertmanager's webhook; the
source of change failure and time to restore where incidents really live."""

from typing import Any

from exporter.core.domain import Domain
from exporter.core.store import Store
from exporter.domains.incident import metrics, store
from exporter.domains.incident.settings import IncidentSection, IncidentServiceFields
from exporter.domains.incident.sources import alertmanager
from exporter.domains.incident.sources.opsgenie import OpsgenieSource
from exporter.domains.incident.sources.pagerduty import PagerDutySource


def refresh(config: Any, db: Store, now: float) -> None:
    """At start: the configured duplicate window, which the writers apply."""
    store.set_duplicate_window(db, IncidentSection.of(config).incidents.duplicate_window)


DOMAIN = Domain(
    name="incident",
    service_fields=IncidentServiceFields,
    section=IncidentSection,
    sources=(PagerDutySource, OpsgenieSource),
    migrations={"incident": store.MIGRATIONS},
    writers=store.WRITERS,
    provider=metrics.collect,
    reads=frozenset({"incident", "catalog"}),
    refresh=refresh,
    webhooks=alertmanager.endpoints,
    sandbox=(
        "exporter.domains.incident.sandbox.pagerduty",
        "exporter.domains.incident.sandbox.opsgenie",
        "exporter.domains.incident.sandbox.alertmanager",
    ),
)
