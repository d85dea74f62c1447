"""Adoption: which services and teams use each platform capability, read from the other
domains' stores."""

from exporter.core.domain import Domain
from exporter.domains.adoption import metrics
from exporter.domains.adoption.settings import AdoptionSection

DOMAIN = Domain(
    name="adoption",
    section=AdoptionSection,
    provider=metrics.collect,
    reads=frozenset({"adoption", "catalog", "cost", "delivery", "traffic"}),
)
