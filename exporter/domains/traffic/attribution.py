"""Which service stored traffic belongs to, under the catalog as it is now.

Gateway sources store traffic under its upstream identity (see
:mod:`exporter.domains.traffic.routes`) and the service that identity resolved to when
it was read. :func:`refresh` runs at start and after every poll of a catalog or gateway
source: it resolves every stored identity again against the merged catalog and moves
those whose service changed (a route newly claimed, a service renamed, a component
removed). Every windowed KPI reads through that attribution, so it is corrected from
the next refresh on, whatever the order in which the catalog and the traffic arrived.
"""

from __future__ import annotations

import logging
from typing import Any

from exporter.core.redact import excerpt
from exporter.core.store import Store
from exporter.domains.catalog.store import load_catalog
from exporter.domains.traffic import rollup
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.routes import RouteMap

log = logging.getLogger("exporter.traffic")
# How many moved identities a log line names; the rest are counted.
_NAMED = 5


def refresh(config: Any, store: Store, now: float) -> None:
    """Re-resolve every stored gateway identity; log what moved. Then build one batch of
    the hour buckets of an upgraded database, if any is left (see
    :func:`~exporter.domains.traffic.rollup.backfill_step`)."""
    _reattribute(config, store)
    if rollup.backfill_pending(store):
        rollup.backfill_step(store, now)


def _reattribute(config: Any, store: Store) -> None:
    stored = traffic_store.attributions(store)
    if not stored:
        return
    routes = RouteMap(config, load_catalog(config, store))
    changes = [
        (source, ident, new)
        for source, ident, old in stored
        if (new := routes.resolve(ident)) != old
    ]
    if not changes:
        return
    traffic_store.reattribute(store, changes)
    old_of = {(s, i): old for s, i, old in stored}
    named = ", ".join(
        f"{excerpt(ident, 80)!r} ({source}): {old_of[(source, ident)]} -> {new}"
        for source, ident, new in changes[:_NAMED]
    )
    more = f" and {len(changes) - _NAMED} more" if len(changes) > _NAMED else ""
    log.info("traffic re-attributed after a catalog change: %s%s", named, more)
