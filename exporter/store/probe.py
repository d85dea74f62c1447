"""Probe results: their table, the writer that counts new ones, and uptime queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.kpis.uptime import DURATION_BUCKETS, FAILURE_REASONS, CheckCounts
from exporter.records import ProbeResult
from exporter.store import register_domain
from exporter.store.core import Store, Tx

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
)

CHECKS_TOTAL = "platform_probe_checks_total"
# The (result, reason) label pairs a check can end with.
OUTCOMES = (
    {"result": "success", "reason": "none"},
    *({"result": "failure", "reason": reason} for reason in FAILURE_REASONS),
)
DURATION = "platform_probe_duration_seconds"


def write(tx: Tx, results: Sequence[ProbeResult]) -> None:
    """Insert results; count and observe only those not seen before."""
    for r in results:
        new = tx.insert_new(
            "probe_results",
            {
                "service": r.service,
                "probe": r.probe,
                "started_at": r.started_at,
                "duration": r.duration_seconds,
                "success": int(r.success),
                "reason": r.reason,
                "status_code": r.status_code,
            },
        )
        if not new:
            continue
        labels = {"service": r.service, "probe": r.probe}
        # Every outcome's series exists from the probe's first check on, at 0, so the
        # first failure is an increase Prometheus can see, not a series appearing at 1.
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
            tx.execute(
                "INSERT INTO probe_last_success (service, probe, at) VALUES (?, ?, ?) "
                "ON CONFLICT (service, probe) DO UPDATE SET at = max(at, excluded.at)",
                (r.service, r.probe, r.started_at),
            )


def prune(tx: Tx, older_than: float) -> int:
    """Delete raw results started before ``older_than``; counters are unaffected."""
    return tx.execute("DELETE FROM probe_results WHERE started_at < ?", (older_than,)).rowcount


def check_counts(
    store: Store, now: float, windows: Mapping[str, float]
) -> dict[tuple[str, str], CheckCounts]:
    """Checks and successes per (service, window) for checks started in (now - window, now]."""
    names = list(windows)
    cols = ", ".join(
        f"SUM(started_at > :s{i}), SUM(success AND started_at > :s{i})" for i in range(len(names))
    )
    params: dict[str, float] = {f"s{i}": now - windows[n] for i, n in enumerate(names)}
    params["oldest"] = now - max(windows.values())
    params["now"] = now
    rows = store.query(
        f"SELECT service, {cols} FROM probe_results "
        "WHERE started_at > :oldest AND started_at <= :now GROUP BY service",
        params,
    )
    out: dict[tuple[str, str], CheckCounts] = {}
    for row in rows:
        for i, name in enumerate(names):
            total = int(row[1 + 2 * i] or 0)
            out[(str(row[0]), name)] = CheckCounts(total, int(row[2 + 2 * i] or 0))
    return out


def success_durations(store: Store, now: float, window: float) -> dict[str, list[float]]:
    """Durations of successful checks per service started in (now - window, now]."""
    rows = store.query(
        "SELECT service, duration FROM probe_results "
        "WHERE success = 1 AND started_at > ? AND started_at <= ?",
        (now - window, now),
    )
    out: dict[str, list[float]] = {}
    for service, duration in rows:
        out.setdefault(str(service), []).append(float(duration))
    return out


def last_success(store: Store) -> dict[tuple[str, str], float]:
    rows = store.query("SELECT service, probe, at FROM probe_last_success")
    return {(str(r[0]), str(r[1])): float(r[2]) for r in rows}


register_domain("probe", MIGRATIONS, {ProbeResult: write})
