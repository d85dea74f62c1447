"""An asyncio event loop on virtual time: when nothing is ready, its clock jumps to the next timer.

``run_virtual(main)`` runs a coroutine on it; ``loop_epoch(at)`` is a clock (epoch
seconds) that starts at ``at`` and advances with the loop. Every ``asyncio.sleep``
and ``asyncio.timeout`` then costs no real time, so a test can wait out a 5 s
``Retry-After`` in microseconds and still see exactly when each request was sent.
Only for code that waits on timers, not on sockets (an in-process
``httpx.MockTransport`` upstream). Work handed to a worker thread (``asyncio.to_thread``:
a commit, a render) costs no virtual time: while any runs, the clock stands still and
the loop waits for it for real.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    #: The latest virtual time any loop of the process reached: the next loop starts
    #: there, so loop time never goes back, as a monotonic clock does not (state kept
    #: across loops, like a host's token bucket, is reserved on it).
    _reached = 0.0

    def __init__(self) -> None:
        super().__init__()
        self._virtual = max(time.monotonic(), VirtualTimeLoop._reached)
        self._in_threads = 0
        selector = self._selector  # type: ignore[attr-defined]
        real_select = selector.select

        def select(timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
            if timeout is None:
                return real_select(None)  # nothing scheduled: only I/O can wake us
            if self._in_threads and timeout > 0:
                # A worker thread is running: its end (the loop's self-pipe) comes first.
                return real_select(1.0)
            events = real_select(0)
            if not events and timeout > 0:
                self._virtual += timeout  # nothing to do until the next timer: skip to it
            return events

        selector.select = select

    def time(self) -> float:
        return self._virtual

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> Any:
        future = super().run_in_executor(executor, func, *args)
        self._in_threads += 1

        def ended(_: Any) -> None:
            self._in_threads -= 1

        future.add_done_callback(ended)
        return future

    def close(self) -> None:
        VirtualTimeLoop._reached = max(VirtualTimeLoop._reached, self._virtual)
        super().close()


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(main())


def loop_epoch(at: float) -> Callable[[], float]:
    """Epoch seconds that start at ``at`` and move with the running loop's (virtual) time
    (readable from worker threads too: the daemon renders in one)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    return lambda: at + loop.time() - start
