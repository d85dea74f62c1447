"""Refresh benchmark: what the daemon spends keeping the snapshot fresh at a large organisation.

The state is built once with the project's own record writers and cached outside
the checkout (``--state``; ``--rebuild`` builds it again): ``--services`` services
(default 2,000), each with a probe and an NGINX route; ``--repos`` of them (500)
with ``--days`` (90) of CI history (200 runs, 40 deployments and 80 commits per
repo); ``--probe-hours`` of probe checks every ``--probe-step`` seconds;
``--traffic-hours`` of per-minute NGINX traffic for every route; and 30 days of
FOCUS daily cost lines for every service. The state is built in a child process,
so this process's peak RSS is the daemon's.

Then a real :class:`~exporter.daemon.Daemon` runs on that state on a clock that
starts at the state's "now". Its sources are the real source classes with their
upstream I/O replaced by what a poll commits: NGINX every 2 s commits one batch of
minute deltas (one per route), the probe every 15 s commits a check of every
service, GitHub and FOCUS poll at their default intervals and find nothing new
(all 304s, an unchanged file). So the CPU measured is the daemon's own work:
committing, refreshing and serving nothing; parsing logs and probing are measured
by ``access_log.py`` and ``probes.py``.

It reports, for the incremental refresh and for a full re-render on every refresh
(what every poll cost before, with prometheus_client's writers) in the same run:
the full render time, the refresh after one NGINX poll (and per provider), the
steady-state CPU seconds per minute over ``--minutes``, and peak RSS. With
``--series N`` it also times a full render of N benchmark series (families
built, both formats, gzip) against ``generate_latest`` on the same families.

    python benchmarks/refresh.py                          # the large organisation
    python benchmarks/refresh.py --services 200 --repos 50 --minutes 1   # a quick look
    python benchmarks/refresh.py --series 100000 --minutes 0   # the 100k-series render only

Targets (issue 21): steady-state CPU <= 6 s per minute (10% of a core); refresh
after one NGINX poll <= 100 ms; full render at 100k series <= generate_latest;
peak RSS <= 400 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = 86400.0
# The state's "now": a mid-month instant, so month-to-date and last-month windows hold data.
ANCHOR = datetime(2027, 7, 14, 9, 30, tzinfo=UTC).timestamp()


def services(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for i in range(args.services):
        name = f"svc-{i:04d}"
        svc: dict[str, Any] = {
            "name": name,
            "team": f"team-{i % 100:02d}",
            "probes": [{"name": "health", "url": f"http://{name}.bench/health"}],
            "routes": [f"{name}.bench"],
        }
        if i < args.repos:
            svc["ci"] = [{"github": f"bench/{name}"}]
        out.append(svc)
    return out


def config(args: argparse.Namespace, state: Path) -> Any:
    from exporter.config import Config

    return Config(
        state={"path": str(state)},
        delivery={"backfill_days": args.days},
        services=services(args),
        sources={
            "nginx": {"interval": "2s", "access_log": str(state.parent / "access.log")},
            "probe": {"interval": "15s"},
            "github": {"token": "ghp_benchtoken0000000000000000000000000000"},
            "focus": {"paths": [str(state.parent / "focus")]},
        },
    )


# --- the state --------------------------------------------------------------------------


def delivery_records(args: argparse.Namespace) -> Iterator[list[Any]]:
    """Per repo: runs, deployments and commits spread over ``--days``."""
    from exporter.domains.delivery.records import Commit, Deployment, PipelineRun

    span = args.days * DAY
    for r in range(args.repos):
        svc = f"svc-{r:04d}"
        batch: list[Any] = []
        for k in range(200):
            t = ANCHOR - span + span * (k + 0.5) / 200
            result = "failure" if k % 9 == 0 else "success"
            batch.append(
                PipelineRun("github", svc, "ci", f"bench/{svc}/{k}", result, t, t + 5, t + 300)
            )
        for k in range(80):
            t = ANCHOR - span + span * (k + 0.2) / 80
            parents = (f"{r:04d}{k - 1:036d}",) if k else ()
            batch.append(Commit(svc, f"{r:04d}{k:036d}", t, t, parents))
        for k in range(40):
            t = ANCHOR - span + span * (k + 0.9) / 40
            sha = f"{r:04d}{2 * k + 1:036d}"
            status = "failure" if k % 7 == 0 else "success"
            batch.append(
                Deployment("github", svc, "production", True, f"{svc}-{k}", sha, status, t, t + 60)
            )
        yield batch


def probe_records(args: argparse.Namespace) -> Iterator[list[Any]]:
    from exporter.domains.probe.records import ProbeResult

    steps = int(args.probe_hours * 3600 / args.probe_step)
    for k in range(steps, 0, -1):
        t = ANCHOR - k * args.probe_step
        yield [
            ProbeResult(f"svc-{i:04d}", "health", t + i * 1e-3, 0.05, (i + k) % 97 != 0, "", 200)
            for i in range(args.services)
        ]


def delta(service: str, minute: float, batch: str) -> Any:
    from exporter.domains.traffic.kpis import LATENCY_BUCKETS
    from exporter.domains.traffic.records import TrafficDelta

    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[2], buckets[5] = 50, 10
    return TrafficDelta("nginx", service, minute, batch, (0, 58, 0, 1, 1), tuple(buckets), 3.1, 60)


def traffic_records(args: argparse.Namespace) -> Iterator[list[Any]]:
    minutes = int(args.traffic_hours * 60)
    for k in range(minutes, 0, -1):
        minute = (ANCHOR // 60 - k) * 60
        yield [delta(f"svc-{i:04d}", minute, f"seed-{k}") for i in range(args.services)]


def cost_records(args: argparse.Namespace) -> Iterator[list[Any]]:
    from exporter.domains.cost.records import CostContribution, CostDay

    today = datetime.fromtimestamp(ANCHOR, UTC).date()
    for d in range(30, 0, -1):
        day = datetime.fromtimestamp(ANCHOR - d * DAY, UTC).date().isoformat()
        days = tuple(
            CostDay(day, f"svc-{i:04d}", f"team-{i % 100:02d}", "aws", "compute", "USD", 4.0, 3.5)
            for i in range(args.services)
        )
        yield [
            CostContribution(
                "focus", f"export-{day}.csv", f"sig-{day}", days, True, len(days), 0, (day,)
            )
        ]
    del today


def write_state(
    state: Path,
    config_for: Callable[[Path], Any],
    parts: Sequence[tuple[str, Iterable[list[Any]]]],
) -> None:
    """Write ``parts`` (a name and its batches of records) into a new state at ``state``.

    Each batch goes through the domains' writers in one transaction, then each
    domain's refresh runs, as the daemon's would. The state is built beside
    ``state`` and renamed only when complete, so an interrupted build is not cached.
    ``config_for`` makes the config for the state's path.
    """
    from exporter.core.clock import FixedClock
    from exporter.core.store import write_records
    from exporter.domains import domains, open_store

    state.parent.mkdir(parents=True, exist_ok=True)
    (state.parent / "focus").mkdir(exist_ok=True)
    (state.parent / "access.log").touch()
    tmp = state.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    cfg = config_for(tmp)
    store = open_store(str(tmp), FixedClock(ANCHOR))
    for name, records in parts:
        t0 = time.perf_counter()
        n = 0
        for batch in records:
            with store.transaction() as tx:
                write_records(tx, batch)
            n += len(batch)
        print(f"  {name}: {n} records in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    for domain in domains():
        if domain.refresh is not None:
            domain.refresh(cfg, store, ANCHOR)
    store.close()
    tmp.rename(state)


def build(args: argparse.Namespace, state: Path) -> None:
    """Write the whole state through the domains' writers, a batch per transaction."""
    parts = (
        ("delivery", delivery_records(args)),
        ("probe", probe_records(args)),
        ("traffic", traffic_records(args)),
        ("cost", cost_records(args)),
    )
    write_state(state, lambda path: config(args, path), parts)


