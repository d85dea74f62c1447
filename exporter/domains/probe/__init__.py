"""Probe: synthetic HTTP, TCP and DNS checks of each service's endpoints; uptime, probe latency,
certificate expiry."""

from exporter.core.domain import Domain
from exporter.domains.probe import alerts, metrics, rollup, store
from exporter.domains.probe.settings import ProbeServiceFields
from exporter.domains.probe.sources.probe import ProbeSource

DOMAIN = Domain(
    name="probe",
    service_fields=ProbeServiceFields,
    sources=(ProbeSource,),
    migrations={"probe": store.MIGRATIONS},
    writers=store.WRITERS,
    provider=metrics.collect,
    reads=frozenset({"probe", "catalog"}),
    prune=store.prune,
    backfills=(rollup.BACKFILL,),
    alerts=alerts.rules,
    sandbox=("exporter.domains.probe.sandbox",),
)
