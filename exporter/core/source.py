"""What every source is, and what the daemon hands it for a poll.

A source is polled by the scheduler on its own interval. It reads its upstream
through ``ctx.client`` (built in :mod:`exporter.core.httpclient`, so tests swap the
transport), turns the answers into records, and hands them over with
:meth:`PollContext.commit`, together with the cursors that say how far it has
read. Each ``commit`` is one transaction. A poll normally commits once, at the
end, so a failure part-way commits nothing; a long backfill may commit page by
page, each page with the cursor that resumes after it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from exporter.core.clock import Clock, system_clock
from exporter.core.health import SourceHealth
from exporter.core.settings import ConfigBase, SourceConfig
from exporter.core.store import Store, write_records


@dataclass
class PollContext:
    """Everything a poll may use. Built by the daemon, or by a test."""

    store: Store
    health: SourceHealth
    client: httpx.AsyncClient
    now: Clock = system_clock
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("exporter.sources"))

    @property
    def source(self) -> str:
        return self.health.source

    def cursor(self, name: str) -> str | None:
        """The value last committed for this source's cursor ``name``."""
        return self.store.get_cursor(self.source, name)

    def commit(self, records: Sequence[Any], cursors: Mapping[str, str] | None = None) -> None:
        """Store ``records`` and advance ``cursors``, all in one transaction."""
        if not records and not cursors:
            return  # nothing changed: no transaction to open
        with self.store.transaction() as tx:
            write_records(tx, records)
            for name, value in (cursors or {}).items():
                tx.set_cursor(self.source, name, value)


def poll_deadline(settings: SourceConfig) -> float:
    """Seconds a poll may run before it is cancelled: ``poll_timeout``, else the interval,
    but never less than one request's ``timeout`` (a 1 s probe wake-up still lets a check
    run its full timeout)."""
    return settings.poll_timeout or max(settings.interval, settings.timeout)


class Source(ABC):
    """One upstream, polled on a schedule."""

    #: The key of this source's block under ``sources:`` in the config.
    kind: ClassVar[str]
    #: The model of that block.
    settings_model: ClassVar[type[SourceConfig]] = SourceConfig
    #: Whether the block is present (with its defaults) when the config has none.
    default_on: ClassVar[bool] = False
    #: The record types this source commits: what consumers ask for instead of naming kinds.
    produces: ClassVar[tuple[type, ...]] = ()
    #: Other facts consumers ask about (``paid_api``, ``template:<kind>``), instead of naming kinds.
    tags: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: ConfigBase, settings: SourceConfig) -> None:
        self.config = config
        self.settings = settings
        # "Now" outside a poll (credentials minted by the HTTP client); the daemon sets
        # its own clock here, so it is the same clock as every poll's ``ctx.now``.
        self.clock: Clock = system_clock

    @property
    def name(self) -> str:
        return self.kind

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`exporter.core.httpclient.build_client`: base URL, auth, headers."""
        return {}

    @abstractmethod
    async def poll(self, ctx: PollContext) -> None:
        """Read the upstream once and commit what is new. Raise on failure."""
