"""Cost allocation: which service (and team) a billing line belongs to, by the rules the
service catalog declares, and the allocator the billing sources build from it.

Tags are tried first, then resource patterns, then account patterns (see
:class:`Allocator`); what nothing claims is ``unallocated``, never dropped.

Cost is stored under the line's attribution key (:class:`CostKey`: the values of the tag
keys the rules use, the account, the resource patterns the resource matched), not under
the service: :meth:`Allocator.resolve` gives a key its service under the rules as they
are now, so a catalog change moves stored cost without reading the bill again (see
:mod:`exporter.domains.cost.attribution`).
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
    """Maps a billing line (tags, account, resource), through its attribution key, to
    (service, team).

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
        self._accounts: list[tuple[int, re.Pattern[str]]] = []
        # Each rule's resource patterns: a key holds the patterns its resource matched.
        self._resources: list[tuple[int, frozenset[str]]] = []
        for i, rule in enumerate(self.rules):
            if rule.resources:
                self._resources.append((i, frozenset(rule.resources)))
            rx = _glob_regex(rule.accounts)
            if rx is not None:
                self._accounts.append((i, rx))
        self._patterns = {
            p: re.compile(fnmatch.translate(p)) for r in self.rules for p in r.resources
        }
        # What a key is made of: which claims can be resolved from stored keys. Who claims
        # (service, team, order, account patterns) is not part of it.
        space = [sorted(self._tag_keys), sorted(self._patterns)]
        self.key_fingerprint = hashlib.sha256(json.dumps(space).encode()).hexdigest()[:16]

    @property
    def uses_resources(self) -> bool:
        return bool(self._resources)

    def allocate(
        self, tags: Mapping[str, str], account: str = "", resource: str = ""
    ) -> tuple[str, str]:
        """(service, team) of a line, by the order above."""
        return self.resolve(self.key_of(tags, account, resource))

    def _owner(self, best: int | None) -> tuple[str, str]:
        if best is None:
            return UNALLOCATED, UNALLOCATED
        rule = self.rules[best]
        return rule.service, rule.team

    def key_of(self, tags: Mapping[str, str], account: str = "", resource: str = "") -> CostKey:
        """The attribution key of a line: its tags of the keys the rules use, its account,
        and the resource patterns its resource matches (not the resource: one key per
        resource would be about one row per resource and day)."""
        return CostKey(self.tags_of(tags), account, self.patterns_of(resource))

    def tags_of(self, tags: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        """The (key, value) pairs of ``tags`` whose key a rule uses, sorted."""
        return tuple(sorted((k, tags[k]) for k in self._tag_keys.intersection(tags)))

    def patterns_of(self, resource: str) -> tuple[str, ...]:
        """The rules' resource patterns ``resource`` matches, sorted."""
        if not resource:
            return ()
        return tuple(sorted(p for p, rx in self._patterns.items() if rx.match(resource)))

    def resolve(self, key: CostKey) -> tuple[str, str]:
        """(service, team) of a stored key under these rules, by the order of
        :meth:`allocate`. Exact while the rules' tag keys and resource patterns
        (:attr:`key_fingerprint`) are those the key was made under; a claim by a tag key
        or a resource pattern the key does not hold cannot match it."""
        best: int | None = None
        for k, v in key.tags:
            i = self._tags.get((k, v))
            if i is not None and (best is None or i < best):
                best = i
        if best is None and key.resources:
            matched = frozenset(key.resources)
            best = next((i for i, pats in self._resources if pats & matched), None)
        if best is None and key.account:
            best = next((i for i, rx in self._accounts if rx.match(key.account)), None)
        return self._owner(best)


#: In a cost API origin's signature: its days are stored by attribution key, so the
#: allocation rules are no part of it (an origin without it was stored before keys).
KEYED = "keyed"
#: The key of cost stored before keys were (or by a source that attributes it itself):
#: ``service:<name>``, held by that service.
PINNED = "service:"


@dataclass(frozen=True, slots=True)
class CostKey:
    """What a billing line is attributed by (see :meth:`Allocator.key_of`)."""

    tags: tuple[tuple[str, str], ...] = ()  # (key, value), sorted by key
    account: str = ""
    resources: tuple[str, ...] = ()  # the rules' resource patterns the resource matched

    def text(self) -> str:
        """The key as stored (``cost_daily.ident``): compact JSON, so equal keys are equal
        text."""
        data: dict[str, object] = {}
        if self.tags:
            data["t"] = [list(kv) for kv in self.tags]
        if self.account:
            data["a"] = self.account
        if self.resources:
            data["r"] = list(self.resources)
        return json.dumps(data, separators=(",", ":"), sort_keys=True)


def parse_key(text: str) -> CostKey | str:
    """A stored key: a :class:`CostKey`, or the service a pinned key names."""
    if text.startswith(PINNED):
        return text[len(PINNED) :]
    data = json.loads(text)
    return CostKey(
        tuple((str(k), str(v)) for k, v in data.get("t", ())),
        str(data.get("a", "")),
        tuple(str(p) for p in data.get("r", ())),
    )


def pinned(service: str) -> str:
    """The key of cost held by ``service`` whatever the rules say."""
    return PINNED + service


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
