"""The state store: the SQLite core plus one module per domain.

Each domain module (``probe``, and later ``delivery``, ``traffic``, ``cost``,
``catalog``) owns its tables as a list of forward ``MIGRATIONS``, a writer that
turns records into rows (bumping counters only for new events), and the read
queries its KPIs need. :data:`exporter.core.store.WRITERS` maps a record type to its writer, so
sources hand over records without knowing any SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from exporter.core.clock import Clock, system_clock
from exporter.core.store import WRITERS, Store, Writer

# The domain packages, found by path (the interim scan below is to be replaced by a registry).
_DOMAINS = str(Path(__file__).resolve().parents[1] / "domains")

# component name -> migrations; applied by open_store().
DOMAINS: dict[str, Sequence[str]] = {}


def register_domain(component: str, migrations: Sequence[str], writers: dict[type, Writer]) -> None:
    """Declare a domain's tables and record writers (called at import of its module)."""
    DOMAINS[component] = migrations
    WRITERS.update(writers)


def open_store(path: str, clock: Clock = system_clock) -> Store:
    """Open the database and bring every registered domain's schema up to date."""
    load_domains()
    store = Store(path, clock)
    for component, migrations in DOMAINS.items():
        store.migrate(component, migrations)
    return store


def load_domains() -> None:
    """Import every domain's store module; importing one registers it."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages([_DOMAINS], "exporter.domains."):
        if info.name.endswith(".store"):
            importlib.import_module(info.name)


__all__ = ["load_domains", "open_store", "register_domain"]
