"""What the billing sources share: the allocator built from the service catalog."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from exporter.core.settings import ConfigBase
from exporter.domains.cost.kpis import Allocator, ServiceRule
from exporter.domains.cost.settings import CostServiceFields

if TYPE_CHECKING:
    from exporter.core.catalog import Catalog
    from exporter.core.store import Store


def parse_cost_tags(items: Iterable[str]) -> dict[str, str]:
    """``key=value`` strings (catalog annotations) as a tag mapping; others are ignored."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if sep and key.strip() and value.strip():
            out.setdefault(key.strip(), value.strip())
    return out


def allocator_for(config: ConfigBase, catalog: Catalog | None = None) -> Allocator:
    """The allocation rules of every service that declares a ``cost`` block, then (with a
    merged ``catalog``) the cost tags an external catalog gives the other services."""
    rules = [
        ServiceRule(
            service=s.name,
            team=s.team,
            tags=dict(cost.tags),
            resources=tuple(cost.resources),
            accounts=tuple(cost.accounts),
            shared=cost.shared,
        )
        for s in config.services
        if (cost := CostServiceFields.of(s).cost) is not None
    ]
    if catalog is not None:
        claimed = {r.service for r in rules}
        for svc in catalog.services.values():
            tags = parse_cost_tags(svc.cost_tags)
            if svc.name not in claimed and tags:
                rules.append(ServiceRule(service=svc.name, team=svc.team, tags=tags))
    return Allocator(rules)


def current_allocator(config: ConfigBase, store: Store) -> Allocator:
    """The allocator for this poll: the config plus the stored external catalog."""
    from exporter.domains.catalog.store import load_catalog

    return allocator_for(config, load_catalog(config, store))
