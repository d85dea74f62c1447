"""The service catalog every KPI joins on: the config's ``services`` merged with external catalogs.

The config is the primary catalog. Components read from Backstage (stored by
:mod:`exporter.domains.catalog.store`) add the services the config does not list, and
fill in what a config service leaves empty (registration time, tags,
annotations, repos, routes, cost tags). Where both give a value and they
differ, the config wins and the conflict is logged once per process; a repo
that a service's ``ci`` refs claim (exactly or by pattern) stays with that
service, and an annotation naming it for another service is such a conflict.
Backstage groups add teams that may own no service yet.

:func:`merge` is pure; :func:`exporter.domains.catalog.store.load_catalog` reads the
store and logs new conflicts.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.core.settings import ServiceBase

log = logging.getLogger("exporter.catalog")

UNKNOWN_TEAM = "unknown"
# The team of a service whose owner is no team (nobody, or a user): in no team's figures.
NO_OWNER = ""
CONFIG = "config"


@dataclass(frozen=True, slots=True)
class CatalogEntity:
    """One entity of an external service catalog (a Backstage Component, System or Group).

    ``team`` is the name part of the owner's entity ref; ``repos`` are
    ``github:owner/repo`` or ``gitlab:group/project``; ``routes`` and
    ``cost_tags`` come from the configured annotation keys.
    """

    source: str
    kind: str  # "component", "system" or "group"
    namespace: str
    name: str
    team: str
    owner_kind: str = "group"  # the kind of the owner's entity ref ("group", "user"); "" if none
    system: str = ""
    type: str = ""
    lifecycle: str = ""
    tags: tuple[str, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    repos: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    cost_tags: tuple[str, ...] = ()
    registered_at: float | None = None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.kind}:{self.namespace}/{self.name}"


@dataclass(frozen=True)
class CatalogService:
    """One service of the merged catalog."""

    name: str
    team: str
    source: str  # "config", or the external catalog that added it ("backstage")
    system: str = ""
    tags: frozenset[str] = frozenset()
    annotations: Mapping[str, str] = field(default_factory=dict)
    repos: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    cost_tags: tuple[str, ...] = ()
    registered_at: float | None = None
    has_probes: bool = False


@dataclass(frozen=True)
class Conflict:
    """The config and an external catalog disagree about a service's field; the config won."""

    service: str
    field: str
    config_value: str
    catalog_value: str
    source: str

    def message(self) -> str:
        return (
            f"catalog conflict for service {self.service}: {self.field} is "
            f"{self.config_value!r} in the config but {self.catalog_value!r} in {self.source}; "
            "using the config"
        )


@dataclass(frozen=True)
class Catalog:
    """Services by name, the teams that exist, and the conflicts found while merging."""

    services: Mapping[str, CatalogService]
    teams: frozenset[str]
    conflicts: tuple[Conflict, ...] = ()

    def team_of(self, service: str) -> str:
        svc = self.services.get(service)
        return svc.team if svc else UNKNOWN_TEAM

    def services_of(self, team: str) -> list[str]:
        return sorted(s.name for s in self.services.values() if s.team == team)

    def owning_teams(self, services: Iterable[str]) -> frozenset[str]:
        """The teams that own any of ``services``; a service without owner adds none."""
        return frozenset(t for t in map(self.team_of, services) if t != NO_OWNER)

    @property
    def without_owner(self) -> list[str]:
        """The services no team owns (see ``catalog.owner_kinds``), in name order."""
        return sorted(s.name for s in self.services.values() if s.team == NO_OWNER)


def _config_service(svc: ServiceBase) -> CatalogService:
    fields: dict[str, Any] = svc.catalog_fields()
    return CatalogService(name=svc.name, team=svc.team, source=CONFIG, **fields)


def _fmt(value: object) -> str:
    if isinstance(value, frozenset | set):
        return ",".join(sorted(value))
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)


def merge(
    config_services: Sequence[ServiceBase],
    entities: Iterable[CatalogEntity],
    *,
    lifecycles: Collection[str] = (),
    owner_kinds: Collection[str] = ("group",),
) -> Catalog:
    """The merged catalog: config services first, then external components; config wins.

    Only components whose lifecycle is one of ``lifecycles`` (all when empty; a
    component that states none counts) are services. A component owned by no entity
    of ``owner_kinds`` is a service without owner (team :data:`NO_OWNER`).
    """
    services: dict[str, CatalogService] = {s.name: _config_service(s) for s in config_services}
    teams: set[str] = {s.team for s in services.values()}
    conflicts: list[Conflict] = []
    components = _components(entities, lifecycles, teams, conflicts)
    claims = repo_claims(config_services)
    for name, entity in components.items():
        repos = _unclaimed_repos(claims, name, entity, conflicts)
        team = entity.team if entity.team and entity.owner_kind in owner_kinds else NO_OWNER
        from_catalog = CatalogService(
            name=name,
            team=team,
            source=entity.source,
            system=entity.system,
            tags=frozenset(entity.tags),
            annotations=dict(entity.annotations),
            repos=repos,
            routes=entity.routes,
            cost_tags=entity.cost_tags,
            registered_at=entity.registered_at,
        )
        own = services.get(name)
        if own is None:
            services[name] = from_catalog
            if team != NO_OWNER:
                teams.add(team)
            continue
        changes: dict[str, object] = {"system": entity.system}
        for fname in ("team", "registered_at", "tags", "repos", "routes", "cost_tags"):
            mine, theirs = getattr(own, fname), getattr(from_catalog, fname)
            if fname == "team" and team == NO_OWNER:
                continue
            if mine in (None, (), frozenset()):
                changes[fname] = theirs
            elif theirs not in (None, (), frozenset()) and mine != theirs:
                conflicts.append(Conflict(name, fname, _fmt(mine), _fmt(theirs), entity.source))
        annotations = dict(from_catalog.annotations)
        for key, value in own.annotations.items():
            if key in annotations and annotations[key] != value:
                conflicts.append(
                    Conflict(name, f"annotation {key}", value, annotations[key], entity.source)
                )
            annotations[key] = value
        changes["annotations"] = annotations
        services[name] = _replace(own, changes)
    return Catalog(
        services=dict(sorted(services.items())), teams=frozenset(teams), conflicts=tuple(conflicts)
    )


