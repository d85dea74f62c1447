"""Traffic windows from rollups equal the raw computation over the stored minutes.

The raw computation sums the deltas themselves over the minutes a window holds (its
start widened to the hour where the minute rows are no longer kept, as docs/kpis.md
states); the store answers from minute rows, hour buckets and day buckets, on SQLite and
on PostgreSQL (``db``). The upgrade tests build the previous release's SQLite file, so
they run on SQLite only.
"""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core.backend import PostgresTarget
from exporter.core.periods import Span
from exporter.core.rollups import DAY, HOUR, MINUTE, floor_to
from exporter.core.store import Schema, Store, write_records
from exporter.domains import open_store
from exporter.domains.traffic import rollup
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import LATENCY_BUCKETS, WindowCounts, window_kpis
from exporter.domains.traffic.records import TrafficDelta
from exporter.domains.traffic.routes import pinned

NB = len(LATENCY_BUCKETS)
# A mid-month instant, not on any bucket boundary.
NOW = datetime(2027, 6, 15, 12, 34, 56, tzinfo=UTC).timestamp()
WINDOWS = {"5m": 300.0, "1h": 3600.0, "2h": 7200.0, "6h": 21600.0, "1d": 86400.0}
WINDOWS |= {"3d": 3 * 86400.0, "30d": 30 * 86400.0}
IDENTS = (("nginx", "GET /cart"), ("nginx", "GET /search"), ("kong", "route-1"), ("kong", ""))


def delta(i: int, source: str, ident: str, minute: float, codes: Sequence[int]) -> TrafficDelta:
    buckets = [0] * (NB + 1)
    buckets[i % (NB + 1)] = sum(codes[:3])
    buckets[(3 * i) % (NB + 1)] += sum(codes[3:])
    service = "checkout" if i % 2 else "search"
    return TrafficDelta(
        source,
        service,
        minute,
        f"b{i}",
        tuple(codes),
        tuple(buckets),
        0.1,
        sum(codes),
        ident,  # type: ignore[arg-type]
    )


def raw_window(
    deltas: Sequence[TrafficDelta], resolved: Mapping[tuple[str, str], str], span: Span
) -> dict[str, WindowCounts]:
    """The raw computation: every delta whose minute starts in ``span``, by service."""
    acc: dict[str, list[int]] = {}
    for d in deltas:
        if span.start <= d.minute < span.end:
            service = resolved[(d.source, d.ident or pinned(d.service))]
            row = acc.setdefault(service, [0] * (5 + NB + 1))
            for j, n in enumerate((*d.codes, *(d.latency_buckets or ()))):
                row[j] += n
    return {s: WindowCounts(tuple(v[:5]), tuple(v[5:])) for s, v in acc.items()}  # type: ignore[arg-type]


def expected_span(now: float, seconds: float) -> Span:
    """The minutes of a rolling window as docs/kpis.md defines them: those starting in
    (now - W, now]; a start older than the kept minute rows moves to its hour's start."""
    start = floor_to(now - seconds, MINUTE) + MINUTE
    if start < rollup.minutes_kept_from(now):
        start = floor_to(start, HOUR)
    return Span(start, floor_to(now, MINUTE) + MINUTE)


def expected(
    deltas: Sequence[TrafficDelta], resolved: Mapping[tuple[str, str], str], now: float
) -> dict[tuple[str, str], WindowCounts]:
    out = {}
    for name, seconds in WINDOWS.items():
        for service, counts in raw_window(deltas, resolved, expected_span(now, seconds)).items():
            out[(service, name)] = counts
    return out


# Every table a traffic write fills (the counters and histograms included).
TABLES = ("traffic_batches", "traffic_minutes", "traffic_hours", "traffic_daily")
TABLES += ("traffic_daily_counts", "traffic_latency", "traffic_consumers", "traffic_idents")
TABLES += ("counters", "histograms")


@pytest.fixture
def db(state_location: Path | PostgresTarget) -> Iterator[Store]:
    """A store on each backend (tests/conftest.py's ``state_location``), one per test:
    each example empties it (:func:`stored`)."""
    store = open_store(state_location)
    yield store
    store.close()


def stored(deltas: Sequence[TrafficDelta], store: Store | None = None) -> Store:
    """``store`` (a fresh in-memory one if None), emptied, holding ``deltas`` only."""
    store = store or open_store(":memory:")
    with store.transaction() as tx:
        for table in TABLES:
            tx.execute(f"DELETE FROM {table}")
        write_records(tx, deltas)
    return store


