"""SLO: error budgets and burn rates of each service's objectives, from the probe and
traffic history; their alert rules."""

from __future__ import annotations

from exporter.core.domain import Domain, Parts


def _parts() -> Parts:
    from exporter.domains.slo import metrics
    from exporter.domains.slo.settings import SloServiceFields

    return Parts(service_fields=SloServiceFields, provider=metrics.collect)


DOMAIN = Domain(
    name="slo",
    parts=_parts,
    service_keys=("slo",),
    reads=frozenset({"slo", "catalog", "probe", "traffic"}),
    sandbox=("exporter.domains.slo.sandbox",),
)
