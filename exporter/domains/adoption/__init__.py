"""Adoption: which services and teams use each platform capability, read from the other
domains' stores."""

from exporter.core.domain import Domain
from exporter.domains.adoption import metrics

DOMAIN = Domain(name="adoption", provider=metrics.collect)
