"""Probe results: their table, the writer that counts new ones, and uptime queries.

Raw results (``probe_results``) are pruned after ``state.retention``; each new
result is also added to its service's UTC day in ``probe_daily`` (checks,
successes, successful durations per histogram bucket), which is kept, so a
closed calendar month can be counted whole whatever the retention, and to its
minute and hour buckets (:mod:`exporter.domains.probe.rollup`), so a window
is read as a bounded number of buckets plus exact edges.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.core.dialect import Dialects
from exporter.core.periods import Span, rolling
from exporter.core.store import Store, Tx, Writer
from exporter.domains.probe import rollup
from exporter.domains.probe.kpis import DURATION_BUCKETS, FAILURE_REASONS, CheckCounts
from exporter.domains.probe.records import ProbeResult, ProbeSkipped

# Successful check durations per bucket of DURATION_BUCKETS, non-cumulative; the last
# column is the overflow (slower than every bound).
_BUCKET_COLS = [f"b{i}" for i in range(len(DURATION_BUCKETS) + 1)]


_DAILY = f"""
    CREATE TABLE probe_daily (
        service TEXT NOT NULL,
        day TEXT NOT NULL,
        checks INTEGER NOT NULL,
        successes INTEGER NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _BUCKET_COLS)},
        PRIMARY KEY (service, day)
    );
    INSERT INTO probe_daily (service, day, checks, successes, {", ".join(_BUCKET_COLS)})
    SELECT service, date(started_at, 'unixepoch'), COUNT(*), SUM(success), {{sums}}
    FROM probe_results GROUP BY service, date(started_at, 'unixepoch')
    """

MIGRATIONS = (
    """
    CREATE TABLE probe_results (
        service TEXT NOT NULL,
        probe TEXT NOT NULL,
        started_at REAL NOT NULL,
        duration REAL NOT NULL,
        success INTEGER NOT NULL,
        reason TEXT NOT NULL,
        status_code INTEGER,
        PRIMARY KEY (service, probe, started_at)
    );
    CREATE INDEX probe_results_started ON probe_results (started_at);
    CREATE TABLE probe_last_success (
        service TEXT NOT NULL,
        probe TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (service, probe)
    );
    """,
    # Daily totals per service, filled from the results still stored.
    Dialects(
        _DAILY.format(sums=rollup.raw_bucket_sums()),
        _DAILY.format(sums=rollup.raw_bucket_sums(True)),
    ),
    # What the latest probe of each check showed, beyond its result.
    """
    CREATE TABLE probe_last (
        service TEXT NOT NULL,
        probe TEXT NOT NULL,
        started_at REAL NOT NULL,
        phases TEXT NOT NULL,
        http_version TEXT,
        tls_version TEXT,
        cert_not_after REAL,
        redirects INTEGER NOT NULL,
        PRIMARY KEY (service, probe)
    );
    """,
    # Minute and hour rollups, and the backfill of the results already stored.
    rollup.MIGRATION,
)

_DAILY_SQL = (
    f"INSERT INTO probe_daily (service, day, checks, successes, {', '.join(_BUCKET_COLS)}) "
    f"VALUES (?, date(?, 'unixepoch'), 1, ?, {', '.join('?' for _ in _BUCKET_COLS)}) "
    "ON CONFLICT (service, day) DO UPDATE SET checks = checks + 1, "
    "successes = successes + excluded.successes, "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _BUCKET_COLS)
)

CHECKS_TOTAL = "platform_probe_checks_total"
# The (result, reason) label pairs a check can end with.
OUTCOMES = (
    {"result": "success", "reason": "none"},
    *({"result": "failure", "reason": reason} for reason in FAILURE_REASONS),
)
DURATION = "platform_probe_duration_seconds"
SKIPPED_TOTAL = "platform_probe_skipped_total"

_LAST_SQL = (
    "INSERT INTO probe_last (service, probe, started_at, phases, http_version, tls_version, "
    "cert_not_after, redirects) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (service, probe) DO UPDATE SET started_at = excluded.started_at, "
    "phases = excluded.phases, http_version = excluded.http_version, "
    "tls_version = excluded.tls_version, cert_not_after = excluded.cert_not_after, "
    "redirects = excluded.redirects WHERE excluded.started_at > probe_last.started_at"
)


def write(tx: Tx, results: Sequence[ProbeResult]) -> None:
    """Insert results; count, observe and roll up only those not seen before.

    Every statement runs once for the batch, or once per row in one batch of statements
    (``executemany``): on a shared database a round trip per result is what a commit of
    many probes would otherwise cost."""
    rows = [
        {
            "service": r.service,
            "probe": r.probe,
            "started_at": r.started_at,
            "duration": r.duration_seconds,
            "success": int(r.success),
            "reason": r.reason,
            "status_code": r.status_code,
        }
        for r in results
    ]
    is_new = tx.insert_new_many("probe_results", rows, ("service", "probe", "started_at"))
    fresh = [r for r, new in zip(results, is_new, strict=True) if new]
    # A check whose details are stored already, or stored by an earlier result of the batch.
    seen = set(tx.stored_rows("probe_last", (), ("service", "probe"), _checks(fresh)))
    new_checks: list[rollup.Check] = []
    daily, last, last_success = [], [], []
    for r in fresh:
        new_checks.append(
            rollup.Check(r.service, r.probe, r.started_at, r.duration_seconds, r.success)
        )
        one_hot = [0] * len(_BUCKET_COLS)
        if r.success:
            one_hot[bisect.bisect_left(DURATION_BUCKETS, r.duration_seconds)] = 1
        daily.append((r.service, r.started_at, int(r.success), *one_hot))
        labels = {"service": r.service, "probe": r.probe}
        last.append(_last_row(r))
        if (r.service, r.probe) not in seen:
            # Every outcome's series exists from the probe's first check on, at 0, so the
            # first failure is an increase Prometheus can see, not a series appearing at 1.
            seen.add((r.service, r.probe))
            tx.incr(SKIPPED_TOTAL, labels, 0.0)
            for outcome in OUTCOMES:
                tx.incr(CHECKS_TOTAL, {**labels, **outcome}, 0.0)
        tx.incr(
            CHECKS_TOTAL,
            {
                **labels,
                "result": "success" if r.success else "failure",
                "reason": r.reason or "none",
            },
        )
        if r.success:
            tx.observe(DURATION, labels, r.duration_seconds, DURATION_BUCKETS)
            last_success.append((r.service, r.probe, r.started_at))
    tx.write_many_later(_DAILY_SQL, daily)
    tx.write_many_later(_LAST_SQL, last)  # each kept only if later than the stored one
    tx.write_many_later(
        "INSERT INTO probe_last_success (service, probe, at) VALUES (?, ?, ?) "
        "ON CONFLICT (service, probe) DO UPDATE SET at = max(at, excluded.at)",
        last_success,
    )
    rollup.add(tx, new_checks, tx.clock())


def _checks(results: Sequence[ProbeResult]) -> list[tuple[str, str]]:
    return [(r.service, r.probe) for r in results]


def _last_row(r: ProbeResult) -> tuple[object, ...]:
    """The check's latest details, as ``probe_last`` keeps them."""
    return (
        r.service,
        r.probe,
        r.started_at,
        json.dumps(dict(r.phases), sort_keys=True),
        r.http_version,
        r.tls_version,
        r.cert_not_after,
        r.redirects,
    )