def _components(
    entities: Iterable[CatalogEntity],
    lifecycles: Collection[str],
    teams: set[str],
    conflicts: list[Conflict],
) -> dict[str, CatalogEntity]:
    """The components that count, by name; groups are added to ``teams``."""
    components: dict[str, CatalogEntity] = {}
    # The default namespace first, so a name that exists in several namespaces resolves stably.
    ordered = sorted(entities, key=lambda e: (e.namespace != "default", e.namespace, e.name))
    for entity in ordered:
        if entity.kind == "group":
            teams.add(entity.name)
            continue
        if entity.kind != "component":
            continue
        if lifecycles and entity.lifecycle and entity.lifecycle not in lifecycles:
            continue
        if entity.name in components:
            first = components[entity.name]
            conflicts.append(
                Conflict(entity.name, "namespace", first.namespace, entity.namespace, entity.source)
            )
            continue
        components[entity.name] = entity
    return components


def _unclaimed_repos(
    claims: Callable[[str], str | None],
    name: str,
    entity: CatalogEntity,
    conflicts: list[Conflict],
) -> tuple[str, ...]:
    """The entity's repos that no other service's ``ci`` refs claim: the config wins a repo."""
    kept: list[str] = []
    for repo in entity.repos:
        owner = claims(repo)
        if owner is not None and owner != name:
            conflicts.append(Conflict(name, f"owner of repo {repo}", owner, name, entity.source))
            continue
        kept.append(repo)
    return tuple(kept)


def _replace(svc: CatalogService, changes: Mapping[str, object]) -> CatalogService:
    import dataclasses

    return dataclasses.replace(svc, **changes)  # type: ignore[arg-type]


_logged: set[Conflict] = set()
_logged_lock = threading.Lock()


def log_conflicts(conflicts: Iterable[Conflict]) -> int:
    """Log each conflict the first time this process sees it; return how many were new."""
    new = 0
    with _logged_lock:
        for conflict in conflicts:
            if conflict not in _logged:
                _logged.add(conflict)
                log.warning("%s", conflict.message())
                new += 1
    return new


_ownerless_logged: set[str] = set()


def log_without_owner(catalog: Catalog) -> int:
    """Log, once per process, the services that became services without owner; return
    how many were new."""
    with _logged_lock:
        new = [n for n in catalog.without_owner if n not in _ownerless_logged]
        _ownerless_logged.update(new)
    if new:
        log.warning(
            "services without owner (counted as services, in no team's figures): %s",
            ", ".join(new),
        )
    return len(new)


def repo_index(catalog: Catalog) -> dict[str, str]:
    """``github:owner/repo`` / ``gitlab:group/project`` -> service, for sources that map repos."""
    out: dict[str, str] = {}
    for name, svc in catalog.services.items():
        for repo in svc.repos:
            out.setdefault(repo.lower(), name)
    return out


def route_index(catalog: Catalog) -> dict[str, str]:
    """Gateway route (or service) name -> service, for gateway sources that map routes."""
    out: dict[str, str] = {}
    for name, svc in catalog.services.items():
        for route in svc.routes:
            out.setdefault(route, name)
    return out


def is_pattern(text: str) -> bool:
    """True when ``text`` holds a shell wildcard (``*``, ``?`` or ``[``)."""
    return any(c in text for c in "*?[")


def repo_claims(config_services: Sequence[ServiceBase]) -> Callable[[str], str | None]:
    """``kind:name`` -> the config service whose ``ci`` refs claim that repo (exact refs
    before patterns), with the exact refs indexed once."""
    exact: dict[tuple[str, str], str] = {}
    patterns: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    for svc in config_services:
        for kind, pattern in svc.repo_refs():
            if is_pattern(pattern):
                rx = re.compile(fnmatch.translate(pattern.lower()))
                patterns.setdefault(kind, []).append((svc.name, rx))
            else:
                exact.setdefault((kind, pattern.lower()), svc.name)
    # One alternation per kind rejects a name no pattern matches in a single pass.
    any_of = {
        kind: re.compile("|".join(f"(?:{rx.pattern})" for _, rx in pats))
        for kind, pats in patterns.items()
    }

    def owner(repo: str) -> str | None:
        kind, _, name = repo.partition(":")
        lowered = name.lower()
        found = exact.get((kind, lowered))
        if found is None and kind in any_of and any_of[kind].match(lowered):
            found = next(s for s, rx in patterns[kind] if rx.match(lowered))
        return found

    return owner
