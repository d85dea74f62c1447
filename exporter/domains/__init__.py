"""Every domain, and what the daemon, the report and the tests ask of all of them at once.

:func:`domains` lists them in the config's order: the daemon builds sources in it,
and ``sources:`` lists its blocks in it. A new domain is one line there; a new
source of a domain touches that domain's folder only.

Everything here is imported inside the functions: importing any domain module runs
this package's ``__init__`` first, so a module-level import of the domains here
would re-enter half-initialised modules. A config is typed ``Any`` here: this
package is below the config (the config is built from the domains), so it cannot
name it.

A config uses only some domains (:func:`needed`): the config model is assembled from
those (see :func:`exporter.config.load_config`) and the daemon imports, builds and renders
only them (:func:`of`); each helper takes the domains to work on, every domain by
default. A declaration is cheap: a domain's modules are imported on its first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
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


# The keys of the config and of a service that belong to no domain.
_CORE_KEYS = frozenset({"server", "state", "metrics", "services", "sources"})
_SERVICE_CORE_KEYS = frozenset({"name", "team"})


def _given(data: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[set[str], bool]:
    """The keys ``data`` and the environment's ``PLATFORM_KPI_...`` overrides give, as
    ``key``, ``sources.<kind>`` and ``services.<key>``; and whether some given value
    cannot be told apart that way (the environment setting a whole ``sources`` or
    ``services`` as JSON), which takes every domain."""
    given = {k for k in data if isinstance(k, str)} - _CORE_KEYS
    sources = data.get("sources")
    if isinstance(sources, Mapping):
        given |= {f"sources.{k}" for k in sources}
    services = data.get("services")
    for svc in services if isinstance(services, list) else ():
        if isinstance(svc, Mapping):
            given |= {f"services.{k}" for k in svc if k not in _SERVICE_CORE_KEYS}
    from exporter.core.settings import ENV_PREFIX

    whole = False
    for name in environ:
        if not name.lower().startswith(ENV_PREFIX.lower()):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path[0] in ("sources", "services"):
            whole |= len(path) == 1
            given |= {f"sources.{path[1]}"} if path[0] == "sources" and len(path) > 1 else set()
        elif path[0] not in _CORE_KEYS:
            given.add(path[0])
    return given, whole


def needed(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> tuple[Domain, ...]:
    """The domains a config of this (raw, unvalidated) data uses, in the config's order:
    those used by every config, those giving one of its keys (a top-level key, a source
    block, a ``services[]`` key; the environment's overrides included), and those their
    providers read. A key no domain answers for takes none: validation rejects it."""
    given, whole = _given(data, os.environ if environ is None else environ)
    if whole:
        return domains()
    names = {
        d.name
        for d in domains()
        if d.always
        or given & set(d.keys)
        or given & {f"sources.{r.kind}" for r in d.refs}
        or given & {f"services.{k}" for k in d.service_keys}
    }
    by_name = {d.name: d for d in domains()}
    todo = list(names)
    while todo:
        for read in by_name[todo.pop()].reads or ():
            owner = read if read in by_name else _view_owner(read)
            if owner not in names:
                names.add(owner)
                todo.append(owner)
    return tuple(d for d in domains() if d.name in names)


def _view_owner(view: str) -> str:
    """The domain declaring the view ``view`` of its data (see ``Tables.views``)."""
    for d in domains():
        if view in d.views:
            return d.name
    raise LookupError(f"no domain declares the input {view!r}")


def of(config: Any) -> tuple[Domain, ...]:
    """The domains ``config`` was assembled from (every domain for the whole model)."""
    names = getattr(config, "domain_names", None)
    return domains() if names is None else tuple(d for d in domains() if d.name in names)


def _chosen(among: Iterable[Domain] | None) -> tuple[Domain, ...]:
    return domains() if among is None else tuple(among)


def source_classes(among: Iterable[Domain] | None = None) -> dict[str, type[Source]]:
    """The source classes of these domains (every domain's by default) by kind, in the
    config's order (the order of ``sources:``)."""
    return _source_classes(_chosen(among))


@cache
def _source_classes(among: tuple[Domain, ...]) -> dict[str, type[Source]]:
    return {cls.kind: cls for d in among for cls in d.sources}


def schema(among: Iterable[Domain] | None = None) -> Schema:
    """These domains' tables and record writers (every domain's by default). Components
    migrate in name order."""
    return _schema(_chosen(among))


@cache
def _schema(among: tuple[Domain, ...]) -> Schema:
    from exporter.core.store import Schema

    by_name = sorted(among, key=lambda d: d.name)
    return Schema.build(
        [(c, m) for d in by_name for c, m in d.migrations.items()], [d.writers for d in by_name]
    )


def open_store(
    path: str | Path | PostgresTarget,
    clock: Clock = system_clock,
    *,
    busy_timeout: float = 5.0,
    among: Iterable[Domain] | None = None,
) -> Store:
    """Open the database (a SQLite file, or PostgreSQL) and bring these domains' schema
    (every domain's by default) up to date."""
    from exporter.core.store import Store

    return Store(path, clock, schema(among), busy_timeout=busy_timeout)


def providers(
    *, live: bool = True, among: Iterable[Domain] | None = None
) -> dict[str, ProviderSpec]:
    """Every provider (of these domains; every domain's by default), by name, with what it
    reads: the exporter's own health first, then the domains' in name order, then the
    process's own resources unless ``live`` is false (a report of the stored history is
    not about the process printing it)."""
    from exporter.core import runtime, self_health
    from exporter.core.provider import HEALTH, ProviderSpec

    found: dict[str, ProviderSpec] = {
        "self_health": ProviderSpec(
            "self_health", self_health.collect, frozenset({HEALTH}), time_driven=False
        )
    }
    for d in sorted(_chosen(among), key=lambda d: d.name):
        if d.provider is not None:
            found[d.name] = ProviderSpec(d.name, d.provider, d.reads, d.time_driven)
    if live:
        # It reads no stored data: its values (CPU, memory) move only as time passes.
        found["runtime"] = ProviderSpec("runtime", runtime.collect, frozenset())
    return found


def written_by(source: type[Source], among: Iterable[Domain] | None = None) -> frozenset[str]:
    """The domains (of these; every domain by default) whose stored data a poll of
    ``source`` may change: the domain that declares it and those whose writers store the
    records it produces."""
    chosen = _chosen(among)
    out = {d.name for d in chosen if source.kind in {r.kind for r in d.refs}}
    out |= {d.name for d in chosen if set(d.writers) & set(source.produces)}
    return frozenset(out)


def webhook_endpoints(config: Any) -> list[Endpoint]:
    """Every enabled webhook endpoint the domains declare under this config, each with the
    domains its records change (its own, and those whose writers store them)."""
    from dataclasses import replace

    out: list[Endpoint] = []
    used = of(config)
    for d in used:
        for endpoint in d.webhooks(config) if d.webhooks is not None else ():
            if not endpoint.settings.enabled:
                continue
            writes = {d.name} | {o.name for o in used if set(o.writers) & set(endpoint.produces)}
            out.append(replace(endpoint, writes=frozenset(writes)))
    names = [e.name for e in out]
    if len(names) != len(set(names)):
        raise ValueError(f"two webhook endpoints share a name: {sorted(names)}")
    return out


def source_infos(config: Any) -> tuple[SourceInfo, ...]:
    """What providers may know of every source kind under this config, in the config's order."""
    from exporter.core.provider import SourceInfo

    out = []
    for kind, cls in source_classes(of(config)).items():
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
    for d in of(config):
        if d.load_catalog is not None:
            return d.load_catalog(config, store)
    raise LookupError("no domain provides the service catalog")
