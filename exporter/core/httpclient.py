"""The one place upstream HTTP clients are built, and the retry policy they share.

:func:`build_client` returns an ``httpx.AsyncClient`` whose response hook counts
every upstream answer in the source's health (``upstream_requests_total{code}``).
Tests and the sandbox pass their own ``transport``. :func:`send` wraps one
request in the shared policy: jittered exponential backoff on 5xx, timeouts and
connection errors; ``Retry-After`` honoured on 429 and 403 (secondary rate
limits) up to a cap; 401 fails at once, because retrying a bad token only burns
the upstream's patience.

Sources that talk to rate-limited APIs also pass ``rate``: every request then
waits for a token of the upstream host's :class:`TokenBucket` (one per host,
shared by every client of the process), and the response hook reads the
``X-RateLimit-*`` (GitHub) and ``RateLimit-*`` (GitLab) headers into the
source's health and slows the bucket down when fewer than ``reserve`` requests
remain before the reset. :func:`conditional_get` sends ``If-None-Match`` and
accepts ``304 Not Modified``, which GitHub does not count against the limit.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from exporter import __version__
from exporter.core.clock import Clock, system_clock
from exporter.core.errors import AuthError, RateLimited, SourceError, UpstreamStatusError
from exporter.core.health import SourceHealth
from exporter.core.redact import excerpt

log = logging.getLogger("exporter.httpclient")

USER_AGENT = f"platform-kpi-exporter/{__version__}"


class TokenBucket:
    """Paces requests to one upstream host: ``rate`` per second with bursts of ``burst``.

    :meth:`acquire` reserves a token and sleeps until it is due; reservation is
    synchronous, so concurrent tasks (or event loops) never take the same token.
    :meth:`slow_down` spreads the requests left in an upstream rate-limit window
    until its reset, so the budget is never spent to zero.
    """

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.clock = clock
        self._lock = threading.Lock()
        self._next = 0.0  # when the next token is free, by `clock`
        self._slow_interval = 0.0
        self._slow_until = 0.0

    def reserve(self) -> float:
        """Take the next token; return how many seconds to wait before using it."""
        with self._lock:
            now = self.clock()
            interval = 1.0 / self.rate
            if now < self._slow_until:
                interval = max(interval, self._slow_interval)
            # A bucket that has been idle holds at most `burst` tokens.
            start = max(self._next, now - (self.burst - 1) * interval)
            self._next = start + interval
            return max(0.0, start - now)

    async def acquire(self, max_wait: float = 60.0) -> None:
        wait = self.reserve()
        if wait > max_wait:
            raise RateLimited(
                f"request budget exhausted: next request allowed in {wait:.0f}s", wait
            )
        if wait > 0:
            await asyncio.sleep(wait)

    def slow_down(self, remaining: float, reset_in: float) -> None:
        """Spread ``remaining`` requests over the ``reset_in`` seconds until the window resets."""
        with self._lock:
            now = self.clock()
            self._slow_until = now + max(0.0, reset_in)
            self._slow_interval = max(0.0, reset_in) / max(1.0, remaining)


class _ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its connection slot back when it is closed."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections in small pools that never queue a request.

    httpcore's connection pool re-scans its connections (quadratically in their
    number) whenever a request arrives or leaves, and offers a freed connection to
    every queued request at once, so all but one of them wake up and queue again.
    With dozens of requests in flight, that bookkeeping cost more CPU than the HTTP
    itself (a steady-state poll of 500 repos: 4.6 s of CPU for 1,500 requests).
    Here requests wait in one queue for one of ``max_connections`` slots, then go to
    the least busy shard, a pool of at most ``shard_size`` connections that always
    has one free: no pool ever queues, and each of its scans stays short. The slot
    comes back when the response is closed (httpx closes it once the body is read,
    and on any error).
    """

    def __init__(self, max_connections: int, *, verify: bool = True, shard_size: int = 4) -> None:
        count = max(1, -(-max_connections // shard_size))
        self._sizes = [
            max_connections // count + (i < max_connections % count) for i in range(count)
        ]
        # One TLS context for every shard: the CA bundle is loaded once.
        context = httpx.create_ssl_context(verify=verify)
        self._pools = [
            httpx.AsyncHTTPTransport(
                verify=context,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            for size in self._sizes
        ]
        self._slots = asyncio.Semaphore(sum(self._sizes))
        self._busy = [0] * count

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._slots.acquire()
        # Fewer requests are in flight than connections exist, so some shard has room.
        index = min(range(len(self._pools)), key=lambda i: self._busy[i] - self._sizes[i])
        self._busy[index] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._busy[index] -= 1
                self._slots.release()

        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _ReleasingStream(response.stream, release)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


_BUCKETS: dict[str, TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def host_bucket(host: str, rate: float, burst: float | None = None) -> TokenBucket:
    """The process-wide bucket of ``host`` (created with ``rate`` on first use)."""
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get(host)
        if bucket is None or bucket.rate != rate:
            bucket = _BUCKETS[host] = TokenBucket(rate, burst)
        return bucket


def read_rate_limit(headers: httpx.Headers, now: float) -> tuple[str, float, float] | None:
    """(resource, remaining, seconds to reset at ``now``) from GitHub or GitLab rate-limit headers."""
    remaining = headers.get("X-RateLimit-Remaining") or headers.get("RateLimit-Remaining")
    if remaining is None:
        return None
    try:
        left = float(remaining)
    except ValueError:
        return None
    reset = headers.get("X-RateLimit-Reset") or headers.get("RateLimit-Reset")
    reset_in = 0.0
    if reset:
        try:
            # Both GitHub and GitLab send the reset as Unix seconds.
            reset_in = max(0.0, float(reset) - now)
        except ValueError:
            reset_in = 0.0
    resource = headers.get("X-RateLimit-Resource") or "core"
    return resource, left, reset_in


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
    rate: float | None = None,
    reserve: int = 0,
    clock: Clock = system_clock,
) -> httpx.AsyncClient:
    """An async client for one source, with its timeouts, auth and request counting.

    With ``rate``, requests are paced by their host's :class:`TokenBucket`, and the
    upstream's rate-limit headers are exported and obeyed (see the module doc);
    their reset instants are read against ``clock``.
    """

    async def count(response: httpx.Response) -> None:
        health.count_request(response.status_code)
        if rate is None:
            return
        budget = read_rate_limit(response.headers, clock())
        if budget is None:
            return
        resource, remaining, reset_in = budget
        health.set_rate_limit_remaining(resource, remaining)
        if remaining <= reserve and reset_in > 0:
            host_bucket(response.request.url.host, rate).slow_down(remaining, reset_in)

    async def pace(request: httpx.Request) -> None:
        if rate is not None:
            await host_bucket(request.url.host, rate).acquire()

    all_headers = {"User-Agent": USER_AGENT}
    all_headers.update(headers or {})
    return httpx.AsyncClient(
        base_url=base_url,
        headers=all_headers,
        auth=auth,
        verify=verify,
        timeout=httpx.Timeout(timeout),
        transport=transport or ShardedTransport(max_connections, verify=verify),
        event_hooks={"request": [pace], "response": [count]},
        follow_redirects=True,
    )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait at ``now`` from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
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
    return max(0.0, when.timestamp() - now)


class _Retryable(Exception):
    """Internal: a response or error worth another attempt."""

    def __init__(self, error: SourceError, wait: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


def _raise_for(
    response: httpx.Response, ok: Iterable[int], max_retry_after: float, now: float
) -> None:
    status = response.status_code
    if status in ok:
        return
    url = response.request.url.copy_with(query=None)
    body = excerpt(response.text)
    if status == 401:
        raise AuthError(f"{status} from {url}: credentials rejected: {body}")
    retry_after = parse_retry_after(response.headers.get("Retry-After"), now)
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
    clock: Clock = system_clock,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request under the shared retry policy; return a response whose status is in ``ok``.

    Raises a :class:`~exporter.core.errors.SourceError` subclass once retries are spent.
    ``sleep`` waits between attempts (tests pass one that records the waits);
    ``clock`` is "now" for a ``Retry-After`` given as an HTTP date (pass ``ctx.now``).
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
                _raise_for(response, ok_set, max_retry_after, clock())
                return response
    except _Retryable as exc:
        raise exc.error from None
    raise AssertionError("unreachable")  # pragma: no cover


async def conditional_get(
    client: httpx.AsyncClient,
    url: str,
    etag: str | None,
    *,
    params: Mapping[str, Any] | None = None,
    health: SourceHealth | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """GET under the shared policy with ``If-None-Match: etag``; the answer is 200 or 304.

    Store the response's ``ETag`` with the data it came with, and pass it back on
    the next poll: an unchanged resource then costs a 304 with no body.
    """
    headers = dict(kwargs.pop("headers", None) or {})
    if etag:
        headers["If-None-Match"] = etag
    return await send(
        client, "GET", url, ok=(200, 304), params=params, headers=headers, health=health, **kwargs
    )
