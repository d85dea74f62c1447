"""SLO: error budgets and burn rates of each service's objectives, from the probe and
traffic history; their alert rules."""

from exporter.core.domain import Domain
from exporter.domains.slo import metrics

DOMAIN = Domain(
    name="slo",
    provider=metrics.collect,
    sandbox=("exporter.domains.slo.sandbox",),
)
