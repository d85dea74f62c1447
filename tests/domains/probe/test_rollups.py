"""Probe rollups give the numbers of the raw rows: checks, successes and duration buckets
exactly, at every window edge and across minute, hour and day buckets; latency
quantiles within 1 % relative; the same after an upgrade from a state without rollups.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config import Config
from exporter.core.backend import PostgresTarget
from exporter.core.clock import FixedClock
from exporter.core.periods import Span, last_month, month_to_date, rolling
from exporter.core.rollups import (
    DAY,
    HOUR,
    MINUTE,
    backfill_pending,
    backfill_step,
    floor_to,
)
from exporter.core.stats import quantile
from exporter.core.store import Store, write_records
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.probe import rollup
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.kpis import (
    BINS,
    DURATION_BUCKETS,
    LATENCY_QUANTILES,
    LATENCY_WINDOWS,
    UPTIME_WINDOWS,
    binned_latency_quantiles,
)
from exporter.domains.probe.records import ProbeResult
from tests.support.exposition import Exposition

#: Where a test's state is, on either backend (tests/conftest.py's ``state_location``).
State = Path | PostgresTarget


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# The fixed instants of date-sensitive tests: 00:05 on the 1st, 23:55 on the last day of
# a 30-day month, the leap day, the year's last minute, mid-month.
INSTANTS = (
    at("2027-03-01T00:05:00"),
    at("2027-04-30T23:55:00"),
    at("2028-02-29T12:00:00"),
    at("2027-12-31T23:59:00"),
    at("2027-06-15T10:17:31"),
)


def first_of_each(results: Iterable[ProbeResult]) -> list[ProbeResult]:
    """Each check's first result: a later one with the same start is the same check
    handed again, and the store keeps what it stored first."""
    seen: dict[tuple[str, str, float], ProbeResult] = {}
    for r in results:
        seen.setdefault((r.service, r.probe, r.started_at), r)
    return list(seen.values())


def expected(results: Iterable[ProbeResult], span: Span) -> dict[str, probe_store.ProbeCounts]:
    """The raw computation: each distinct result started in ``span``, counted once."""
    acc: dict[str, list[int]] = {}
    for r in first_of_each(results):
        if r.started_at not in span:
            continue
        row = acc.setdefault(r.service, [0, 0] + [0] * (len(DURATION_BUCKETS) + 1))
        row[0] += 1
        if r.success:
            row[1] += 1
            row[2 + bisect.bisect_left(DURATION_BUCKETS, r.duration_seconds)] += 1
    return {s: probe_store.ProbeCounts(v[0], v[1], tuple(v[2:])) for s, v in acc.items()}


def windows_at(now: float) -> list[Span]:
    """Every rolling window of the probe KPIs, the calendar windows, and spans ending in
    the past whose edges fall just off minute, hour and day boundaries."""
    spans = [rolling(now, s) for s in (*UPTIME_WINDOWS.values(), 300.0, 6 * HOUR, 3 * DAY)]
    spans += [month_to_date(now), last_month(now)]
    day = math.floor(now / DAY) * DAY
    spans += [
        Span(day - 2 * DAY + 1, day - 1),
        Span(day - 3 * HOUR - 0.5, now - 90 * MINUTE + 0.25),
        Span(now - 29 * DAY - 7, now - 25 * HOUR),
    ]
    return spans


# Offsets (seconds before now) of generated checks: the last hours densely, the month
# sparsely, and instants right at or beside minute, hour and day boundaries.
_offset = st.one_of(
    st.floats(min_value=0, max_value=3 * HOUR, allow_nan=False),
    st.floats(min_value=0, max_value=40 * DAY, allow_nan=False),
    st.builds(
        lambda k, size, d: k * size + d,
        st.integers(min_value=0, max_value=35),
        st.sampled_from([MINUTE, HOUR, DAY]),
        st.sampled_from([-1.0, -0.001, 0.0, 0.001, 1.0]),
    ),
)
_check = st.tuples(
    st.sampled_from(["checkout", "search"]),
    st.sampled_from(["health", "home"]),
    _offset,
    st.floats(min_value=0.0, max_value=12.0, allow_nan=False),
    st.booleans(),
)


def results_of(
    now: float, checks: Sequence[tuple[str, str, float, float, bool]]
) -> list[ProbeResult]:
    return [
        ProbeResult(svc, probe, now - off, dur, ok, "" if ok else "status")
        for svc, probe, off, dur, ok in checks
    ]


def write_as_polled(
    store: Store, clock: FixedClock, results: list[ProbeResult], now: float
) -> None:
    """Write the results in time order, each batch shortly after its last check started
    (as polls do, some of them twice), then run retention at ``now``."""
    ordered = sorted(results, key=lambda r: r.started_at)
    for i in range(0, len(ordered), 7):
        batch = ordered[i : i + 7]
        clock.set(max(r.started_at for r in batch) + 30)
        with store.transaction() as tx:
            write_records(tx, batch + batch[:2])  # a re-poll hands some results again
    clock.set(now)
    with store.transaction() as tx:
        probe_store.prune(tx, now - 60 * DAY)


class TestRollupsEqualRawRows:
    @settings(
        max_examples=25,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        now=st.sampled_from(INSTANTS),
        checks=st.lists(_check, min_size=1, max_size=60),
        as_polled=st.booleans(),
    )
    def test_generated_histories(
        self,
        tmp_path: Path,
        now: float,
        checks: list[tuple[str, str, float, float, bool]],
        as_polled: bool,
    ) -> None:
        """Whether written as polls come in (then pruned at now) or all at once at now
        (old results skip the minute tier), every window counts what the raw rows hold,
        and each latency quantile is within 1 % of the exact one."""
        results = results_of(now, checks)
        clock = FixedClock(now)
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}.db"
        store = open_store(str(path), clock)
        try:
            if as_polled:
                write_as_polled(store, clock, results, now)
            else:
                with store.transaction() as tx:
                    write_records(tx, results)
            for span in windows_at(now):
                assert probe_store.span_counts(store, span, now) == expected(results, span), span
            # All the windows at once, the runs and edges they share read once.
            spans = {str(i): span for i, span in enumerate(windows_at(now))}
            together = rollup.spans_sums_by_service(store, spans, now)
            for i, span in spans.items():
                raw = expected(results, span)
                assert together[i] == {
                    s: [c.checks, c.successes, *c.buckets] for s, c in raw.items()
                }
            for seconds in LATENCY_WINDOWS.values():
                span = rolling(now, seconds)
                got = probe_store.latency_bins(store, now, seconds)
                for service, durations in exact_durations(results, span).items():
                    values = binned_latency_quantiles(got[service])
                    for q in LATENCY_QUANTILES:
                        exact = quantile(durations, q)
                        assert exact is not None
                        assert abs(values[q] - exact) <= BINS.alpha * exact + 1e-6
                assert set(got) == set(exact_durations(results, span))
        finally:
            store.close()


def exact_durations(results: Iterable[ProbeResult], span: Span) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in first_of_each(results):
        if r.success and r.started_at in span:
            out.setdefault(r.service, []).append(r.duration_seconds)
    return out


NOW = at("2027-03-01T00:05:00")


def history() -> list[ProbeResult]:
    """Two services over 32 days: a check an hour each (off the hour), and one a minute
    in the last hour."""

    def result(svc: str, probe: str, t: float, duration: float, ok: bool) -> ProbeResult:
        return ProbeResult(svc, probe, t, duration, ok, "" if ok else "status")

    out = []
    for i, t in enumerate(range(int(NOW - 32 * DAY) + 123, int(NOW - HOUR), 3600)):
        out.append(result("checkout", "health", float(t), 0.05 + (i % 7) / 50, i % 13 != 0))
        out.append(result("search", "home", float(t) + 1807, 0.2 + (i % 5) / 10, i % 29 != 0))
    for t in range(int(NOW - HOUR), int(NOW) + 1, 60):
        out.append(result("checkout", "health", float(t), 0.04, t % 600 != 0))
    return out


def kpis(store: Store) -> tuple[object, ...]:
    """What the probe and SLO providers read: uptime windows, calendar spans, latency."""
    return (
        probe_store.check_counts(store, NOW, UPTIME_WINDOWS),
        probe_store.span_counts(store, month_to_date(NOW), NOW),
        probe_store.span_counts(store, last_month(NOW), NOW),
        {w: probe_store.latency_bins(store, NOW, s) for w, s in LATENCY_WINDOWS.items()},
    )


def without_rollups(location: State) -> None:
    """Turn a state (on either backend) into one the release before the rollups wrote: the
    same raw results, daily totals, counters and cursors; no rollup tables, probe schema v3."""
    store = Store(location)  # the core's schema only: nothing of the probe's migrated
    with store.transaction() as tx:
        for statement in (
            "DROP TABLE probe_rollup",
            "DROP TABLE probe_latency_bins",
            "DROP TABLE probe_rollup_kept",
            "DROP INDEX probe_daily_day",
            "DELETE FROM cursors WHERE source = 'rollups'",
            "UPDATE schema_version SET version = 3 WHERE component = 'probe'",
        ):
            tx.execute(statement)
    store.close()


class TestUpgrade:
    def test_an_upgraded_state_gives_the_same_kpis_before_during_and_after_the_backfill(
        self, tmp_path: Path, state_location: State, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A state from before the rollups is read from raw rows until its backfill is done
        (in batches, logged), then from the rollups: the same numbers throughout, and the
        same rollup rows as a state that had them from the start."""
        results = history()
        fresh = open_store(str(tmp_path / "fresh.db"), FixedClock(NOW))
        with fresh.transaction() as tx:
            write_records(tx, results)
        want = kpis(fresh)

        old = open_store(state_location, FixedClock(NOW))
        with old.transaction() as tx:
            write_records(tx, results)
        old.close()
        without_rollups(state_location)

        upgraded = open_store(state_location, FixedClock(NOW))
        assert rollup.pending(upgraded)
        assert kpis(upgraded) == want  # served from raw rows meanwhile
        small = dataclasses.replace(rollup.BACKFILL, batch=400)
        caplog.set_level("INFO", logger="exporter.rollups")
        steps = 0
        while not backfill_step(upgraded, small):
            steps += 1
            if steps == 2:
                assert kpis(upgraded) == want  # half built: still the raw rows
        assert steps + 1 == math.ceil(len(results) / 400)  # the last batch says done
        assert not backfill_pending(upgraded, "probe")
        assert kpis(upgraded) == want
        assert tables(upgraded) == tables(fresh)
        assert f"rollup backfill probe: {len(results)} of {len(results)} rows (done)" in caplog.text

    def test_results_written_during_the_backfill_are_counted_once(self, tmp_path: Path) -> None:
        # On SQLite only: the statements are those of the two tests beside it, which run on
        # both backends; a third 32-day history on PostgreSQL would cost CI seconds.
        results = history()
        path = tmp_path / "s.db"
        store = open_store(path, FixedClock(NOW))
        with store.transaction() as tx:
            write_records(tx, results[:-20])
        store.close()
        without_rollups(path)
        store = open_store(path, FixedClock(NOW))
        small = dataclasses.replace(rollup.BACKFILL, batch=400)
        backfill_step(store, small)
        with store.transaction() as tx:
            write_records(tx, results[-25:])  # five already stored, twenty new
        while not backfill_step(store, small):
            pass
        fresh = open_store(str(tmp_path / "fresh.db"), FixedClock(NOW))
        with fresh.transaction() as tx:
            write_records(tx, results)
        assert tables(store) == tables(fresh)
        assert kpis(store) == kpis(fresh)

    def test_retention_waits_for_the_backfill(self, state_location: State) -> None:
        store = open_store(state_location, FixedClock(NOW))
        with store.transaction() as tx:
            write_records(tx, history())
        store.close()
        without_rollups(state_location)
        store = open_store(state_location, FixedClock(NOW))
        with store.transaction() as tx:
            assert probe_store.prune(tx, NOW - DAY) == 0
        while not backfill_step(store, rollup.BACKFILL):
            pass
        with store.transaction() as tx:
            assert probe_store.prune(tx, NOW - DAY) > 0


