"""The daemon: sources on a schedule, the store, the snapshot and the HTTP server.

Each enabled source is one APScheduler job with its own interval and jitter,
``max_instances=1`` and ``coalesce=True``: a poll that overruns its interval
makes the scheduler skip the next run (logged and counted), never stack it.
Every poll, successful or not, is followed by a refresh of the snapshot, which
recomputes only the providers that read what the poll changed (each poll's writes
are attributed to the domains its source writes, see :mod:`exporter.core.changes`);
time-driven providers are also recomputed every ``metrics.min_refresh``. A
failing poll marks only its own source down; everything already committed
keeps being served, with its freshness timestamp.

The daemon's clock (``clock=``, the system clock by default) is the one "now"
of everything it runs: its sources, the store, health timestamps, retention and
every render. Only APScheduler's timers run on the machine's clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from datetime import UTC, timedelta
from typing import Any

import httpx
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from exporter.core import lease, redact
from exporter.core.backend import PostgresTarget
from exporter.core.catalog_wait import CatalogGate
from exporter.core.changes import ANY, writing_for
from exporter.core.clock import Clock, system_clock, wall_datetime
from exporter.core.errors import DeadlineExceeded, StateError, StoreBusy, classify
from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client
from exporter.core.lease import Leases, Polled
from exporter.core.listen import bind_error, check_tls_files, web_config_error
from exporter.core.logs import per_poll
from exporter.core.provider import HEALTH, ProviderSpec, RenderContext
from exporter.core.rollups import backfill_batches, backfill_pending
from exporter.core.server import MetricsServer
from exporter.core.settings import ConfigBase
from exporter.core.snapshot import Part, Parts, Snapshot, SnapshotHolder, render_part
from exporter.core.source import PollContext, Source, poll_deadline
from exporter.core.store import Store
from exporter.core.tracing import traced_poll
from exporter.core.upstream import poll_scope
from exporter.core.webconfig import WebConfigError
from exporter.core.webhooks import INPUT as WEBHOOKS
from exporter.core.webhooks import PushPacer, WebhookIntake
from exporter.domains import (
    domains,
    of,
    open_store,
    providers,
    render_context,
    source_classes,
    source_infos,
    webhook_endpoints,
    written_by,
)
from exporter.review.page import LandingPage

log = logging.getLogger("exporter.daemon")

# While a poll runs, the snapshot is re-rendered this often (seconds) for its in-flight gauge.
IN_FLIGHT_REFRESH = 15.0
# A webhook's refresh waits this long (seconds) for more deliveries, so a burst costs one render.
WEBHOOK_SETTLE = 0.5
# Under a stream of webhooks, pushed renders are spaced by this many times the CPU the last
# render used, and a delivery waits at most WEBHOOK_LONGEST seconds (see PushPacer).
WEBHOOK_PACE = 4.0
WEBHOOK_LONGEST = 3.0


def quiet_at_shutdown(job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``job`` as a scheduled job that ends quietly when the scheduler's shutdown cancels
    it mid-run (a refresh waiting for its render): APScheduler would log the cancellation
    as the job's error, with a traceback."""

    @functools.wraps(job)
    async def run() -> None:
        with suppress(asyncio.CancelledError):
            await job()

    return run


def build_sources(config: ConfigBase, clock: Clock = system_clock) -> list[Source]:
    """One source per enabled block that has something to do, each on ``clock``."""
    out: list[Source] = []
    for kind, cls in source_classes(of(config)).items():
        settings = getattr(config.sources, kind)
        if settings is None or not settings.enabled:
            continue
        source = cls(config, settings)
        source.clock = clock
        if getattr(source, "active", True):
            out.append(source)
    return out


