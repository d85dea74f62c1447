"""Traffic windows at a large organisation's scale: the traffic provider's render on rollups.

Builds (once, cached at ``--state``) ``--routes`` gateway identities (default 2,000)
with ``--hours`` (24) of per-minute NGINX traffic (minute rows, hour buckets and day
buckets; see :func:`build_state`), and times, in the same run:

* the traffic provider's full render (``exporter.domains.traffic.metrics.collect``),
  every rolling and calendar window, on the rollups;
* the same render reading minute rows and day buckets only (what a database still in
  its upgrade backfill does, and about what every render did before the rollups).

:func:`build_state` is importable (``benchmarks/scale.py`` may use it).

    python benchmarks/traffic_rollups.py                      # 2,000 routes x 1 day
    python benchmarks/traffic_rollups.py --routes 200 --hours 6   # a quick look
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ANCHOR = datetime(2027, 7, 14, 9, 30, tzinfo=UTC).timestamp()


def service(i: int) -> str:
    return f"svc-{i:04d}"


def ident(i: int) -> str:
    return f"{service(i)}.bench"


def build_state(path: Path, routes: int, hours: float, now: float = ANCHOR) -> None:
    """``hours`` of minute traffic for ``routes`` NGINX identities up to ``now``.

    The first minute goes through the traffic domain's writer (identities, counters,
    histogram); the other minute rows, batch keys and the hour and day buckets are
    written in bulk by SQL with the values the writer gives them (minute rows summed per
    hour and day), so 2.9 M minute rows take a minute, not an hour. Every windowed
    family renders as from the writer; the counter and the histogram hold the first
    minute only.
    """
    from exporter.core.clock import FixedClock
    from exporter.core.store import write_records
    from exporter.domains import open_store
    from exporter.domains.traffic import rollup
    from exporter.domains.traffic.kpis import LATENCY_BUCKETS
    from exporter.domains.traffic.records import TrafficDelta

    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[2], buckets[5] = 50, 10
    codes, lat = (0, 58, 0, 1, 1), tuple(buckets)
    store = open_store(str(path), FixedClock(now))
    last = now // 60 * 60
    first = last - (int(hours * 60) - 1) * 60
    with store.transaction() as tx:
        write_records(
            tx,
            [
                TrafficDelta("nginx", service(i), first, "m0", codes, lat, 3.1, 60, ident(i))
                for i in range(routes)
            ],
        )
    cols = ", ".join(rollup.COUNT_COLS)
    values = ", ".join(str(v) for v in (*codes, *lat))
    sums = ", ".join(f"SUM({c})" for c in rollup.COUNT_COLS)
    with store.transaction() as tx:
        tx.execute(
            "WITH RECURSIVE m(t) AS (SELECT ? + 60 UNION ALL SELECT t + 60 FROM m WHERE t < ?) "
            f"INSERT INTO traffic_minutes (ident, source, minute, {cols}, latency_sum, latency_count) "
            f"SELECT i.ident, 'nginx', m.t, {values}, 3.1, 60 FROM m, traffic_idents i",
            (first, last),
        )
        tx.execute(
            "INSERT INTO traffic_batches (key, minute) SELECT 'nginx/m/' || ident || '/' || minute, "
            "minute FROM traffic_minutes WHERE minute > ?",
            (first,),
        )
        tx.execute("DELETE FROM traffic_hours")
        tx.execute(
            f"INSERT INTO traffic_hours (hour, source, ident, {cols}) "
            f"SELECT CAST(minute / 3600 AS INTEGER) * 3600.0, source, ident, {sums} "
            "FROM traffic_minutes GROUP BY 1, 2, 3"
        )
        tx.execute("DELETE FROM traffic_daily_counts")
        tx.execute(
            f"INSERT INTO traffic_daily_counts (ident, source, day, {cols}) "
            f"SELECT ident, source, date(minute, 'unixepoch'), {sums} "
            "FROM traffic_minutes GROUP BY 1, 2, 3"
        )
        tx.execute("DELETE FROM traffic_daily")
        tx.execute(
            "INSERT INTO traffic_daily (ident, source, day, requests) "
            "SELECT ident, source, date(minute, 'unixepoch'), SUM(c1 + c2 + c3 + c4 + c5) "
            "FROM traffic_minutes GROUP BY 1, 2, 3"
        )
    store.close()


def config(routes: int, state: Path) -> Any:
    from exporter.config import Config

    return Config(
        state={"path": str(state)},
        services=[
            {"name": service(i), "team": f"team-{i % 100:02d}", "routes": [ident(i)]}
            for i in range(routes)
        ],
        sources={"nginx": {"access_log": str(state.parent / "access.log")}},
    )


def render_seconds(cfg: Any, state: Path, now: float, *, raw: bool) -> tuple[float, int]:
    """Seconds of one traffic render (best of 3) and the samples it yields."""
    from exporter.domains import open_store, render_context
    from exporter.domains.traffic import metrics, rollup

    store = open_store(str(state))
    pending = rollup.backfill_pending
    if raw:
        rollup.backfill_pending = lambda _store: True  # type: ignore[assignment]
    try:
        best, samples = float("inf"), 0
        for _ in range(3):
            ctx = render_context(cfg, store, now)
            t0 = time.perf_counter()
            samples = sum(len(f.samples) for f in metrics.collect(ctx))
            best = min(best, time.perf_counter() - t0)
    finally:
        rollup.backfill_pending = pending  # type: ignore[assignment]
        store.close()
    return best, samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--routes", type=int, default=2000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--state", type=Path, default=None)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    state = args.state or Path(
        f"/tmp/platform-kpi-bench/traffic-{args.routes}x{args.hours:g}h/state.db"
    )
    state.parent.mkdir(parents=True, exist_ok=True)
    (state.parent / "access.log").touch()
    if args.rebuild or not state.exists():
        t0 = time.perf_counter()
        tmp = state.with_suffix(".building")
        tmp.unlink(missing_ok=True)
        build_state(tmp, args.routes, args.hours)
        tmp.rename(state)
        print(f"built in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    cfg = config(args.routes, state)
    from exporter.domains import open_store

    store = open_store(str(state))
    minutes = store.query_one("SELECT COUNT(*) FROM traffic_minutes")[0]  # type: ignore[index]
    hours = store.query_one("SELECT COUNT(*) FROM traffic_hours")[0]  # type: ignore[index]
    store.close()
    size = state.stat().st_size / 1e6
    print(f"state: {args.routes} routes x {args.hours:g} h: {minutes} minute rows, ", end="")
    print(f"{hours} hour rows, {size:.0f} MB")
    print(f"{'render':<40} {'seconds':>8} {'samples':>8}")
    for name, raw in (
        ("traffic provider, rollups", False),
        ("traffic provider, minute rows", True),
    ):
        seconds, samples = render_seconds(cfg, state, ANCHOR, raw=raw)
        print(f"{name:<40} {seconds:>8.3f} {samples:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
