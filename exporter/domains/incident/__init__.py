"""Incident: on-call incidents from PagerDuty, Opsgenie and Alertmanager's webhook; the
source of change failure and time to restore where incidents really live."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.domain import Domain, Parts, SourceRef, Tables

if TYPE_CHECKING:
    from exporter.core.source import Source


def _parts() -> Parts:
    from exporter.domains.catalog.records import CatalogListing
    from exporter.domains.delivery.records import Incident
    from exporter.domains.incident import metrics
    from exporter.domains.incident.refresh import refresh
    from exporter.domains.incident.settings import IncidentSection, IncidentServiceFields
    from exporter.domains.incident.sources import alertmanager

    return Parts(
        service_fields=IncidentServiceFields,
        section=IncidentSection,
        provider=metrics.collect,
        refresh=refresh,
        # Incidents follow the catalog: their claims are resolved again after its polls.
        refresh_after=frozenset({Incident, CatalogListing}),
        webhooks=alertmanager.endpoints,
    )


def _tables() -> Tables:
    from exporter.domains.incident import store

    return Tables(migrations={"incident": store.MIGRATIONS}, writers=store.WRITERS)


def _pagerduty() -> type[Source]:
    from exporter.domains.incident.sources.pagerduty import PagerDutySource

    return PagerDutySource


def _opsgenie() -> type[Source]:
    from exporter.domains.incident.sources.opsgenie import OpsgenieSource

    return OpsgenieSource


DOMAIN = Domain(
    name="incident",
    parts=_parts,
    tables=_tables,
    keys=("incidents",),
    service_keys=("pagerduty_services", "pagerduty_escalation_policies", "opsgenie_query"),
    refs=(SourceRef("pagerduty", _pagerduty), SourceRef("opsgenie", _opsgenie)),
    reads=frozenset({"incident", "catalog"}),
    sandbox=(
        "exporter.domains.incident.sandbox.pagerduty",
        "exporter.domains.incident.sandbox.opsgenie",
        "exporter.domains.incident.sandbox.alertmanager",
    ),
)
