"""High-availability benchmark: lease failover after ``kill -9``, connections per replica,
and poll throughput on PostgreSQL against one SQLite replica.

It starts a PostgreSQL server of its own (Debian's ``postgresql`` package, as the tests do,
but with fsync and full-page writes on, as an operator runs it; ``synchronous_commit`` off,
as the daemon's SQLite does not wait for its WAL's flush at a commit either),
then ``--replicas`` replica processes that each open the state store (a writer and a reader
connection) and the leases of ``--sources`` sources (their own connection), renewing every
third of ``--ttl`` as the daemon does. Once the leases are spread, each round kills the
holder of ``source0`` with SIGKILL and measures the time until another replica holds it
(the takeover), then starts a replacement. It reports:

* the takeover time after ``kill -9`` (median and max of ``--rounds``), against the TTL;
* the spread of the leases once settled (none above ceil(sources / replicas));
* the PostgreSQL connections each replica uses (``pg_stat_activity``).

Then the throughput: ``benchmarks/ci_sync.py``'s simulated GitHub org (a child process
over loopback HTTP; ``--repos``, ``--runs``, ``--deploys``, ``--days``) backfilled by real
daemons (``python -m exporter run``): once by one replica on SQLite, once by
``--replicas`` replicas sharing PostgreSQL, where the one holding the GitHub lease polls.
On PostgreSQL the lease is first held by a placeholder until every replica is up, so no
replica's start-up competes with the poll for the CPU (as on the SQLite run, where the
daemon is alone). The backfill's seconds are the poll's own
(``platform_exporter_source_poll_duration_seconds``); both runs must store the same rows.
The target compares the poll's own seconds on both; the time from the lease's release to the
completed poll is reported beside it (it adds the lease's pickup, up to a third of the TTL, the
next 1 s tick and the render after the poll, none of which the SQLite figure holds).

    python benchmarks/ha.py                           # 3 replicas, 9 sources, TTL 3 s, 10 rounds
    python benchmarks/ha.py --ttl 30 --rounds 3
    python benchmarks/ha.py --rounds 0                # the throughput only
    python benchmarks/ha.py --rounds 0 --pairs 5      # 5 backfills on each, in turn; the median
    python benchmarks/ha.py --rounds 0 --profile DIR  # py-spy records each backfilling daemon

``--pairs N`` runs the two backfills in turn N times (SQLite, PostgreSQL, SQLite, ...) on
the same simulated org: each pair's runs are next to each other, so a change of the shared
machine's load between pairs changes both; it reports each pair and the median ratio.
``--profile DIR`` records the SQLite daemon from its start and the PostgreSQL replica that
takes the lease from the release, each until its backfill completes, as py-spy's collapsed
stacks per thread (``pip install py-spy``; ``--profile-args '--nonblocking --idle'`` adds
the waits, ``'--nonblocking --gil'`` keeps only the thread holding the GIL).

Targets: takeover within the TTL; at most 5 connections per replica; the backfill on
PostgreSQL within 1.5x of SQLite's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.core import lease  # noqa: E402
from exporter.core.backend import PostgresTarget  # noqa: E402
from exporter.core.store import Store  # noqa: E402
from tests.support.net import free_port  # noqa: E402
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
        self._partial = ""

    def read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.readline():
            # A non-blocking read may end mid-line: the rest comes with the next read.
            self._partial += chunk
            if self._partial.endswith("\n"):
                self.held = set(json.loads(self._partial)["held"])
                self._partial = ""

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


def failover(args: argparse.Namespace, server: PostgresServer) -> list[tuple[str, str, str]]:
    """The lease-only replicas: spread, connections, takeovers after ``kill -9``."""
    sources = [f"source{i}" for i in range(args.sources)]
    share = math.ceil(args.sources / args.replicas)
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
    return [
        ("leases per replica, settled", f"{spread}", f"each <= {share}"),
        (
            f"takeover after kill -9, median / max of {len(takeovers)}",
            f"{statistics.median(takeovers):.2f} s / {max(takeovers):.2f} s",
            f"<= {args.ttl:g} s",
        ),
        ("PostgreSQL connections per replica", f"{connections / args.replicas:.1f}", "<= 5"),
    ]


def github_config(
    args: argparse.Namespace, url: str, state: dict[str, Any], interval: str = "10s"
) -> dict[str, Any]:
    from benchmarks.ci_sync import services_of

    return {
        "server": {"listen_address": "127.0.0.1", "port": free_port()},
        "services": services_of(args.repos),
        "sources": {
            "probe": {"enabled": False},
            "github": {
                "base_url": f"{url}/github",
                "token": "ghp_sandboxtoken0000000000000000000000",
                "concurrency": 48,
                "requests_per_second": 5000.0,
                "timeout": "30s",
                # A backfill poll is never cut short; the next comes after it.
                "interval": interval,
                "poll_timeout": "1h",
            },
        },
        "delivery": {"backfill_days": args.days},
        "state": state,
    }


class Daemon:
    """``python -m exporter run`` with a config of its own; its /metrics read back."""

    def __init__(self, directory: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.port = int(config["server"]["port"])
        self.log = (directory / "daemon.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "run", "--config", str(path)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> None:
        """Raise if the daemon exited (a benchmark waiting for it would wait its timeout)."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"a daemon exited with {self.proc.returncode}")

    def sample(self, name: str) -> float | None:
        return self.samples(name)[0]

    def samples(self, *names: str) -> list[float | None]:
        """The GitHub source's values of ``names``, all from one scrape."""
        from tests.support.exposition import Exposition
        from tests.support.net import http_get

        try:
            status, _, body = http_get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        except OSError:  # not listening yet
            return [None for _ in names]
        if status != 200:
            return [None for _ in names]
        parsed = Exposition.parse(body)
        return [parsed.value(name, source="github") for name in names]

    def healthy(self) -> bool:
        from tests.support.net import http_get

        self.alive()
        try:
            return http_get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)[0] == 200
        except OSError:  # not listening yet
            return False

    def cpu(self) -> float:
        """CPU seconds the daemon has used so far (Linux's /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def backfill_seconds(group: list[Daemon], timeout: float) -> float:
    """The first completed GitHub poll's own seconds, read from whichever replica made it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in group:
            d.alive()
            if d.sample("platform_exporter_source_last_success_timestamp_seconds") is not None:
                seconds = d.sample("platform_exporter_source_poll_duration_seconds")
                assert seconds is not None
                return seconds
        time.sleep(0.1)
    raise TimeoutError("no replica completed the backfill")


