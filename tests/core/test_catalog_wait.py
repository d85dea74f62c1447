"""The catalog wait is one bound per process, counted from the first wait."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from exporter.core.catalog_wait import CatalogGate
from exporter.core.health import SourceHealth
from exporter.core.source import Source
from exporter.core.store import Store

BOUND = 2.0


class FakeSource:
    """Just what the gate reads of a source."""

    def __init__(self, name: str, *, catalog: bool) -> None:
        self.name = name
        self.is_catalog = catalog
        self.attributes_to_services = not catalog

    def catalog_wait(self) -> float:
        return BOUND

    def catalog_stored(self, store: Any) -> bool:
        return False  # a first start: no listing from a previous run


class FakeHealth:
    def __init__(self) -> None:
        self.without_catalog: bool | None = None

    def set_without_catalog(self, flag: bool) -> None:
        self.without_catalog = flag


def gate() -> tuple[CatalogGate, list[FakeSource], dict[str, FakeHealth]]:
    sources = [
        FakeSource("backstage", catalog=True),
        FakeSource("kong", catalog=False),
        FakeSource("focus", catalog=False),
    ]
    health = {s.name: FakeHealth() for s in sources}
    g = CatalogGate(
        cast(list[Source], sources),
        cast(dict[str, SourceHealth], health),
        cast(Store, object()),
    )
    return g, sources, health


def timed_first_poll(g: CatalogGate, src: FakeSource) -> float:
    async def wait() -> None:
        await g.before_poll(cast(Source, src))

    started = time.perf_counter()
    asyncio.run(wait())
    return time.perf_counter() - started


class TestCatalogWait:
    def test_a_later_first_poll_waits_only_for_what_is_left_of_the_bound(self) -> None:
        """With the catalog down, the first source waits the bound; the next one, after it, not again."""
        g, (_, kong, focus), health = gate()
        assert timed_first_poll(g, kong) >= BOUND
        assert timed_first_poll(g, focus) < BOUND / 2
        assert health["kong"].without_catalog is True
        assert health["focus"].without_catalog is True

    def test_a_catalog_that_loads_releases_the_waiting_sources(self) -> None:
        """Once the catalog's first poll succeeds, a first poll waits for nothing."""
        g, (backstage, kong, _), health = gate()
        g.after_poll(cast(Source, backstage), True)
        assert timed_first_poll(g, kong) < BOUND / 2
        assert health["kong"].without_catalog is False
