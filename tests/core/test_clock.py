"""Time is an input: the clock module, and the rule that nothing else in exporter/ reads the wall clock.

The rule is checked on the syntax tree of every module of the package, so a
reference such as ``clock=time.time`` (a default argument, not a call) or
``from time import time`` is found as well as a call, and a comment or a
docstring that mentions ``time.time()`` is not.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.core.clock import FixedClock, ShiftedClock, parse_instant, utc_datetime
from tests.support.instants import INSTANTS, at
from tests.support.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "exporter"
CLOCK_MODULE = PACKAGE / "core" / "clock.py"

# ``time`` functions that read the wall clock (monotonic and perf_counter measure durations).
WALL_TIME = {"time", "time_ns", "gmtime", "localtime", "ctime", "asctime"}
# ``datetime`` / ``date`` constructors that read it.
WALL_DATETIME = {"now", "utcnow", "today"}
# Functions of other modules that read it when called without a time argument.
WALL_OTHER = {("email.utils", "formatdate"), ("email.utils", "localtime")}
# SQL that asks the database for the time.
WALL_SQL = ("'now'", '"now"', "current_timestamp", "current_date", "current_time")


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attribute accesses on a name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _WallClockFinder(ast.NodeVisitor):
    """Collects (line, what) for every read of the wall clock in one module."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        # Local names bound by imports: ``dt`` in ``import datetime as dt`` -> "datetime".
        self.aliases: dict[str, str] = {}

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.aliases[alias.asname or alias.name.split(".")[0]] = (
                alias.name if alias.asname else alias.name.split(".")[0]
            )

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            local = alias.asname or alias.name
            if node.module == "time" and alias.name in WALL_TIME:
                self.found.append((node.lineno, f"from time import {alias.name}"))
            elif (node.module, alias.name) in WALL_OTHER:
                self.found.append((node.lineno, f"from {node.module} import {alias.name}"))
            elif node.module:
                self.aliases[local] = f"{node.module}.{alias.name}"

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = _dotted(node)
        if dotted is not None:
            head, _, rest = dotted.partition(".")
            full = f"{self.aliases.get(head, head)}.{rest}" if rest else dotted
            module, _, name = full.rpartition(".")
            if (
                (module == "time" and name in WALL_TIME)
                or (name in WALL_DATETIME and module in ("datetime.datetime", "datetime.date"))
                or (module, name) in WALL_OTHER
            ):
                self.found.append((node.lineno, full))
            return  # the chain is judged whole, not each of its prefixes again
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            text = node.value.lower()
            if any(word in text for word in WALL_SQL) and _looks_like_sql(text):
                self.found.append((node.lineno, f"SQL reading the time: {node.value[:60]!r}"))


def _looks_like_sql(text: str) -> bool:
    return any(word in text for word in ("select ", "insert ", "update ", "delete ", "strftime("))


def wall_clock_reads(source: str) -> list[tuple[int, str]]:
    """Every read of the wall clock in ``source`` (a module's text): (line, what)."""
    finder = _WallClockFinder()
    finder.visit(ast.parse(source))
    return sorted(finder.found)


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != CLOCK_MODULE)