def recorded_reads(store: Store) -> list[tuple[str, tuple[Any, ...]]]:
    """The (SQL, parameters) of every query ``store`` answers from now on."""
    reads: list[tuple[str, tuple[Any, ...]]] = []
    query = store.query

    def recording(sql: str, params: Any = ()) -> Any:
        reads.append((sql, tuple(params)))
        return query(sql, params)

    store.query = recording  # type: ignore[method-assign]
    return reads


def resolution(store: Store) -> dict[tuple[str, str], str]:
    return {(s, i): svc for s, i, svc in traffic_store.attributions(store)}


# Minutes near the edges that matter: the windows' starts, the hour and day boundaries
# around them, the kept minute rows' edge, and now.
def _anchors(now: float) -> list[float]:
    points = [now]
    points += [now - w for w in WINDOWS.values()]
    points += [floor_to(now, HOUR), floor_to(now, DAY), floor_to(now - 30 * 86400, DAY)]
    points.append(rollup.minutes_kept_from(now))
    return points


@st.composite
def histories(draw: st.DrawFn) -> tuple[float, list[TrafficDelta]]:
    now = NOW + draw(st.integers(0, 2 * 86400))
    anchors = _anchors(now)
    deltas = []
    for i in range(draw(st.integers(1, 30))):
        if draw(st.booleans()):
            at = draw(st.sampled_from(anchors)) + 60 * draw(st.integers(-70, 70))
        else:
            at = now - 60 * draw(st.integers(-5, 31 * 1440))
        source, ident = draw(st.sampled_from(IDENTS))
        codes = draw(st.lists(st.integers(0, 9), min_size=5, max_size=5))
        deltas.append(delta(i, source, ident, floor_to(at, MINUTE), codes))
    return now, deltas


