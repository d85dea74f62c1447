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
import json
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

import httpx

from exporter.errors import MalformedResponse
from exporter.sources.base import PollContext


def parse_time(value: Any) -> float:
    """Unix seconds from an ISO 8601 timestamp (``Z`` or an offset)."""
    if not isinstance(value, str) or not value:
        raise MalformedResponse(f"expected an ISO 8601 timestamp, got {value!r}")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise MalformedResponse(f"invalid timestamp {value!r}") from None


def parse_time_or_none(value: Any) -> float | None:
    return None if value in (None, "") else parse_time(value)


def body_of(response: httpx.Response) -> Any:
    """The JSON body, or :class:`MalformedResponse` naming the URL."""
    try:
        return response.json()
    except ValueError as exc:
        url = response.request.url.copy_with(query=None)
        raise MalformedResponse(f"invalid JSON from {url}: {exc}") from None


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


async def run_units(units: Iterable[Callable[[], Awaitable[None]]], concurrency: int) -> None:
    """Run repo syncs with bounded concurrency; stop starting new ones after a failure.

    Re-raises the first failure once the ones in flight have ended.
    """
    limit = asyncio.Semaphore(concurrency)
    failed: list[BaseException] = []

    async def guarded(unit: Callable[[], Awaitable[None]]) -> None:
        async with limit:
            if failed:
                return
            try:
                await unit()
            except Exception as exc:
                failed.append(exc)

    await asyncio.gather(*(guarded(u) for u in units))
    if failed:
        raise failed[0]


def repo_mapper(ctx: PollContext, config: Any, kind: str) -> Callable[[str], str | None]:
    """Repo name -> service: the config's ``ci`` refs first, then the merged catalog's
    repos (e.g. Backstage ``github.com/project-slug`` annotations), including services
    only the external catalog lists. The catalog is read once, on the first lookup the
    config does not answer."""
    from exporter.catalog import load_catalog, repo_index

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
