"""Probe: synthetic HTTP checks of each service's endpoints; uptime and probe latency."""

from exporter.core.domain import Domain
from exporter.domains.probe import metrics, store
from exporter.domains.probe.settings import ProbeServiceFields
from exporter.domains.probe.sources.probe import ProbeSource

DOMAIN = Domain(
    name="probe",
    service_fields=ProbeServiceFields,
    sources=(ProbeSource,),
    migrations={"probe": store.MIGRATIONS},
    writers=store.WRITERS,
    provider=metrics.collect,
    prune=store.prune,
    sandbox=("exporter.domains.probe.sandbox",),
)
