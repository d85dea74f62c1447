"""The bucket ladder and window splitting: whole buckets plus exact raw edges.

Hand-checked splits at the fixed instants every date-sensitive test uses (the 1st of a
month, February 29, the year's end, a bucket boundary), and a property test that every
split covers its window exactly once with a bounded number of usable buckets.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.periods import Span, rolling
from exporter.core.rollups import (
    DAY,
    DEFAULT_LADDER,
    HOUR,
    MINUTE,
    BucketRun,
    ClosedPieces,
    Ladder,
    Piece,
    Tier,
    ceil_to,
    floor_to,
    split_window,
)
from exporter.core.store import Store


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def covered(span: Span, now: float, t: float) -> int:
    """How many pieces of ``span``'s split hold the instant ``t``."""
    split = split_window(span, now)
    return sum(r.start <= t < r.end for r in split.runs) + sum(t in s for s in split.raw)


class TestLadder:
    def test_default_ladder_is_minutes_hours_days(self) -> None:
        """Minute buckets for 2 h, hour buckets for 35 days, day buckets for ever."""
        assert DEFAULT_LADDER.sizes == (60, 3600, 86400)
        assert [t.horizon for t in DEFAULT_LADDER.tiers] == [2 * HOUR, 35 * DAY, math.inf]

    @pytest.mark.parametrize(
        "tiers",
        [
            (),
            (Tier(60, 3600), Tier(90, math.inf)),  # 90 is not a multiple of 60
            (Tier(60, 7200), Tier(3600, 3600), Tier(86400, math.inf)),  # coarser kept shorter
            (Tier(60, 7200), Tier(3600, 86400)),  # nothing kept for ever
        ],
    )
    def test_inconsistent_ladders_are_refused(self, tiers: tuple[Tier, ...]) -> None:
        with pytest.raises(ValueError):
            Ladder(tiers)

    def test_buckets_align_on_utc_hours_and_midnights(self) -> None:
        t = at("2028-02-29T13:47:12")
        assert floor_to(t, MINUTE) == at("2028-02-29T13:47:00")
        assert floor_to(t, HOUR) == at("2028-02-29T13:00:00")
        assert floor_to(t, DAY) == at("2028-02-29T00:00:00")
        assert ceil_to(t, DAY) == at("2028-03-01T00:00:00")
        assert ceil_to(at("2028-03-01T00:00:00"), DAY) == at("2028-03-01T00:00:00")

    def test_a_row_is_written_into_each_tier_it_is_still_kept_in(self) -> None:
        """A fresh row goes into its minute, hour and day; a 3-day-old one skips the
        minute tier (past 2 h plus a day of slack); a 40-day-old one only its day."""
        now = at("2027-03-01T00:05:00")
        assert DEFAULT_LADDER.written(now - 30, now) == (
            (60, at("2027-03-01T00:04:00")),
            (3600, at("2027-03-01T00:00:00")),
            (86400, at("2027-03-01T00:00:00")),
        )
        assert [s for s, _ in DEFAULT_LADDER.written(now - 3 * DAY, now)] == [3600, 86400]
        assert [s for s, _ in DEFAULT_LADDER.written(now - 40 * DAY, now)] == [86400]

    def test_kept_buckets_include_every_usable_one(self) -> None:
        now = at("2027-12-31T23:59:00")
        for tier in DEFAULT_LADDER.tiers:
            assert DEFAULT_LADDER.keep_after(tier, now) <= DEFAULT_LADDER.usable_from(tier, now)


