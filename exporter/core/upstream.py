"""One pause, one queue and one retry budget per upstream: good manners under rate limits.

:class:`GatedTransport` sits between a source's ``httpx.AsyncClient`` and its real
transport (see :func:`exporter.core.httpclient.build_client`). Every request of
the source passes three gates, in this order:

1. **a connection slot** (:class:`PrioritySlots`, ``max_connections`` of them). The
   wait counts toward the request's timeout (``httpx.PoolTimeout`` past it; a
   pause of the source does not count), and
   requests of the earliest-started unit of work go first (:func:`working_on`), so
   a backfill finishes its repos one after another instead of all at the end;
2. **the host's token bucket**, when the source paces its requests;
3. **the pause** (:class:`Pause`), checked last, right before the request is sent.
   A ``429``, a ``403`` whose body says a secondary rate limit was exceeded, or ``x-ratelimit-remaining: 0`` pauses *every* request
   of the source, including those already queued or holding a slot, until
   ``Retry-After`` has passed, or the ``x-ratelimit-reset`` instant, or for one
   minute when neither is given (GitHub's documented rules:
   https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api#exceeding-the-rate-limit).
   A pause longer than ``max_pause`` is not waited out: the request raises
   :class:`~exporter.core.errors.RateLimited`, the poll ends, and what it
   committed stays.

:class:`PollScope` is what one poll's requests share (through a context
variable, so every task of the poll sees it): the retry budget. Retries of 5xx
answers, timeouts and connection errors may take at most ``retry_ratio`` of the
requests sent so far (and ``retry_floor`` at least); past it the poll fails
fast rather than hammering a sick upstream. The scope also holds the poll's
deadline and the upstream's rate-limit budget as its answers state it, so a
backfill can stop starting units (repos) that would not finish in either
(:class:`UnitPlan`): a unit cut off part-way is work thrown away.

One pause per source's client, not per host: GitHub and GitLab limit each token
separately, and two sources on one host carry different credentials.
"""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import httpx

from exporter.core.clock import Clock
from exporter.core.errors import DeadlineExceeded, RateLimited, SourceError
from exporter.core.health import SourceHealth

Sleep = Callable[[float], Awaitable[None]]

#: How long GitHub asks a client to wait on a secondary limit that names no time.
DEFAULT_PAUSE = 60.0
#: Body phrases of GitHub's secondary rate limits (older answers said "abuse detection").
SECONDARY_LIMIT_PHRASES = ("secondary rate limit", "abuse detection")
_WIRE_HEADERS = (b"content-encoding", b"content-length", b"transfer-encoding")


@dataclass
class PollScope:
    """What every request of one poll shares: the retry budget, the deadline, the rate budget."""

    retry_ratio: float = 0.1
    retry_floor: int = 5
    requests: int = 0
    retries: int = 0
    #: The event loop's time at which the poll is cancelled (None: no deadline).
    deadline: float | None = None
    #: Requests sent and not yet answered.
    in_flight: int = 0
    #: The upstream's rate-limit budget as its latest answer of the current window said,
    #: that window's reset (epoch seconds), and how long a pause the gate waits out.
    budget_left: float | None = None
    budget_reset: float = 0.0
    max_pause: float = 60.0

    def count_request(self) -> None:
        self.requests += 1

    def seconds_left(self) -> float | None:
        """Seconds until the poll's deadline (None: it has none)."""
        if self.deadline is None:
            return None
        return self.deadline - asyncio.get_running_loop().time()

    def note_budget(self, left: float, reset: float, max_pause: float) -> None:
        """Record a ``remaining``/``reset`` pair an answer carried. Answers of one window
        may arrive out of order, so the lowest count of the newest window holds."""
        self.max_pause = max_pause
        if self.budget_left is None or reset > self.budget_reset:
            self.budget_left, self.budget_reset = left, reset
        elif reset == self.budget_reset:
            self.budget_left = min(self.budget_left, left)

    def allowed_retries(self) -> int:
        return max(self.retry_floor, int(self.retry_ratio * self.requests))

    def take_retry(self) -> bool:
        """Spend one retry of the budget; False once it is spent."""
        if self.retries >= self.allowed_retries():
            return False
        self.retries += 1
        return True


