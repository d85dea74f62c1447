"""What every source is, and what the daemon hands it for a poll.

A source is polled by the scheduler on its own interval. It reads its upstream
through ``ctx.client`` (built in :mod:`exporter.core.httpclient`, so tests swap the
transport), turns the answers into records, and hands them over with
:meth:`PollContext.commit`, together with the cursors that say how far it has
read. Each ``commit`` is one transaction. A poll normally commits once, at the
end, so a failure part-way commits nothing; a long backfill may commit page by
page, each page with the cursor that resumes after it.

A commit runs in a worker thread: while another process holds the database's write
lock it waits there (up to ``state.busy_timeout``), and the event loop goes on serving
the other sources. A poll cancelled while its commit runs (its deadline, shutdown)
waits for the commit to end first, so what a source keeps in memory never disagrees
with what was committed.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import httpx

from exporter.core.clock import Clock, system_clock
from exporter.core.health import SourceHealth
from exporter.core.settings import ConfigBase, SourceConfig
from exporter.core.store import Store, write_records

T = TypeVar("T")


async def to_the_end(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, awaited to its end: if the caller is cancelled
    meanwhile, the cancellation is raised only once ``fn`` has returned or raised (a
    thread cannot be stopped, and its writes must not outlive the poll unseen)."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller sees
        raise


@dataclass
class PollContext:
    """Everything a poll may use. Built by the daemon, or by a test."""

    store: Store
    health: SourceHealth
    client: httpx.AsyncClient
    now: Clock = system_clock
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("exporter.sources"))
    # This poll is the only one (``once``): work a source would leave to its next poll
    # (the probes due at start) is finished and committed within it.
    only_poll: bool = False

    @property
    def source(self) -> str:
        return self.health.source

    # Cursors read ahead (:meth:`cursors_read_ahead`): their values by name, and the name
    # prefixes read (a name under one and not among the values has none stored).
    _ahead: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _ahead_prefixes: set[str] = field(default_factory=set, init=False, repr=False)

    def cursor(self, name: str) -> str | None:
        """The value last committed for this source's cursor ``name``."""
        if name in self._ahead:
            return self._ahead[name]
        if any(name.startswith(prefix) for prefix in self._ahead_prefixes):
            return None
        return self.store.get_cursor(self.source, name)

    @asynccontextmanager
    async def cursors_read_ahead(self, prefix: str) -> AsyncIterator[None]:
        """Within the block, :meth:`cursor` answers for the names starting with ``prefix``
        from one read made on entry (a unit's lists each ask for their cursor: on a shared
        database each ask is a round trip), kept up to date by the block's commits. The
        read runs in a worker thread, so the event loop serves other requests meanwhile."""
        rows = await asyncio.to_thread(
            self.store.query,
            "SELECT name, value FROM cursors WHERE source = ? AND substr(name, 1, ?) = ?",
            (self.source, len(prefix), prefix),
        )
        self._ahead.update({str(r[0]): str(r[1]) for r in rows})
        self._ahead_prefixes.add(prefix)
        try:
            yield
        finally:
            self._ahead_prefixes.discard(prefix)
            for name in [n for n in self._ahead if n.startswith(prefix)]:
                del self._ahead[name]

    async def commit(
        self,
        records: Sequence[Any],
        cursors: Mapping[str, str] | None = None,
        *,
        on_rollback: Callable[[], None] | None = None,
    ) -> None:
        """Store ``records`` and advance ``cursors``, all in one transaction, in a worker
        thread (see the module doc). ``on_rollback`` is called when the transaction did
        not commit, whatever ended it: the source puts back (or forgets) what it holds
        in memory for these records."""
        if not records and not cursors:
            return  # nothing changed: no transaction to open
        future = asyncio.ensure_future(asyncio.to_thread(self.commit_now, records, cursors))
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            if not future.cancelled() and future.exception() is not None and on_rollback:
                on_rollback()
            raise
        except Exception:
            if on_rollback is not None:
                on_rollback()
            raise

    def commit_now(self, records: Sequence[Any], cursors: Mapping[str, str] | None = None) -> None:
        """:meth:`commit` in the calling thread: for a source that reads in a worker
        thread already (a log tailer), never on the event loop."""
        if not records and not cursors:
            return
        with self.store.transaction() as tx:
            write_records(tx, records)
            tx.set_cursors(self.source, cursors or {})
        for name, value in (cursors or {}).items():
            if any(name.startswith(prefix) for prefix in self._ahead_prefixes):
                self._ahead[name] = value  # committed: what the block reads from now on

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Any other write of the poll (``fn(*args)``, opening its own transaction), in a
        worker thread to its end, like :meth:`commit`."""
        return await to_the_end(fn, *args)


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
    #: It loads the service catalog: the sources that attribute records to services wait
    #: for its first successful poll (up to :meth:`catalog_wait`) before their first.
    is_catalog: ClassVar[bool] = False
    #: It attributes what it reads to services through the catalog (routes, repos, tags).
    attributes_to_services: ClassVar[bool] = False

    def __init__(self, config: ConfigBase, settings: SourceConfig) -> None:
        self.config = config
        self.settings = settings
        # "Now" outside a poll (credentials minted by the HTTP client); the daemon sets
        # its own clock here, so it is the same clock as every poll's ``ctx.now``.
        self.clock: Clock = system_clock

    @property
    def name(self) -> str:
        return self.kind

    def catalog_wait(self) -> float:
        """Of a catalog source: how long the attributing sources wait for its first load."""
        return 0.0

    def catalog_stored(self, store: Store) -> bool:
        """Of a catalog source: whether the store holds a listing of it (from a previous
        run, say), so the sources attributing through it need not wait for a poll."""
        return False

    def stale_after(self, store: Store, produced: frozenset[type]) -> bool:
        """Whether another source's poll, which committed records of ``produced``, left
        what this source stored out of date in a way only a read of its own upstream
        mends (a catalog change its stored keys cannot resolve): the daemon then runs
        this source's next poll at once instead of at its interval."""
        return False

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`exporter.core.httpclient.build_client`: base URL, auth, headers."""
        return {}

    @abstractmethod
    async def poll(self, ctx: PollContext) -> None:
        """Read the upstream once and commit what is new. Raise on failure."""