def tables(store: Store) -> tuple[list[tuple[object, ...]], ...]:
    """The rollup rows (not PostgreSQL's emulated rowid, an insertion number)."""
    return tuple(
        sorted(
            tuple(v for k, v in zip(r.keys(), r, strict=True) if k != "rowid")
            for r in store.query(f"SELECT * FROM {t}")
        )
        for t in ("probe_rollup", "probe_latency_bins", "probe_rollup_kept")
    )


class TestWrites:
    def test_a_result_stored_twice_is_rolled_up_once(self, state_location: State) -> None:
        store = open_store(state_location, FixedClock(NOW))
        r = ProbeResult("checkout", "health", NOW - 30, 0.12, True, "")
        for _ in range(3):
            with store.transaction() as tx:
                write_records(tx, [r, r])
        rows = store.query("SELECT size, bucket, checks, successes FROM probe_rollup ORDER BY size")
        assert [tuple(x) for x in rows] == [
            (60, at("2027-03-01T00:04:00"), 1, 1),
            (3600, at("2027-03-01T00:00:00"), 1, 1),
        ]
        bins = store.query("SELECT size, bin, n FROM probe_latency_bins ORDER BY size")
        assert [tuple(x) for x in bins] == [(60, BINS.index(0.12), 1), (3600, BINS.index(0.12), 1)]

    def test_old_results_skip_the_minute_tier_and_mark_it(self, state_location: State) -> None:
        """A result two days old is not put into a minute bucket (they are kept 26 hours); the
        minute tier is marked complete only from then on, so no window reads it there."""
        store = open_store(state_location, FixedClock(NOW))
        with store.transaction() as tx:
            write_records(tx, [ProbeResult("checkout", "health", NOW - 2 * DAY, 0.1, True, "")])
        assert [r[0] for r in store.query("SELECT size FROM probe_rollup")] == [3600]
        kept = rollup.KEPT.read(store, "rollup")
        assert kept == {60: NOW - 26 * HOUR}  # 2 hours kept, and a day of slack

    def test_a_render_whose_clock_is_behind_the_writer_still_counts_exactly(
        self, state_location: State
    ) -> None:
        """Results written when they were already two days old (a replica's clock ahead,
        a backfill) have no minute buckets; a render at their own time reads them raw."""
        store = open_store(state_location, FixedClock(NOW))
        then = NOW - 2 * DAY
        results = [
            ProbeResult("checkout", "health", then - 60 * i, 0.1, True, "") for i in range(50)
        ]
        with store.transaction() as tx:
            write_records(tx, results)
        span = rolling(then, HOUR)
        assert probe_store.span_counts(store, span, then) == expected(results, span)
        assert probe_store.span_counts(store, span, then)["checkout"].checks == 50


