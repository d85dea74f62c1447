"""Benchmark: GitHub backfill and steady-state sync of a large org, over real HTTP.

A child process serves a simulated GitHub org (``--repos`` repos, ``--days`` of
history, ``--runs`` workflow runs and ``--deploys`` deployments per repo) with
``--latency`` seconds added to every answer. This process runs the GitHub
source against it: one backfill poll into a fresh state database, then a
steady-state poll with no upstream change. It prints a table: wall time,
requests, 304 answers, and this process's peak RSS.

    python benchmarks/ci_sync.py                      # 500 repos, 90 days, 200k runs, 20k deploys
    python benchmarks/ci_sync.py --repos 20 --runs 50 # a quick look

Targets (issue 3): steady-state poll <= 2 s, <= 1 request per repo and resource
kind, >= 95 % answered 304; backfill <= 5 min; peak RSS <= 300 MB.

``--budget 5000 --speedup F`` runs the backfill at github.com's budget instead:
the fake grants 5,000 requests per hour window (then ``403`` with
``x-ratelimit-remaining: 0`` until ``x-ratelimit-reset``), and every duration
(the window, the source's interval, pacing and pauses) is divided by ``F``. The
daemon polls as its scheduler would, until one poll completes the backfill; then
the same backfill runs again with the upstream answering ``500`` from 80 % of the
requests the first one needed (``--fault-at``), for ``--fault-len`` requests.

    python benchmarks/ci_sync.py --budget 5000 --speedup 60
    python benchmarks/ci_sync.py --budget 5000 --virtual   # simulated time: minutes, not hours

``--virtual`` runs the fake in this process behind an in-memory transport, on an
event loop whose clock jumps to its next timer whenever nothing is ready: every
wait (``--latency``, pacing, pauses, the hourly window) costs no real time, so the
hours it reports are the exporter's, not this machine's.

Targets (issue 14): the backfill takes <= (requests / 5,000) hours + 10 %; a
fault at 80 % costs <= 5 % extra requests.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import Config
from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client
from exporter.core.source import PollContext
from exporter.domains import open_store
from exporter.domains.delivery.sources.github import GitHubSource


class HourlyBudget:
    """GitHub's primary limit over a fake: ``per_window`` costly requests per window of
    ``window`` seconds (a 304 costs nothing), then 403 until the window resets; and,
    from the ``fail_from``-th request, ``fail_len`` answers of 500 (a fault)."""

    def __init__(
        self,
        app: Any,
        per_window: int,
        window: float,
        fail_from: int,
        fail_len: int,
        verbose: bool,
        clock: Callable[[], float] = time.time,
    ):
        self.app, self.per_window, self.window, self.verbose = app, per_window, window, verbose
        self.clock = clock
        self.fail_from, self.fail_len = fail_from, fail_len
        self.lock = threading.Lock()
        self.current, self.used, self.seen = -1, 0, 0

    def handle(self, request: Any) -> Any:
        from exporter.core.sandbox.app import Response

        with self.lock:
            self.seen += 1
            now = self.clock()
            if int(now // self.window) != self.current:
                if self.used and self.verbose:
                    print(f"window {self.current}: {self.used} used", file=sys.stderr)
                self.current, self.used = int(now // self.window), 0
            reset = str(int((self.current + 1) * self.window))
            failing = (
                self.fail_from > 0 and self.fail_from <= self.seen < self.fail_from + self.fail_len
            )
            spent = self.used >= self.per_window
        if failing:
            return Response.json({"message": "Server Error"}, 500)
        if spent:
            message = {"message": "API rate limit exceeded for user ID 1."}
            return Response.json(message, 403, self._headers(0, reset))
        response = self.app.handle(request)
        with self.lock:
            if response.status != 304:
                self.used += 1
            left = max(0, self.per_window - self.used)
        response.headers.update(self._headers(left, reset))
        return response

    def _headers(self, left: int, reset: str) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.per_window),
            "X-RateLimit-Remaining": str(left),
            "X-RateLimit-Reset": reset,
            "X-RateLimit-Used": str(self.per_window - left),
            "X-RateLimit-Resource": "core",
        }


def serve(args: argparse.Namespace) -> None:
    from exporter.core.sandbox.app import App, SandboxServer
    from exporter.domains.delivery.sandbox.data import synthetic_org
    from exporter.domains.delivery.sandbox.github import GitHubFake

    scenario = synthetic_org(args.anchor, args.repos, args.days, args.runs, args.deploys)
    # Without --budget: a GitHub Enterprise Server with a high limit (the exporter would
    # otherwise pace itself to the hourly budget, as it should).
    fake = GitHubFake(scenario, prefix="/github", rate_limit=10_000_000)
    fake.plan.latency = args.latency
    app = fake.app
    if args.budget:
        budget = HourlyBudget(
            fake.app,
            args.budget,
            3600.0 / args.speedup,
            args.fail_from,
            args.fault_len,
            args.verbose,
        )
        app = App()
        app.handle = budget.handle  # type: ignore[method-assign]
    server = SandboxServer({"/github": app}).start()
    print(server.url, flush=True)
    sys.stdin.read()  # serve until the parent closes our stdin
    server.stop()


async def bench(args: argparse.Namespace, url: str, state: Path) -> list[tuple[str, str]]:
    services = [
        {
            "name": f"svc-{r:04d}",
            "team": f"team-{r % 20:02d}",
            "ci": [{"github": f"bench/svc-{r:04d}"}],
        }
        for r in range(args.repos)
    ]
    config = Config(
        services=services,
        sources={
            "probe": {"enabled": False},
            "github": {
                "base_url": f"{url}/github",
                "token": "ghp_sandboxtoken0000000000000000000000",
                "concurrency": args.concurrency,
                "requests_per_second": args.rps,
                "timeout": "30s",
            },
        },
        delivery={"backfill_days": args.days},
        state={"path": str(state)},
    )
    settings = config.sources.github
    assert settings is not None
    source = GitHubSource(config, settings)
    health = SourceHealth("github", "github", settings.interval)
    store = open_store(str(state))
    client = build_client(health, timeout=settings.timeout, **source.client_options())
    ctx = PollContext(store=store, health=health, client=client)
    rows: list[tuple[str, str]] = []
    try:
        t0 = time.perf_counter()
        await source.poll(ctx)
        backfill = time.perf_counter() - t0
        backfill_requests = sum(health.requests.values())
        runs = store.query("SELECT COUNT(*) FROM pipeline_runs")[0][0]
        deploys = store.query("SELECT COUNT(*) FROM deployments")[0][0]
        health.requests.clear()
        t0, cpu0 = time.perf_counter(), time.process_time()
        await source.poll(ctx)
        steady = time.perf_counter() - t0
        steady_cpu = time.process_time() - cpu0
        steady_requests = sum(health.requests.values())
        not_modified = health.requests.get("304", 0)
    finally:
        await client.aclose()
        store.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kinds = 3  # runs, deployments, incidents (commits are read when those change)
    rows += [
        ("repos / days", f"{args.repos} / {args.days}"),
        ("workflow runs stored", f"{runs}"),
        ("deployments stored", f"{deploys}"),
        ("upstream latency per request", f"{args.latency * 1000:.0f} ms"),
        ("backfill wall time", f"{backfill:.1f} s (target <= 300 s)"),
        ("backfill requests", f"{backfill_requests}"),
        ("steady-state wall time", f"{steady:.2f} s (target <= 2 s)"),
        ("steady-state CPU time (exporter process)", f"{steady_cpu:.2f} s"),
        (
            "steady-state requests",
            f"{steady_requests} ({steady_requests / args.repos:.2f} per repo, {kinds} kinds; "
            f"target <= {kinds} per repo)",
        ),
        (
            "steady-state 304 answers",
            f"{not_modified} ({100 * not_modified / max(1, steady_requests):.1f} %; target >= 95 %)",
        ),
        ("peak RSS (exporter process)", f"{rss_mb:.0f} MB (target <= 300 MB)"),
    ]
    return rows


def services_of(repos: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"svc-{r:04d}",
            "team": f"team-{r % 20:02d}",
            "ci": [{"github": f"bench/svc-{r:04d}"}],
        }
        for r in range(repos)
    ]


async def budget_backfill(
    args: argparse.Namespace, url: str, state: Path, fail_from: int = 0
) -> tuple[int, float, int, int]:
    """Poll as the scheduler would (every interval, a poll running past it is cancelled at
    its deadline) until one poll completes; (requests sent, seconds, polls, of the requests
    those answered 304: free of GitHub's budget).

    With ``--virtual``, the fake runs in this process on the event loop's virtual time
    (``url`` is unused): the seconds are simulated ones, unscaled."""
    from exporter.core.clock import system_clock
    from exporter.daemon import Daemon

    f = args.speedup
    transport = None
    clock: Callable[[], float] = system_clock
    now: Callable[[], float] = time.perf_counter
    if args.virtual:
        from tests.support.virtual_time import loop_epoch

        f = 1.0
        clock = loop_epoch(args.anchor)
        loop = asyncio.get_running_loop()
        now = loop.time
        transport = virtual_github(args, clock, fail_from)
    base_url = "https://api.github.com" if args.virtual else f"{url}/github"
    github: dict[str, Any] = {
        "base_url": base_url,
        "token": "ghp_sandboxtoken0000000000000000000000",
        "concurrency": args.concurrency,
        # The defaults (20 requests/s, a 300 s interval, pauses up to 60 s), scaled.
        "requests_per_second": 20.0 * f,
        "interval": f"{300.0 / f}s",
        "max_pause": f"{60.0 / f}s",
        "timeout": "30s",
    }
    if args.poll_timeout:
        github["poll_timeout"] = f"{args.poll_timeout / f}s"
    config = Config(
        services=services_of(args.repos),
        sources={"probe": {"enabled": False}, "github": github},
        delivery={"backfill_days": args.days},
        state={"path": str(state)},
    )
    daemon = Daemon(config, transport=transport, clock=clock)
    source = daemon.sources[0]
    started = now()
    polls = 0
    try:
        while True:
            polls += 1
            began = now()
            if await daemon.poll(source):
                break
            await asyncio.sleep(max(0.0, began + source.settings.interval - now()))
    finally:
        await daemon.shutdown()
    health = daemon.health[source.name]
    if args.verbose:
        print(health.requests, health.errors, health.paused_seconds, health.paused_requests)
    return sum(health.requests.values()), now() - started, polls, health.requests.get("304", 0)


def virtual_github(
    args: argparse.Namespace, clock: Callable[[], float], fail_from: int
) -> httpx.AsyncBaseTransport:
    """The simulated org with its hourly budget, in this process, answering on ``clock``."""
    from exporter.core.sandbox.app import App
    from exporter.domains.delivery.sandbox.data import synthetic_org
    from exporter.domains.delivery.sandbox.github import GitHubFake

    scenario = synthetic_org(args.anchor, args.repos, args.days, args.runs, args.deploys)
    fake = GitHubFake(scenario, rate_limit=10_000_000, clock=clock)
    fake.plan.latency = args.latency
    budget = HourlyBudget(
        fake.app, args.budget, 3600.0, fail_from, args.fault_len, args.verbose, clock
    )
    app = App()
    app.handle = budget.handle  # type: ignore[method-assign]
    return app.transport()


def run_virtual_backfill(args: argparse.Namespace, fail_from: int) -> tuple[int, float, int, int]:
    from tests.support.virtual_time import run_virtual

    with tempfile.TemporaryDirectory() as tmp:
        return run_virtual(lambda: budget_backfill(args, "", Path(tmp) / "s.db", fail_from))


def budget_rows(args: argparse.Namespace) -> list[tuple[str, str]]:
    anchor = time.time()
    if args.virtual:
        args.anchor, args.speedup = anchor, 1.0
        needed, seconds, polls, free = run_virtual_backfill(args, 0)
        fail_from = math.ceil(args.fault_at * needed)
        faulted, f_seconds, f_polls, f_free = run_virtual_backfill(args, fail_from)
    else:
        with served(args, anchor) as url, tempfile.TemporaryDirectory() as tmp:
            needed, seconds, polls, free = asyncio.run(
                budget_backfill(args, url, Path(tmp) / "s.db")
            )
        fail_from = math.ceil(args.fault_at * needed)
        with served(args, anchor, fail_from) as url, tempfile.TemporaryDirectory() as tmp:
            faulted, f_seconds, f_polls, f_free = asyncio.run(
                budget_backfill(args, url, Path(tmp) / "s.db")
            )
    hours = seconds * args.speedup / 3600
    # What the budget is spent on: the requests not answered 304.
    costly, f_costly = needed - free, faulted - f_free
    bound = costly / args.budget * 1.1
    extra = faulted - needed
    costly_extra = f_costly - costly
    return [
        ("repos / days", f"{args.repos} / {args.days}"),
        (
            "budget",
            f"{args.budget} requests an hour, "
            + ("simulated time" if args.virtual else f"time / {args.speedup:g}"),
        ),
        (
            "backfill requests",
            f"{needed} ({free} answered 304, free of the budget: committed repos checked "
            "again once the backfill's round is an hour old)",
        ),
        ("backfill hours", f"{hours:.2f} h in {polls} polls (target <= {bound:.2f} h)"),
        (
            f"fault at {args.fault_at:.0%} ({args.fault_len} x 500)",
            f"{faulted} requests, {extra:+d} ({100 * extra / needed:.1f} %; target <= 5 %); "
            f"not answered 304: {costly_extra:+d} ({100 * costly_extra / max(1, costly):.1f} %); "
            f"{f_seconds * args.speedup / 3600:.2f} h in {f_polls} polls",
        ),
    ]


class served:
    """The fake GitHub in a child process, for the ``with`` block; yields its URL."""

    def __init__(self, args: argparse.Namespace, anchor: float, fail_from: int = 0) -> None:
        self.argv = [
            sys.executable,
            __file__,
            "--serve",
            f"--repos={args.repos}",
            f"--days={args.days}",
            f"--runs={args.runs}",
            f"--deploys={args.deploys}",
            f"--latency={args.latency}",
            f"--anchor={anchor}",
            f"--budget={args.budget}",
            f"--speedup={args.speedup}",
            f"--fail-from={fail_from}",
            f"--fault-len={args.fault_len}",
            *(["--verbose"] if args.verbose else []),
        ]

    def __enter__(self) -> str:
        self.child = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.child.stdout is not None
        return self.child.stdout.readline().strip()

    def __exit__(self, *exc: object) -> None:
        if self.child.stdin:
            self.child.stdin.close()
        self.child.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=500)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=400, help="workflow runs per repo")
    parser.add_argument("--deploys", type=int, default=40, help="deployments per repo")
    parser.add_argument("--latency", type=float, default=0.020)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--rps", type=float, default=5000.0, help="token bucket rate")
    parser.add_argument("--budget", type=int, default=0, help="requests an hour (github.com: 5000)")
    parser.add_argument("--speedup", type=float, default=60.0, help="time scale of --budget")
    parser.add_argument("--poll-timeout", type=float, default=0.0, help="seconds, before scaling")
    parser.add_argument(
        "--virtual",
        action="store_true",
        help="with --budget: run the fake in-process on simulated time (no real hours)",
    )
    parser.add_argument("--fault-at", type=float, default=0.8)
    parser.add_argument("--fault-len", type=int, default=30)
    parser.add_argument("--verbose", action="store_true", help="print each budget window's use")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--anchor", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--fail-from", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        args.anchor = args.anchor or time.time()
        serve(args)
        return
    if args.budget:
        rows = budget_rows(args)
    else:
        with served(args, time.time()) as url, tempfile.TemporaryDirectory() as tmp:
            rows = asyncio.run(bench(args, url, Path(tmp) / "state.db"))
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for key, val in rows:
        print(f"{key:<{width}}  {val}")


if __name__ == "__main__":
    main()