def write_skipped(tx: Tx, skips: Sequence[ProbeSkipped]) -> None:
    """Count slots that passed without a probe."""
    for s in skips:
        tx.incr(SKIPPED_TOTAL, {"service": s.service, "probe": s.probe}, float(s.slots))


def prune(tx: Tx, older_than: float) -> int:
    """Delete raw results started before ``older_than``, and rollup buckets past their
    keeping (whole buckets); counters and daily totals stay.

    Raw results wait while the backfill of the rollups is not done: the backfill reads
    them, and deleting the newest of them could let a new result take its rowid."""
    rollup.prune(tx, tx.clock())
    if rollup.pending(tx):
        return 0
    return tx.execute("DELETE FROM probe_results WHERE started_at < ?", (older_than,)).rowcount


def check_counts(
    store: Store, now: float, windows: Mapping[str, float]
) -> dict[tuple[str, str], CheckCounts]:
    """Checks and successes per (service, window) for checks started in (now - window, now]."""
    out: dict[tuple[str, str], CheckCounts] = {}
    spans = {name: rolling(now, seconds) for name, seconds in windows.items()}
    # Checks and successes only: the duration buckets are not summed.
    for name, sums in rollup.spans_sums_by_service(store, spans, now, width=2).items():
        for service, (checks, successes) in sums.items():
            out[(service, name)] = CheckCounts(checks, successes)
    return out


@dataclass(frozen=True, slots=True)
class ProbeCounts:
    """A service's checks over a span: all, successful, and successes per duration bucket."""

    checks: int
    successes: int
    # Successful checks per bucket of DURATION_BUCKETS (non-cumulative), then the overflow.
    buckets: tuple[int, ...]

    @property
    def uptime(self) -> CheckCounts:
        return CheckCounts(self.checks, self.successes)

    def slower_than(self, threshold: float) -> int:
        """Successful checks slower than ``threshold``, a bucket bound (the histogram's test)."""
        upto = next(i for i, b in enumerate(DURATION_BUCKETS) if abs(b - threshold) < 1e-9)
        return self.successes - sum(self.buckets[: upto + 1])


def span_counts(store: Store, span: Span, now: float | None = None) -> dict[str, ProbeCounts]:
    """Checks per service started in ``span`` (rollups plus raw edges: see
    :mod:`exporter.domains.probe.rollup`) as seen at ``now`` (default: the store's clock)."""
    totals = rollup.span_sums_by_service(store, span, store.clock() if now is None else now)
    return {s: ProbeCounts(v[0], v[1], tuple(v[2:])) for s, v in totals.items()}


def latency_bins(store: Store, now: float, window: float) -> dict[str, dict[int, int]]:
    """Per service, successful checks started in (now - window, now] per latency bin
    (:data:`exporter.domains.probe.rollup.BINS`)."""
    return rollup.latency_bins(store, rolling(now, window), now)


def last_success(store: Store) -> dict[tuple[str, str], float]:
    rows = store.query("SELECT service, probe, at FROM probe_last_success")
    return {(str(r[0]), str(r[1])): float(r[2]) for r in rows}


@dataclass(frozen=True, slots=True)
class LastProbe:
    """What the latest probe of a check showed, beyond success or failure."""

    phases: dict[str, float]
    # The HTTP version as a number (1.1), as blackbox_exporter's probe_http_version.
    http_version: float | None
    tls_version: str | None
    cert_not_after: float | None
    redirects: int


def last_probes(store: Store) -> dict[tuple[str, str], LastProbe]:
    """The latest probe of every check, by (service, probe)."""
    rows = store.query(
        "SELECT service, probe, phases, CAST(http_version AS REAL), tls_version, cert_not_after, redirects "
        "FROM probe_last ORDER BY service, probe"
    )
    return {
        (str(r[0]), str(r[1])): LastProbe(
            {str(k): float(v) for k, v in json.loads(r[2]).items()},
            r[3],
            r[4],
            None if r[5] is None else float(r[5]),
            int(r[6]),
        )
        for r in rows
    }


WRITERS: dict[type, Writer] = {ProbeResult: write, ProbeSkipped: write_skipped}