KPI_FAMILIES = (
    "platform_service_uptime_ratio",
    "platform_service_uptime_samples",
    "platform_service_probe_latency_seconds",
    "platform_slo_sli_error_ratio",
    "platform_slo_samples",
    "platform_slo_error_budget_remaining_ratio",
)


class TestDaemonUpgrade:
    def test_the_daemon_serves_while_its_backfill_runs_and_after_it_the_same_kpis(
        self, tmp_path: Path
    ) -> None:
        """An upgraded state renders at once (raw rows); the daemon's scheduled backfill
        finishes the rollups and removes its job; the KPIs served are the same throughout,
        and the same as a state that had rollups from the start."""
        results = history()

        def cfg(path: Path) -> Config:
            return Config(
                server={"listen_address": "127.0.0.1", "port": 0},
                state={"path": str(path)},
                services=[
                    {
                        "name": name,
                        "team": "t",
                        "probes": [{"name": probe, "url": f"http://{name}.test/"}],
                        "slo": {
                            "availability": {"objective": 99.0},
                            "latency": {"objective": 95.0, "threshold": "250ms"},
                        },
                    }
                    for name, probe in (("checkout", "health"), ("search", "home"))
                ],
            )

        def served(daemon: Daemon) -> dict[str, list[tuple[dict[str, str], float]]]:
            exp = Exposition.parse(daemon.render().text)
            return {name: sorted(exp.samples(name), key=str) for name in KPI_FAMILIES}

        fresh_path = tmp_path / "fresh.db"
        store = open_store(str(fresh_path), FixedClock(NOW))
        with store.transaction() as tx:
            write_records(tx, results)
        store.close()
        want = served(Daemon(cfg(fresh_path), sources=[], clock=FixedClock(NOW)))
        assert want["platform_service_uptime_ratio"] and want["platform_slo_samples"]

        path = tmp_path / "old.db"
        store = open_store(str(path), FixedClock(NOW))
        with store.transaction() as tx:
            write_records(tx, results)
        store.close()
        without_rollups(path)
        daemon = Daemon(cfg(path), sources=[], clock=FixedClock(NOW))
        assert rollup.pending(daemon.store)
        assert served(daemon) == want

        async def backfill() -> tuple[bool, object]:
            scheduler = daemon.start_scheduler()
            deadline = time.monotonic() + 60
            while scheduler.get_job("rollup backfill") is not None:
                assert time.monotonic() < deadline, "backfill still running after 60 s"
                await asyncio.sleep(0.1)
            after = (rollup.pending(daemon.store), served(daemon))
            await daemon.shutdown()
            return after

        assert asyncio.run(backfill()) == (False, want)


