"""What a domain brings: the one declaration the daemon, the store, the report, the rules and
the sandbox read (:mod:`exporter.domains` lists them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.core.catalog import Catalog
    from exporter.core.provider import Provider
    from exporter.core.rollups import Backfill
    from exporter.core.settings import Section, ServiceFields
    from exporter.core.source import Source
    from exporter.core.store import Store, Tx, Writer
    from exporter.core.webhooks import Endpoint


@dataclass(frozen=True)
class Domain:
    """One domain's parts. A config is typed ``Any``: the config is built from the domains."""

    name: str  # the provider's name: "probe", "delivery", ...
    sources: tuple[type[Source], ...] = ()  # in the config's order; each class declares itself
    service_fields: type[ServiceFields] | None = None  # the keys it adds to every services[] entry
    section: type[Section] | None = None  # the top-level keys it adds, and checks across sections
    migrations: Mapping[str, Sequence[str]] = field(default_factory=dict)  # component -> forward
    writers: Mapping[type, Writer] = field(default_factory=dict)  # record type -> store writer
    provider: Provider | None = None  # its metric families
    # The domains whose stored data the provider reads (its own included): a poll that
    # changed none of them leaves its rendering as it is. None: recomputed every refresh.
    reads: frozenset[str] | None = None
    # Narrower inputs of this domain's data (view name -> the tables it covers) another
    # domain's provider may read instead of the whole domain; the writers say when they
    # change one (``Tx.also_changes``), e.g. the gateways' totals of days already over.
    views: Mapping[str, frozenset[str]] = field(default_factory=dict)
    time_driven: bool = True  # its values move with the clock: recomputed per min_refresh
    prune: Callable[[Tx, float], object] | None = None  # drop raw rows older than the cutoff
    # Rollups built in batches, after an upgrade, from the raw rows an older release left.
    backfills: tuple[Backfill, ...] = ()
    # Derived state, at start and after a poll of a source producing one of ``refresh_after``.
    refresh: Callable[[Any, Store, float], None] | None = None
    refresh_after: frozenset[type] = frozenset()
    load_catalog: Callable[[Any, Store], Catalog] | None = None  # the merged catalog (catalog)
    alerts: Callable[[Any], list[dict[str, Any]]] | None = None  # rules for exporter.rules.yml
    # Its webhook endpoints under this config (none unless configured): /webhooks/<name>.
    webhooks: Callable[[Any], Sequence[Endpoint]] | None = None
    # Modules of its fake upstreams, each with ``apps(scenario)`` and/or ``configure(...)``
    # hooks. Names, not imports: only the CLI may import a sandbox (through the platform).
    sandbox: tuple[str, ...] = ()
