"""What a domain brings: the one declaration the daemon, the store, the report, the rules and
the sandbox read (:mod:`exporter.domains` lists them).

A declaration is cheap: its name, the config keys it answers for, its sources by kind and
what its provider reads. Its modules (settings models, sources, store, metrics) are
imported by ``parts``, the first time one of them is asked for, so a config that does not
use a domain never imports it (see :func:`exporter.domains.needed`).
"""

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
class Tables:
    """What a domain's store brings: every state has every domain's tables (the review,
    the report and replicas with other configs read them), whichever domains the
    daemon's config uses."""

    migrations: Mapping[str, Sequence[str]] = field(default_factory=dict)  # component -> forward
    writers: Mapping[type, Writer] = field(default_factory=dict)  # record type -> store writer
    prune: Callable[[Tx, float], object] | None = None  # drop raw rows older than the cutoff
    # Rollups built in batches, after an upgrade, from the raw rows an older release left.
    backfills: tuple[Backfill, ...] = ()
    # Narrower inputs of this domain's data (view name -> the tables it covers) another
    # domain's provider may read instead of the whole domain; the writers say when they
    # change one (``Tx.also_changes``), e.g. the gateways' totals of days already over.
    views: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Parts:
    """What a domain's other modules bring. A config is typed ``Any``: the config is built
    from the domains."""

    service_fields: type[ServiceFields] | None = None  # the keys it adds to every services[] entry
    section: type[Section] | None = None  # the top-level keys it adds, and checks across sections
    provider: Provider | None = None  # its metric families
    # Derived state, at start and after a poll of a source producing one of ``refresh_after``.
    refresh: Callable[[Any, Store, float], None] | None = None
    refresh_after: frozenset[type] = frozenset()
    load_catalog: Callable[[Any, Store], Catalog] | None = None  # the merged catalog (catalog)
    alerts: Callable[[Any], list[dict[str, Any]]] | None = None  # rules for exporter.rules.yml
    # Its webhook endpoints under this config (none unless configured): /webhooks/<name>.
    webhooks: Callable[[Any], Sequence[Endpoint]] | None = None


@dataclass(frozen=True)
class SourceRef:
    """A source of the domain by its kind (its key under ``sources:``), and the function
    that imports its class."""

    kind: str
    load: Callable[[], type[Source]]


@dataclass(frozen=True)
class Domain:
    """One domain: the declaration, and its parts imported on first use."""

    name: str  # the provider's name: "probe", "delivery", ...
    parts: Callable[[], Parts]  # imports its modules (called once)
    tables: Callable[[], Tables] = Tables  # imports its store (called once)
    # The config keys it answers for: top-level keys and ``services[]`` keys; a config
    # that gives one of them (or one of its sources) uses the domain.
    keys: tuple[str, ...] = ()
    service_keys: tuple[str, ...] = ()
    refs: tuple[SourceRef, ...] = ()  # its sources, in the config's order
    # Used by every config: it has a source on by default, or it provides the catalog.
    always: bool = False
    # The domains (or views of a domain, see ``Tables.views``) whose stored data the
    # provider reads (its own included): a poll that changed none of them leaves its
    # rendering as it is, and a config using this domain uses those domains too. None:
    # recomputed every refresh.
    reads: frozenset[str] | None = None
    time_driven: bool = True  # its values move with the clock: recomputed per min_refresh
    # Modules of its fake upstreams, each with ``apps(scenario)`` and/or ``configure(...)``
    # hooks. Names, not imports: only the CLI may import a sandbox (through the platform).
    sandbox: tuple[str, ...] = ()
    _loaded: list[Parts] = field(default_factory=list, init=False, repr=False, compare=False)
    _stored: list[Tables] = field(default_factory=list, init=False, repr=False, compare=False)
    _classes: list[tuple[type[Source], ...]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )

    def loaded(self) -> Parts:
        """Its parts, imported the first time they are asked for."""
        if not self._loaded:
            self._loaded.append(self.parts())
        return self._loaded[0]

    def stored(self) -> Tables:
        """Its store's parts, imported the first time they are asked for."""
        if not self._stored:
            self._stored.append(self.tables())
        return self._stored[0]

    @property
    def sources(self) -> tuple[type[Source], ...]:
        """Its source classes, in the config's order; each class declares the kind it is
        listed under."""
        if not self._classes:
            classes = tuple(ref.load() for ref in self.refs)
            for ref, cls in zip(self.refs, classes, strict=True):
                if cls.kind != ref.kind:
                    raise TypeError(
                        f"{self.name}: {cls.__name__} is {cls.kind!r}, not {ref.kind!r}"
                    )
            self._classes.append(classes)
        return self._classes[0]

    @property
    def service_fields(self) -> type[ServiceFields] | None:
        return self.loaded().service_fields

    @property
    def section(self) -> type[Section] | None:
        return self.loaded().section

    @property
    def migrations(self) -> Mapping[str, Sequence[str]]:
        return self.stored().migrations

    @property
    def writers(self) -> Mapping[type, Writer]:
        return self.stored().writers

    @property
    def views(self) -> Mapping[str, frozenset[str]]:
        return self.stored().views

    @property
    def provider(self) -> Provider | None:
        return self.loaded().provider

    @property
    def prune(self) -> Callable[[Tx, float], object] | None:
        return self.stored().prune

    @property
    def backfills(self) -> tuple[Backfill, ...]:
        return self.stored().backfills

    @property
    def refresh(self) -> Callable[[Any, Store, float], None] | None:
        return self.loaded().refresh

    @property
    def refresh_after(self) -> frozenset[type]:
        return self.loaded().refresh_after

    @property
    def load_catalog(self) -> Callable[[Any, Store], Catalog] | None:
        return self.loaded().load_catalog

    @property
    def alerts(self) -> Callable[[Any], list[dict[str, Any]]] | None:
        return self.loaded().alerts

    @property
    def webhooks(self) -> Callable[[Any], Sequence[Endpoint]] | None:
        return self.loaded().webhooks
