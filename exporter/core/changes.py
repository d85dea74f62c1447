"""Which inputs of the metrics providers a committed write changed.

The store counts, for every *input* (a domain's stored data, by the domain's name),
how many committed transactions changed it: its *version*. A provider whose inputs'
versions are the ones it was last rendered at has nothing new to show, so the
snapshot keeps its rendered bytes (see :mod:`exporter.core.snapshot`).

What counts as a change is SQLite's own count of rows inserted, updated or deleted
by the transaction (``total_changes``): an ``INSERT ... ON CONFLICT DO NOTHING`` that
met its key, or :meth:`~exporter.core.store.Tx.upsert` of identical values, changes
nothing; an ``ON CONFLICT DO UPDATE`` counts even when it writes the same values
(a needless recomputation, never a stale value).

Which inputs a transaction changed is told by :func:`writing_for`, which the daemon
wraps around each poll (a context variable, so it follows the poll into its tasks
and worker threads). A writer may also name a narrower input it changed, a *view* of
its domain's data that another domain's provider reads instead of the whole domain
(:meth:`~exporter.core.store.Tx.also_changes`; a domain declares its views in
``Domain.views``). A write outside any such scope (a test, a tool) changes every
input, and so does a commit by another connection to the same database file
(``PRAGMA data_version``): when in doubt, recompute.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

#: The input every version stamp includes: writes whose inputs are unknown.
ANY = "*"

_SCOPE: ContextVar[frozenset[str] | None] = ContextVar("write_scope", default=None)


@contextmanager
def writing_for(inputs: Iterable[str] | None) -> Iterator[None]:
    """Attribute the transactions committed inside to ``inputs`` (empty: they change
    nothing a provider reads at once, such as retention dropping aged-out rows; None:
    unknown, so every input)."""
    token = _SCOPE.set(None if inputs is None else frozenset(inputs))
    try:
        yield
    finally:
        _SCOPE.reset(token)


class ChangeLog:
    """Per-input versions, bumped by the store after each commit that changed rows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {ANY: 0}

    def committed(self, rows_changed: int, views: Iterable[str] = ()) -> None:
        """Called after a COMMIT with the rows it inserted, updated or deleted, and the
        views its writers said they changed (counted with the transaction's inputs)."""
        if rows_changed <= 0:
            return
        scope = _SCOPE.get()
        with self._lock:
            for name in (ANY,) if scope is None else scope | frozenset(views):
                self._versions[name] = self._versions.get(name, 0) + 1

    def changed_elsewhere(self) -> None:
        """Another connection committed: every input may have changed."""
        with self._lock:
            self._versions[ANY] += 1

    def versions(self) -> Mapping[str, int]:
        """A copy of every input's version (an input never written is absent: 0)."""
        with self._lock:
            return dict(self._versions)
