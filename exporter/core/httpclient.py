"""The one place upstream HTTP clients are built, and the retry policy they share.

:func:`build_client` returns an ``httpx.AsyncClient`` whose response hook counts
every upstream answer in the source's health (``upstream_requests_total{code}``).
Tests and the sandbox pass their own ``transport``. :func:`send` wraps one
request in the shared policy: jittered exponential backoff on 5xx, timeouts and
connection errors; ``Retry-After`` honoured on 429 and 403 (secondary rate
limits) up to a cap; 401 fails at once, because retrying a bad token only burns
the upstream's patience.

Every client's transport is wrapped in :class:`~exporter.core.upstream.GatedTransport`:
one queue of connection slots (its wait counts toward the request's timeout),
one pause for every request of the source when the upstream says it is rate
limited, and the poll's retry budget (see :mod:`exporter.core.upstream`).

Sources that talk to rate-limited APIs also pass ``rate``: every request then
waits for a token of the upstream host's :class:`TokenBucket` (one per host,
shared by every client of the event loop), and the response hook reads the
``X-RateLimit-*`` (GitHub) and ``RateLimit-*`` (GitLab) headers into the
source's health and slows the bucket down when fewer than ``reserve`` requests
remain before the reset. :func:`conditional_get` sends ``If-None-Match`` and
accepts ``304 Not Modified``, which GitHub does not count against the limit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
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
from exporter.core.clock import Clock, system_clock
from exporter.core.errors import AuthError, RateLimited, SourceError, UpstreamStatusError
from exporter.core.health import SourceHealth
from exporter.core.redact import excerpt
from exporter.core.tracing import TracingTransport
from exporter.core.upstream import (
    GatedTransport,
    ReleasingStream,
    Sleep,
    current_scope,
    parse_retry_after,
    pause_until,
    reset_instant,
)

__all__ = ["ShardedTransport", "TokenBucket", "build_client", "parse_retry_after", "send"]

log = logging.getLogger("exporter.httpclient")

USER_AGENT = f"platform-kpi-exporter/{__version__}"


def loop_time() -> float:
    """The running event loop's time (what its sleeps are measured in), else monotonic
    seconds: a bucket's waits are slept on the loop, so they must be reserved on its clock."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class TokenBucket:
    """Paces requests to one upstream host: ``rate`` per second with bursts of ``burst``.

    :meth:`acquire` reserves a token and sleeps until it is due; reservation is
    synchronous, so concurrent tasks (or event loops) never take the same token.
    :meth:`slow_down` spreads the requests left in an upstream rate-limit window
    until its reset, so the budget is never spent to zero.
    """

    def __init__(
        self, rate: float, burst: float | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.clock = clock or loop_time
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
        response.stream = ReleasingStream(response.stream, release)
        return response

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


_BUCKETS: dict[str, tuple[asyncio.AbstractEventLoop | None, TokenBucket]] = {}
_BUCKETS_LOCK = threading.Lock()


def host_bucket(host: str, rate: float, burst: float | None = None) -> TokenBucket:
    """The bucket of ``host`` for the running event loop, shared by every client on it
    (created with ``rate`` on first use). Its tokens are reserved on that loop's clock,
    so a bucket does not outlive its loop."""
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    with _BUCKETS_LOCK:
        entry = _BUCKETS.get(host)
        if entry is None or entry[0] is not loop or entry[1].rate != rate:
            entry = _BUCKETS[host] = (loop, TokenBucket(rate, burst))
        return entry[1]


def read_rate_limit(headers: httpx.Headers, now: float) -> tuple[str, float, float] | None:
    """(resource, remaining, seconds to reset at ``now``) from GitHub or GitLab rate-limit headers."""
    remaining = headers.get("X-RateLimit-Remaining") or headers.get("RateLimit-Remaining")
    if remaining is None:
        return None
    try:
        left = float(remaining)
    except ValueError:
        return None
    # Unix seconds (GitHub, GitLab) or seconds left (PagerDuty): see reset_instant.
    reset = reset_instant(headers.get("X-RateLimit-Reset") or headers.get("RateLimit-Reset"), now)
    reset_in = 0.0 if reset is None else max(0.0, reset - now)
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
    max_pause: float = 60.0,
    sleep: Sleep = asyncio.sleep,
    rate_limits: bool = True,
) -> httpx.AsyncClient:
    """An async client for one source, with its timeouts, auth and request counting.

    With ``rate``, requests are paced by their host's :class:`TokenBucket`, and the
    upstream's rate-limit headers are exported and obeyed (see the module doc);
    their reset instants are read against ``clock``. A rate-limit pause longer than
    ``max_pause`` seconds ends the request with ``RateLimited`` instead of waiting;
    ``sleep`` is how a pause is waited out (tests record it). ``rate_limits=False``
    (the probe) never pauses: there a 429 is what a check found.
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
        # At 0 the transport pauses every request until the reset; above it, pace them.
        if 0 < remaining <= reserve and reset_in > 0:
            host_bucket(response.request.url.host, rate).slow_down(remaining, reset_in)

    async def pace(request: httpx.Request) -> None:
        if rate is not None:
            await host_bucket(request.url.host, rate).acquire()

    all_headers = {"User-Agent": USER_AGENT}
    all_headers.update(headers or {})
    gate = GatedTransport(
        transport or ShardedTransport(max_connections, verify=verify),
        health,
        max_connections=max_connections,
        clock=clock,
        max_pause=max_pause,
        pace=pace if rate is not None else None,
        sleep=sleep,
        pauses=rate_limits,
        reserve=reserve if rate is not None else 0,
    )
    return httpx.AsyncClient(
        base_url=base_url,
        headers=all_headers,
        auth=auth,
        verify=verify,
        timeout=httpx.Timeout(timeout),
        # Outside the gate: a request's span includes its wait for a slot or a pause.
        transport=TracingTransport(gate),
        event_hooks={"response": [count]},
        follow_redirects=True,
    )


class _Retryable(Exception):
    """Internal: a response or error worth another attempt.

    ``paused`` marks a rate-limit answer: its wait is the transport's pause, which
    holds every request of the source, so it costs no backoff and no retry budget.
    """

    def __init__(self, error: SourceError, *, paused: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.paused = paused


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
    until = pause_until(response, response.content, now) if status in (403, 429) else None
    if until is not None:
        wait = max(0.0, until - now)
        err = RateLimited(f"{status} from {url}: rate limited: {body}", wait)
        if wait > max_retry_after:
            # Waiting that long inside one poll would stall the scheduler: give up this
            # poll; the pause keeps the next ones from calling until it has passed.
            raise err
        raise _Retryable(err, paused=True)
    if status == 403:
        raise AuthError(f"{status} from {url}: forbidden: {body}")
    err_status = UpstreamStatusError(f"{status} from {url}: {body}", status)
    if status >= 500:
        raise _Retryable(err_status)
    raise err_status


def describe(exc: BaseException | None) -> str:
    """A failure in words, never empty (httpx's timeouts often carry no message)."""
    if exc is None:
        return "unknown failure"
    if isinstance(exc, _Retryable):
        exc = exc.error
    text = str(exc).strip()
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"{name}: {text}" if text else f"{name}: no answer within the timeout"
    return text or name


def _within_budget(exc: BaseException, method: str, url: str) -> bool:
    """Whether a failure may be retried: a rate-limit pause always, others while the
    poll's retry budget lasts."""
    if isinstance(exc, _Retryable) and exc.paused:
        return True
    if not isinstance(exc, _Retryable | httpx.TransportError):
        return False
    scope = current_scope()
    if scope is None or scope.take_retry():
        return True
    log.warning(
        "%s %s failed: %s; not retried: this poll's retry budget is spent "
        "(%d retries for %d requests)",
        method,
        url,
        describe(exc),
        scope.retries,
        scope.requests,
    )
    return False


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
    A rate-limited answer is retried at once: the client's transport holds the retry,
    with every other request of the source, until the pause ends.
    """
    ok_set = frozenset(ok)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.paused:
            return 0.0
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
            describe(exc),
            delay,
        )

    async def pause(seconds: float) -> None:
        if seconds > 0:
            await sleep(seconds)

    retrying = AsyncRetrying(
        sleep=pause,
        stop=stop_after_attempt(attempts),
        wait=wait,
        retry=retry_if_exception(lambda e: _within_budget(e, method, url)),
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