def completed(group: list[Daemon], timeout: float) -> tuple[float, float]:
    """Seconds until a replica has completed a GitHub poll (the backfill, whoever made it:
    a lease that moved mid-poll leaves its units committed to the next holder), and that
    poll's own seconds (read in the same scrape, before the next poll replaces them)."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        for d in group:
            d.alive()
            success, seconds = d.samples(
                "platform_exporter_source_last_success_timestamp_seconds",
                "platform_exporter_source_poll_duration_seconds",
            )
            if success is not None and seconds is not None:
                return time.monotonic() - started, seconds
        time.sleep(0.1)
    raise TimeoutError("no replica completed the backfill")


def stored_rows(store: Store) -> tuple[int, int]:
    runs = store.query("SELECT COUNT(*) FROM pipeline_runs")[0][0]
    deploys = store.query("SELECT COUNT(*) FROM deployments")[0][0]
    return int(runs), int(deploys)


class Profiler:
    """``py-spy record`` of one daemon while it backfills (``--profile DIR``): the collapsed
    stacks of every thread, for comparing where the two backends' daemons spend the poll."""

    def __init__(self, directory: Path | None, name: str, pid: int, extra: list[str]) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        command = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--threads"]
        command += ["--output", str(directory / f"{name}.txt"), *extra]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            self.proc.wait(timeout=60)


def sqlite_backfill(
    args: argparse.Namespace, url: str, work: Path, label: str
) -> tuple[float, tuple[int, int]]:
    """One daemon on SQLite backfills the org: its poll's seconds, and the rows stored."""
    from exporter.domains import open_store

    sqlite_path = work / "state.db"
    solo = Daemon(work, github_config(args, url, {"path": str(sqlite_path)}), {})
    profiler = Profiler(args.profile, f"sqlite-{label}", solo.proc.pid, args.profile_args)
    try:
        seconds = backfill_seconds([solo], 3600)
    finally:
        profiler.stop()
        solo.stop()
    store = open_store(sqlite_path)
    rows = stored_rows(store)
    store.close()
    return seconds, rows


