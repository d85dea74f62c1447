"""High-availability benchmark: lease failover after ``kill -9``, and connections per replica.

It starts a PostgreSQL server of its own (Debian's ``postgresql`` package, as the tests do),
then ``--replicas`` replica processes that each open the state store (a writer and a reader
connection) and the leases of ``--sources`` sources (their own connection), renewing every
third of ``--ttl`` as the daemon does. Once the leases are spread, each round kills the
holder of ``source0`` with SIGKILL and measures the time until another replica holds it
(the takeover), then starts a replacement. It reports:

* the takeover time after ``kill -9`` (median and max of ``--rounds``), against the TTL;
* the spread of the leases once settled (none above ceil(sources / replicas));
* the PostgreSQL connections each replica uses (``pg_stat_activity``).

    python benchmarks/ha.py                           # 3 replicas, 9 sources, TTL 3 s, 10 rounds
    python benchmarks/ha.py --ttl 30 --rounds 3

Targets: takeover within the TTL; at most 5 connections per replica.
Not measured here (left for later): poll throughput against one SQLite replica on
``benchmarks/ci_sync.py``'s workload.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.core import lease  # noqa: E402
from exporter.core.backend import PostgresTarget  # noqa: E402
from exporter.core.store import Store  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402

REPLICA = """
import json, sys, time
from exporter.core.backend import PostgresTarget
from exporter.core.lease import Leases
from exporter.domains import open_store
target = PostgresTarget(sys.argv[1], password=sys.argv[2], schema=sys.argv[3])
store = open_store(target)  # the writer and the reader, as a daemon has them
leases = Leases(target, sys.argv[4], json.loads(sys.argv[5]), float(sys.argv[6]))
while True:
    held = sorted(leases.renew())
    print(json.dumps({"at": time.monotonic(), "held": held}), flush=True)
    time.sleep(leases.ttl / 3)
"""


class Replica:
    def __init__(self, name: str, target: PostgresTarget, sources: list[str], ttl: float) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                REPLICA,
                target.url,
                target.password or "",
                target.schema or "",
                name,
                json.dumps(sources),
                str(ttl),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        os.set_blocking(self.proc.stdout.fileno(), False)  # type: ignore[union-attr]
        self.held: set[str] = set()

    def read(self) -> None:
        assert self.proc.stdout is not None
        while line := self.proc.stdout.readline():
            self.held = set(json.loads(line)["held"])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def wait_for(predicate, timeout: float, replicas: list[Replica]) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        for r in replicas:
            r.read()
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise TimeoutError("condition not met")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--sources", type=int, default=9)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    sources = [f"source{i}" for i in range(args.sources)]
    share = math.ceil(args.sources / args.replicas)
    server = PostgresServer().start()
    cpu0 = os.times()
    group: list[Replica] = []
    try:
        target = server.create_schema()
        store = Store(target)
        store.migrate("lease", lease.MIGRATIONS)
        group.extend(Replica(f"r{i}", target, sources, args.ttl) for i in range(args.replicas))
        # Their start (imports, the store's migrations) is part of this wait.
        settled = 120 + 10 * args.ttl
        wait_for(lambda: all(len(r.held) == share for r in group), settled, group)
        spread = sorted(len(r.held) for r in group)
        rows = store.query(
            "SELECT application_name, COUNT(*) FROM pg_stat_activity "
            "WHERE application_name = 'platform-kpi-exporter' GROUP BY application_name"
        )
        connections = int(rows[0][1]) - 2  # less this process's own store
        takeovers = []
        for n in range(args.rounds):
            wait_for(lambda: sum("source0" in r.held for r in group) == 1, settled, group)
            (holder,) = [r for r in group if "source0" in r.held]
            holder.kill()
            killed = time.monotonic()
            group.remove(holder)
            wait_for(lambda: any("source0" in r.held for r in group), 3 * args.ttl, group)
            takeovers.append(time.monotonic() - killed)
            group.append(Replica(f"r{args.replicas + n}", target, sources, args.ttl))
            wait_for(lambda: all(len(r.held) == share for r in group), settled, group)
        store.close()
    finally:
        for r in group:
            if r.proc.poll() is None:
                r.kill()
        server.destroy()
    cpu = os.times()
    print(
        f"replicas {args.replicas}, sources {args.sources}, lease_ttl {args.ttl:g} s, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| leases per replica, settled | {spread} | each <= {share} |")
    print(
        f"| takeover after kill -9, median / max of {len(takeovers)} | "
        f"{statistics.median(takeovers):.2f} s / {max(takeovers):.2f} s | <= {args.ttl:g} s |"
    )
    print(f"| PostgreSQL connections per replica | {connections / args.replicas:.1f} | <= 5 |")
    used = (cpu.children_user + cpu.children_system) - (cpu0.children_user + cpu0.children_system)
    print(f"| CPU seconds, replicas and server | {used:.1f} | |")


if __name__ == "__main__":
    main()
