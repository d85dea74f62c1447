"""ISO weeks: parsing, the week of an instant, week 53, year ends and a month's 1st."""

from __future__ import annotations

import pytest

from exporter.review.weeks import IsoWeek
from tests.report.seed import t
from tests.support.instants import at


class TestIsoWeek:
    def test_week_53_straddles_the_year_end(self) -> None:
        """2026-W53 runs Monday 2026-12-28 to Sunday 2027-01-03 and holds January 1st."""
        w = IsoWeek.parse("2026-W53")
        assert (w.monday.isoformat(), w.sunday.isoformat()) == ("2026-12-28", "2027-01-03")
        assert w.start == t("2026-12-28T00:00:00")
        assert w.end == t("2027-01-04T00:00:00")
        assert IsoWeek.of(t("2027-01-01T00:05:00")) == w

    def test_a_year_without_week_53_refuses_it(self) -> None:
        with pytest.raises(ValueError, match="2025 has no ISO week 53"):
            IsoWeek.parse("2025-W53")

    @pytest.mark.parametrize("text", ["2026-53", "2026-W5", "W53", "2026-W00", ""])
    def test_malformed_weeks_are_refused(self, text: str) -> None:
        with pytest.raises(ValueError):
            IsoWeek.parse(text)

    @pytest.mark.parametrize(
        ("name", "label"),
        [
            ("first-of-month", "2027-W09"),  # 2027-03-01 00:05, a Monday: a new week
            ("end-of-30-day-month", "2027-W17"),  # 2027-04-30 23:55, a Friday
            ("leap-day", "2028-W09"),  # 2028-02-29 12:00
            ("new-years-eve", "2027-W52"),  # 2027-12-31 23:59, a Friday
            ("mid-month", "2027-W28"),
        ],
    )
    def test_the_week_of_the_fixed_instants(self, name: str, label: str) -> None:
        assert IsoWeek.of(at(name)).label == label

    def test_the_week_holding_a_months_first_spans_both_months(self) -> None:
        """2027-W13 runs 2027-03-29 to 2027-04-04: April 1st is its Thursday."""
        w = IsoWeek.of(t("2027-04-01T00:05:00"))
        assert w.label == "2027-W13"
        assert (w.monday.isoformat(), w.sunday.isoformat()) == ("2027-03-29", "2027-04-04")

    def test_a_running_week_ends_at_the_instant(self) -> None:
        w = IsoWeek.parse("2026-W53")
        now = t("2026-12-30T10:00:00")
        assert w.span(now).end == now
        assert w.span(t("2027-02-01T00:00:00")).end == w.end

    def test_shifting_crosses_the_year(self) -> None:
        assert IsoWeek.parse("2027-W01").shifted(-1).label == "2026-W53"
        assert IsoWeek.parse("2026-W53").shifted(1).label == "2027-W01"