_SCOPE: ContextVar[PollScope | None] = ContextVar("exporter_poll_scope", default=None)
_PRIORITY: ContextVar[int] = ContextVar("exporter_unit_priority", default=0)
_UNIT: ContextVar[UnitWork | None] = ContextVar("exporter_unit_work", default=None)


@contextmanager
def poll_scope(scope: PollScope | None = None) -> Iterator[PollScope]:
    """Run a poll's requests (and every task they start) under ``scope``."""
    scope = scope or PollScope()
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def current_scope() -> PollScope | None:
    """The scope of the poll this code runs in, if any."""
    return _SCOPE.get()


@dataclass(eq=False)
class UnitWork:
    """One unit of a poll's work (a repo of a backfill): since when it runs (loop time),
    and how many requests it has sent."""

    started: float
    requests: int = 0


def working_on(priority: int, work: UnitWork | None = None) -> None:
    """Mark the current task (and the tasks it starts) as work of unit ``priority``:
    the lower, the sooner its requests get a connection slot. Its requests are
    counted in ``work``."""
    _PRIORITY.set(priority)
    _UNIT.set(work)


class UnitPlan:
    """Whether a poll may start one more unit of work, which commits whole or not at all.

    A unit cut off by the poll's deadline, or by a rate-limit budget that runs out
    for longer than a poll waits, is work thrown away: its requests are sent again by
    the next poll. So a unit starts only while what is left covers the costliest unit
    finished so far in this poll: its seconds (with :attr:`TIME_MARGIN`: units in
    flight share the connection slots) before the deadline, and its requests (plus
    what the units in flight may still send) within the budget until its reset, unless
    that reset is near enough to wait for. Until a unit has finished there is no
    estimate (unless an earlier poll of the same backfill gave one), and units start
    freely: a poll always begins with its whole deadline.
    """

    TIME_MARGIN = 1.5

    def __init__(self, clock: Clock, seen: tuple[float, int] = (0.0, 0)) -> None:
        self.clock = clock
        self.scope = current_scope()
        # The longest (seconds) and costliest (requests) unit finished: ``seen`` carries
        # them over from earlier polls of a backfill, whose first units may be cheap ones
        # (lists answered 304 once its round starts over).
        self.longest, self.costliest = seen
        self.running: set[UnitWork] = set()

    def start(self) -> UnitWork:
        work = UnitWork(asyncio.get_running_loop().time())
        self.running.add(work)
        return work

    def finish(self, work: UnitWork) -> None:
        self.running.discard(work)
        self.longest = max(self.longest, asyncio.get_running_loop().time() - work.started)
        self.costliest = max(self.costliest, work.requests)

    def ended(self, work: UnitWork) -> None:
        """``work`` failed: it is no longer in flight, and says nothing of a unit's cost."""
        self.running.discard(work)

    def refusal(self, left: int, total: int) -> SourceError | None:
        """Why the next unit must not start now (``left`` of ``total`` units unstarted),
        or None when it may."""
        scope = self.scope
        if scope is None or not self.costliest:
            return None
        rest = f"{left} of {total} units are left for the next poll"
        seconds = scope.seconds_left()
        if seconds is not None and seconds < self.longest * self.TIME_MARGIN:
            return DeadlineExceeded(
                f"stopped starting units {seconds:.1f}s before the poll's deadline (the longest "
                f"took {self.longest:.1f}s), so none is cut off; {rest}"
            )
        if scope.budget_left is None:
            return None
        reset_in = scope.budget_reset - self.clock()
        if reset_in <= scope.max_pause:
            return None  # the gate waits for the reset: nothing is cut off
        owed = sum(max(0, self.costliest - w.requests) for w in self.running)
        available = scope.budget_left - scope.in_flight
        if available >= owed + self.costliest:
            return None
        return RateLimited(
            f"the rate-limit budget has {available:.0f} requests left (above its reserve) "
            f"until its reset in {reset_in:.0f}s, fewer than the units in flight and the "
            f"next may send ({owed + self.costliest}); {rest}",
            reset_in,
        )


