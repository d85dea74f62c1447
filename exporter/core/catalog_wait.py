"""The order of first polls: sources that attribute records to services wait for the catalog.

A source that maps what it reads to services through the catalog (gateway routes, CI
repos, cost tags: ``Source.attributes_to_services``) holds its first poll of the
process until every catalog source (``Source.is_catalog``) has loaded once, so the
first records it stores already meet the whole catalog. A catalog the store already
holds (listed by a previous run) counts as loaded: a restart waits for nothing. It waits at most the longest
``catalog_wait()`` of the catalog sources: past that bound it goes ahead with the
config's services, logs it, and its ``without_catalog`` health flag (served as
``platform_exporter_source_without_catalog``) is 1 until the catalog loads. A
catalog that is down never blocks the rest for longer than the bound, counted once
from the first wait: a source whose first poll starts later waits only for what is
left of it. Whatever was
stored meanwhile is re-attributed when the catalog arrives (each domain's refresh).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from exporter.core.health import SourceHealth
from exporter.core.source import Source
from exporter.core.store import Store

log = logging.getLogger("exporter.daemon")
# How often a waiting source looks whether the catalog has loaded (seconds).
_STEP = 0.05


class CatalogGate:
    """Holds each attributing source's first poll until the catalog's first load."""

    def __init__(
        self, sources: Sequence[Source], health: Mapping[str, SourceHealth], store: Store
    ) -> None:
        self.health = health
        self.store = store
        self.sources = [s for s in sources if s.is_catalog]
        self.catalogs = frozenset(s.name for s in self.sources)
        self.bound = max((s.catalog_wait() for s in sources if s.is_catalog), default=0.0)
        # Attributing sources whose first poll has not started yet.
        self.pending = {s.name for s in sources if s.attributes_to_services and self.catalogs}
        self.waiting: set[str] = set()
        self._loaded: set[str] = set()
        self._went_ahead: set[str] = set()
        # One bound for the whole process, from the first wait: a source whose first
        # poll comes later waits only for what is left of it, never a bound of its own.
        self._until: float | None = None
        for name in self.pending:
            health[name].set_without_catalog(False)

    def loaded(self) -> bool:
        """Every catalog source has loaded once in this process (or had a stored listing)."""
        return self.catalogs <= self._loaded

    def _note_stored(self) -> None:
        """Count as loaded the catalog sources whose listing the store already holds."""
        for src in self.sources:
            if src.name not in self._loaded and src.catalog_stored(self.store):
                self._loaded.add(src.name)

    async def before_poll(self, src: Source) -> None:
        """Wait, before ``src``'s first poll, for the catalog's first load (bounded)."""
        if src.name not in self.pending:
            return
        self.pending.discard(src.name)
        # A store read waits on SQLite's lock: off the event loop.
        await asyncio.to_thread(self._note_stored)
        if self.loaded():
            return
        self.waiting.add(src.name)
        try:
            if not await self._wait():
                log.warning(
                    "source %s: the catalog (%s) has not loaded within %gs; polling with the "
                    "config's services, re-attributing what is stored once the catalog loads",
                    src.name,
                    ", ".join(sorted(self.catalogs - self._loaded)),
                    self.bound,
                )
                self._went_ahead.add(src.name)
                self.health[src.name].set_without_catalog(True)
        finally:
            self.waiting.discard(src.name)

    async def _wait(self) -> bool:
        """Sleep in short steps until the catalog has loaded (True) or the bound passed.

        Steps rather than an ``asyncio.Event``: polls of one daemon may run under
        different event loops (each ``asyncio.run`` of a test, say).
        """
        loop = asyncio.get_running_loop()
        if self._until is None:
            self._until = loop.time() + self.bound
        until = self._until
        while not self.loaded():
            left = until - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(_STEP, left))
        return True

    def after_poll(self, src: Source, ok: bool) -> None:
        """Note a catalog source's successful poll; release whoever waits for the catalog."""
        if not ok or src.name not in self.catalogs or src.name in self._loaded:
            return
        self._loaded.add(src.name)
        if not self.loaded():
            return
        if self._went_ahead:
            log.info(
                "the catalog has loaded: %s now attribute with it, and what they stored "
                "is re-attributed",
                ", ".join(sorted(self._went_ahead)),
            )
        for name in sorted(self._went_ahead):
            self.health[name].set_without_catalog(False)