# --- the daemon on it -------------------------------------------------------------------


def bench_sources(args: argparse.Namespace, cfg: Any) -> list[Any]:
    """The real source classes, their upstream I/O replaced by what a poll commits."""
    from exporter.core.source import PollContext
    from exporter.domains.cost.sources.focus import FocusSource
    from exporter.domains.delivery.sources.github import GitHubSource
    from exporter.domains.probe.records import ProbeResult
    from exporter.domains.probe.sources.probe import ProbeSource
    from exporter.domains.traffic.sources.nginx import NginxSource

    n = args.services

    class Nginx(NginxSource):
        polls = 0

        async def poll(self, ctx: PollContext) -> None:
            Nginx.polls += 1
            minute = (ctx.now() // 60) * 60
            batch = f"poll-{Nginx.polls}"
            await ctx.commit([delta(f"svc-{i:04d}", minute, batch) for i in range(n)])

    class Probe(ProbeSource):
        async def poll(self, ctx: PollContext) -> None:
            t = ctx.now()
            await ctx.commit(
                [
                    ProbeResult(f"svc-{i:04d}", "health", t + i * 1e-6, 0.05, True, "", 200)
                    for i in range(n)
                ]
            )

    class Quiet:
        """A poll that finds nothing new: every answer a 304, the file unchanged."""

        async def poll(self, ctx: PollContext) -> None:
            return None

    class GitHub(Quiet, GitHubSource):
        pass

    class Focus(Quiet, FocusSource):
        pass

    out = []
    for cls, kind in ((Nginx, "nginx"), (Probe, "probe"), (GitHub, "github"), (Focus, "focus")):
        out.append(cls(cfg, getattr(cfg.sources, kind)))
    return out


def legacy_render(daemon: Any) -> Any:
    """A full render as every refresh did before: every provider, prometheus_client's
    writers family by family, the whole exposition gzipped."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_om

    from exporter.core.snapshot import Part, Snapshot
    from exporter.domains import providers, render_context

    class One:
        def __init__(self, family: Any) -> None:
            self.family = family

        def collect(self) -> list[Any]:
            return [self.family]

    with daemon._render_mutex:
        health = [h.copy() for h in daemon.health.values()]
        ctx = render_context(daemon.config, daemon.store, daemon.clock(), health, daemon.infos)
        text: list[bytes] = []
        om: list[bytes] = []
        for spec in providers().values():
            for family in spec.collect(ctx):
                text.append(generate_latest(One(family)))  # type: ignore[arg-type]
                om.append(generate_om(One(family)).removesuffix(b"# EOF\n"))  # type: ignore[arg-type]
        # Compressed whole, once per format, as the gzip copies were (the snapshot now
        # keeps each format deflated: the same work as gzipping it).
        return Snapshot.assemble([Part.of(b"".join(text), b"".join(om))], ctx.now)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def steady(daemon: Any, minutes: float, legacy: bool) -> tuple[float, int]:
    """CPU seconds per minute with the scheduler running; and how many NGINX polls ran."""
    if legacy:
        daemon.render = lambda: legacy_render(daemon)
    nginx = daemon.sources[0]
    daemon.start_scheduler()
    await asyncio.sleep(20)  # the first round of polls (every source at once) passes
    c0, t0, p0 = cpu(), time.monotonic(), type(nginx).polls
    await asyncio.sleep(minutes * 60)
    c1, t1, p1 = cpu(), time.monotonic(), type(nginx).polls
    if daemon.scheduler is not None:
        daemon.scheduler.shutdown(wait=False)
        daemon.scheduler = None
    await daemon.refresh()
    return (c1 - c0) / ((t1 - t0) / 60), p1 - p0


def render_seconds(snapshot: Any) -> dict[str, float]:
    """Each provider's last render time, from the self-metric (parsed after the render
    is timed, and only from that family on: parsing the whole exposition takes longer
    than rendering it)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = snapshot.text
    tail = text[text.index(b"# HELP platform_exporter_render_seconds") :]
    for family in text_string_to_metric_families(tail.decode()):
        if family.name == "platform_exporter_render_seconds":
            return {s.labels["provider"]: s.value for s in family.samples}
    return {}