class PrioritySlots:
    """A semaphore whose waiters are served lowest priority first, then first come."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self._free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, priority: int, remaining: Callable[[], float | None]) -> None:
        """Take a slot; ``httpx.PoolTimeout`` once ``remaining()`` (seconds left to wait,
        asked again whenever it runs out; None: no bound) reaches 0."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), waiter))
        try:
            while not waiter.done():
                left = remaining()
                if left is not None and left <= 0:
                    raise httpx.PoolTimeout(f"no connection slot in time (all {self.in_use} busy)")
                await asyncio.wait({waiter}, timeout=left)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            waiter.cancel()
            raise

    @property
    def in_use(self) -> int:
        return self.slots - self._free

    def release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to this waiter
                return
        self._free += 1


class Pause:
    """Until when every request of one upstream must wait (by the source's clock)."""

    def __init__(self, health: SourceHealth) -> None:
        self.until = 0.0
        self.health = health

    def extend(self, until: float, now: float) -> None:
        """Pause until ``until``; the newly paused seconds are counted once."""
        added = until - max(now, self.until)
        if added > 0:
            self.health.count_pause(added)
        self.until = max(self.until, until)

    async def wait(self, clock: Clock, sleep: Sleep, max_pause: float) -> None:
        """Hold the caller while paused; :class:`RateLimited` if the pause outlasts ``max_pause``."""
        counted = False
        while True:
            until = self.until
            remaining = until - clock()
            if remaining <= 0:
                return
            if remaining > max_pause:
                raise RateLimited(
                    f"rate limited for {remaining:.0f}s more (over the {max_pause:.0f}s a poll "
                    "waits); not calling until then",
                    remaining,
                )
            if not counted:
                self.health.count_paused_request()
                counted = True
            await sleep(remaining)
            if self.until == until:
                return  # waited it out, and no new pause came meanwhile


