"""Server load benchmark: 50 scrapers at once while 200 idle connections are held open.

A child process runs the real :class:`~exporter.core.server.MetricsServer` serving a
snapshot of ``--series`` series. The parent opens ``--idle`` connections that send
nothing, then runs ``wrk`` with ``--scrapers`` keep-alive connections scraping
``/metrics`` back to back for ``--duration`` seconds, half plain text and half gzip,
at the same time (``tests/support/load.py``). It prints wrk's latency percentiles
and errors per encoding, and when the server closed the idle connections.

    python benchmarks/server_load.py                  # 50 scrapers, 30 s, 200 idle
    python benchmarks/server_load.py --duration 10 --idle-timeout 5

Targets: no error; p99 under 100 ms for plain and gzip; every idle connection closed
at the idle timeout (default 30 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.load import ServerProcess, scrape_load  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    parser.add_argument("--series", type=int, default=2000)
    args = parser.parse_args()
    server = ServerProcess(args.series, args.idle_timeout)
    try:
        result = scrape_load(
            server.port, args.scrapers, args.duration, args.idle, args.idle_timeout + 5
        )
    finally:
        server.stop()
    print(
        f"{args.scrapers} scrapers (wrk) for {args.duration:.0f} s, {args.idle} idle "
        f"connections, {args.series:,} series ({server.info['bytes'] / 1e3:.0f} kB, "
        f"{server.info['gzip'] / 1e3:.1f} kB gzip)\n"
    )
    print("| encoding | scrapers | scrapes | per second | p50 | p90 | p99 | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ok = True
    for kind, run in result.runs.items():
        errors = sum(run.errors.values())
        p = {q: v * 1000 for q, v in run.percentiles.items()}
        ok = ok and errors == 0 and run.percentiles[99] < 0.1
        print(
            f"| {kind} | {args.scrapers // 2} | {run.requests:,} "
            f"| {run.requests / args.duration:,.0f} | {p[50]:.1f} ms | {p[90]:.1f} ms "
            f"| {p[99]:.1f} ms | {errors} |"
        )
    closed = [c for c in result.idle_closed_after if c is not None]
    if closed:
        print(
            f"\nidle connections closed by the server: {len(closed)} of {args.idle}, "
            f"{min(closed):.2f} to {max(closed):.2f} s after they opened "
            f"(idle timeout {args.idle_timeout:g} s)"
        )
    idle_ok = len(closed) == args.idle and all(
        args.idle_timeout - 0.5 <= c <= args.idle_timeout + 3 for c in closed
    )
    print(f"targets: {'met' if ok and idle_ok else 'MISSED'}")
    return 0 if ok and idle_ok else 1


if __name__ == "__main__":
    sys.exit(main())
