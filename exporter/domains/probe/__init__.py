"""Probe: synthetic HTTP, TCP and DNS checks of each service's endpoints; uptime, probe latency,
certificate expiry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.domain import Domain, Parts, SourceRef, Tables

if TYPE_CHECKING:
    from exporter.core.source import Source


def _parts() -> Parts:
    from exporter.domains.probe import alerts, metrics
    from exporter.domains.probe.settings import ProbeServiceFields

    return Parts(service_fields=ProbeServiceFields, provider=metrics.collect, alerts=alerts.rules)


def _tables() -> Tables:
    from exporter.domains.probe import rollup, store

    return Tables(
        migrations={"probe": store.MIGRATIONS},
        writers=store.WRITERS,
        prune=store.prune,
        backfills=(rollup.BACKFILL,),
    )


def _probe() -> type[Source]:
    from exporter.domains.probe.sources.probe import ProbeSource

    return ProbeSource


DOMAIN = Domain(
    name="probe",
    parts=_parts,
    tables=_tables,
    service_keys=("probes",),
    refs=(SourceRef("probe", _probe),),
    always=True,  # its source is on by default
    reads=frozenset({"probe", "catalog"}),
    sandbox=("exporter.domains.probe.sandbox",),
)
