"""Benchmark: rendering the probe and SLO providers on a large probe history, from rollups.

The state: ``--services`` services (2,000 by default), one probe each, checked every
15 minutes over ``--days`` days (30) and every minute in the last hour: 5.9 M checks
at the defaults. Each service has a probe-availability and a probe-latency SLO.

:func:`build_probe_state` is the fast path that gives the tables the writers give:
raw results inserted in bulk, the daily totals aggregated from them as the migration
that introduced them does, the rollups built by the upgrade backfill (which the
upgrade tests hold equal to the writers' rollups), and the latest check of each
service written through the writers (its counters, histogram and last-probe rows).

It prints, per provider, the render time from the rollups, the render time with the
backfill pending (daily totals plus raw rows, as an upgraded state is read meanwhile),
and the raw-scan uptime query of the release before the rollups, then the state's
size. Usage::

    python benchmarks/probe_rollups.py                      # 2,000 services x 30 days
    python benchmarks/probe_rollups.py --services 200       # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NOW = 1_803_859_500.0  # 2027-03-01 00:05 UTC
DAY = 86400.0


def service_names(n: int) -> list[str]:
    return [f"svc-{i:04d}" for i in range(n)]


def checks(
    services: list[str], now: float, days: float, interval: float = 900.0
) -> Iterator[tuple[str, str, float, float, int, str]]:
    """(service, probe, started_at, duration, success, reason) rows: every ``interval``
    over ``days`` days, then every minute in the last hour; about 1 in 97 fails."""
    start = now - days * DAY
    for i, svc in enumerate(services):
        t = start + (i % 60) * 15.0  # services spread over the interval
        n = 0
        while t <= now:
            ok = (n + i) % 97 != 0
            yield (
                svc,
                "health",
                t,
                0.02 + ((n * 7 + i) % 50) / 250,
                int(ok),
                "" if ok else "status",
            )
            n += 1
            t += 60.0 if t >= now - 3600 else interval


def build_probe_state(store: Any, services: list[str], now: float, days: float = 30.0) -> int:
    """Fill ``store`` (opened with the full schema, its clock at ``now``) with the probe
    history described above; returns the number of checks. Importable: other
    benchmarks build the same probe state with it."""
    from exporter.core.rollups import backfill_migration, backfill_step
    from exporter.core.store import write_records
    from exporter.domains.probe import rollup
    from exporter.domains.probe.records import ProbeResult

    Row = tuple[str, str, float, float, int, str]
    last: list[Row] = []  # each service's latest check, written through the writers
    rows = 0
    with store.transaction() as tx:
        batch: list[Row] = []
        prev: Row | None = None
        for row in checks(services, now, days):
            if prev is not None:
                (batch if prev[0] == row[0] else last).append(prev)
            prev = row
            if len(batch) >= 50_000:
                rows += _insert(tx, batch)
                batch = []
        if prev is not None:
            last.append(prev)
        rows += _insert(tx, batch)
        tx.execute(
            "INSERT INTO probe_daily (service, day, checks, successes, "
            f"{', '.join(rollup.BUCKET_COLS)}) SELECT service, date(started_at, 'unixepoch'), "
            f"COUNT(*), SUM(success), {rollup.raw_bucket_sums()} FROM probe_results "
            "WHERE true GROUP BY service, date(started_at, 'unixepoch')"
        )
        # The rows above predate the rollups, as an upgraded state's do.
        tx.execute("DELETE FROM cursors WHERE source = 'rollups'")
        tx.execute(backfill_migration("probe", "probe_results"))
    while not backfill_step(store, rollup.BACKFILL):
        pass
    with store.transaction() as tx:
        write_records(tx, [ProbeResult(s, p, t, d, bool(ok), r) for s, p, t, d, ok, r in last])
    return rows + len(last)


def _insert(tx: Any, batch: list[tuple[str, str, float, float, int, str]]) -> int:
    tx.conn.executemany(
        "INSERT INTO probe_results (service, probe, started_at, duration, success, reason) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        batch,
    )
    return len(batch)


def config(services: list[str], state: Path) -> Any:
    from exporter.config import Config

    return Config(
        state={"path": str(state)},
        services=[
            {
                "name": s,
                "team": f"team-{i % 100:02d}",
                "probes": [{"name": "health", "url": f"http://{s}.bench/health"}],
                "slo": {
                    "availability": {"objective": 99.9},
                    "latency": {"objective": 99.0, "threshold": "250ms"},
                },
            }
            for i, s in enumerate(services)
        ],
        sources={"probe": {"interval": "15s"}},
    )


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float]:
    """The best (wall, CPU) seconds of ``repeat`` runs: CPU time is this process's own
    (SQLite runs in it), so it holds on a machine other work is loading."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        took = (time.perf_counter() - wall, time.process_time() - cpu)
        best = min(best, took, key=lambda t: t[1])
    return best


def render(cfg: Any, store: Any, provider: str) -> Callable[[], Any]:
    from exporter.domains import domains, render_context

    collect = next(d.provider for d in domains() if d.name == provider)
    assert collect is not None

    def run() -> Any:
        return list(collect(render_context(cfg, store, NOW)))

    return run


def legacy_uptime(store: Any) -> Callable[[], Any]:
    """The previous release's uptime query: every raw row of the longest window."""
    windows = {"1h": 3600.0, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
    cols = ", ".join(
        f"SUM(started_at > :s{i}), SUM(success AND started_at > :s{i})" for i in range(4)
    )
    params = {f"s{i}": NOW - w for i, w in enumerate(windows.values())}
    params.update(oldest=NOW - 30 * DAY, now=NOW)
    sql = (
        f"SELECT service, {cols} FROM probe_results "
        "WHERE started_at > :oldest AND started_at <= :now GROUP BY service"
    )
    return lambda: store.query(sql, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--days", type=float, default=30.0)
    args = parser.parse_args()

    from exporter.core.clock import FixedClock
    from exporter.domains import open_store

    services = service_names(args.services)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        cfg = config(services, path)
        store = open_store(str(path), FixedClock(NOW))
        started = time.perf_counter()
        n = build_probe_state(store, services, NOW, args.days)
        built = time.perf_counter() - started
        print(f"built {n:,} checks in {built:.0f} s", flush=True)
        size = path.stat().st_size + Path(f"{path}-wal").stat().st_size
        rows: list[tuple[str, tuple[float, float]]] = []
        for provider in ("probe", "slo"):
            rows.append((f"{provider} render, rollups", timed(render(cfg, store, provider))))
        store_value = store.get_cursor("rollups", "probe")
        with store.transaction() as tx:  # as an upgraded state reads until its backfill ends
            state = json.loads(store_value or "{}")
            tx.set_cursor("rollups", "probe", json.dumps({**state, "after": 0}))
        for provider in ("probe", "slo"):
            rows.append(
                (f"{provider} render, backfill pending", timed(render(cfg, store, provider), 1))
            )
        rows.append(("uptime query of the previous release", timed(legacy_uptime(store), 1)))
        store.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.services} services, {args.days:g} days, {n:,} checks; built in {built:.0f} s")
    print(f"state {size / 2**20:.0f} MB; peak RSS {rss:.0f} MB; cpus {os.cpu_count()}")
    print(f"{'what':42} {'wall s':>9} {'CPU s':>9}")
    for what, (wall, cpu) in rows:
        print(f"{what:42} {wall:9.3f} {cpu:9.3f}")


if __name__ == "__main__":
    main()