class BenchClock:
    """The state's "now", standing still while single renders are timed (so no cadence
    falls due between them), then running at the real pace for the steady state."""

    def __init__(self, at: float) -> None:
        self.frozen: float | None = at
        self.offset = 0.0

    def __call__(self) -> float:
        return self.frozen if self.frozen is not None else time.time() + self.offset

    def run(self) -> None:
        if self.frozen is not None:
            self.offset = self.frozen - time.time()
            self.frozen = None


def org_rows(args: argparse.Namespace, state: Path) -> list[tuple[str, str]]:
    from exporter.core.changes import writing_for
    from exporter.core.heap import set_aside_long_lived
    from exporter.core.snapshot import Parts
    from exporter.daemon import Daemon

    cfg = config(args, state)
    clock = BenchClock(ANCHOR)
    t0 = time.perf_counter()
    daemon = Daemon(cfg, sources=bench_sources(args, cfg), clock=clock)
    first = time.perf_counter() - t0
    backfilled = finish_backfills(daemon)
    # As `run` does once the daemon is built: its long-lived objects out of the collector's walks.
    set_aside_long_lived()
    text = daemon.holder.current.text
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    size = len(text)
    del text
    daemon.parts = Parts()
    t0, c0 = time.perf_counter(), time.process_time()
    snapshot = daemon.render()
    full, full_cpu = time.perf_counter() - t0, time.process_time() - c0
    full_each = render_seconds(snapshot)
    del snapshot
    # One NGINX poll's commit, then the refresh it triggers. The batch is new to the
    # state (which earlier runs wrote into): a batch already counted changes nothing.
    minute = (clock() // 60) * 60
    batch = f"one-{time.time_ns()}"
    with writing_for({"traffic"}), daemon.store.transaction() as tx:
        from exporter.core.store import write_records

        write_records(tx, [delta(f"svc-{i:04d}", minute, batch) for i in range(args.services)])
    t0, c0 = time.perf_counter(), time.process_time()
    snapshot = daemon.render()
    incremental, incremental_cpu = time.perf_counter() - t0, time.process_time() - c0
    inc_each = render_seconds(snapshot)
    inc_each = {k: v for k, v in inc_each.items() if v != full_each.get(k)}
    clock.run()
    if args.minutes > 0:
        inc_cpu, inc_polls = asyncio.run(steady(daemon, args.minutes, legacy=False))
    # The daemon's own peak, before the "before" renders below (prometheus_client's
    # whole text and both gzip copies at once) raise this process's.
    daemon_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    clock.frozen = clock()
    t0 = time.perf_counter()
    legacy_render(daemon)
    legacy_full = time.perf_counter() - t0
    rows = [
        ("services / repos x days", f"{args.services} / {args.repos} x {args.days}"),
        ("state size", f"{state.stat().st_size / 1e6:.0f} MB"),
        ("series / exposition", f"{series} / {size / 1e6:.1f} MB text"),
        ("first render (start)", f"{first:.2f} s"),
        ("rollup backfills finished before timing", f"{backfilled:.1f} s"),
        ("full render: incremental path, all due", f"{full:.2f} s wall, {full_cpu:.2f} s CPU"),
        ("  per provider", fmt(full_each)),
        ("full render: before (prometheus_client, whole gzip)", f"{legacy_full:.2f} s"),
        (
            "refresh after one NGINX poll",
            f"{incremental * 1000:.0f} ms wall, {incremental_cpu * 1000:.0f} ms CPU",
        ),
        ("  recomputed", fmt(inc_each)),
    ]
    if args.minutes > 0:
        rows.append(
            ("steady-state CPU, incremental", f"{inc_cpu:.1f} s/min ({inc_polls} NGINX polls)")
        )
        clock.run()
        old_cpu, old_polls = asyncio.run(steady(daemon, args.minutes, legacy=True))
        rows.append(
            (
                "steady-state CPU, full render per poll",
                f"{old_cpu:.1f} s/min ({old_polls} NGINX polls)",
            )
        )
    asyncio.run(daemon.shutdown())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak RSS, the daemon (incremental refreshes)", f"{daemon_rss:.0f} MB"))
    rows.append(("peak RSS, with the before renders", f"{rss:.0f} MB"))
    return rows


def finish_backfills(daemon: Any) -> float:
    """Build what is left of the rollups of a state an older release wrote (the daemon
    does it a batch at a time while serving), so the renders timed read rollups;
    the seconds it took."""
    from exporter.domains.traffic import rollup

    t0 = time.perf_counter()
    while not daemon.backfill_batch():
        pass
    while rollup.backfill_pending(daemon.store):
        rollup.backfill_step(daemon.store, daemon.clock())
    return time.perf_counter() - t0


def fmt(seconds: dict[str, float]) -> str:
    return ", ".join(
        f"{k} {v * 1000:.0f}ms" for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])
    )


