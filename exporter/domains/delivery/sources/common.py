"""What the CI/CD sources (GitHub, GitLab, Jenkins) share: JSON cursors, pages, time parsing.

Each repo (project, job) is synced as one unit: its pages are read to the end,
then its records and its cursors are committed in one transaction. A failure
part-way through a repo commits nothing of it; repos committed before stay, so
a restart in the middle of a backfill resumes with the next repo and nothing is
counted twice. The first failure stops the poll from starting further repos
(a bad token or a dead upstream is not hammered once per repo).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast

import httpx

from exporter.core.errors import AuthError, MalformedResponse, RateLimited
from exporter.core.httpclient import conditional_get, send
from exporter.core.payload import body_of as body_of
from exporter.core.payload import parse_time as parse_time
from exporter.core.settings import ConfigBase, SourceConfig
from exporter.core.source import PollContext, Source
from exporter.core.upstream import UnitPlan, working_on
from exporter.domains.delivery import store as store
from exporter.domains.delivery.records import (
    Commit,
    Deployment,
    Incident,
    MergeRequest,
    PipelineRun,
)
from exporter.domains.delivery.settings import DeliverySection, DeliveryServiceFields

T = TypeVar("T")
R = TypeVar("R")


def parse_time_or_none(value: Any) -> float | None:
    return None if value in (None, "") else parse_time(value)


def load_state(ctx: PollContext, name: str) -> dict[str, Any]:
    raw = ctx.cursor(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def dump_state(state: dict[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"))


def malformed(where: str, exc: Exception) -> MalformedResponse:
    return MalformedResponse(f"unexpected {where} body: {type(exc).__name__}: {exc}")


def units_in_flight(connections: int) -> int:
    """How many units to sync at once over ``connections`` request slots.

    A unit sends its lists at once, then its deployment statuses at once, so one
    unit per eight slots keeps them mostly busy. Every unit in flight is work a
    fault throws away (a unit commits whole or not at all): with one unit per
    eight slots, a fault at 80 % of a backfill over 8 slots keeps every unit but
    the one it hit.
    """
    return max(1, -(-connections // 8))


async def run_units(
    units: Sequence[Callable[[], Awaitable[None]]], concurrency: int, plan: UnitPlan
) -> None:
    """Run repo syncs with bounded concurrency; stop starting new ones after a failure,
    or when one would not finish before the poll's deadline or within the upstream's
    rate-limit budget (:class:`~exporter.core.upstream.UnitPlan`).

    The requests of an earlier unit take connection slots before a later one's
    (:func:`~exporter.core.upstream.working_on`), so units finish, and commit, one
    after another: a fault late in a backfill loses the units in flight, not all.
    Re-raises the first failure once the ones in flight have ended; a poll that
    stopped short raises why (``deadline`` or ``rate_limited``), once every unit it
    started is committed.
    """
    limit = asyncio.Semaphore(concurrency)
    failed: list[BaseException] = []
    stopped: list[BaseException] = []  # why no further unit was started
    started = 0

    async def guarded(order: int, unit: Callable[[], Awaitable[None]]) -> None:
        nonlocal started
        async with limit:
            if failed or stopped:
                return
            refusal = plan.refusal(len(units) - started, len(units))
            if refusal is not None:
                stopped.append(refusal)
                return
            started += 1
            work = plan.start()
            working_on(order, work)
            try:
                await unit()
            except Exception as exc:
                plan.ended(work)
                failed.append(exc)
            else:
                plan.finish(work)

    await asyncio.gather(*(guarded(i, u) for i, u in enumerate(units)))
    if failed or stopped:
        raise (failed or stopped)[0]


async def bounded_each(
    items: Sequence[T], read: Callable[[T], Awaitable[R]], limit: int
) -> list[R]:
    """``read`` each item, in order, at most ``limit`` at a time; the results in order.

    After a failure no further item is started (the unit fails whole anyway, so
    their requests would be wasted), and the first failure is raised once the reads
    in flight have ended.
    """
    results: list[R | None] = [None] * len(items)
    slots = asyncio.Semaphore(max(1, limit))
    failed: list[BaseException] = []

    async def one(index: int, item: T) -> None:
        async with slots:
            if failed:
                return
            try:
                results[index] = await read(item)
            except Exception as exc:
                failed.append(exc)

    await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
    if failed:
        raise failed[0]
    return cast(list[R], results)


#: A list (one repo's runs, an org's repos) is read to at most this many pages and items
#: per poll: an upstream whose cursor never ends stops there, reported as ``malformed``.
MAX_PAGES = 2_000
MAX_ITEMS = 200_000


class PageBound:
    """The pages and items one list has handed over in this poll, against its bounds."""

    def __init__(self, what: str, max_pages: int = MAX_PAGES, max_items: int = MAX_ITEMS) -> None:
        self.what = what
        self.max_pages = max_pages
        self.max_items = max_items
        self.pages = 0
        self.items = 0

    def more(self, body: Any) -> None:
        """Count the page just read (``body``: a JSON list, or an object holding one) before
        the next one is asked for; :class:`MalformedResponse` with the numbers past a bound."""
        self.pages += 1
        self.items += _items_in(body)
        if self.pages >= self.max_pages or self.items >= self.max_items:
            raise MalformedResponse(
                f"{self.what}: still more pages after {self.pages} pages and {self.items} "
                f"items (bounds per list and poll: {self.max_pages} pages, "
                f"{self.max_items} items); nothing of it committed"
            )


def _items_in(body: Any) -> int:
    if isinstance(body, list):
        return len(body)
    if isinstance(body, dict):
        return max((len(v) for v in body.values() if isinstance(v, list)), default=0)
    return 0


#: A backfill resumed by later polls skips the units committed within this many seconds.
ROUND_HORIZON = 3600.0


class CicdSource(Source):
    """What the GitHub, GitLab and Jenkins sources share around their own reading.

    Units (repos, projects, jobs) come from :meth:`units` and are synced by
    :meth:`sync_unit`, ``concurrency`` at a time, each in its own transaction (see
    the module doc). A credentials error stops the source until restart: retrying
    a bad token only burns the upstream's patience. A ``Retry-After`` longer than
    one poll may wait pauses the source until then, without calling.
    """

    attributes_to_services = True

    # The shared retry policy's knobs; tests make them fast.
    attempts = 4
    backoff = 0.5
    max_retry_after = 60.0
    # Each list's bounds per poll (see PageBound); tests make them small.
    max_pages = MAX_PAGES
    max_items = MAX_ITEMS

    def __init__(self, config: ConfigBase, settings: SourceConfig, *, concurrency: int) -> None:
        super().__init__(config, settings)
        self.rules = DeliverySection.of(config).delivery
        self.concurrency = concurrency
        # The config's exact refs of this kind: read whether or not an org lists them.
        self.explicit: dict[str, str] = {
            ref.pattern: svc.name
            for svc in config.services
            for ref in DeliveryServiceFields.of(svc).ci
            if ref.kind == self.kind and not ref.is_pattern
        }
        # The longest Retry-After one request waits out (the client's pause has the same bound).
        self.max_retry_after = settings.max_pause
        self._auth_failure: AuthError | None = None
        # While polls fail part-way: when the round of reading every unit began, and the
        # units committed since (see _resumed).
        self._round: tuple[float, set[str]] | None = None
        # The longest and costliest unit of the polls of an unfinished round (UnitPlan).
        self._seen_units: tuple[float, int] = (0.0, 0)
        self._blocked_until = 0.0

    @property
    def slots_per_unit(self) -> int:
        """The connection slots one unit has when :func:`units_in_flight` units share them."""
        return max(1, self.concurrency // units_in_flight(self.concurrency))

    @abstractmethod
    async def units(self, ctx: PollContext) -> dict[str, str]:
        """This poll's units (repo, project or job name) and the service of each."""

    @abstractmethod
    async def sync_unit(self, ctx: PollContext, name: str, service: str) -> None:
        """Read one unit and commit its records and cursors in one transaction."""

    async def poll(self, ctx: PollContext) -> None:
        if self._auth_failure is not None:
            raise AuthError(
                f"stopped after a credentials error; fix it and restart: {self._auth_failure}"
            )
        if ctx.now() < self._blocked_until:
            raise RateLimited(
                f"rate limited until {self._blocked_until:.0f} (Retry-After); not calling",
                self._blocked_until - ctx.now(),
            )
        try:
            units = await self.units(ctx)
            todo = self._resumed(ctx, units)
            plan = UnitPlan(ctx.now, self._seen_units)
            try:
                await run_units(
                    [self._unit(ctx, name, service) for name, service in sorted(todo.items())],
                    units_in_flight(self.concurrency),
                    plan,
                )
            finally:
                self._seen_units = (plan.longest, plan.costliest)
            self._round = None  # every unit is read: the next poll reads them all again
            self._seen_units = (0.0, 0)  # and estimates its units afresh
        except AuthError as exc:
            self._auth_failure = exc
            raise
        except RateLimited as exc:
            if exc.retry_after:
                self._blocked_until = ctx.now() + exc.retry_after
            raise

    async def get(
        self,
        ctx: PollContext,
        url: str,
        params: dict[str, Any] | None = None,
        *,
        ok: Iterable[int] = (200,),
    ) -> httpx.Response:
        """GET under the shared retry policy, with this source's knobs."""
        return await send(
            ctx.client,
            "GET",
            url,
            params=params,
            ok=ok,
            attempts=self.attempts,
            backoff=self.backoff,
            max_retry_after=self.max_retry_after,
            health=ctx.health,
            clock=ctx.now,
        )

    async def get_if_changed(
        self, ctx: PollContext, url: str, etag: str | None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        """A conditional GET (``If-None-Match: etag``) under the same policy: 200 or 304."""
        return await conditional_get(
            ctx.client,
            url,
            etag,
            params=params,
            attempts=self.attempts,
            backoff=self.backoff,
            max_retry_after=self.max_retry_after,
            health=ctx.health,
            clock=ctx.now,
        )

    def page_bound(self, what: str) -> PageBound:
        """The bound of one list read in this poll."""
        return PageBound(what, self.max_pages, self.max_items)

    async def get_json_or_none(
        self, ctx: PollContext, url: str, params: dict[str, Any] | None = None
    ) -> Any:
        """The JSON body of a GET, or None when it is 404."""
        response = await self.get(ctx, url, params, ok=(200, 404))
        return None if response.status_code == 404 else body_of(response)

    def _resumed(self, ctx: PollContext, units: dict[str, str]) -> dict[str, str]:
        """The units this poll reads: after a poll that failed part-way, the ones it did
        not commit (those it did were read moments ago; GitHub would answer each list
        with a 304, which still takes a paced request). A round that began more than
        :data:`ROUND_HORIZON` ago starts over."""
        if self._round is None or ctx.now() - self._round[0] > ROUND_HORIZON:
            self._round = (ctx.now(), set())
        done = self._round[1]
        return {name: service for name, service in units.items() if name not in done}

    def _unit(self, ctx: PollContext, name: str, service: str) -> Callable[[], Awaitable[None]]:
        async def sync() -> None:
            # The unit's cursors (one per list it reads) come from one read.
            async with ctx.cursors_read_ahead(f"{name}:"):
                await self.sync_unit(ctx, name, service)
            if self._round is not None:
                self._round[1].add(name)  # committed: a resumed poll need not read it

        return sync


_WITH_REPO = (PipelineRun, Deployment, Commit, MergeRequest, Incident)


def with_repo(records: Iterable[Any], kind: str, name: str) -> list[Any]:
    """``records`` read from one repo (project, job), each run, deployment, commit, merge
    request and issue incident stamped with it (``kind:name``), so it can follow the repo's service."""
    repo = f"{kind}:{name}"
    return [
        dataclasses.replace(r, repo=repo) if isinstance(r, _WITH_REPO) and not r.repo else r
        for r in records
    ]


def repo_mapper(ctx: PollContext, config: Any, kind: str) -> Callable[[str], str | None]:
    """Repo name -> service: the config's ``ci`` refs first, then the merged catalog's
    repos (e.g. Backstage ``github.com/project-slug`` annotations), including services
    only the external catalog lists. The catalog is read once, on the first lookup the
    config does not answer."""
    from exporter.core.catalog import repo_index
    from exporter.domains.catalog.store import load_catalog

    index: dict[str, str] | None = None

    def service_of(name: str) -> str | None:
        nonlocal index
        service: str | None = config.service_of_repo(kind, name)
        if service is not None:
            return service
        if index is None:
            index = repo_index(load_catalog(config, ctx.store))
        return index.get(f"{kind}:{name}".lower())

    return service_of


def off_branch_deployments(
    ctx: PollContext, service: str, records: Sequence[Any], known: set[str]
) -> Iterator[tuple[Deployment, str]]:
    """New successful production deployments in ``records`` of a commit that neither
    ``known`` (updated by the caller as it learns commits) nor the store holds: made
    off the default branch (a hotfix). Each comes with the commit of the service's
    previous successful production deployment, to compare it with."""
    batch = [r for r in records if isinstance(r, Deployment)]
    known.update(r.sha for r in records if isinstance(r, Commit))
    for dep in batch:
        if not (dep.production and dep.status == "success") or dep.finished_at is None:
            continue
        if dep.sha in known or store.has_commit(ctx.store, service, dep.sha):
            continue
        before = [
            (d.finished_at, d.sha)
            for d in batch
            if d.production
            and d.status == "success"
            and d.finished_at is not None
            and d.finished_at < dep.finished_at
        ]
        stored = store.previous_production_deploy(ctx.store, service, dep.finished_at)
        if stored is not None:
            before.append(stored)
        if before:
            yield dep, max(before)[1]