SETTINGS = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# The properties on each backend: the test's store reused across its examples (each
# empties it first).
ON_BOTH = settings(
    SETTINGS, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


class TestWindowsEqualTheRawComputation:
    @ON_BOTH
    @given(history=histories())
    def test_counts_ratios_and_quantiles(
        self, db: Store, history: tuple[float, list[TrafficDelta]]
    ) -> None:
        """Every window's counts by class and latency bucket equal the deltas' sums, so
        rates, ratios and quantiles are those of the raw computation too."""
        now, deltas = history
        store = stored(deltas, db)
        want = expected(deltas, resolution(store), now)
        got = traffic_store.window_counts(store, now, WINDOWS)
        assert got == want
        for key, counts in got.items():
            seconds = WINDOWS[key[1]]
            assert window_kpis(counts, seconds, {}) == window_kpis(want[key], seconds, {})

    @ON_BOTH
    @given(history=histories())
    def test_a_replayed_batch_and_the_prune_change_nothing(
        self, db: Store, history: tuple[float, list[TrafficDelta]]
    ) -> None:
        """Deltas written twice count once; pruning what the ladder no longer keeps
        leaves every window as it was."""
        now, deltas = history
        store = stored(deltas, db)
        with store.transaction() as tx:
            write_records(tx, deltas)
            traffic_store.prune(tx, now - 35 * 86400, now)
        assert traffic_store.window_counts(store, now, WINDOWS) == expected(
            deltas, resolution(store), now
        )

    @ON_BOTH
    @given(history=histories(), moved=st.sampled_from(IDENTS))
    def test_a_catalog_change_corrects_every_window(
        self, db: Store, history: tuple[float, list[TrafficDelta]], moved: tuple[str, str]
    ) -> None:
        """Rollups are kept by gateway identity: moving one identity to another service
        moves its traffic in every window, minutes, hours and days alike."""
        now, deltas = history
        store = stored(deltas, db)
        source, ident = moved
        key = ident or pinned("checkout")
        traffic_store.reattribute(store, [(source, key, "billing")])
        resolved = resolution(store)
        assert traffic_store.window_counts(store, now, WINDOWS) == expected(deltas, resolved, now)


class TestWindowPieces:
    def test_a_30_day_window_is_a_bounded_number_of_buckets(self) -> None:
        """30 days at 12:34:56: the partial hour before the start from its hour bucket,
        the rest of that day from hours, 29 whole days, today's hours, this hour's minutes."""
        span = rollup.rolling_span(NOW, 30 * 86400)
        ps = rollup.pieces(span, NOW)
        day0 = floor_to(NOW, DAY)
        assert ps == (
            rollup.Piece(MINUTE, floor_to(NOW, HOUR), floor_to(NOW, MINUTE) + MINUTE),
            rollup.Piece(HOUR, day0 - 30 * DAY + 12 * HOUR, day0 - 30 * DAY + 13 * HOUR),
            rollup.Piece(HOUR, day0 - 30 * DAY + 13 * HOUR, day0 - 29 * DAY),
            rollup.Piece(HOUR, day0, day0 + 12 * HOUR),
            rollup.Piece(DAY, day0 - 29 * DAY, day0),
        )
        assert rollup.widening(span, NOW) == 35 * 60  # from 12:00, not 12:35, 30 days ago

    def test_a_day_window_is_exact_to_the_minute(self) -> None:
        span = rollup.rolling_span(NOW, 86400)
        assert rollup.widening(span, NOW) == 0
        minutes = sum(
            (p.end - p.start) / MINUTE for p in rollup.pieces(span, NOW) if p.size == MINUTE
        )
        assert minutes == 25 + 35  # 12:35..12:59 yesterday, 12:00..12:34 today

    def test_the_current_hour_is_read_as_its_bucket_unless_a_later_minute_is_stored(
        self,
    ) -> None:
        """The minutes of this hour up to now are its hour bucket (one row per identity,
        not up to 59) when nothing is stored after now in it: a 1h and a 1d window read
        no minute row of this hour, the 5m window (within this hour) its 5 minutes. A
        minute stored after now (a clock behind the gateway's) keeps the minute rows,
        and either way the counts are the raw ones."""
        hour = floor_to(NOW, HOUR)
        minutes = [NOW - 60 * k for k in (0, 3, 20, 50, 70, 1500)]
        deltas = [delta(i, "nginx", "GET /cart", floor_to(m, MINUTE), (1, 2, 3, 4, 5))
                  for i, m in enumerate(minutes)]  # fmt: skip
        windows = {"5m": 300.0, "1h": 3600.0, "1d": 86400.0}
        for later in ((), [delta(9, "nginx", "GET /cart", hour + 59 * MINUTE, (1, 0, 0, 0, 0))]):
            store = stored([*deltas, *later])
            reads = recorded_reads(store)
            got = traffic_store.window_counts(store, NOW, windows)
            assert got == {
                key: counts
                for key, counts in expected([*deltas, *later], resolution(store), NOW).items()
                if key[1] in windows
            }
            # The range of minutes each read sums: its last two parameters.
            minute_reads = [p[-2:] for sql, p in reads if "SUM" in sql and "traffic_minutes" in sql]
            this_hour = [p for p in minute_reads if float(p[1]) > hour]
            if later:
                assert this_hour[0] == (hour, floor_to(NOW, MINUTE) - 4 * MINUTE)
            else:
                assert this_hour == [
                    (floor_to(NOW, MINUTE) - 4 * MINUTE, floor_to(NOW, MINUTE) + MINUTE)
                ]

    def test_overlapping_windows_read_each_row_once(self) -> None:
        spans = [rollup.rolling_span(NOW, w) for w in (300, 3600, 86400)]
        parts = rollup.elementary(p for s in spans for p in rollup.pieces(s, NOW))
        for a, b in itertools.pairwise(parts):
            assert a.size != b.size or a.end <= b.start


def before_rollups(tmp_path: Path, deltas: Sequence[TrafficDelta]) -> Path:
    """A database as the release before the hour buckets left it, holding ``deltas``."""
    current = tmp_path / "current.db"
    stored_at(current, deltas).close()
    old = tmp_path / "old.db"
    Store(str(old), schema=Schema.build([("traffic", traffic_store.MIGRATIONS[:4])], [])).close()
    conn = sqlite3.connect(old)
    conn.execute("ATTACH ? AS cur", (str(current),))
    for table in OLD_TABLES:
        # The columns that release had (later ones, as the write mark, it did not).
        cols = ", ".join(str(r[1]) for r in conn.execute(f"PRAGMA main.table_info({table})"))
        conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM cur.{table}")
    conn.commit()
    conn.close()
    return old


OLD_TABLES = ("traffic_minutes", "traffic_daily", "traffic_daily_counts", "traffic_idents")
OLD_TABLES += ("traffic_batches",)


def stored_at(path: Path, deltas: Sequence[TrafficDelta]) -> Store:
    store = open_store(str(path))
    with store.transaction() as tx:
        write_records(tx, deltas)
    return store


class TestUpgrade:
    @settings(SETTINGS, max_examples=12)
    @given(histories())
    def test_an_upgraded_database_gives_the_same_windows_before_and_after_its_backfill(
        self, history: tuple[float, list[TrafficDelta]]
    ) -> None:
        """The minutes stored before the hour buckets are summed into them in batches;
        meanwhile the windows read minute rows and day buckets, with the same numbers."""
        now, deltas = history
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(str(before_rollups(Path(tmp), deltas)))
            want = expected(deltas, resolution(store), now)
            assert rollup.backfill_pending(store) == bool(deltas)
            assert traffic_store.window_counts(store, now, WINDOWS) == want
            rows = store.query_one("SELECT COUNT(*) FROM traffic_minutes")[0]  # type: ignore[index]
            steps = 1
            while not rollup.backfill_step(store, now, batch=7):
                steps += 1
            assert steps == max(1, -(-rows // 7))  # one step per 7 rows
            assert not rollup.backfill_pending(store)
            assert traffic_store.window_counts(store, now, WINDOWS) == want
            store.close()

    def test_a_minute_that_grows_after_the_upgrade_counts_once(self, tmp_path: Path) -> None:
        """A minute row stored before the upgrade and added to after it: the hour bucket
        holds its whole count once, whichever comes first, the new delta or the backfill."""
        minute = floor_to(NOW, MINUTE) - 3 * HOUR
        first = delta(1, "nginx", "GET /cart", minute, (0, 5, 0, 0, 1))
        later = delta(3, "nginx", "GET /cart", minute, (0, 2, 0, 1, 0))
        store = open_store(str(before_rollups(tmp_path, [first])))
        with store.transaction() as tx:
            write_records(tx, [later])
        while not rollup.backfill_step(store, NOW):
            pass
        rollup.backfill_step(store, NOW)  # once done, nothing more is added
        rows = store.query("SELECT c2, c4, c5 FROM traffic_hours")
        assert [tuple(r) for r in rows] == [(7, 1, 1)]
        store.close()

    def test_the_minutes_the_backfill_needs_are_kept_until_it_is_done(self, tmp_path: Path) -> None:
        minute = floor_to(NOW, MINUTE) - 3 * DAY
        store = open_store(
            str(before_rollups(tmp_path, [delta(1, "kong", "route-1", minute, (0, 1, 0, 0, 0))]))
        )
        with store.transaction() as tx:
            traffic_store.prune(tx, NOW - 35 * DAY, NOW)
        assert store.query_one("SELECT COUNT(*) FROM traffic_minutes")[0] == 1  # type: ignore[index]
        while not rollup.backfill_step(store, NOW):
            pass
        with store.transaction() as tx:
            traffic_store.prune(tx, NOW - 35 * DAY, NOW)
        assert store.query_one("SELECT COUNT(*) FROM traffic_minutes")[0] == 0  # type: ignore[index]
        assert store.query_one("SELECT SUM(c2) FROM traffic_hours")[0] == 1  # type: ignore[index]
        store.close()


def fresh_windows(store: Store, now: float) -> dict[tuple[str, str], WindowCounts]:
    """The windows read with nothing kept from an earlier render."""
    rollup._CLOSED.forget(store)
    return traffic_store.window_counts(store, now, WINDOWS)


def piece_reads(reads: Sequence[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...]]]:
    """The reads of a piece's rows (each sums them per identity); fingerprints do not group."""
    return [
        (sql, p) for sql, p in reads if "GROUP BY r.source" in sql or "GROUP BY k.source" in sql
    ]


class TestClosedPiecesAreReadOnce:
    """A piece of a window that ended before the current hour is read once and kept,
    with a fingerprint of its rows, for the renders after; what changes it is seen at
    the next render."""

    @ON_BOTH
    @given(history=histories(), split=st.integers(0, 30), hours=st.integers(0, 50))
    def test_rows_written_after_a_render_are_seen_at_the_next(
        self, db: Store, history: tuple[float, list[TrafficDelta]], split: int, hours: int
    ) -> None:
        """Late minutes land in closed pieces after a render; the next render, at the
        same instant or ``hours`` later with retention run, counts them as a store read
        afresh does."""
        now, deltas = history
        store = stored(deltas[:split], db)
        traffic_store.window_counts(store, now, WINDOWS)
        with store.transaction() as tx:
            write_records(tx, deltas[split:])
        assert traffic_store.window_counts(store, now, WINDOWS) == expected(
            deltas, resolution(store), now
        )
        later = now + hours * HOUR
        with store.transaction() as tx:
            traffic_store.prune(tx, later - 35 * DAY, later)
        got = traffic_store.window_counts(store, later, WINDOWS)
        assert got == fresh_windows(store, later)

    def test_a_second_render_with_nothing_new_reads_only_the_running_hour(self) -> None:
        """Nothing written between two renders: the second reads the rows of the pieces
        within the current hour only, the rest from what the first read."""
        minutes = [NOW - 60 * k for k in (0, 3, 20, 50, 70, 1500, 3 * 1440, 20 * 1440)]
        deltas = [delta(i, "nginx", "GET /cart", floor_to(m, MINUTE), (1, 2, 3, 4, 5))
                  for i, m in enumerate(minutes)]  # fmt: skip
        store = stored(deltas)
        first = traffic_store.window_counts(store, NOW, WINDOWS)
        reads = recorded_reads(store)
        assert traffic_store.window_counts(store, NOW, WINDOWS) == first
        hour = floor_to(NOW, HOUR)
        read = piece_reads(reads)
        assert read  # the running hour's pieces
        assert all(float(p[-1]) > hour for _, p in read)

    def test_a_zero_count_minute_in_a_closed_hour_makes_its_service_present(self) -> None:
        """A service with no request yet is absent; a minute row of zeros for it in a
        closed hour, written after a render, makes it present (with zero counts)."""
        old = floor_to(NOW, HOUR) - 3 * HOUR + 10 * MINUTE
        store = stored([delta(1, "nginx", "GET /cart", old, (0, 1, 0, 0, 0))])
        before = traffic_store.window_counts(store, NOW, {"6h": 6 * 3600.0})
        assert set(before) == {("checkout", "6h")}
        with store.transaction() as tx:
            write_records(tx, [delta(2, "kong", "route-1", old + MINUTE, (0, 0, 0, 0, 0))])
        got = traffic_store.window_counts(store, NOW, {"6h": 6 * 3600.0})
        assert got[("search", "6h")].codes == (0, 0, 0, 0, 0)
        assert got[("checkout", "6h")].codes == (0, 1, 0, 0, 0)

    def test_a_rewrite_to_the_same_count_and_total_is_seen_through_the_write_mark(
        self,
    ) -> None:
        """Two identities' hour buckets rewritten with their counts swapped (as a
        repaired state may be): the same rows, count and total, and the next render
        reads them again."""
        hour = floor_to(NOW, HOUR) - 5 * HOUR
        deltas = [delta(1, "nginx", "GET /cart", hour, (0, 5, 0, 0, 0)),
                  delta(2, "kong", "route-1", hour, (0, 3, 0, 0, 0))]  # fmt: skip
        store = stored(deltas)
        windows = {"1d": 86400.0}
        before = traffic_store.window_counts(store, NOW + 2 * HOUR, windows)
        assert before[("checkout", "1d")].codes[1] == 5
        with store.transaction() as tx:
            for ident, c2 in (("GET /cart", 3), ("route-1", 5)):
                tx.execute(
                    "UPDATE traffic_hours SET c2 = ?, written = ? WHERE hour = ? AND ident = ?",
                    (c2, rollup.write_mark(), hour, ident),
                )
        got = traffic_store.window_counts(store, NOW + 2 * HOUR, windows)
        assert (got[("checkout", "1d")].codes[1], got[("search", "1d")].codes[1]) == (3, 5)

    def test_a_catalog_change_moves_the_traffic_of_pieces_kept(self) -> None:
        """What is kept is per gateway identity; the service is resolved at each render."""
        day_ago = floor_to(NOW, MINUTE) - 20 * HOUR
        store = stored([delta(1, "nginx", "GET /cart", day_ago, (0, 4, 0, 0, 0))])
        assert traffic_store.window_counts(store, NOW, {"1d": 86400.0})[("checkout", "1d")]
        traffic_store.reattribute(store, [("nginx", "GET /cart", "billing")])
        got = traffic_store.window_counts(store, NOW, {"1d": 86400.0})
        assert set(got) == {("billing", "1d")}
        assert got[("billing", "1d")].codes == (0, 4, 0, 0, 0)
