"""Which service an on-call incident belongs to: the config's mapping first, then the
Backstage annotations of the merged catalog (``pagerduty.com/service-id``,
``opsgenie.com/component-selector``).

A PagerDuty or Opsgenie object two services claim goes to the first in name order (the
config's claims before the catalog's), so an incident is never counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.core.catalog import Catalog
from exporter.core.settings import ConfigBase
from exporter.domains.incident.settings import (
    OPSGENIE_ANNOTATION,
    PAGERDUTY_ANNOTATION,
    IncidentServiceFields,
)


@dataclass(frozen=True)
class ServiceMap:
    """PagerDuty service and escalation policy ids, and Opsgenie queries, to services."""

    pagerduty_services: Mapping[str, str] = field(default_factory=dict)
    escalation_policies: Mapping[str, str] = field(default_factory=dict)
    opsgenie_queries: Mapping[str, str] = field(default_factory=dict)  # service -> query

    def pagerduty(self, service_id: str, policy_id: str | None) -> str | None:
        found = self.pagerduty_services.get(service_id)
        if found is None and policy_id is not None:
            found = self.escalation_policies.get(policy_id)
        return found


def _claim(out: dict[str, str], keys: Iterable[str], service: str) -> None:
    for key in keys:
        key = key.strip()
        if key:
            out.setdefault(key, service)


def service_map(config: ConfigBase, catalog: Catalog | None) -> ServiceMap:
    """The mapping under this config and the merged catalog (None: the config's only)."""
    services: dict[str, str] = {}
    policies: dict[str, str] = {}
    queries: dict[str, str] = {}
    for svc in sorted(config.services, key=lambda s: s.name):
        fields = IncidentServiceFields.of(svc)
        _claim(services, fields.pagerduty_services, svc.name)
        _claim(policies, fields.pagerduty_escalation_policies, svc.name)
        if fields.opsgenie_query:
            queries[svc.name] = fields.opsgenie_query
    if catalog is not None:
        for name, entry in sorted(catalog.services.items()):
            annotations = entry.annotations
            _claim(services, annotations.get(PAGERDUTY_ANNOTATION, "").split(","), name)
            selector = annotations.get(OPSGENIE_ANNOTATION, "").strip()
            if selector and name not in queries:
                queries[name] = selector
    return ServiceMap(services, policies, queries)