def pause_until(response: httpx.Response, body: bytes, now: float) -> float | None:
    """When ``response`` says the upstream may be called again, if it says it is rate limited.

    GitHub's rules: a 429, or a 403 with ``x-ratelimit-remaining: 0`` or a
    secondary-limit message (or a ``Retry-After``), waits ``Retry-After`` seconds if given, else until
    ``x-ratelimit-reset`` if the remaining budget is 0, else one minute; any answer
    with ``x-ratelimit-remaining: 0`` means the next request would be refused, so
    it waits for the reset too. GitLab sends ``RateLimit-*`` and ``Retry-After``.
    """
    headers = response.headers
    status = response.status_code
    spent = (headers.get("x-ratelimit-remaining") or headers.get("ratelimit-remaining")) == "0"
    retry_after = _named_wait(headers, now)
    # A 403 is a refusal of the credentials unless it names a limit (or when to retry).
    limited = status == 429 or (
        status == 403 and (spent or retry_after is not None or _secondary_limit(body))
    )
    if not limited and not spent:
        return None
    if limited and retry_after is not None:
        return now + retry_after
    reset = reset_instant(headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset"), now)
    if spent and reset is not None:
        return max(now, reset)
    return now + DEFAULT_PAUSE if limited else None


def reset_instant(value: str | None, now: float) -> float | None:
    """When a rate-limit window resets, from its ``x-ratelimit-reset`` / ``ratelimit-reset``.

    GitHub and GitLab send Unix seconds; PagerDuty (and the IETF ``RateLimit`` draft) the
    seconds left. An instant more than a day before ``now`` cannot be a reset still to
    come, so such a value is read as seconds from now.
    """
    if not value:
        return None
    try:
        reset = float(value)
    except ValueError:
        return None
    return now + reset if reset < now - 86400.0 else reset


# Azure Cost Management names its wait per quota instead of in Retry-After
# (learn.microsoft.com, "Cost Management API throttling"); the longest one applies.
MS_RETRY_AFTER = re.compile(r"^x-ms-ratelimit-microsoft\.[a-z]+-[a-z]+-retry-after$")


def _named_wait(headers: httpx.Headers, now: float) -> float | None:
    """The wait an answer names: ``Retry-After``, Opsgenie's throttling period, else the
    longest Azure quota wait."""
    standard = parse_retry_after(headers.get("Retry-After"), now)
    if standard is not None:
        return standard
    if headers.get("X-RateLimit-State", "").upper() == "THROTTLED":
        # Opsgenie's throttled answer names the period its token bucket refills over.
        period = parse_retry_after(headers.get("X-RateLimit-Period-In-Sec"), now)
        if period is not None:
            return period
    waits = [parse_retry_after(v, now) for k, v in headers.items() if MS_RETRY_AFTER.match(k)]
    known = [w for w in waits if w is not None]
    return max(known) if known else None


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


def _secondary_limit(body: bytes) -> bool:
    try:
        message = json.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body[:500].decode(errors="replace")
    text = str(message).lower()
    return any(phrase in text for phrase in SECONDARY_LIMIT_PHRASES)


class ReleasingStream(httpx.AsyncByteStream):
    """A response body that gives its slot back when it is closed."""

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


class GatedTransport(httpx.AsyncBaseTransport):
    """The slot queue, the pause and the pacing of one source, around its transport."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        health: SourceHealth,
        *,
        max_connections: int,
        clock: Clock,
        max_pause: float = 60.0,
        pace: Callable[[httpx.Request], Awaitable[None]] | None = None,
        sleep: Sleep = asyncio.sleep,
        pauses: bool = True,
        reserve: int = 0,
    ) -> None:
        self.inner = inner
        # The rate-limit budget kept in reserve (paced, not planned for): see _note_budget.
        self.reserve = reserve
        self.slots = PrioritySlots(max_connections)
        self.pause = Pause(health)
        self.clock = clock
        self.max_pause = max_pause
        self._pace = pace
        self._sleep = sleep
        self._pauses = pauses

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = dict(request.extensions.get("timeout") or {})
        budget = timeouts.get("pool")
        queued = self.clock()

        def remaining() -> float | None:
            # The slot wait counts toward the request's timeout; a pause of the whole
            # source does not (it is the upstream's order, not its slowness).
            if budget is None:
                return None
            return max(queued, self.pause.until) + budget - self.clock()

        await self.slots.acquire(_PRIORITY.get(), remaining)
        left = remaining()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.slots.release()

        try:
            if self._pace is not None:
                await self._pace(request)
            # Last before sending, with no wait in between: a pause that began while this
            # request queued or paced holds it too.
            await self.pause.wait(self.clock, self._sleep, self.max_pause)
            if left is not None:
                # The slot wait was part of this request's time: what is left bounds the rest.
                request.extensions["timeout"] = {
                    k: (None if v is None else min(v, max(0.001, left)))
                    for k, v in timeouts.items()
                }
            scope = current_scope()
            unit = _UNIT.get()
            if unit is not None:
                unit.requests += 1
            if scope is None:
                response = await self.inner.handle_async_request(request)
            else:
                scope.count_request()
                scope.in_flight += 1
                try:
                    response = await self.inner.handle_async_request(request)
                finally:
                    scope.in_flight -= 1
                self._note_budget(scope, response.headers)
        except BaseException:
            release()
            raise
        return await self._inspect(response, release)

    def _note_budget(self, scope: PollScope, headers: httpx.Headers) -> None:
        """Hand the poll's scope the rate-limit budget an answer states (GitHub, GitLab),
        less the reserve: below it the host's bucket trickles requests out until the reset,
        so a unit started on it would not finish in a poll."""
        left = headers.get("x-ratelimit-remaining") or headers.get("ratelimit-remaining")
        reset = headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset")
        if left is None or reset is None:
            return
        try:
            scope.note_budget(float(left) - self.reserve, float(reset), self.max_pause)
        except ValueError:
            return  # not numbers: nothing to plan by

    async def _inspect(
        self, response: httpx.Response, release: Callable[[], None]
    ) -> httpx.Response:
        """Pause on a rate-limit answer; hand back a response that releases the slot."""
        status = response.status_code
        if self._pauses and status in (403, 429):
            # Small error bodies: read now, so the pause starts before the slot is let go.
            try:
                body = await response.aread()
            except BaseException:
                release()
                raise
            finally:
                await response.aclose()
            # The body is decoded now: hand it on without the headers that described its wire form.
            headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _WIRE_HEADERS]
            answer = httpx.Response(
                status, headers=headers, content=body, extensions=response.extensions
            )
            until = pause_until(answer, body, self.clock())
            if until is not None:
                self.pause.extend(until, self.clock())
            release()
            return answer
        until = pause_until(response, b"", self.clock()) if self._pauses else None
        if until is not None:
            self.pause.extend(until, self.clock())
        if response.is_closed:
            release()  # read already (an in-memory transport): nothing holds the slot
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = ReleasingStream(response.stream, release)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