class TestSplitWindow:
    def test_a_rolling_hour_ending_on_the_hour(self) -> None:
        """(11:00, 12:00]: the check at 11:00 is out and the one at 12:00 in, so no hour
        bucket fits; 59 whole minutes, and raw edges of under a minute each side."""
        now = at("2027-06-15T12:00:00")
        split = split_window(rolling(now, HOUR), now)
        assert split.runs == (BucketRun(60, at("2027-06-15T11:01:00"), now),)
        assert split.buckets == 59
        assert split.raw == (
            Span(math.nextafter(now - HOUR, math.inf), at("2027-06-15T11:01:00")),
            Span(now, math.nextafter(now, math.inf)),
        )

    def test_thirty_days_at_five_past_midnight_on_the_first(self) -> None:
        """30 days ending 2027-03-01 00:05: days Jan 31 00:05 is in the edge; whole hours
        from 01:00 to midnight Feb 1, whole days Feb 1..28, then 5 minutes of March."""
        now = at("2027-03-01T00:05:00")
        split = split_window(Span(now - 30 * DAY, now), now)
        assert split.runs == (
            BucketRun(3600, at("2027-01-30T01:00:00"), at("2027-01-31T00:00:00")),
            BucketRun(86400, at("2027-01-31T00:00:00"), at("2027-03-01T00:00:00")),
            BucketRun(60, at("2027-03-01T00:00:00"), now),
        )
        # The first partial hour is older than the minute tier's horizon: raw rows.
        assert split.raw == (Span(now - 30 * DAY, at("2027-01-30T01:00:00")),)

    def test_february_29_is_one_whole_day_bucket(self) -> None:
        now = at("2028-03-01T12:00:00")
        split = split_window(Span(at("2028-02-28T06:00:00"), at("2028-03-01T06:00:00")), now)
        assert BucketRun(86400, at("2028-02-29T00:00:00"), at("2028-03-01T00:00:00")) in split.runs
        assert split.raw == ()

    def test_across_the_year_end(self) -> None:
        """A week ending at 23:59 on Dec 31: whole days Dec 25..30, the hours of Dec 31
        up to 23:00, then 59 minutes; the first minute (Dec 24 23:59) is a raw edge."""
        now = at("2027-12-31T23:59:00")
        split = split_window(Span(now - 7 * DAY, now), now)
        assert split.runs == (
            BucketRun(86400, at("2027-12-25T00:00:00"), at("2027-12-31T00:00:00")),
            BucketRun(3600, at("2027-12-31T00:00:00"), at("2027-12-31T23:00:00")),
            BucketRun(60, at("2027-12-31T23:00:00"), now),
        )
        assert split.buckets == 6 + 23 + 59
        assert covered(Span(now - 7 * DAY, now), now, at("2027-12-24T23:59:30")) == 1

    def test_past_a_horizon_only_raw_rows_cover_the_edge(self) -> None:
        """The 7-day window's first minute is a week old: no minute bucket is used there."""
        now = at("2027-12-31T23:59:00")
        split = split_window(Span(now - 7 * DAY, now), now)
        assert all(r.size != 60 or r.start >= now - 2 * HOUR for r in split.runs)
        assert split.raw == (Span(now - 7 * DAY, at("2027-12-25T00:00:00")),)

    def test_a_window_on_bucket_boundaries_has_no_raw_edge(self) -> None:
        now = at("2027-05-01T00:00:00")
        split = split_window(Span(at("2027-04-01T00:00:00"), now), now)
        assert split.runs == (BucketRun(86400, at("2027-04-01T00:00:00"), now),)
        assert split.raw == ()
        assert split.buckets == 30

    def test_an_empty_window_has_nothing(self) -> None:
        now = at("2027-05-01T00:00:00")
        assert split_window(Span(now, now), now).runs == ()
        assert split_window(Span(now, now - 1), now).raw == ()

    def test_a_short_window_inside_one_minute_is_raw(self) -> None:
        now = at("2027-04-30T23:55:00")
        span = Span(now - 20, now)
        assert split_window(span, now).raw == (span,)


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(
    now=st.integers(
        min_value=round(at("2027-01-01T00:00:00")), max_value=round(at("2029-01-01T00:00:00"))
    ),
    back=st.floats(min_value=0, max_value=40 * DAY, allow_nan=False),
    length=st.floats(min_value=0, max_value=40 * DAY, allow_nan=False),
)
def test_every_split_covers_its_window_once_with_usable_bounded_buckets(
    now: int, back: float, length: float
) -> None:
    """Runs and raw edges never overlap and cover the window exactly; every run is whole
    aligned buckets its tier still keeps; the count is bounded by days + 2x23 + 2x59."""
    end = now - back
    span = Span(end - length, end)
    split = split_window(span, float(now))
    pieces = sorted([(r.start, r.end) for r in split.runs] + [(s.start, s.end) for s in split.raw])
    if span.end <= span.start:
        assert pieces == []
        return
    assert pieces[0][0] == span.start and pieces[-1][1] == span.end
    for (_, a_end), (b_start, _) in itertools.pairwise(pieces):
        assert a_end == b_start
    tiers = {t.size: t for t in DEFAULT_LADDER.tiers}
    for run in split.runs:
        assert run.start % run.size == 0 and run.end % run.size == 0 and run.end > run.start
        assert run.start >= DEFAULT_LADDER.usable_from(tiers[run.size], float(now))
    assert split.buckets <= math.ceil(length / DAY) + 2 * 23 + 2 * 59


