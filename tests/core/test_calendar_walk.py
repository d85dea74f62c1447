"""Every calendar KPI at every day of 2027 and 2028, and every hour around three month
boundaries, against a reference computed another way on the same generated history.

The KPIs cut time into spans (:mod:`exporter.core.periods`) and count whole days from
daily totals; the reference only compares each event's UTC (year, month) with the
instant's, using :mod:`datetime`. The store keeps 35 days of raw checks and minutes,
pruned as the walk goes forward, so closed months must come from the daily totals.
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from exporter.core.periods import calendar_span, last_month
from exporter.core.store import Store, write_records
from exporter.domains import open_store
from exporter.domains.cost.kpis import (
    budget_forecast,
    budget_used,
    cost_by_window,
    cost_per_transaction,
    month_days,
    window_bounds,
)
from exporter.domains.delivery import kpis as kpi
from exporter.domains.probe import store as probe_store
from exporter.domains.probe.records import ProbeResult
from exporter.domains.slo import store as slo_store
from exporter.domains.slo.kpis import EventCounts
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.records import TrafficDelta

T = TypeVar("T")

HOUR = 3600.0
DAY = 86400.0
RETENTION = 35 * DAY
BUDGET = 400.0
THRESHOLD = 0.25  # the probe latency SLO's bucket bound
NB = len(traffic_store._BUCKET_COLS)


def ts(d: datetime) -> float:
    return d.timestamp()


def utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def previous(year: int, month: int) -> tuple[int, int]:
    return (year, month - 1) if month > 1 else (year - 1, 12)


# --- the generated history ----------------------------------------------------------

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2029, 1, 2, tzinfo=UTC)


def month_starts() -> Iterator[datetime]:
    d = START
    while d < END:
        yield d
        d = (d + timedelta(days=32)).replace(day=1)


def check_times() -> list[float]:
    """Every 3 hours at :17, plus checks at 00:00:00 on every 1st and a millisecond
    before it, where a month ends."""
    out = [ts(START) + 17 * 60 + i * 3 * HOUR for i in range(int((END - START).days * 8))]
    for m in month_starts():
        out += [ts(m), ts(m) - 0.001]
    return sorted(out)


def checks() -> list[ProbeResult]:
    out = []
    for t in check_times():
        ok = unit("ok", t) > 0.1
        duration = 0.05 + 0.4 * unit("duration", t)  # 0.05 to 0.45 s: some over 0.25 s
        out.append(ProbeResult("checkout", "health", t, duration, ok, "" if ok else "status"))
    return out


def minutes() -> list[TrafficDelta]:
    """A gateway minute every 3 hours at :41, and the first minute of every month."""
    times = [ts(START) + 41 * 60 + i * 3 * HOUR for i in range(int((END - START).days * 8))]
    times += [ts(m) for m in month_starts()]
    out = []
    for t in sorted(times):
        n5 = int(10 * unit("5xx", t))
        codes = (0, 90 + int(20 * unit("2xx", t)), 0, int(5 * unit("4xx", t)), n5)
        buckets = (sum(codes), *([0] * (NB - 1)))
        out.append(TrafficDelta("nginx", "checkout", t, "b", codes, buckets, 1.0, sum(codes)))
    return out


@dataclass(frozen=True)
class Delivery:
    deploys: list[kpi.ProdDeploy]
    leads: list[kpi.LeadTime]
    failed: set[str]
    incidents: list[kpi.IncidentSpan]


def delivery() -> Delivery:
    """A deployment every ~40 hours (a tenth of them failed), each shipping the commits
    made since the previous one; an incident every ~9 days, resolved hours later."""
    commits: dict[str, kpi.CommitNode] = {}
    deploys, parent, i = [], (), 0
    t = ts(START)
    while t < ts(END):
        sha = f"c{i}"
        commits[sha] = kpi.CommitNode(sha, t - 5 * HOUR * unit("age", i), parent)
        parent = (sha,)
        t += 40 * HOUR * (0.5 + unit("gap", i))
        deploys.append(kpi.ProdDeploy(f"d{i}", sha, unit("fail", i) > 0.1, t))
        i += 1
    incidents, opened, n = [], ts(START), 0
    while opened < ts(END):
        opened += 9 * DAY * (0.5 + unit("inc", n))
        incidents.append(kpi.IncidentSpan(f"i{n}", opened, opened + 12 * HOUR * unit("ttr", n)))
        n += 1
    failed = kpi.failed_changes(deploys, incidents, DAY, commits)
    return Delivery(deploys, kpi.lead_times(deploys, commits), failed, incidents)


def costs() -> tuple[
    list[tuple[str, str, str, str, str, str, float]], dict[tuple[str, str], float]
]:
    """Daily USD cost of checkout, and its requests (none on every 17th day)."""
    rows, requests = [], {}
    d = START.date()
    while d < END.date():
        iso = d.isoformat()
        rows.append((iso, "checkout", "payments", "aws", "Compute", "USD", 10 + 7 * unit("c", iso)))
        if d.toordinal() % 17:
            requests[("checkout", iso)] = 1000.0 + int(500 * unit("r", iso))
        d += timedelta(days=1)
    return rows, requests


# --- the instants ---------------------------------------------------------------------


def instants() -> list[float]:
    """Every day of 2027 and 2028 at a time of day that changes from day to day (00:00:00
    and 23:59:59 included), and every hour from 36 hours before to 36 hours after
    2027-03-01, 2028-01-01 and 2028-03-01."""
    out = []
    d = date(2027, 1, 1)
    while d.year < 2029:
        n = d.toordinal()
        second = (0, 86399, 300, 43200)[n % 4] if n % 5 == 0 else int(86400 * unit("t", n))
        out.append(ts(datetime(d.year, d.month, d.day, tzinfo=UTC)) + second)
        d += timedelta(days=1)
    for boundary in (datetime(2027, 3, 1), datetime(2028, 1, 1), datetime(2028, 3, 1)):
        mid = ts(boundary.replace(tzinfo=UTC))
        out += [mid + h * HOUR for h in range(-36, 37)]
    return sorted(set(out))


# --- the reference --------------------------------------------------------------------


def month_of(t: float) -> tuple[int, int]:
    d = utc(t)
    return d.year, d.month


class ByMonth:
    """Items grouped by the UTC (year, month) of their time, found without any span."""

    def __init__(self, items: list[T], time: Callable[[T], float]) -> None:
        self.groups: dict[tuple[int, int], list[tuple[float, T]]] = {}
        for item in sorted(items, key=time):
            self.groups.setdefault(month_of(time(item)), []).append((time(item), item))

    def window(self, now: float, window: str) -> list[T]:
        """The items in the calendar window at ``now``: this month up to now (``mtd``,
        ``month``), or the month before this one (``last_month``)."""
        year, month = month_of(now)
        if window == "last_month":
            return [item for _t, item in self.groups.get(previous(year, month), [])]
        group = self.groups.get((year, month), [])
        return [item for t, item in group[: bisect.bisect_right([t for t, _ in group], now)]]


def near_keys(days: list[str], requests: dict[tuple[str, str], float]) -> list[tuple[str, str]]:
    return [("checkout", d) for d in days if ("checkout", d) in requests]


def reference_days(by_month: dict[str, list[str]], today: date, window: str) -> list[str]:
    """ISO days in the calendar window on ``today``: the closed days of this month, or every
    day of the previous one. ``by_month`` maps ``YYYY-MM`` to its days."""
    if window == "mtd":
        iso = today.isoformat()
        return [d for d in by_month.get(iso[:7], []) if d < iso]
    year, month = previous(today.year, today.month)
    return by_month.get(f"{year:04d}-{month:02d}", [])


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, list[object]]]:
    path: Path = tmp_path_factory.mktemp("walk") / "s.db"
    store = open_store(str(path))
    records: list[object] = [*checks(), *minutes()]
    with store.transaction() as tx:
        write_records(tx, records)
    yield store, records
    store.close()


class TestEveryDay:
    def test_uptime_availability_and_slo_month_from_the_store(
        self, history: tuple[Store, list[object]]
    ) -> None:
        store, records = history
        probes = ByMonth([r for r in records if isinstance(r, ProbeResult)], lambda p: p.started_at)
        deltas = ByMonth([r for r in records if isinstance(r, TrafficDelta)], lambda d: d.minute)
        spans = 0
        for now in instants():
            with store.transaction() as tx:  # a 35-day retention, as the walk goes on
                probe_store.prune(tx, now - RETENTION)
                traffic_store.prune(tx, now - RETENTION)
            events = slo_store.SpanEvents(store)
            for window in ("mtd", "last_month"):
                span = calendar_span(window, now)
                got = probe_store.span_counts(store, span).get("checkout")
                mine = probes.window(now, window)
                ok = [p for p in mine if p.success]
                slow = [p for p in ok if p.duration_seconds > THRESHOLD]
                want = (len(mine), len(ok), len(slow))
                have = (got.checks, got.successes, got.slower_than(THRESHOLD)) if got else (0, 0, 0)
                assert have == want, (utc(now), window)

                t = traffic_store.span_counts(store, span).get("checkout")
                minute_rows = deltas.window(now, window)
                want_codes = tuple(sum(d.codes[i] for d in minute_rows) for i in range(5))
                assert (t.codes if t else (0,) * 5) == want_codes, (utc(now), window)

                slo_window = "month" if window == "mtd" else window
                slo_span = calendar_span(slo_window, now)
                assert events.events("probe-availability", "checkout", slo_span, None) == (
                    EventCounts(len(mine), len(mine) - len(ok))
                )
                assert events.events("probe-latency", "checkout", slo_span, THRESHOLD) == (
                    EventCounts(len(ok), len(slow))
                )
                assert events.events("requests-availability", "checkout", slo_span, None) == (
                    EventCounts(sum(want_codes), want_codes[4])
                )
                spans += 1
        assert spans == 2 * len(instants())

    def test_cost_windows_cost_per_transaction_and_budget(self) -> None:
        rows, requests = costs()
        daily = {r[0]: r[6] for r in rows}
        all_days = sorted(daily)
        by_month: dict[str, list[str]] = {}
        for d in all_days:
            by_month.setdefault(d[:7], []).append(d)
        for now in instants():
            today = utc(now).date()
            cost_end = (today - timedelta(days=2)).isoformat()  # billing data two days late
            cost_start = START.date().isoformat()
            windows = window_bounds(today)
            # As the provider does, read only the days the windows reach.
            lo = bisect.bisect_left(all_days, min(a for a, _ in windows.values()))
            hi = bisect.bisect_right(all_days, max(b for _, b in windows.values()))
            near = rows[lo:hi]
            near_requests = {k: requests[k] for k in near_keys(all_days[lo:hi], requests)}
            by_window = cost_by_window(near, windows)
            cpt = cost_per_transaction(near, near_requests, windows, cost_end, cost_start)
            days = month_days(today, cost_start, cost_end)
            for window in ("mtd", "last_month"):
                inside = reference_days(by_month, today, window)
                key = (window, "checkout", "payments", "aws", "Compute", "USD")
                if inside:
                    assert by_window[key] == pytest.approx(sum(daily[d] for d in inside))
                else:
                    assert key not in by_window, (today, window)  # absent, never 0

                aligned = [d for d in inside if d <= cost_end and ("checkout", d) in requests]
                got = cpt.get((window, "checkout", "USD"))
                if aligned:
                    assert got is not None, (today, window)
                    assert got.days == len(aligned)
                    assert got.value == pytest.approx(
                        sum(daily[d] for d in aligned)
                        / sum(requests[("checkout", d)] for d in aligned)
                    )
                else:
                    assert got is None, (today, window)

                complete = [d for d in inside if d <= cost_end]
                used = budget_used(daily, BUDGET, days[window])
                if complete:
                    assert used is not None and used.days == len(complete), (today, window)
                    assert used.used_ratio == pytest.approx(
                        sum(daily[d] for d in complete) / BUDGET
                    )
                else:
                    assert used is None, (today, window)

            this_month = [d for d in reference_days(by_month, today, "mtd") if d <= cost_end]
            last = [d for d in reference_days(by_month, today, "last_month") if d <= cost_end]
            basis = this_month or last
            rate = sum(daily[d] for d in basis) / len(basis)
            ahead = budget_forecast(daily, today, days)
            assert ahead is not None
            assert ahead.basis == ("mtd" if this_month else "last_month"), today
            assert ahead.forecast == pytest.approx(
                rate * calendar.monthrange(today.year, today.month)[1]
            )

    def test_deployments_and_dora_keys_over_last_month(self) -> None:
        data = delivery()
        deploys = ByMonth(data.deploys, lambda d: d.finished_at)
        leads_by_month = ByMonth(data.leads, lambda s: s.deployed_at)
        resolved = ByMonth(
            [i for i in data.incidents if i.resolved_at is not None],
            lambda i: i.resolved_at or 0.0,
        )
        for now in instants():
            span = last_month(now)
            n = utc(now)
            days = calendar.monthrange(*previous(n.year, n.month))[1]

            done = deploys.window(now, "last_month")
            ok = [d for d in done if d.success]
            assert kpi.successful_deployments(data.deploys, now, span) == len(ok)
            assert kpi.deployment_frequency(data.deploys, now, span) == pytest.approx(
                len(ok) / days
            )

            cf = kpi.change_failure(data.deploys, data.incidents, now, span, DAY)
            assert (cf.failed, cf.total) == (
                sum(1 for d in done if d.key in data.failed),
                len(done),
            )

            leads = sorted(s.seconds for s in leads_by_month.window(now, "last_month"))
            count, qs = kpi.lead_time_quantiles(data.leads, now, span)
            assert count == len(leads)
            if leads:
                mid = len(leads) // 2
                median = leads[mid] if len(leads) % 2 else (leads[mid - 1] + leads[mid]) / 2
                assert qs[0.5] == pytest.approx(median)
            else:
                assert qs == {}

            restores = sorted(
                (i.resolved_at or 0.0) - i.opened_at for i in resolved.window(now, "last_month")
            )
            assert sorted(kpi.restore_times(data.incidents, now, span)) == pytest.approx(restores)
