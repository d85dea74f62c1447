"""The probes in flight: started on each check's grid slot, collected for the next commit.

:class:`ProbeRunner` owns one background task (:func:`run_grid`) that launches
each check at its slots. A probe waits for one of ``concurrency`` places before
it starts, and its clock starts only then, so a wait for a place is never part
of its measured duration. A probe is counted skipped (never silently dropped)
when its check's previous probe is still running at the slot, or when it could
not get a place before the check's next slot. Finished results and skip counts
wait in memory until :meth:`ProbeRunner.drain` hands them to the poll that
commits them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

from exporter.domains.probe.schedule import Grid, Ticker, run_grid

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

log = logging.getLogger("exporter.sources.probe")


class ProbeRunner(Generic[K, R]):
    """Runs ``probe(key)`` at every slot of ``grid``; see the module docstring."""

    def __init__(
        self,
        grid: Grid[K],
        ticker: Ticker,
        probe: Callable[[K], Awaitable[R]],
        concurrency: int,
    ) -> None:
        self.grid = grid
        self.ticker = ticker
        self.probe = probe
        self._places = asyncio.Semaphore(concurrency)
        self._running: dict[K, asyncio.Task[None]] = {}
        self._done: list[R] = []
        self._skipped: dict[K, int] = {}
        self._loop: asyncio.Task[None] | None = None

    def start(self, first: Mapping[K, float]) -> None:
        """Start the grid loop; ``first`` is each check's first slot (ticker time)."""
        self._loop = asyncio.create_task(
            run_grid(self.grid, self.ticker, first, self.launch, self.skip), name="probe grid"
        )

    def launch_now(self, keys: Iterable[K]) -> None:
        """Start these checks' probes now, off their grids (the checks due at start)."""
        now = self.ticker.now()
        for key in keys:
            self.launch(key, now)

    async def settle(self, keys: Iterable[K]) -> None:
        """Wait for these checks' probes in flight to end (``once`` commits them)."""
        running = [self._running[k] for k in keys if k in self._running]
        if running:
            await asyncio.wait(running)

    def failure(self) -> BaseException | None:
        """What stopped the grid loop, if it stopped (it runs until closed)."""
        if self._loop is None or not self._loop.done() or self._loop.cancelled():
            return None
        return self._loop.exception()

    def skip(self, key: K, n: int) -> None:
        self._skipped[key] = self._skipped.get(key, 0) + n

    def launch(self, key: K, slot: float) -> None:
        """Start the check's probe for ``slot``, or count it skipped if the last one still runs."""
        if key in self._running:
            self.skip(key, 1)
            return
        task = asyncio.create_task(self._run(key, slot))
        self._running[key] = task
        task.add_done_callback(lambda _t: self._running.pop(key, None))

    async def _run(self, key: K, slot: float) -> None:
        async with self._places:
            if self.ticker.now() >= slot + self.grid.intervals[key]:
                self.skip(key, 1)  # no place came free before the check's next slot
                return
            try:
                result = await self.probe(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A probe classifies the upstream's faults itself; this is a bug, so say so.
                log.exception("probe %s failed unexpectedly; counted as skipped", key)
                self.skip(key, 1)
                return
            # Appended only now: a drain during the probe swapped the list.
            self._done.append(result)

    def drain(self) -> tuple[list[R], dict[K, int]]:
        """The results finished and the slots skipped since the last drain."""
        done, self._done = self._done, []
        skipped, self._skipped = self._skipped, {}
        return done, skipped

    async def aclose(self) -> None:
        """Stop the loop and cancel every probe in flight (their results are not kept)."""
        tasks = [t for t in (self._loop, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
