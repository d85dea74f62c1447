"""Adoption: which services and teams use each platform capability, read from the other
domains' stores."""

from __future__ import annotations

from exporter.core.domain import Domain, Parts


def _parts() -> Parts:
    from exporter.domains.adoption import metrics
    from exporter.domains.adoption.settings import AdoptionSection

    return Parts(section=AdoptionSection, provider=metrics.collect)


DOMAIN = Domain(
    name="adoption",
    parts=_parts,
    keys=("capabilities",),
    reads=frozenset({"adoption", "catalog", "cost", "delivery", "traffic"}),
)
