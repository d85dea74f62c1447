"""Which service stored cost belongs to, under the catalog as it is now.

Cost sources store each day's cost under the attribution key of its lines (see
:class:`~exporter.domains.cost.allocation.CostKey`) and the service that key resolved to
when it was read. :func:`refresh` runs at start and after every poll of a catalog or
cost source: it resolves every stored key again with the config's rules and the merged
catalog's cost tags, and moves those whose service or team changed (a tag newly
claimed, a service renamed, a component removed). Every cost KPI reads through that
attribution, so it is corrected from the next refresh on, without asking the bill
again. A pinned key (cost stored before keys were) keeps its service; its team follows
the catalog.
"""

from __future__ import annotations

import logging

from exporter.core.redact import excerpt
from exporter.core.settings import ConfigBase
from exporter.core.store import Store
from exporter.domains.catalog.store import load_catalog
from exporter.domains.cost import store as cost_store
from exporter.domains.cost.allocation import UNALLOCATED, allocator_for, parse_key

log = logging.getLogger("exporter.cost")
# How many moved keys a log line names; the rest are counted.
_NAMED = 5


def refresh(config: ConfigBase, store: Store, now: float) -> None:
    """Drop the keys no stored cost is under any more; re-resolve every other stored
    attribution key; log what moved."""
    cost_store.prune_idents(store)
    stored = cost_store.attributions(store)
    if not stored:
        return
    catalog = load_catalog(config, store)
    allocator = allocator_for(config, catalog)
    teams = {name: svc.team for name, svc in catalog.services.items()}
    changes: list[tuple[str, str, str]] = []
    for ident, service, team in stored:
        key = parse_key(ident)
        if isinstance(key, str):
            new = (key, UNALLOCATED if key == UNALLOCATED else teams.get(key, team))
        else:
            new = allocator.resolve(key)
        if new != (service, team):
            changes.append((ident, *new))
    if not changes:
        return
    cost_store.reattribute(store, changes)
    old = {ident: service for ident, service, _ in stored}
    named = ", ".join(
        f"{excerpt(ident, 120)}: {old[ident]} -> {service}/{team}"
        for ident, service, team in changes[:_NAMED]
    )
    more = f" and {len(changes) - _NAMED} more" if len(changes) > _NAMED else ""
    log.info("cost re-attributed after a catalog change: %s%s", named, more)
