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
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import Config
from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client
from exporter.core.source import PollContext
from exporter.domains import open_store
from exporter.domains.delivery.sources.github import GitHubSource


def serve(args: argparse.Namespace) -> None:
    from exporter.core.sandbox.app import SandboxServer
    from exporter.domains.delivery.sandbox.data import synthetic_org
    from exporter.domains.delivery.sandbox.github import GitHubFake

    scenario = synthetic_org(time.time(), args.repos, args.days, args.runs, args.deploys)
    # The backfill needs far more than github.com's 5000 requests an hour: benchmark a
    # GitHub Enterprise Server with a high limit (the exporter would otherwise pace itself
    # to the hourly budget, as it should).
    fake = GitHubFake(scenario, prefix="/github", rate_limit=10_000_000)
    fake.plan.latency = args.latency
    server = SandboxServer({"/github": fake.app}).start()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=500)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--runs", type=int, default=400, help="workflow runs per repo")
    parser.add_argument("--deploys", type=int, default=40, help="deployments per repo")
    parser.add_argument("--latency", type=float, default=0.020)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--rps", type=float, default=5000.0, help="token bucket rate")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            f"--repos={args.repos}",
            f"--days={args.days}",
            f"--runs={args.runs}",
            f"--deploys={args.deploys}",
            f"--latency={args.latency}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            rows = asyncio.run(bench(args, url, Path(tmp) / "state.db"))
    finally:
        if child.stdin:
            child.stdin.close()
        child.wait(timeout=30)
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for key, val in rows:
        print(f"{key:<{width}}  {val}")


if __name__ == "__main__":
    main()