@dataclass
class PgRun:
    """One backfill by the replicas on PostgreSQL."""

    release: float  # the lease's release to the completed poll
    poll: float  # the completed poll's own seconds
    cpu: list[float]  # each replica's CPU seconds over ``release``, sorted
    moves: int  # how often the lease moved
    pollers: int  # the replicas that completed a poll
    rows: tuple[int, int]


def holder_of(store: Store, group: list[Daemon], timeout: float) -> Daemon | None:
    """The replica that took the GitHub lease from the placeholder (None: not seen in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store.query_one("SELECT holder FROM leases WHERE source = 'github'")
        if row is not None and str(row[0]) != "placeholder":
            return group[int(str(row[0])[1:])]
        time.sleep(0.05)
    return None


def postgres_backfill(
    args: argparse.Namespace, url: str, server: PostgresServer, work: Path, label: str
) -> PgRun:
    """``--replicas`` daemons sharing a fresh PostgreSQL schema backfill the org; the one
    that takes the GitHub lease polls."""
    from exporter.domains import open_store

    target = server.create_schema()
    store = open_store(target)
    store.migrate("lease", lease.MIGRATIONS)
    # A placeholder holds the lease while the replicas start.
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO leases (source, holder, token, expires_at) VALUES "
            "('github', 'placeholder', 1, EXTRACT(EPOCH FROM clock_timestamp()) + 3600)"
        )
    state = {
        "url": target.url,
        "password": {"env": "PKE_STATE_PASSWORD"},
        "schema": target.schema,
        "lease_ttl": f"{args.ttl:g}s",
    }
    env = {"PKE_STATE_PASSWORD": target.password or ""}
    # Polled every second: the lease's taker starts within a second of taking it.
    group = [
        Daemon(
            work / f"r{i}",
            github_config(args, url, {**state, "replica": f"r{i}"}, "1s"),
            env,
        )
        for i in range(args.replicas)
    ]
    profiler = Profiler(None, "", 0, [])
    try:
        deadline = time.monotonic() + 300
        while not all(d.healthy() for d in group):
            if time.monotonic() > deadline:
                raise TimeoutError("the replicas did not start")
            time.sleep(0.1)
        cpu = [d.cpu() for d in group]
        with store.transaction() as tx:  # the placeholder's lease expires: one takes it
            tx.execute("UPDATE leases SET expires_at = 0 WHERE source = 'github'")
        if args.profile is not None:
            taker = holder_of(store, group, 60)
            if taker is not None:
                profiler = Profiler(
                    args.profile, f"postgres-{label}", taker.proc.pid, args.profile_args
                )
        release, poll = completed(group, 3600)
        profiler.stop()
        cpu = sorted(d.cpu() - c for d, c in zip(group, cpu, strict=True))
        moves = int(store.query("SELECT token FROM leases WHERE source = 'github'")[0][0]) - 2
        pollers = sum(
            d.sample("platform_exporter_source_last_success_timestamp_seconds") is not None
            for d in group
        )
    finally:
        profiler.stop()
        for d in group:
            d.stop()
    rows = stored_rows(store)
    store.close()
    return PgRun(release, poll, cpu, moves, pollers, rows)


def loadavg() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def throughput(args: argparse.Namespace, server: PostgresServer) -> list[tuple[str, str, str]]:
    """The GitHub backfill by one SQLite replica, then by replicas on PostgreSQL, in turn
    ``--pairs`` times (the machine's load drifts: each pair's two runs are next to each
    other); each pair reported, and the median of the pairs' ratios."""
    from benchmarks.ci_sync import served

    work = Path(tempfile.mkdtemp(prefix="pke-ha-"))
    org = argparse.Namespace(
        repos=args.repos, days=args.days, runs=args.runs, deploys=args.deploys,
        latency=0.020, budget=0, speedup=60.0, fault_len=0, verbose=False,
    )  # fmt: skip
    out: list[tuple[str, str, str]] = []
    ratios: list[float] = []
    try:
        with served(org, time.time()) as url:
            for n in range(1, args.pairs + 1):
                before = loadavg()
                sqlite_seconds, sqlite_rows = sqlite_backfill(
                    args, url, work / f"sqlite{n}", str(n)
                )
                pg = postgres_backfill(args, url, server, work / f"pg{n}", str(n))
                if pg.rows != sqlite_rows:
                    raise AssertionError(
                        f"stored rows differ: SQLite {sqlite_rows}, PostgreSQL {pg.rows}"
                    )
                ratio = pg.poll / sqlite_seconds
                ratios.append(ratio)
                print(
                    f"pair {n}: load {before} / {loadavg()}; SQLite poll {sqlite_seconds:.1f} s, "
                    f"PostgreSQL poll {pg.poll:.1f} s ({ratio:.2f}x), release to completion "
                    f"{pg.release:.1f} s; replicas' CPU {' / '.join(f'{c:.1f}' for c in pg.cpu)}",
                    flush=True,
                )
                out += pair_rows(args, n, sqlite_seconds, sqlite_rows, pg)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.pairs > 1:
        within = sum(r <= 1.5 for r in ratios)
        out.append(
            (
                f"backfill poll on PostgreSQL / SQLite, median of {len(ratios)} pairs "
                f"({within} within 1.5x; each: {', '.join(f'{r:.2f}x' for r in ratios)})",
                f"{statistics.median(ratios):.2f}x",
                "<= 1.5x",
            )
        )
    return out


