"""Every probe on time: each check on a fixed grid, at a stable offset, once per interval.

A test clock drives the grid loop: its sleeps return a little early or late
(seeded, so the run is repeatable), the way a real event loop's timers do, and
the counts must not care. The loop and the runner are the daemon's own; only
the clock and the probe itself (which returns at once) are the test's.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter

import pytest

from exporter.domains.probe.schedule import Grid, check_offset, run_grid
from exporter.domains.probe.sources.runner import ProbeRunner

INTERVAL = 5.0
MINUTES_10 = 600.0


async def settle() -> None:
    """Let every task that can run, run (a few passes of the event loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


class SimClock:
    """Simulated monotonic time: each sleep wakes up within ``early`` before to ``late`` after."""

    def __init__(self, start: float, early: float, late: float, seed: int = 7) -> None:
        self.t = start
        self.early, self.late = early, late
        self.rng = random.Random(seed)
        self.sleeps = 0
        self._target: float | None = None

    def now(self) -> float:
        return self.t

    async def sleep_until(self, when: float) -> None:
        self.sleeps += 1
        await settle()  # what is runnable runs before time moves on, as with a real clock
        if when != self._target:  # the first sleep for a time may end early; the next one not
            wake = when + self.rng.uniform(-self.early, self.late)
        else:
            wake = when + self.rng.uniform(0.0, self.late)
        self._target = when
        self.t = max(self.t, wake)


def grid_of(n: int, interval: float = INTERVAL, wall: float = 1_700_000_000.0) -> Grid[str]:
    keys = {f"svc{i}/health": interval for i in range(n)}
    return Grid.of(keys, {k: k for k in keys}, wall=wall, tick=0.0)


async def run_for(seconds: float, grid: Grid[str], clock: SimClock) -> Counter[str]:
    """Launches per check while the test clock runs from 0 to ``seconds``."""
    launched: Counter[str] = Counter()
    skipped: Counter[str] = Counter()

    def launch(key: str, slot: float) -> None:
        assert slot <= clock.now() < slot + grid.intervals[key], "launched on its own slot"
        if clock.now() < seconds:
            launched[key] += 1

    def skip(key: str, n: int) -> None:
        skipped[key] += n

    first = {k: grid.first_after(k, grid.to_wall(0.0)) for k in grid.intervals}
    task = asyncio.create_task(run_grid(grid, clock, first, launch, skip))
    while clock.now() < seconds:
        await asyncio.sleep(0)
    task.cancel()
    assert not skipped, "no slot passes unprobed when the loop keeps up"
    return launched


class TestGrid:
    def test_ten_minutes_of_5s_checks_make_120_probes_each(self) -> None:
        """Wake-ups up to 50 ms early or 300 ms late still give 120 ± 1 probes per check."""
        grid = grid_of(20)
        clock = SimClock(0.0, early=0.05, late=0.3)
        counts = asyncio.run(run_for(MINUTES_10, grid, clock))
        assert set(counts) == set(grid.intervals)
        assert all(119 <= n <= 121 for n in counts.values()), counts

    def test_a_wake_up_a_hair_early_loses_no_slot(self) -> None:
        """The bug this replaces: a tick 1 ms early made the check wait a whole extra tick."""
        grid = grid_of(3)
        clock = SimClock(0.0, early=0.001, late=0.0)
        counts = asyncio.run(run_for(MINUTES_10, grid, clock))
        assert all(119 <= n <= 121 for n in counts.values()), counts

    def test_offsets_spread_checks_over_the_interval(self) -> None:
        """50 checks of 5 s: phases cover the interval, no gap longer than a third of it."""
        offsets = sorted(check_offset(f"svc{i}/health", INTERVAL) for i in range(50))
        assert all(0.0 <= o < INTERVAL for o in offsets)
        gaps = [b - a for a, b in itertools.pairwise(offsets)]
        gaps.append(offsets[0] + INTERVAL - offsets[-1])
        assert max(gaps) < INTERVAL / 3
        assert len({round(o, 6) for o in offsets}) == 50

    def test_the_offset_is_stable_and_the_grid_is_the_wall_clocks(self) -> None:
        """The same check lands on the same phase after a restart: slots are wall-clock fixed."""
        assert check_offset("checkout/health", 30.0) == check_offset("checkout/health", 30.0)
        before = grid_of(1, wall=1_700_000_000.0)
        after = grid_of(1, wall=1_700_000_123.4)  # restarted 123.4 s later, ticker back at 0
        key = "svc0/health"
        slot_before = before.to_wall(before.first_after(key, 1_700_000_200.0))
        slot_after = after.to_wall(after.first_after(key, 1_700_000_200.0))
        assert slot_before == pytest.approx(slot_after, abs=1e-6)
        assert (slot_before - check_offset(key, INTERVAL)) % INTERVAL == pytest.approx(0, abs=1e-6)

    def test_first_after_is_strictly_after(self) -> None:
        grid = grid_of(1)
        key = "svc0/health"
        slot = grid.to_wall(grid.first_after(key, 1_700_000_000.0))
        assert grid.to_wall(grid.first_after(key, slot)) == pytest.approx(slot + INTERVAL)


class TestSkipped:
    def test_slots_that_pass_while_the_loop_is_stalled_are_counted_skipped(self) -> None:
        """A loop stalled 12 s over 5 s slots: the latest slot runs, the two before are skipped."""
        grid = grid_of(1)
        key = "svc0/health"
        events: list[tuple[str, float]] = []

        class Stall(SimClock):
            async def sleep_until(self, when: float) -> None:
                await settle()
                self.t = max(self.t, when + (12.0 if self.sleeps == 0 else 0.0))
                self.sleeps += 1

        clock = Stall(0.0, 0.0, 0.0)

        async def go() -> None:
            first = {key: 1.0}
            task = asyncio.create_task(
                run_grid(
                    grid,
                    clock,
                    first,
                    lambda k, at: events.append(("launch", at)),
                    lambda k, n: events.append(("skip", float(n))),
                )
            )
            while clock.now() < 20.0:
                await asyncio.sleep(0)
            task.cancel()

        asyncio.run(go())
        # Slept for the slot at 1 s, woke at 13 s: slots 1 and 6 skipped, 11 runs late but in time.
        assert events[:3] == [("skip", 2.0), ("launch", 11.0), ("launch", 16.0)]

    def test_a_check_still_running_at_its_next_slot_is_skipped_not_stacked(self) -> None:
        """A probe that takes 12 s of a 5 s interval: the slots it overlaps are skipped."""
        grid = grid_of(1)
        key = "svc0/health"
        clock = SimClock(0.0, 0.0, 0.0)
        release = asyncio.Event()
        started: list[float] = []

        async def probe(k: str) -> str:
            started.append(clock.now())
            await release.wait()
            return k

        async def go() -> tuple[list[str], dict[str, int]]:
            runner: ProbeRunner[str, str] = ProbeRunner(grid, clock, probe, concurrency=4)
            runner.start({key: 1.0})
            while clock.now() < 13.0:
                await asyncio.sleep(0)
            released_at.append(clock.now())
            release.set()
            await settle()
            done = runner.drain()
            await runner.aclose()
            return done

        released_at: list[float] = []
        results, skipped = asyncio.run(go())
        assert started == [1.0]
        assert results == [key]
        # Every slot after the first, up to the release (6 s, 11 s, and 16 s if reached).
        overlapped = [at for at in (6.0, 11.0, 16.0, 21.0) if at <= released_at[0]]
        assert len(overlapped) >= 2
        assert skipped == {key: len(overlapped)}

    def test_a_drain_while_a_probe_runs_keeps_its_result_for_the_next(self) -> None:
        grid = grid_of(1)
        key = "svc0/health"
        clock = SimClock(0.0, 0.0, 0.0)
        release = asyncio.Event()

        async def probe(k: str) -> str:
            await release.wait()
            return k

        async def go() -> tuple[list[str], list[str]]:
            runner: ProbeRunner[str, str] = ProbeRunner(grid, clock, probe, concurrency=4)
            runner.start({key: 1.0})
            while clock.now() < 1.0:
                await asyncio.sleep(0)
            await settle()
            during = runner.drain()[0]  # the probe is in flight
            release.set()
            await settle()
            after = runner.drain()[0]
            await runner.aclose()
            return during, after

        assert asyncio.run(go()) == ([], [key])

    def test_a_probe_that_gets_no_place_before_its_next_slot_is_skipped(self) -> None:
        """Concurrency 1 and a probe holding it 7 s: the other check's slot passes, counted."""
        grid = grid_of(2)
        a, b = sorted(grid.intervals)
        clock = SimClock(0.0, 0.0, 0.0)
        release = asyncio.Event()
        ran: list[str] = []

        async def probe(k: str) -> str:
            ran.append(k)
            if k == a:
                await release.wait()
            return k

        async def go() -> dict[str, int]:
            runner: ProbeRunner[str, str] = ProbeRunner(grid, clock, probe, concurrency=1)
            runner.start({a: 1.0, b: 1.5})
            while clock.now() < 8.0:
                await asyncio.sleep(0)
            release.set()
            for _ in range(5):
                await asyncio.sleep(0)
            skipped = runner.drain()[1]
            await runner.aclose()
            return skipped

        skipped = asyncio.run(go())
        assert skipped[b] >= 1
        assert ran[0] == a