class TestNothingButTheClockModuleReadsTheWallClock:
    def test_no_module_of_the_package_reads_the_wall_clock(self) -> None:
        """Every "now" comes from an injected clock; only exporter/core/clock.py reads the machine's."""
        offenders = [
            f"{path.relative_to(PACKAGE.parent)}:{line}: {what}"
            for path in _modules()
            for line, what in wall_clock_reads(path.read_text(encoding="utf-8"))
        ]
        assert offenders == [], (
            "these read the wall clock; take a Clock (exporter.core.clock) instead:\n"
            + "\n".join(offenders)
        )

    def test_the_package_has_modules_to_check(self) -> None:
        assert len(_modules()) > 50

    def test_the_clock_module_itself_is_seen_reading_it(self) -> None:
        """The check finds what it looks for: clock.py is the one module that reads the clock."""
        found = {what for _, what in wall_clock_reads(CLOCK_MODULE.read_text(encoding="utf-8"))}
        assert found == {"time.time", "datetime.datetime.now"}

    @pytest.mark.parametrize(
        ("source", "what"),
        [
            ("import time\nx = time.time()\n", "time.time"),
            ("import time\ndef f(clock=time.time): ...\n", "time.time"),
            ("import time as t\nt.gmtime()\n", "time.gmtime"),
            ("from time import time\n", "from time import time"),
            ("from datetime import datetime\ndatetime.now()\n", "datetime.datetime.now"),
            ("from datetime import datetime as dt\ndt.utcnow()\n", "datetime.datetime.utcnow"),
            ("import datetime\ndatetime.date.today()\n", "datetime.date.today"),
            ("from datetime import date\ndate.today()\n", "datetime.date.today"),
            ("import email.utils\nemail.utils.formatdate()\n", "email.utils.formatdate"),
            (
                "q = \"SELECT strftime('%s', 'now')\"\n",
                "SQL reading the time: \"SELECT strftime('%s', 'now')\"",
            ),
        ],
    )
    def test_each_way_of_reading_the_wall_clock_is_found(self, source: str, what: str) -> None:
        assert [w for _, w in wall_clock_reads(source)] == [what]

    @pytest.mark.parametrize(
        "source",
        [
            "import time\ntime.monotonic()\ntime.perf_counter()\ntime.sleep(1)\n",
            "from datetime import UTC, datetime\ndatetime.fromtimestamp(0, UTC)\n",
            '"""Never call time.time() here."""\n',
            "# datetime.now() would be wrong\nx = 1\n",
            "now = 1.0\nclock = lambda: now\n",
        ],
    )
    def test_durations_conversions_and_prose_are_not_wall_clock_reads(self, source: str) -> None:
        assert wall_clock_reads(source) == []


class TestClocks:
    def test_a_fixed_clock_stands_still_until_moved(self) -> None:
        clock = FixedClock(100.0)
        assert clock() == clock() == 100.0
        clock.advance(2.5)
        assert clock() == 102.5
        clock.set(7)
        assert clock() == 7.0

    def test_a_shifted_clock_starts_at_its_instant_and_runs_at_the_real_pace(self) -> None:
        real = FixedClock(1_000.0)
        clock = ShiftedClock(5_000.0, real=real)
        assert clock() == 5_000.0
        real.advance(30.0)
        assert clock() == 5_030.0

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2027-03-01T00:05:00Z", datetime(2027, 3, 1, 0, 5, tzinfo=UTC)),
            ("2027-03-01T00:05:00z", datetime(2027, 3, 1, 0, 5, tzinfo=UTC)),
            ("2027-03-01 00:05", datetime(2027, 3, 1, 0, 5, tzinfo=UTC)),  # no zone: UTC
            ("2028-02-29T13:00:00+01:00", datetime(2028, 2, 29, 12, tzinfo=UTC)),
            ("2027-12-31", datetime(2027, 12, 31, tzinfo=UTC)),
            ("1803859500", datetime(2027, 3, 1, 0, 5, tzinfo=UTC)),
            (" 1803859500.5 ", datetime(2027, 3, 1, 0, 5, 0, 500000, tzinfo=UTC)),
        ],
    )
    def test_instants_are_iso_8601_or_epoch_seconds(self, text: str, expected: datetime) -> None:
        assert parse_instant(text) == expected.timestamp()

    @pytest.mark.parametrize("text", ["", "yesterday", "2027-02-29T00:00:00Z", "-5", "nan", "inf"])
    def test_anything_else_is_a_value_error_naming_what_was_given(self, text: str) -> None:
        with pytest.raises(ValueError, match="invalid instant"):
            parse_instant(text)

    def test_utc_datetime_is_aware_and_utc(self) -> None:
        assert utc_datetime(0.0) == datetime(1970, 1, 1, tzinfo=UTC)


class TestTheSharedInstants:
    """tests/support/instants.py: the instants every date-sensitive test runs at."""

    def test_they_cover_the_edges_of_the_calendar(self) -> None:
        days = {name: utc_datetime(t) for name, t in INSTANTS.items()}
        assert days["first-of-month"].day == 1
        assert (days["first-of-month"].hour, days["first-of-month"].minute) == (0, 5)
        last = days["end-of-30-day-month"]
        assert (last.month, last.day, last.hour, last.minute) in {
            (m, 30, 23, 55) for m in (4, 6, 9, 11)
        }
        assert days["leap-day"] == datetime(2028, 2, 29, 12, tzinfo=UTC)
        assert days["new-years-eve"] == datetime(2027, 12, 31, 23, 59, tzinfo=UTC)
        assert 10 <= days["mid-month"].day <= 20

    def test_at_names_one_instant(self) -> None:
        assert at("leap-day") == datetime(2028, 2, 29, 12, tzinfo=UTC).timestamp()
