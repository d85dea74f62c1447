"""Catalog entities read from external service catalogs (Backstage), and platform template use.

A source hands over a :class:`~exporter.domains.catalog.records.CatalogListing`, the whole
catalog as it is now. The writer upserts every listed entity and deletes that
source's entities that are no longer listed, in the same transaction, so an
entity removed upstream drops out of every KPI on the next refresh. The first
time an entity was seen is kept across updates.

CI sources hand over :class:`~exporter.domains.catalog.records.TemplateUse` records (which
workflow files, reusable workflows or includes a service's runs used); only the
latest use of each is kept, which is what template adoption is judged on.

The daemon hands over :class:`~exporter.domains.catalog.records.CatalogServicesSeen` (the merged
catalog's services) at start and after each catalog poll; a service is
registered, and counted, the first time it appears.

:func:`load_catalog` merges the config's services with the stored entities (a
config is typed ``Any`` here: the config is built from the domains, so they cannot
name it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from exporter.core.catalog import (
    Catalog,
    CatalogEntity,
    log_conflicts,
    log_without_owner,
    merge,
)
from exporter.core.store import Store, Tx, Writer, write_records
from exporter.domains.catalog.records import CatalogListing, CatalogServicesSeen, TemplateUse
from exporter.domains.catalog.settings import CatalogSection

log = logging.getLogger("exporter.catalog")

MIGRATIONS = (
    """
    CREATE TABLE catalog_entities (
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        namespace TEXT NOT NULL,
        name TEXT NOT NULL,
        team TEXT NOT NULL,
        system TEXT NOT NULL,
        type TEXT NOT NULL,
        lifecycle TEXT NOT NULL,
        tags TEXT NOT NULL,
        annotations TEXT NOT NULL,
        repos TEXT NOT NULL,
        routes TEXT NOT NULL,
        cost_tags TEXT NOT NULL,
        registered_at REAL,
        first_seen REAL NOT NULL,
        PRIMARY KEY (source, kind, namespace, name)
    );
    CREATE TABLE catalog_listings (
        source TEXT PRIMARY KEY,
        listed_at REAL NOT NULL,
        entities INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE template_uses (
        service TEXT NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        last_at REAL NOT NULL,
        PRIMARY KEY (service, source, kind, ref)
    );
    CREATE INDEX template_uses_last ON template_uses (last_at);
    """,
    """
    CREATE TABLE catalog_registrations (
        service TEXT PRIMARY KEY,
        team TEXT NOT NULL,
        first_seen REAL NOT NULL
    );
    """,
    # The kind of an entity's owner ref; rows listed before say nothing, and an owner
    # ref's default kind is Group.
    """
    ALTER TABLE catalog_entities ADD COLUMN owner_kind TEXT NOT NULL DEFAULT 'group';
    UPDATE catalog_entities SET owner_kind = '' WHERE team = ''
    """,
)
# Services counted once, when the merged catalog first held them (by their team then).
REGISTERED_TOTAL = "platform_catalog_services_registered_total"

_COLUMNS = (
    "source",
    "kind",
    "namespace",
    "name",
    "team",
    "system",
    "type",
    "lifecycle",
    "owner_kind",
    "tags",
    "annotations",
    "repos",
    "routes",
    "cost_tags",
    "registered_at",
)


def _row(e: CatalogEntity) -> dict[str, object]:
    return {
        "source": e.source,
        "kind": e.kind,
        "namespace": e.namespace,
        "name": e.name,
        "team": e.team,
        "system": e.system,
        "type": e.type,
        "lifecycle": e.lifecycle,
        "owner_kind": e.owner_kind,
        "tags": json.dumps(list(e.tags)),
        "annotations": json.dumps(dict(e.annotations), sort_keys=True),
        "repos": json.dumps(list(e.repos)),
        "routes": json.dumps(list(e.routes)),
        "cost_tags": json.dumps(list(e.cost_tags)),
        "registered_at": e.registered_at,
    }


def write(tx: Tx, listings: Sequence[CatalogListing]) -> None:
    """Replace each listing's source's entities with the listed ones (each statement
    once for the listing, its rows in one batch)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[4:])
    differs = " OR ".join(f"catalog_entities.{c} IS NOT excluded.{c}" for c in _COLUMNS[4:])
    # first_seen is set on insert only: an update keeps when we first saw it. An entity
    # listed as it was is not updated, so a listing that changed nothing changes no row
    # the providers read.
    upsert = (
        f"INSERT INTO catalog_entities ({', '.join(_COLUMNS)}, first_seen) "
        f"VALUES ({', '.join('?' for _ in _COLUMNS)}, ?) "
        f"ON CONFLICT (source, kind, namespace, name) DO UPDATE SET {updates} "
        f"WHERE {differs}"
    )
    for listing in listings:
        keep: set[tuple[str, str, str]] = set()
        rows = []
        for entity in listing.entities:
            if entity.source != listing.source:
                raise ValueError(f"entity {entity.key} listed by source {listing.source}")
            keep.add((entity.kind, entity.namespace, entity.name))
            row = _row(entity)
            rows.append((*(row[c] for c in _COLUMNS), listing.listed_at))
        tx.executemany(upsert, rows)
        gone = [
            (listing.source, kind, namespace, name)
            for kind, namespace, name in tx.execute(
                "SELECT kind, namespace, name FROM catalog_entities WHERE source = ?",
                (listing.source,),
            ).fetchall()
            if (kind, namespace, name) not in keep
        ]
        tx.executemany(
            "DELETE FROM catalog_entities WHERE source = ? AND kind = ? AND namespace = ? "
            "AND name = ?",
            gone,
        )
        # When the source last listed (its freshness, for the review) moves at every poll;
        # no provider renders it, so it alone is no change to recompute for.
        tx.execute_bookkeeping(
            "INSERT INTO catalog_listings (source, listed_at, entities) VALUES (?, ?, ?) "
            "ON CONFLICT (source) DO UPDATE SET listed_at = excluded.listed_at, "
            "entities = excluded.entities",
            (listing.source, listing.listed_at, len(listing.entities)),
        )