def piece_reads(reads: Sequence[tuple[str, tuple[object, ...]]]) -> list[tuple[object, ...]]:
    """The parameters of each read of a window piece's rows (each sums them per service;
    fingerprints and latency reads do not)."""
    return [p for sql, p in reads if sql.startswith("SELECT service, SUM(v0)")]


def recorded_reads(store: Store) -> list[tuple[str, tuple[object, ...]]]:
    """The (SQL, parameters) of every query ``store`` answers from now on."""
    reads: list[tuple[str, tuple[object, ...]]] = []
    query = store.query

    def recording(sql: str, params: object = ()) -> object:
        reads.append((sql, tuple(params)))  # type: ignore[call-overload]
        return query(sql, params)  # type: ignore[arg-type]

    store.query = recording  # type: ignore[assignment,method-assign]
    return reads


def written(location: State | str, batches: Sequence[Sequence[ProbeResult]]) -> Store:
    """A store at ``location`` with each batch written in its own transaction at NOW."""
    store = open_store(location, FixedClock(NOW))
    for batch in batches:
        with store.transaction() as tx:
            write_records(tx, list(batch))
    return store


#: Results that land late, each in a piece closed long before NOW (00:05 on the 1st): a
#: day of last month, an hour of yesterday evening, and the raw edge at the start of the
#: 24-hour window.
LATE = [
    ProbeResult("checkout", "health", NOW - 20 * DAY + 17, 0.3, False, "status"),
    ProbeResult("search", "home", NOW - 5 * HOUR + 11, 0.9, True, ""),
    ProbeResult("search", "home", NOW - DAY + 20, 0.1, True, ""),
]


