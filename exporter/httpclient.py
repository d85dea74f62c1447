"""The one place upstream HTTP clients are built, and the retry policy they share.

:func:`build_client` returns an ``httpx.AsyncClient`` whose response hook counts
every upstream answer in the source's health (``upstream_requests_total{code}``).
Tests and the sandbox pass their own ``transport``. :func:`send` wraps one
request in the shared policy: jittered exponential backoff on 5xx, timeouts and
connection errors; ``Retry-After`` honoured on 429 and 403 (secondary rate
limits) up to a cap; 401 fails at once, because retrying a bad token only burns
the upstream's patience.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from exporter import __version__
from exporter.errors import AuthError, RateLimited, SourceError, UpstreamStatusError
from exporter.health import SourceHealth

log = logging.getLogger(__name__)

USER_AGENT = f"platform-kpi-exporter/{__version__}"


def build_client(
    health: SourceHealth,
    *,
    timeout: float,
    base_url: str = "",
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
    verify: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 10,
) -> httpx.AsyncClient:
    """An async client for one source, with its timeouts, auth and request counting."""

    async def count(response: httpx.Response) -> None:
        health.count_request(response.status_code)

    all_headers = {"User-Agent": USER_AGENT}
    all_headers.update(headers or {})
    return httpx.AsyncClient(
        base_url=base_url,
        headers=all_headers,
        auth=auth,
        verify=verify,
        timeout=httpx.Timeout(timeout),
        transport=transport,
        limits=httpx.Limits(max_connections=max_connections),
        event_hooks={"response": [count]},
        follow_redirects=True,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _Retryable(Exception):
    """Internal: a response or error worth another attempt."""

    def __init__(self, error: SourceError, wait: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


def _raise_for(response: httpx.Response, ok: Iterable[int], max_retry_after: float) -> None:
    status = response.status_code
    if status in ok:
        return
    url = response.request.url.copy_with(query=None)
    body = response.text[:200].strip().replace("\n", " ")
    if status == 401:
        raise AuthError(f"{status} from {url}: credentials rejected: {body}")
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    rate_limited = status == 429 or (
        status == 403
        and (retry_after is not None or response.headers.get("X-RateLimit-Remaining") == "0")
    )
    if rate_limited:
        err = RateLimited(f"{status} from {url}: rate limited: {body}", retry_after)
        if retry_after is not None and retry_after > max_retry_after:
            # Waiting that long inside one poll would stall the scheduler: give up this
            # poll; the next one starts after the interval.
            raise err
        raise _Retryable(err, retry_after)
    if status == 403:
        raise AuthError(f"{status} from {url}: forbidden: {body}")
    err_status = UpstreamStatusError(f"{status} from {url}: {body}", status)
    if status >= 500:
        raise _Retryable(err_status)
    raise err_status


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    ok: Iterable[int] = (200,),
    attempts: int = 4,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
    max_retry_after: float = 60.0,
    health: SourceHealth | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request under the shared retry policy; return a response whose status is in ``ok``.

    Raises a :class:`~exporter.errors.SourceError` subclass once retries are spent.
    ``sleep`` waits between attempts (tests pass one that records the waits).
    """
    ok_set = frozenset(ok)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.wait is not None:
            return exc.wait
        # Exponential with up to one base step of jitter (tenacity's own helper renamed
        # its arguments between releases we support).
        step = backoff * 2.0 ** (state.attempt_number - 1)
        return min(max_backoff, step + random.uniform(0, backoff))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s %s failed (attempt %d of %d): %s; retrying in %.1fs",
            method,
            url,
            state.attempt_number,
            attempts,
            exc,
            delay,
        )

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(attempts),
        wait=wait,
        retry=retry_if_exception(lambda e: isinstance(e, _Retryable | httpx.TransportError)),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                try:
                    response = await client.request(method, url, **kwargs)
                except httpx.TransportError:
                    if health is not None:
                        health.count_request("error")
                    raise
                _raise_for(response, ok_set, max_retry_after)
                return response
    except _Retryable as exc:
        raise exc.error from None
    raise AssertionError("unreachable")  # pragma: no cover