def write_template_uses(tx: Tx, uses: Sequence[TemplateUse]) -> None:
    """Keep the latest use of each (service, source, kind, ref); replays change nothing.
    The batch's latest use of each is written, all in one batch of statements."""
    latest: dict[tuple[str, str, str, str], float] = {}
    for u in uses:
        key = (u.service, u.source, u.kind, u.ref[:300])
        latest[key] = max(latest.get(key, u.at), u.at)
    tx.write_many_later(
        "INSERT INTO template_uses (service, source, kind, ref, last_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (service, source, kind, ref) DO UPDATE SET "
        "last_at = max(last_at, excluded.last_at)",
        [(*key, at) for key, at in latest.items()],
    )


def write_services_seen(tx: Tx, batch: Sequence[CatalogServicesSeen]) -> None:
    """Register the services never seen before and count each once; later sightings,
    a removal and a return included, change nothing."""
    known = {str(r[0]) for r in tx.execute("SELECT service FROM catalog_registrations")}
    rows = []
    for seen in batch:
        for name, team in seen.services:
            if name in known:
                continue
            known.add(name)
            rows.append({"service": name, "team": team, "first_seen": seen.seen_at})
            tx.incr(REGISTERED_TOTAL, {"team": team})
    tx.insert_new_many("catalog_registrations", rows, ("service",))


def template_uses(store: Store, since: float) -> list[tuple[str, str, str, float]]:
    """(service, kind, ref, last use) for definitions last used after ``since``, over sources."""
    if not store.has_table("template_uses"):
        return []
    rows = store.query(
        "SELECT service, kind, ref, MAX(last_at) FROM template_uses WHERE last_at > ? "
        "GROUP BY service, kind, ref",
        (since,),
    )
    return [(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]


def entities(store: Store) -> list[CatalogEntity]:
    """Every stored entity, ordered by source, kind, namespace and name.

    A store opened without this domain's tables has no entities.
    """
    if not store.has_table("catalog_entities"):
        return []
    rows = store.query(
        f"SELECT {', '.join(_COLUMNS)} FROM catalog_entities ORDER BY source, kind, namespace, name"
    )
    return [
        CatalogEntity(
            source=str(r["source"]),
            kind=str(r["kind"]),
            namespace=str(r["namespace"]),
            name=str(r["name"]),
            team=str(r["team"]),
            system=str(r["system"]),
            type=str(r["type"]),
            lifecycle=str(r["lifecycle"]),
            owner_kind=str(r["owner_kind"]),
            tags=tuple(json.loads(r["tags"])),
            annotations=tuple(sorted(json.loads(r["annotations"]).items())),
            repos=tuple(json.loads(r["repos"])),
            routes=tuple(json.loads(r["routes"])),
            cost_tags=tuple(json.loads(r["cost_tags"])),
            registered_at=None if r["registered_at"] is None else float(r["registered_at"]),
        )
        for r in rows
    ]


def listings(store: Store) -> dict[str, tuple[float, int]]:
    """When each catalog source last listed its catalog, and how many entities it held
    (none in a store opened without this domain's tables)."""
    if not store.has_table("catalog_listings"):
        return {}
    rows = store.query("SELECT source, listed_at, entities FROM catalog_listings")
    return {str(r[0]): (float(r[1]), int(r[2])) for r in rows}


def _enabled(config: Any, kind: str) -> bool:
    block = getattr(config.sources, kind, None)
    return block is not None and bool(block.enabled)


def load_catalog(config: Any, store: Store) -> Catalog:
    """The merged catalog from the config and the stored entities of enabled catalog sources.

    Entities stored by a catalog source that has since been removed from the config
    (or disabled) are ignored, so they leave the metrics with it.
    """
    found = [e for e in entities(store) if _enabled(config, e.source)]
    settings = CatalogSection.of(config).catalog
    catalog = merge(
        config.services,
        found,
        lifecycles=frozenset(settings.lifecycles),
        owner_kinds=frozenset(settings.owner_kinds),
    )
    log_conflicts(catalog.conflicts)
    log_without_owner(catalog)
    return catalog


def record_services(config: Any, store: Store, now: float) -> None:
    """Store the merged catalog's services, so each is counted once when first seen.

    A store without the catalog domain's tables records nothing.
    """
    if not store.has_table("catalog_registrations"):
        log.debug("no catalog tables in this store; services not recorded")
        return
    catalog = load_catalog(config, store)
    seen = CatalogServicesSeen(now, tuple((s.name, s.team) for s in catalog.services.values()))
    with store.transaction() as tx:
        write_records(tx, [seen])


WRITERS: dict[type, Writer] = {
    CatalogListing: write,
    TemplateUse: write_template_uses,
    CatalogServicesSeen: write_services_seen,
}
