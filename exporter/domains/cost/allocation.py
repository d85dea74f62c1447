"""Cost allocation: which service (and team) a billing line belongs to, by the rules the
service catalog declares, and the allocator the billing sources build from it.

Tags are tried first, then resource patterns, then account patterns (see
:class:`Allocator`); what nothing claims is ``unallocated``, never dropped.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from exporter.core.settings import ConfigBase
from exporter.domains.cost.kpis import UNALLOCATED as UNALLOCATED  # what nothing claims
from exporter.domains.cost.settings import CostServiceFields

if TYPE_CHECKING:
    from exporter.core.catalog import Catalog
    from exporter.core.store import Store


@dataclass(frozen=True)
class ServiceRule:
    """How one service claims cost lines; built from the service catalog."""

    service: str
    team: str
    tags: Mapping[str, str] = field(default_factory=dict)
    resources: Sequence[str] = ()
    accounts: Sequence[str] = ()
    shared: bool = False


def _glob_regex(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


class Allocator:
    """Maps a billing line (tags, account, resource) to (service, team).

    Tags are tried first (any configured key=value present on the line), then
    resource patterns, then account patterns; within each step the first service
    in catalog order wins. A line nothing claims goes to ``unallocated``, with
    the team ``unallocated``: it is never dropped.
    """

    def __init__(self, rules: Sequence[ServiceRule]) -> None:
        self.rules = tuple(rules)
        self._tags: dict[tuple[str, str], int] = {}
        for i, rule in enumerate(self.rules):
            for k, v in rule.tags.items():
                self._tags.setdefault((k, v), i)
        self._tag_keys = frozenset(k for k, _ in self._tags)
        self._resources: list[tuple[int, re.Pattern[str]]] = []
        self._accounts: list[tuple[int, re.Pattern[str]]] = []
        for i, rule in enumerate(self.rules):
            rx = _glob_regex(rule.resources)
            if rx is not None:
                self._resources.append((i, rx))
            rx = _glob_regex(rule.accounts)
            if rx is not None:
                self._accounts.append((i, rx))
        payload = [
            [r.service, r.team, sorted(r.tags.items()), list(r.resources), list(r.accounts)]
            for r in self.rules
        ]
        self.fingerprint = hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]

    @property
    def uses_resources(self) -> bool:
        return bool(self._resources)

    @property
    def uses_accounts(self) -> bool:
        return bool(self._accounts)

    def allocate(
        self, tags: Mapping[str, str], account: str = "", resource: str = ""
    ) -> tuple[str, str]:
        best: int | None = None
        if tags:
            for key in self._tag_keys.intersection(tags):
                i = self._tags.get((key, tags[key]))
                if i is not None and (best is None or i < best):
                    best = i
        if best is None and resource:
            best = next((i for i, rx in self._resources if rx.match(resource)), None)
        if best is None and account:
            best = next((i for i, rx in self._accounts if rx.match(account)), None)
        if best is None:
            return UNALLOCATED, UNALLOCATED
        rule = self.rules[best]
        return rule.service, rule.team


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