class TestClosedPiecesAreReadOnce:
    """A piece of a window that ended before the current hour is read once and kept per
    store, with a fingerprint of its rows, for the renders after; a late result or a
    pruning that changes it is seen at the next render."""

    def test_a_second_render_with_nothing_new_reads_only_the_running_hour(
        self, tmp_path: Path
    ) -> None:
        """Nothing written between two renders: the second gives the same KPIs and reads
        the rows (and latency bins) of the pieces within the current hour only."""
        store = written(str(tmp_path / "s.db"), [history()])
        try:
            first = kpis(store)
            reads = recorded_reads(store)
            assert kpis(store) == first
            read = piece_reads(reads)
            assert read  # the running hour's pieces
            hour = floor_to(NOW, HOUR)
            assert all(isinstance(p[-1], float) and p[-1] > hour for p in read)
            # Nor are the latency bins of a closed run summed again.
            bins = [p for sql, p in reads if "GROUP BY service, bin" in sql]
            assert all(float(p[-1]) > hour for p in bins)  # type: ignore[arg-type]
        finally:
            store.close()

    def test_late_results_in_closed_pieces_are_seen_at_the_next_render(
        self, tmp_path: Path, state_location: State
    ) -> None:
        """Late results land in a closed day, hour and raw edge after a render; the next
        render counts them as a store that never rendered does."""
        store = written(state_location, [history()])
        twin = written(str(tmp_path / "twin.db"), [history(), LATE])
        try:
            before = kpis(store)
            with store.transaction() as tx:
                write_records(tx, LATE)
            after = kpis(store)
            assert after == kpis(twin)
            assert after != before
            last_month_checkout = after[2]["checkout"]
            assert last_month_checkout.checks == before[2]["checkout"].checks + 1
        finally:
            store.close()
            twin.close()

    def test_pruned_results_are_seen_at_the_next_render(self, tmp_path: Path) -> None:
        """Retention deletes the raw results of an edge kept from a render; the next
        render counts what is left, as a store that never rendered does."""
        store = written(str(tmp_path / "s.db"), [history()])
        twin = written(str(tmp_path / "twin.db"), [history()])
        try:
            before = kpis(store)
            for s in (store, twin):
                with s.transaction() as tx:
                    probe_store.prune(tx, NOW - 10 * DAY)
            after = kpis(store)
            assert after == kpis(twin)
            assert after[0] != before[0]  # the 30-day window's first edge lost its rows
        finally:
            store.close()
            twin.close()