def pair_rows(
    args: argparse.Namespace,
    n: int,
    sqlite_seconds: float,
    sqlite_rows: tuple[int, int],
    pg: PgRun,
) -> list[tuple[str, str, str]]:
    pair = f" (pair {n})" if args.pairs > 1 else ""
    return [
        (
            f"backfill, {args.repos} repos: runs / deployments stored{pair}",
            f"{sqlite_rows[0]} / {sqlite_rows[1]} (the same on both)",
            "",
        ),
        (f"backfill poll, one replica on SQLite{pair}", f"{sqlite_seconds:.1f} s", ""),
        (
            f"backfill, {args.replicas} replicas on PostgreSQL, lease release to completion "
            f"({pg.pollers} completed it; the lease moved {pg.moves} times; includes the "
            f"lease's pickup, up to lease_ttl / 3, the next poll tick and the render after "
            f"the poll){pair}",
            f"{pg.release:.1f} s ({pg.release / sqlite_seconds:.2f}x SQLite)",
            "",
        ),
        (
            f"CPU seconds of each replica from the release to completion{pair}",
            " / ".join(f"{c:.1f}" for c in pg.cpu),
            "",
        ),
        (
            f"backfill poll on PostgreSQL, the completing replica's poll{pair}",
            f"{pg.poll:.1f} s ({pg.poll / sqlite_seconds:.2f}x SQLite)",
            "<= 1.5x",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--sources", type=int, default=9)
    parser.add_argument("--ttl", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repos", type=int, default=100, help="of the simulated GitHub org")
    parser.add_argument("--runs", type=int, default=100, help="workflow runs per repo")
    parser.add_argument("--deploys", type=int, default=10, help="deployments per repo")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--pairs", type=int, default=1, help="backfills on SQLite and PostgreSQL, in turn"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="a directory: py-spy records each backfilling daemon there (collapsed stacks)",
    )
    parser.add_argument(
        "--profile-args",
        default="--nonblocking",
        help="more py-spy record options (e.g. '--gil' for the threads holding the GIL)",
    )
    args = parser.parse_args()
    args.profile_args = args.profile_args.split()
    # fsync and full-page writes on, as an operator runs PostgreSQL; commits not waiting
    # for their WAL flush (synchronous_commit off), as the daemon's SQLite does not wait
    # for its (WAL mode, synchronous=NORMAL): both keep every commit across a crash of
    # the process, and may lose the last ones in a crash of the machine.
    server = PostgresServer(durable=True).start()
    cpu0 = os.times()
    try:
        rows = failover(args, server) if args.rounds else []
        if args.repos:
            rows += throughput(args, server)
    finally:
        server.destroy()
    cpu = os.times()
    print(
        f"replicas {args.replicas}, sources {args.sources}, lease_ttl {args.ttl:g} s, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    used = (cpu.children_user + cpu.children_system) - (cpu0.children_user + cpu0.children_system)
    rows.append(("CPU seconds, daemons, replicas and server", f"{used:.1f}", ""))
    print("| measure | value | target |")
    print("|---|---|---|")
    for measure, value, target in rows:
        print(f"| {measure} | {value} | {target} |")


if __name__ == "__main__":
    main()
