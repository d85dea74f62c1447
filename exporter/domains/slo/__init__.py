"""SLO: error budgets and burn rates of each service's objectives, from the probe and
traffic history; their alert rules."""

from exporter.core.domain import Domain
from exporter.domains.slo import metrics
from exporter.domains.slo.settings import SloServiceFields

DOMAIN = Domain(
    name="slo",
    service_fields=SloServiceFields,
    provider=metrics.collect,
    reads=frozenset({"slo", "catalog", "probe", "traffic"}),
    sandbox=("exporter.domains.slo.sandbox",),
)