def series_rows(n: int) -> list[tuple[str, str]]:
    """A full render of ``n`` series (families built, both formats, gzip) vs generate_latest."""
    from prometheus_client.exposition import generate_latest

    from benchmarks.scrape import build_families, iter_families
    from exporter.core.snapshot import Snapshot, render_part

    families = build_families(n)

    class Registry:
        def collect(self) -> Sequence[Any]:
            return families

    def best(run: Any) -> float:
        """The fastest of three runs: the machine's other load only ever adds."""
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        return min(times)

    latest = best(lambda: generate_latest(Registry()))  # type: ignore[arg-type]
    ours = best(lambda: Snapshot.assemble([render_part(families)]))
    built = best(lambda: Snapshot.assemble([render_part(iter_families(n))]))
    return [
        (f"{n} series: generate_latest (text only, best of 3)", f"{latest:.2f} s"),
        (f"{n} series: snapshot render (text, OpenMetrics, both gzip)", f"{ours:.2f} s"),
        (f"{n} series: the same, families built too", f"{built:.2f} s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--repos", type=int, default=500)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--probe-hours", type=float, default=6.0)
    parser.add_argument("--probe-step", type=float, default=300.0)
    parser.add_argument("--traffic-hours", type=float, default=1.0)
    parser.add_argument("--minutes", type=float, default=2.0, help="steady state, per mode")
    parser.add_argument("--series", type=int, default=0)
    parser.add_argument("--state", type=Path, default=None)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--series-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Overrunning polls are expected when a refresh outlasts the NGINX interval: counted below.
    logging.basicConfig(level=logging.ERROR)
    shape = f"{args.services}s-{args.repos}r{args.days}d-p{args.probe_hours:g}h{args.probe_step:g}-t{args.traffic_hours:g}h"
    state = args.state or Path(tempfile.gettempdir()) / "platform-kpi-refresh-bench" / f"{shape}.db"
    if args.build_only:
        build(args, state)
        return
    if args.series_only:
        for row in series_rows(args.series):
            print("\t".join(row))
        return
    rows: list[tuple[str, str]] = []
    if args.series:
        # In a process of its own, so the daemon's peak RSS below is the daemon's alone.
        cmd = [sys.executable, __file__, f"--series={args.series}", "--series-only"]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows += [tuple(line.split("\t", 1)) for line in out.splitlines()]  # type: ignore[misc]
    if args.minutes >= 0 and args.services > 0:
        if args.rebuild or not state.exists():
            print(f"building {state} ...", file=sys.stderr)
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--build-only", f"--state={state}"],
                check=True,
                env=os.environ,
            )
            rows.append(("state built in", f"{time.perf_counter() - t0:.0f} s"))
        rows += org_rows(args, state)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