class TestClosedPieces:
    """What a piece that ended before the current hour held is kept per store and given
    again while its fingerprint is unchanged; anything else is read."""

    NOW = at("2027-03-01T00:05:00")

    def reader(self, reads: list[Piece], piece: Piece) -> object:
        def read() -> object:
            reads.append(piece)
            return [len(reads)]

        return read

    def test_a_closed_piece_is_read_again_only_when_its_fingerprint_changes(self) -> None:
        """Read once, given again at the same fingerprint, read again at a new one and
        after the store's pieces are forgotten."""
        kept: ClosedPieces[object] = ClosedPieces()
        store = Store(":memory:")
        piece = Piece(HOUR, self.NOW - 5 * HOUR, self.NOW - 2 * HOUR)
        reads: list[Piece] = []
        read = self.reader(reads, piece)
        assert kept.get(store, piece, self.NOW, lambda: (1, 10), read) == [1]
        assert kept.get(store, piece, self.NOW, lambda: (1, 10), read) == [1]
        assert kept.get(store, piece, self.NOW, lambda: (2, 11), read) == [2]
        assert kept.get(store, piece, self.NOW, lambda: (2, 11), read) == [2]
        kept.forget(store)
        assert kept.get(store, piece, self.NOW, lambda: (2, 11), read) == [3]
        assert len(reads) == 3

    def test_a_piece_reaching_into_the_current_hour_is_read_at_every_call(self) -> None:
        """The current hour starts at 00:00 here: a piece ending at 00:01 holds it, and
        its fingerprint is not even taken."""
        kept: ClosedPieces[object] = ClosedPieces()
        store = Store(":memory:")
        piece = Piece(MINUTE, self.NOW - 10 * MINUTE, self.NOW - 4 * MINUTE)
        reads: list[Piece] = []

        def no_fingerprint() -> tuple[object, ...]:
            raise AssertionError("an open piece has no fingerprint taken")

        for _ in range(3):
            kept.get(store, piece, self.NOW, no_fingerprint, self.reader(reads, piece))
        assert len(reads) == 3

    def test_each_store_keeps_its_own_and_only_the_newest_pieces(self) -> None:
        """A store reads its pieces whatever another kept; past ``size`` pieces the oldest
        one kept is dropped."""
        kept: ClosedPieces[object] = ClosedPieces(size=2)
        one, two = Store(":memory:"), Store(":memory:")
        pieces = [Piece(HOUR, self.NOW - k * HOUR - HOUR, self.NOW - k * HOUR) for k in (3, 4, 5)]
        reads: list[Piece] = []
        for p in pieces:
            kept.get(one, p, self.NOW, lambda: (), self.reader(reads, p))
        kept.get(two, pieces[2], self.NOW, lambda: (), self.reader(reads, pieces[2]))
        assert len(reads) == 4  # the other store read its own
        for p in pieces[1:]:
            kept.get(one, p, self.NOW, lambda: (), self.reader(reads, p))
        assert len(reads) == 4  # the two newest were kept
        kept.get(one, pieces[0], self.NOW, lambda: (), self.reader(reads, pieces[0]))
        assert reads[-1] == pieces[0] and len(reads) == 5  # the oldest was dropped
