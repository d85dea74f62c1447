"""Calendar windows as spans, at the edges of months (hand-checked instants, UTC)."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest

from exporter.core.periods import (
    Span,
    calendar_span,
    day_start,
    day_start_iso,
    days_in_month,
    is_closed_day,
    last_month,
    latest_closed_day,
    month_to_date,
    rolling,
    split_days,
    utc_date,
    utc_minute,
)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class TestCalendarSpans:
    @pytest.mark.parametrize(
        ("now", "month_start", "last_start", "last_days"),
        [
            # 00:05 on the 1st: this month holds five minutes, last month is February 2027.
            ("2027-03-01T00:05:00", "2027-03-01", "2027-02-01", 28),
            # 23:55 on the last day of a 30-day month.
            ("2027-04-30T23:55:00", "2027-04-01", "2027-03-01", 31),
            ("2027-05-01T00:05:00", "2027-05-01", "2027-04-01", 30),
            # The leap day, and the day after it.
            ("2028-02-29T12:00:00", "2028-02-01", "2028-01-01", 31),
            ("2028-03-01T00:05:00", "2028-03-01", "2028-02-01", 29),
            # New Year's Eve one minute before midnight, and New Year's Day.
            ("2027-12-31T23:59:00", "2027-12-01", "2027-11-01", 30),
            ("2028-01-01T00:00:00", "2028-01-01", "2027-12-01", 31),
            ("2027-07-15T12:00:00", "2027-07-01", "2027-06-01", 30),
        ],
    )
    def test_month_to_date_and_last_month(
        self, now: str, month_start: str, last_start: str, last_days: int
    ) -> None:
        t = at(now)
        mtd = month_to_date(t)
        assert mtd.start == at(f"{month_start}T00:00:00")
        assert t in mtd
        assert math.nextafter(t, math.inf) not in mtd
        closed = last_month(t)
        assert closed.start == at(f"{last_start}T00:00:00")
        assert closed.end == mtd.start
        assert closed.seconds == last_days * 86400
        assert calendar_span("month", t) == mtd
        assert calendar_span("last_month", t) == closed

    def test_midnight_on_the_first_belongs_to_the_new_month(self) -> None:
        t = at("2028-03-01T00:00:00")
        assert t in month_to_date(t)
        assert t not in last_month(t)
        assert t - 0.001 in last_month(t)

    def test_days_in_month(self) -> None:
        assert [days_in_month(date(2028, m, 1)) for m in (1, 2, 4)] == [31, 29, 30]
        assert days_in_month(date(2027, 2, 28)) == 28

    def test_unknown_calendar_window_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="quarter"):
            calendar_span("quarter", 0.0)


class TestRolling:
    def test_rolling_window_is_open_at_its_start_and_closed_at_now(self) -> None:
        w = rolling(1000.0, 100.0)
        assert 900.0 not in w
        assert math.nextafter(900.0, math.inf) in w
        assert 1000.0 in w
        assert math.nextafter(1000.0, math.inf) not in w


class TestSplitDays:
    def test_a_closed_month_is_whole_days(self) -> None:
        split = split_days(last_month(at("2028-03-01T00:05:00")))
        assert (split.first_day, split.last_day, split.pieces) == (
            date(2028, 2, 1),
            date(2028, 2, 29),
            (),
        )

    def test_month_to_date_is_whole_days_and_today_so_far(self) -> None:
        t = at("2027-04-30T23:55:00")
        split = split_days(month_to_date(t))
        assert (split.first_day, split.last_day) == (date(2027, 4, 1), date(2027, 4, 29))
        assert split.pieces == (Span(at("2027-04-30T00:00:00"), math.nextafter(t, math.inf)),)

    def test_on_the_first_there_is_no_whole_day(self) -> None:
        t = at("2027-03-01T00:05:00")
        split = split_days(month_to_date(t))
        assert (split.first_day, split.last_day) == (None, None)
        assert split.pieces == (month_to_date(t),)

    def test_a_span_with_partial_days_at_both_ends(self) -> None:
        span = Span(at("2027-01-01T22:00:00"), at("2027-01-04T01:00:00"))
        split = split_days(span)
        assert (split.first_day, split.last_day) == (date(2027, 1, 2), date(2027, 1, 3))
        assert split.pieces == (
            Span(span.start, at("2027-01-02T00:00:00")),
            Span(at("2027-01-04T00:00:00"), span.end),
        )

    def test_an_empty_span_has_nothing(self) -> None:
        assert split_days(Span(5.0, 5.0)) == split_days(Span(6.0, 5.0))
        assert split_days(Span(5.0, 5.0)).pieces == ()


class TestUtcDays:
    """The UTC day and minute arithmetic every domain shares."""

    def test_the_minute_and_the_day_holding_an_instant(self) -> None:
        t = at("2028-02-29T23:59:42.5")
        assert utc_minute(t) == at("2028-02-29T23:59:00")
        assert utc_date(t) == date(2028, 2, 29)

    def test_an_iso_day_starts_at_midnight_utc(self) -> None:
        assert (
            day_start_iso("2027-12-31")
            == at("2027-12-31T00:00:00")
            == day_start(date(2027, 12, 31))
        )

    def test_today_is_never_closed_yesterday_is_the_latest_closed_day(self) -> None:
        now = at("2027-03-01T00:05:00")
        assert not is_closed_day(date(2027, 3, 1), now)
        assert is_closed_day(date(2027, 2, 28), now)
        assert latest_closed_day(now) == date(2027, 2, 28)
