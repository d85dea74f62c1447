"""Incident: on-call incidents from PagerDuty, Opsgenie and Alertmanager's webhook; the
source of change failure and time to restore where incidents really live."""

from typing import Any

from exporter.core.domain import Domain
from exporter.core.store import Store
from exporter.domains.delivery.records import Incident
from exporter.domains.incident import metrics, store
from exporter.domains.incident.settings import IncidentSection, IncidentServiceFields
from exporter.domains.incident.sources import alertmanager
from exporter.domains.incident.sources.opsgenie import OpsgenieSource
from exporter.domains.incident.sources.pagerduty import PagerDutySource


def refresh(config: Any, db: Store, now: float) -> None:
    """At start: the configured duplicate window, which the writers apply. At start and
    after a poll that wrote incidents: issue incidents merged with on-call ones."""
    store.set_duplicate_window(db, IncidentSection.of(config).incidents.duplicate_window)
    store.merge_issue_incidents(db)


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
    refresh_after=frozenset({Incident}),
    webhooks=alertmanager.endpoints,
    sandbox=(
        "exporter.domains.incident.sandbox.pagerduty",
        "exporter.domains.incident.sandbox.opsgenie",
        "exporter.domains.incident.sandbox.alertmanager",
    ),
)