class Daemon:
    """Wires config, store, sources, snapshot and server together."""

    def __init__(
        self,
        config: ConfigBase,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sources: list[Source] | None = None,
        clock: Clock = system_clock,
        store: Store | None = None,
        release_memory: Callable[[], object] | None = None,
    ) -> None:
        self.config = config
        # After each render and page, in its thread: malloc_trim for `run` (see allocator).
        self._release_memory = release_memory
        self.clock = clock
        # Only the domains the config uses are imported, polled and rendered; the state
        # has every domain's tables (see exporter.core.domain.Tables).
        self.domains = of(config)
        redact.REDACTOR.learn(config)
        self.store = store or open_store(
            config.state.location(),
            clock,
            busy_timeout=config.state.busy_timeout,
        )
        self.sources = build_sources(config, clock) if sources is None else sources
        self.infos = source_infos(config)
        self.health: dict[str, SourceHealth] = {}
        self.clients: dict[str, httpx.AsyncClient] = {}
        self.transport = transport
        # The inputs each source's polls change; a source of no known domain: all of them.
        self._writes: dict[str, frozenset[str] | None] = {}
        for src in self.sources:
            src.clock = clock
            self.health[src.name] = SourceHealth(src.name, src.kind, src.settings.interval)
            self._writes[src.name] = written_by(type(src)) or None
        self.leases = self._leases(config)
        self._polling: set[str] = set()
        # Sources asked to poll again at once while they were polling (see poll_soon).
        self._again: set[str] = set()
        # The store's version of other connections' commits last looked at for peers'
        # catalog polls (see _stale_after_peers).
        self._peer_version: int | None = None
        self.catalog_gate = CatalogGate(self.sources, self.health, self.store)
        self.holder = SnapshotHolder()
        self.parts = Parts()
        # The landing page: rendered in a task of its own after a refresh, so a review
        # (slower than the metrics) never holds a refresh up, nor a poll waiting for one.
        self.page = LandingPage()
        self._page_mutex = threading.Lock()
        self._page_task: asyncio.Task[None] | None = None
        # The sources' health as last rendered, and its version (an input of its own).
        self._health_seen: list[SourceHealth] = []
        self._health_version = 0
        # Held while rendering, so shutdown never closes the store under a render
        # that a cancelled refresh left running in its worker thread.
        self._render_mutex = threading.Lock()
        self._started = time.monotonic()
        # Refresh requests (numbered) waiting for a render that started after them, and
        # the task rendering for them; futures, not a lock, so that no request waits for
        # renders asked for after it (and nothing is bound to one event loop).
        self._asked = 0
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        self._renderer: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        # Set while poll_all runs: each poll is then its source's only one (see PollContext).
        self._only_poll = False
        self.server: MetricsServer | None = None
        self.scheduler: AsyncIOScheduler | None = None
        # Webhook endpoints (none unless configured); each commit asks for a refresh.
        self.intake = WebhookIntake(webhook_endpoints(config), self.store, clock, self._pushed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._push_timer: asyncio.TimerHandle | None = None
        # Set by a server thread when it asked for a refresh; cleared when that one starts.
        self._push_asked = False
        self.pacer = PushPacer(WEBHOOK_SETTLE, WEBHOOK_PACE, WEBHOOK_LONGEST)
        self._inflight_refreshes: set[asyncio.Future[None]] = set()
        for domain in self.domains:
            if domain.refresh is not None:
                with writing_for({domain.name}):
                    domain.refresh(self.config, self.store, self.clock())
        self.holder.set(self.render())

    # --- polling -----------------------------------------------------------------

    def _leases(self, config: ConfigBase) -> Leases | None:
        """On PostgreSQL, the leases that let several replicas share the sources (see
        :mod:`exporter.core.lease`); on SQLite, None: this process polls every source."""
        target = self.store.location
        if not isinstance(target, PostgresTarget):
            return None
        self.store.migrate("lease", lease.MIGRATIONS)
        replica = config.state.replica or socket.gethostname()
        for health in self.health.values():
            health.replica, health.leased = replica, False
        return Leases(target, replica, [s.name for s in self.sources], config.state.lease_ttl)

    def renew_leases(self) -> None:
        """One round of lease renewal (off the event loop: it waits on the database)."""
        assert self.leases is not None
        self._leased(self.leases.renew(lambda: self._polling, self._polled))

    def _polled(self) -> dict[str, Polled]:
        return {n: p for n, h in self.health.items() if (p := h.last_poll()) is not None}

    def _leased(self, held: frozenset[str]) -> None:
        assert self.leases is not None
        reached = self.leases.reached
        for name, health in self.health.items():
            health.set_leased(name in held, len(held), reached=reached)
        for name, last in self.leases.taken().items():
            self.health[name].inherit(last)
            if self._loop is not None and self.scheduler is not None:
                due = self.clock() if last is None else last.at + self.health[name].interval
                self._loop.call_soon_threadsafe(self._poll_by, name, due)

    def _poll_by(self, name: str, due: float) -> None:
        """A lease taken over: poll when the previous holder's next poll was due (at once if
        that has passed, or if no replica polled the source), if that comes before this
        replica's next run: a source polled every hour is not left unpolled for up to
        another hour (and its down alert without a verdict) after its holder dies."""
        job = self.scheduler.get_job(name) if self.scheduler is not None else None
        if job is None or job.next_run_time is None:
            return
        when = wall_datetime() + timedelta(seconds=max(0.0, due - self.clock()))
        if when < job.next_run_time:
            job.modify(next_run_time=when)

    def _client(self, src: Source) -> httpx.AsyncClient:
        if src.name not in self.clients:
            self.clients[src.name] = build_client(
                self.health[src.name],
                timeout=src.settings.timeout,
                transport=self.transport,
                # The daemon's clock as it is at each request (tests move it forward).
                clock=lambda: self.clock(),
                max_pause=src.settings.max_pause,
                **src.client_options(),
            )
        return self.clients[src.name]

    @per_poll
    @traced_poll
    async def poll(self, src: Source) -> bool:
        """Poll one source once; record its health; never raise. True on success.

        A source attributing records to services waits, before its first poll, for the
        catalog's first load (bounded: see :mod:`exporter.core.catalog_wait`).
        """
        await self.catalog_gate.before_poll(src)
        health = self.health[src.name]
        ctx = PollContext(
            store=self.store,
            health=health,
            client=self._client(src),
            now=self.clock,
            log=logging.getLogger(f"exporter.sources.{src.kind}"),
            only_poll=self._only_poll,
        )
        started = time.perf_counter()
        health.poll_started(self.clock())
        ok = False
        fence: AbstractContextManager[None] = (
            self.leases.fenced(src.name) if self.leases is not None else nullcontext()
        )
        try:
            with writing_for(self._writes[src.name]), fence:
                await self._run_poll(src, ctx)
        except asyncio.CancelledError:
            health.poll_ended()
            log.info("source %s: poll cancelled; what it committed stays", src.name)
            raise
        except Exception as exc:
            reason = classify(exc)
            duration = time.perf_counter() - started
            health.poll_failed(reason, str(exc), duration)
            took = {"duration_seconds": duration}
            if reason == "internal":
                log.exception("source %s: poll failed (%s)", src.name, reason, extra=took)
            else:
                log.error("source %s: poll failed (%s): %s", src.name, reason, exc, extra=took)
        else:
            duration = time.perf_counter() - started
            health.poll_succeeded(self.clock(), duration)
            log.debug(
                "source %s: poll done in %.3fs",
                src.name,
                duration,
                extra={"duration_seconds": duration},
            )
            ok = True
        # Store housekeeping waits on SQLite's locks, so it runs off the event loop; and
        # whatever it raises, the refresh below still shows this poll's outcome.
        stale: list[str] = []
        try:
            stale = await asyncio.to_thread(self._housekeeping, src)
        except StateError as exc:
            log.warning(
                "source %s: store housekeeping skipped until the next poll: %s", src.name, exc
            )
        except Exception:
            log.exception("source %s: store housekeeping failed", src.name)
        self.catalog_gate.after_poll(src, ok)
        for name in stale:
            self.poll_soon(name)
        await self.refresh()
        return ok

    def poll_soon(self, name: str) -> None:
        """Run source ``name``'s next poll at once (after the running one, if it is
        polling), not at its interval. Without a scheduler (a one-shot poll), nothing."""
        if name in self._polling:
            self._again.add(name)
        elif self.scheduler is not None and self.scheduler.get_job(name) is not None:
            log.info("source %s: polled now, as what it stored is out of date", name)
            self.scheduler.modify_job(name, next_run_time=wall_datetime())

    def _housekeeping(self, src: Source) -> list[str]:
        """Retention, then the derived state (the merged catalog) that ``src`` feeds.
        Returns the other sources whose stored data this poll left out of date (see
        :meth:`~exporter.core.source.Source.stale_after`)."""
        cutoff = self.clock() - self.config.state.retention
        try:
            # Rows aged out of retention are the passage of time, not new data: the
            # (time-driven) providers reading them see it at their next cadence.
            with writing_for(()), self.store.transaction(wait=False) as tx:
                for domain in domains():  # every domain's rows age out, used or not
                    if domain.prune is not None:
                        domain.prune(tx, cutoff)
        except StoreBusy:
            # Another source is writing (maybe waiting for another process's lock):
            # retention is never urgent, and this poll's refresh should not queue behind it.
            log.debug("source %s: store busy; retention at a later poll", src.name)
        produced = frozenset(type(src).produces)
        for domain in self.domains:
            # Derived state (the merged catalog's services) changes only with the config
            # (at start) or a poll of a source feeding it.
            if domain.refresh is not None and domain.refresh_after & produced:
                with writing_for({domain.name}):
                    domain.refresh(self.config, self.store, self.clock())
        return [
            s.name for s in self.sources if s is not src and s.stale_after(self.store, produced)
        ]

    async def _run_poll(self, src: Source, ctx: PollContext) -> None:
        """One poll under its deadline and its retry budget (see exporter.core.upstream)."""
        deadline = poll_deadline(src.settings)
        with poll_scope() as scope:
            try:
                async with asyncio.timeout(deadline) as limit:
                    scope.deadline = limit.when()
                    await src.poll(ctx)
            except TimeoutError:
                if not limit.expired():
                    raise
                raise DeadlineExceeded(
                    f"poll still running at its {deadline:g}s deadline: cancelled; "
                    "the units it committed stay"
                ) from None

    async def poll_all(self) -> bool:
        """Poll every source once, concurrently, each as its only poll. True if all succeeded."""
        self._only_poll = True
        sources = self.sources
        if self.leases is not None:
            # Several replicas: only what this one holds (the others poll the rest).
            await asyncio.to_thread(self.renew_leases)
            sources = [s for s in self.sources if self.leases.held(s.name)]
        try:
            results = await asyncio.gather(*(self.poll(s) for s in sources))
        finally:
            self._only_poll = False
        return all(results)

    async def _job(self, name: str) -> None:
        src = next(s for s in self.sources if s.name == name)
        # Busy before the lease is asked: a renewal round either sees it busy (and keeps
        # the lease) or has handed the lease back before the answer (and no poll starts).
        self._polling.add(name)
        if self.leases is not None and not self.leases.held(name):
            self._polling.discard(name)
            return  # another replica holds the lease: it polls this source
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            await self.poll(src)
            # A poll asked for while this one ran runs now, in this same run of the job:
            # the scheduler counts this run until it returns, so a run it started for the
            # request would be skipped as an overlap, and the request lost.
            while name in self._again and (self.leases is None or self.leases.held(name)):
                self._again.discard(name)
                log.info("source %s: polled now, as what it stored is out of date", name)
                await self.poll(src)
        except asyncio.CancelledError:
            # Shutdown cancelled this poll; the job ends quietly (nothing was committed).
            return
        finally:
            self._inflight.discard(task)
            self._polling.discard(name)
            self._again.discard(name)

    async def _cadence(self) -> None:
        """The time-driven refresh; with several replicas, first the sources a peer's
        catalog poll left out of date here (see :meth:`_stale_after_peers`)."""
        if self.leases is not None:
            for name in await asyncio.to_thread(self._stale_after_peers):
                self.poll_soon(name)
        await self.refresh()

    def _stale_after_peers(self) -> list[str]:
        """The sources this replica holds that a peer's catalog poll left out of date: a
        peer's commit is seen through the store's versions, and what the catalog sources
        commit is asked about as if this replica had polled them (see
        :meth:`~exporter.core.source.Source.stale_after`)."""
        assert self.leases is not None
        seen = self.store.versions().get(ANY)
        if seen == self._peer_version:
            return []
        self._peer_version = seen
        peers = [s for s in self.sources if s.is_catalog and not self.leases.held(s.name)]
        produced = frozenset(t for s in peers for t in type(s).produces)
        if not produced:
            return []
        return [
            s.name
            for s in self.sources
            if self.leases.held(s.name) and s.stale_after(self.store, produced)
        ]

    async def _refresh_in_flight(self) -> None:
        """Re-render while a poll runs, so its in-flight seconds are served as they grow."""
        if any(h.running_since is not None for h in self.health.values()):
            await self.refresh()

    # --- rendering ---------------------------------------------------------------

    def render(self) -> Snapshot:
        """Recompute the providers that are due (see :class:`~exporter.core.snapshot.Parts`)
        from committed state, reuse the others' rendered bytes, and join them.

        Each provider's families are rendered on their own; if a provider (or the
        rendering of what it yielded) fails, its previous rendering is served. Only
        those bytes are kept between refreshes, not the families.
        """
        with self._render_mutex:
            cpu = time.thread_time()
            health = [h.copy() for h in self.health.values()]
            ctx = self._render_context(health)
            versions = {
                **self.store.versions(),
                HEALTH: self._health_input(health),
                WEBHOOKS: self.intake.version,
            }
            specs = providers(among=self.domains)
            if self.intake.endpoints:
                specs = {**specs, WEBHOOKS: self.intake.spec()}
            parts: list[Part] = []
            for name, provider in specs.items():
                part = self.parts.part(ProviderSpec.of(name, provider), ctx, versions)
                if part is not None:
                    parts.append(part)
            replica = self.leases.replica if self.leases is not None else None
            parts.append(render_part(self.parts.stats(ctx.now, replica)))
            snapshot = Snapshot.assemble(parts, ctx.now, self.page.served)
            self.pacer.rendered(time.monotonic(), time.thread_time() - cpu)
            return snapshot

    def _health_input(self, health: list[SourceHealth]) -> int:
        """The version of the sources' health: new when it differs from the last render,
        and at every render while a poll runs (its in-flight seconds grow)."""
        if health != self._health_seen or any(h.running_since is not None for h in health):
            self._health_version += 1
            self._health_seen = health
        return self._health_version

    async def refresh(self) -> None:
        """Return once a render that started after this call has been swapped in (so it
        shows what was committed before the call). Renders run one at a time in a worker
        thread; requests made during one coalesce into the next, and a request waits for
        that one only, never for renders asked for after it (a poll is never held by
        others' refreshes, however slow renders are)."""
        loop = asyncio.get_running_loop()
        self._asked += 1
        done = loop.create_future()
        self._waiting.append((self._asked, done))
        if self._renderer is None or self._renderer.done():
            self._renderer = loop.create_task(self._render_loop())
        await done

    async def _render_loop(self) -> None:
        while self._waiting:
            upto = self._asked
            try:
                self.holder.set(await asyncio.to_thread(self.render))
                if self._release_memory is not None:
                    # After the swap: the snapshot it replaces is free by then.
                    await asyncio.to_thread(self._release_memory)
            except asyncio.CancelledError:
                # Shutting down: the requests end quietly, with the snapshot as it is.
                for _, waiter in self._waiting:
                    if not waiter.done():
                        waiter.set_result(None)
                self._waiting.clear()
                raise
            except Exception:
                log.exception("refresh failed; the snapshot stays as it was")
            served = [w for n, w in self._waiting if n <= upto]
            self._waiting = [(n, w) for n, w in self._waiting if n > upto]
            for waiter in served:
                if not waiter.done():
                    waiter.set_result(None)
            self._schedule_page()

    def _schedule_page(self) -> None:
        """Start rendering the landing page if it is due and no rendering is running."""
        running = self._page_task is not None and not self._page_task.done()
        if running or not self.page.due(self.clock(), self.config.metrics.min_refresh):
            return
        self._page_task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.render_page)
        )

    def _render_context(self, health: list[SourceHealth]) -> RenderContext:
        """What a render reads: committed state, the clock and the sources' ``health``."""
        return render_context(
            self.config,
            self.store,
            self.clock(),
            health,
            self.infos,
            self.config.metrics.min_refresh,
        )

    def render_page(self) -> None:
        """Render the week's review from committed state and serve it on ``/`` with the
        current snapshot (and every later one, until the next page)."""
        with self._page_mutex:
            health = [h.copy() for h in self.health.values()]
            ctx = self._render_context(health)
            page = self.page.render(ctx)
            self.holder.set(dataclasses.replace(self.holder.current, page=page))
        if self._release_memory is not None:
            self._release_memory()

    def _pushed(self) -> None:
        """A webhook committed something (called on a server thread): refresh soon."""
        loop = self._loop
        if self._push_asked:
            return  # a refresh is due that has not started: it shows this push too
        if loop is not None and not loop.is_closed():
            self._push_asked = True
            loop.call_soon_threadsafe(self._refresh_after_push)

    def _refresh_after_push(self) -> None:
        if self._push_timer is not None or self._loop is None:
            return  # a refresh is already due: it shows this push too

        def due() -> None:
            assert self._loop is not None
            left = self.pacer.left(time.monotonic())
            if left > 0:  # the last render was recent: space this one from it
                self._push_timer = self._loop.call_later(left, due)
                return
            self._push_timer = None
            self._push_asked = False  # a commit from now on may not be in this render
            task = asyncio.ensure_future(self.refresh())
            self._inflight_refreshes.add(task)
            task.add_done_callback(self._inflight_refreshes.discard)

        self._push_timer = self._loop.call_later(WEBHOOK_SETTLE, due)

    # --- readiness ---------------------------------------------------------------

    def ready(self) -> bool:
        if time.monotonic() - self._started >= self.config.server.startup_grace:
            return True
        return all(h.last_success is not None for h in self.health.values())

    # --- lifecycle ---------------------------------------------------------------

    def start_server(self) -> MetricsServer:
        """Bind and serve; a bind or TLS failure is a StartupError (one line, an exit code)."""
        settings = self.config.server
        if settings.tls is not None:
            check_tls_files(settings.tls.cert_file, settings.tls.key_file)
        try:
            self.server = MetricsServer(settings, self.holder, self.ready)
        except WebConfigError as exc:
            raise web_config_error(exc) from None
        except OSError as exc:
            raise bind_error(settings.listen_address, settings.port, exc) from None
        for path, route in self.intake.routes():
            self.server.add_route(path, route)
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # started outside a loop (a test): pushes show at the next refresh
        self.server.start()
        return self.server

    def backfill_batch(self) -> bool:
        """One batch of every domain's rollup backfill still pending; True once none is."""
        with writing_for(()):
            return backfill_batches(self.store, (b for d in domains() for b in d.backfills))

    async def _backfill_job(self) -> None:
        try:
            done = await asyncio.to_thread(self.backfill_batch)
        except StateError as exc:
            log.warning("rollup backfill: batch left for later: %s", exc)
            return
        if done and self.scheduler is not None:
            self.scheduler.remove_job("rollup backfill")

    def start_scheduler(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(timezone=UTC)
        if self.leases is not None:
            self.renew_leases()  # before the first polls: they run only where leased
            if self._loop is None:  # the loop the takeovers' first polls are scheduled on
                with suppress(RuntimeError):
                    self._loop = asyncio.get_running_loop()
            self.leases.start(lambda: self._polling, self._leased, self._polled)
        for src in self.sources:
            scheduler.add_job(
                self._job,
                "interval",
                args=[src.name],
                id=src.name,
                name=f"poll {src.name}",
                seconds=src.settings.interval,
                jitter=src.settings.jitter or None,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=wall_datetime(),
            )

        if any(backfill_pending(self.store, b.name) for d in domains() for b in d.backfills):
            # An upgraded database: its new rollups fill in, a batch a second, while it serves.
            scheduler.add_job(
                quiet_at_shutdown(self._backfill_job),
                "interval",
                id="rollup backfill",
                seconds=1.0,
                max_instances=1,
            )
        scheduler.add_job(
            quiet_at_shutdown(self._cadence),
            "interval",
            id="cadence refresh",
            seconds=self.config.metrics.min_refresh,
            max_instances=1,
            coalesce=True,
        )
        scheduler.add_job(
            quiet_at_shutdown(self._refresh_in_flight),
            "interval",
            id="in-flight refresh",
            seconds=IN_FLIGHT_REFRESH,
            max_instances=1,
            coalesce=True,
        )

        def skipped(event: JobExecutionEvent) -> None:
            if event.job_id not in self.health or event.job_id in self.catalog_gate.waiting:
                return  # a refresh job, or a first poll waiting for the catalog
            health = self.health[event.job_id]
            in_a_row = health.poll_skipped()
            if health.polls == 0:
                # A first poll does the start-up work (a first backfill; the probe source
                # runs every check due at once, each up to its timeout), so it may well
                # outlast a short interval: expected, not an overrun to warn about.
                log.log(
                    logging.INFO if in_a_row == 1 else logging.DEBUG,
                    "source %s: first poll (start-up work) still running at its next "
                    "interval; this run is skipped (%d in a row)",
                    event.job_id,
                    in_a_row,
                )
                return
            # Warn once per overrunning poll; further skips of the same poll only add noise.
            log.log(
                logging.WARNING if in_a_row == 1 else logging.DEBUG,
                "source %s: previous poll still running at its next interval; "
                "this run is skipped (%d in a row)",
                event.job_id,
                in_a_row,
            )

        scheduler.add_listener(skipped, EVENT_JOB_MAX_INSTANCES)
        scheduler.start()
        self.scheduler = scheduler
        return scheduler

    async def run(self, stop: asyncio.Event, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve and poll until ``stop`` is set; then shut down within a few seconds."""
        server = self.start_server()
        log.info(
            "serving %s/metrics; %d source(s): %s",
            server.url,
            len(self.sources),
            ", ".join(s.name for s in self.sources) or "none",
        )
        if on_ready:
            on_ready(server.url)
        self.start_scheduler()
        try:
            await stop.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        log.info("shutting down: cancelling in-flight polls")
        if self.scheduler is not None:
            self.scheduler.pause()  # no new polls start from here on
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=3)
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for src in self.sources:
            closer = getattr(src, "aclose", None)
            if closer is not None:
                await closer()
        for client in self.clients.values():
            await client.aclose()
        if self.leases is not None:
            # The polls are over: hand the leases to the other replicas now, not at expiry.
            await asyncio.to_thread(self.leases.stop)
            await asyncio.to_thread(self.leases.release)
            self.leases.close()
        if self.server is not None:
            self.server.stop()
        if self._push_timer is not None:
            self._push_timer.cancel()
        for pending in list(self._inflight_refreshes):
            pending.cancel()
        if self._renderer is not None:
            self._renderer.cancel()  # no render starts after this one
        # A refresh cancelled above may have left its render running in a thread, and a
        # landing page may be rendering in one.
        acquired = await asyncio.to_thread(self._render_mutex.acquire, True, 10)
        page_free = await asyncio.to_thread(self._page_mutex.acquire, True, 10)
        try:
            self.store.close()
        finally:
            if acquired:
                self._render_mutex.release()
            if page_free:
                self._page_mutex.release()
        log.info("stopped; state committed to %s", self.store.path)
