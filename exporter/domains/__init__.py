"""Every domain, and what the daemon, the report and the tests ask of all of them at once.

:func:`domains` lists them in the config's order: the daemon builds sources in it,
and ``sources:`` lists its blocks in it. A new domain is one line there; a new
source of a domain touches that domain's folder only.

Everything here is imported inside the functions: importing any domain module runs
this package's ``__init__`` first, so a module-level import of the domains here
would re-enter half-initialised modules. A config is typed ``Any`` here: this
package is below the config (the config is built from the domains), so it cannot
name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from exporter.core.clock import Clock, system_clock

if TYPE_CHECKING:
    from pathlib import Path

    from exporter.core.backend import PostgresTarget
    from exporter.core.catalog import Catalog
    from exporter.core.domain import Domain
    from exporter.core.health import SourceHealth
    from exporter.core.provider import ProviderSpec, RenderContext, SourceInfo
    from exporter.core.source import Source
    from exporter.core.store import Schema, Store
    from exporter.core.webhooks import Endpoint


@cache
def domains() -> tuple[Domain, ...]:
    """Every domain, in the config's order."""
    from exporter.domains import adoption, catalog, cost, delivery, incident, probe, slo, traffic

    return (
        probe.DOMAIN,
        cost.DOMAIN,
        catalog.DOMAIN,
        traffic.DOMAIN,
        slo.DOMAIN,
        adoption.DOMAIN,
        delivery.DOMAIN,
        incident.DOMAIN,
    )


@cache
def source_classes() -> dict[str, type[Source]]:
    """Every source class by its kind, in the config's order (the order of ``sources:``)."""
    return {cls.kind: cls for d in domains() for cls in d.sources}


@cache
def schema() -> Schema:
    """Every domain's tables and record writers. Components migrate in name order."""
    from exporter.core.store import Schema

    by_name = sorted(domains(), key=lambda d: d.name)
    return Schema.build(
        [(c, m) for d in by_name for c, m in d.migrations.items()], [d.writers for d in by_name]
    )


def open_store(
    path: str | Path | PostgresTarget, clock: Clock = system_clock, *, busy_timeout: float = 5.0
) -> Store:
    """Open the database (a SQLite file, or PostgreSQL) and bring every domain's schema up
    to date."""
    from exporter.core.store import Store

    return Store(path, clock, schema(), busy_timeout=busy_timeout)


def providers(*, live: bool = True) -> dict[str, ProviderSpec]:
    """Every provider, by name, with what it reads: the exporter's own health first, then
    the domains' in name order, then the process's own resources unless ``live`` is false
    (a report of the stored history is not about the process printing it)."""
    from exporter.core import runtime, self_health
    from exporter.core.provider import HEALTH, ProviderSpec

    found: dict[str, ProviderSpec] = {
        "self_health": ProviderSpec(
            "self_health", self_health.collect, frozenset({HEALTH}), time_driven=False
        )
    }
    for d in sorted(domains(), key=lambda d: d.name):
        if d.provider is not None:
            found[d.name] = ProviderSpec(d.name, d.provider, d.reads, d.time_driven)
    if live:
        # It reads no stored data: its values (CPU, memory) move only as time passes.
        found["runtime"] = ProviderSpec("runtime", runtime.collect, frozenset())
    return found


def written_by(source: type[Source]) -> frozenset[str]:
    """The domains whose stored data a poll of ``source`` may change: the domain that
    declares it and those whose writers store the records it produces."""
    out = {d.name for d in domains() if source in d.sources}
    out |= {d.name for d in domains() if set(d.writers) & set(source.produces)}
    return frozenset(out)


def webhook_endpoints(config: Any) -> list[Endpoint]:
    """Every enabled webhook endpoint the domains declare under this config, each with the
    domains its records change (its own, and those whose writers store them)."""
    from dataclasses import replace

    out: list[Endpoint] = []
    for d in domains():
        for endpoint in d.webhooks(config) if d.webhooks is not None else ():
            if not endpoint.settings.enabled:
                continue
            writes = {d.name} | {
                o.name for o in domains() if set(o.writers) & set(endpoint.produces)
            }
            out.append(replace(endpoint, writes=frozenset(writes)))
    names = [e.name for e in out]
    if len(names) != len(set(names)):
        raise ValueError(f"two webhook endpoints share a name: {sorted(names)}")
    return out


def source_infos(config: Any) -> tuple[SourceInfo, ...]:
    """What providers may know of every source kind under this config, in the config's order."""
    from exporter.core.provider import SourceInfo

    out = []
    for kind, cls in source_classes().items():
        settings = getattr(config.sources, kind, None)
        enabled = settings is not None and bool(settings.enabled)
        out.append(SourceInfo(kind, frozenset(cls.produces), frozenset(cls.tags), enabled))
    return tuple(out)


def render_context(
    config: Any,
    store: Store,
    now: float,
    health: Sequence[SourceHealth] = (),
    infos: Sequence[SourceInfo] | None = None,
    min_refresh: float = 15.0,
) -> RenderContext:
    """What the providers read for one rendering: committed state at ``now``."""
    from exporter.core.provider import RenderContext

    sources = source_infos(config) if infos is None else infos
    return RenderContext(
        config=config,
        store=store,
        health=health,
        now=now,
        sources=sources,
        catalog_loader=lambda: load_catalog(config, store),
        min_refresh=min_refresh,
    )


def load_catalog(config: Any, store: Store) -> Catalog:
    """The merged service catalog, from the domain that provides it."""
    for d in domains():
        if d.load_catalog is not None:
            return d.load_catalog(config, store)
    raise LookupError("no domain provides the service catalog")
