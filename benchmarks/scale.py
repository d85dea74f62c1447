"""Scale benchmark: one full render at a large organisation's state, per provider.

The state of issue 23, built with the domains' own record writers (the builders of
``refresh.py``) and cached in the temporary directory under a name made of its
parameters (``--rebuild`` builds it again): ``--services`` services (2,000), each with
a probe checked every ``--probe-step`` seconds (900) over ``--probe-days`` (30) and
every minute over the last hour, and a gateway route with ``--traffic-hours`` (24) of
per-minute traffic; ``--repos`` of them (500) with ``--days`` (90) of CI history (200
runs, 40 deployments and 80 commits per repo); ``--cost-days`` (30) of FOCUS daily
cost for every service. The writers commit about 5,000 records a second, so the
whole state (8.8 M probe checks and minute deltas) takes about half an hour of CPU;
the shorter probe and traffic histories the options allow show the same per-row costs.

It then renders every provider once, as a refresh does when all are due, in a child
process (so its peak RSS is the render's, and a render that outlasts ``--timeout`` is
reported as such), and reports per provider the wall and CPU seconds and the series it
rendered; in total the render time, the series, the exposition size, peak RSS; the
database size, per domain, and its growth per day of history (each domain's history
tables divided by the days they hold). In the same run it compares the delivery
provider's windows read from its rollups with the same KPIs computed from the raw
records (``delivery.store.load`` and ``kpis.service_kpis``, the render before the
rollups).

    python benchmarks/scale.py                                        # issue 23's state
    python benchmarks/scale.py --probe-days 2 --traffic-hours 2       # what fits an hour

Targets (issue 23): full render <= 2 s, no provider over 500 ms, peak RSS <= 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import refresh  # noqa: E402

DAY = 86400.0
ANCHOR = refresh.ANCHOR


def probe_records(args: argparse.Namespace) -> Iterator[list[Any]]:
    """Checks every ``--probe-step`` over ``--probe-days``, then every minute for the
    last hour (one batch per round of every service)."""
    from exporter.domains.probe.records import ProbeResult

    coarse = int(args.probe_days * DAY / args.probe_step)
    times = [ANCHOR - 3600 - k * args.probe_step for k in range(coarse, 0, -1)]
    times += [ANCHOR - k * 60.0 for k in range(60, 0, -1)]
    for k, t in enumerate(times):
        yield [
            ProbeResult(f"svc-{i:04d}", "health", t + i * 1e-3, 0.05, (i + k) % 97 != 0, "", 200)
            for i in range(args.services)
        ]


def build(args: argparse.Namespace, state: Path) -> None:
    """Write the whole state through the domains' writers, a batch per transaction."""
    shape = refresh_args(args)
    parts = (
        ("delivery", refresh.delivery_records(shape)),
        ("cost", cost_records(args)),
        ("traffic", refresh.traffic_records(shape)),
        ("probe", probe_records(args)),
    )
    refresh.write_state(state, lambda path: refresh.config(shape, path), parts)


def cost_records(args: argparse.Namespace) -> Iterator[list[Any]]:
    """``--cost-days`` of FOCUS daily sums, one export file a day."""
    shape = refresh_args(args)
    days = list(refresh.cost_records(shape))
    yield from days[-args.cost_days :]


def refresh_args(args: argparse.Namespace) -> argparse.Namespace:
    """The shape ``refresh.py``'s builders and config read."""
    return argparse.Namespace(
        services=args.services,
        repos=args.repos,
        days=args.days,
        probe_hours=0,
        probe_step=args.probe_step,
        traffic_hours=args.traffic_hours,
    )


# --- the render, in a child process ---------------------------------------------------


def render(args: argparse.Namespace, state: Path) -> None:
    """Every provider once (all due), printing one JSON line per provider as it ends."""
    from exporter.core.clock import FixedClock
    from exporter.core.heap import set_aside_long_lived
    from exporter.core.snapshot import Snapshot, render_part
    from exporter.daemon import Daemon
    from exporter.domains import providers, render_context

    cfg = refresh.config(refresh_args(args), state)
    # Daemon's own first render is what is measured below, provider by provider.
    Daemon.render = lambda self: Snapshot.render([])  # type: ignore[method-assign]
    daemon = Daemon(cfg, sources=[], clock=FixedClock(ANCHOR))
    health = [h.copy() for h in daemon.health.values()]
    # As `run` does once the daemon is built (exporter/core/heap.py).
    set_aside_long_lived()
    if args.warm:
        # A refresh after the first: SQLite's pages, the catalog's and the modules' first
        # use already paid, as in a daemon that has been serving.
        for spec in providers().values():
            render_part(
                spec.collect(render_context(cfg, daemon.store, ANCHOR, health, daemon.infos))
            )
    ctx = render_context(cfg, daemon.store, ANCHOR, health, daemon.infos)
    parts = []
    for name, spec in providers().items():
        w0, c0 = time.perf_counter(), time.process_time()
        part = render_part(spec.collect(ctx))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        parts.append(part)
        series = sum(1 for line in part.text.splitlines() if line and not line.startswith(b"#"))
        print(
            json.dumps({"provider": name, "wall": wall, "cpu": cpu, "series": series}), flush=True
        )
    snap = Snapshot.assemble(parts, ANCHOR)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"text": len(snap.text), "gzip": len(snap.text_gzip), "rss": rss}),
        flush=True,
    )
    daemon.store.close()


def delivery_compare(args: argparse.Namespace, state: Path) -> list[tuple[str, str]]:
    """The delivery KPIs of every service from the rollups and from the raw records."""
    from exporter.core.clock import FixedClock
    from exporter.domains import open_store, render_context
    from exporter.domains.delivery import kpis, rollup
    from exporter.domains.delivery import metrics as delivery_metrics
    from exporter.domains.delivery import store as delivery_store

    cfg = refresh.config(refresh_args(args), state)
    store = open_store(str(state), FixedClock(ANCHOR))
    ctx = render_context(cfg, store, ANCHOR)
    services = delivery_metrics.delivery_services(ctx)
    rules = kpis.DeliveryRules(backfill_days=args.days)

    def from_rollups() -> list[kpis.ServiceKpis]:
        views = rollup.views(store, [s.name for s in services], rules, "committed", {}, ANCHOR)
        return [kpis.view_kpis(views[s.name], rules, ANCHOR) for s in services]

    def from_raw() -> list[kpis.ServiceKpis]:
        data = delivery_store.load(store, "committed")
        return [
            kpis.service_kpis(data.get(s.name) or kpis.ServiceDelivery(), rules, None, ANCHOR)
            for s in services
        ]

    out = []
    results = {}
    for name, run in (("rollups", from_rollups), ("raw records", from_raw)):
        c0 = time.process_time()
        results[name] = run()
        out.append(
            (
                f"delivery KPIs of {len(services)} services, {name}",
                f"{time.process_time() - c0:.2f} s CPU",
            )
        )
    same = [a.frequency == b.frequency and a.lead == b.lead and a.change_failure == b.change_failure
            for a, b in zip(results["rollups"], results["raw records"], strict=True)]  # fmt: skip
    out.append(("  the same values", f"{sum(same)} of {len(same)} services"))
    store.close()
    return out


def sizes(state: Path, args: argparse.Namespace) -> list[tuple[str, str]]:
    """The database size, and per domain its tables' bytes per day of history."""
    import sqlite3

    from exporter.domains import domains

    conn = sqlite3.connect(state)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    by_table: dict[str, int] = {}
    for name, pages in conn.execute(
        "SELECT name, SUM(pgsize) / ? FROM dbstat GROUP BY name", (page,)
    ):
        by_table[str(name)] = int(pages) * page
    index_of = dict(
        conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'").fetchall()
    )
    conn.close()
    owner = {}
    for d in domains():
        for migrations in d.migrations.values():
            for sql in migrations:
                for word in sql.split("CREATE TABLE ")[1:]:
                    owner[word.split()[0].strip("(")] = d.name
    per_domain: dict[str, int] = {}
    for name, size in by_table.items():
        table = index_of.get(name, name)
        if table.startswith("sqlite_autoindex_"):
            table = table.removeprefix("sqlite_autoindex_").rsplit("_", 1)[0]
        per_domain[owner.get(table, "core")] = per_domain.get(owner.get(table, "core"), 0) + size
    days = {
        "delivery": args.days,
        "probe": args.probe_days,
        "traffic": args.traffic_hours / 24,
        "cost": args.cost_days,
    }
    rows = [("database", f"{state.stat().st_size / 1e6:.0f} MB")]
    for domain, size in sorted(per_domain.items(), key=lambda kv: -kv[1]):
        per_day = (
            f", {size / days[domain] / 1e6:.1f} MB per day of history" if domain in days else ""
        )
        rows.append((f"  {domain}", f"{size / 1e6:.1f} MB{per_day}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--repos", type=int, default=500)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--probe-days", type=float, default=30.0)
    parser.add_argument("--probe-step", type=float, default=900.0)
    parser.add_argument("--traffic-hours", type=float, default=24.0)
    parser.add_argument("--cost-days", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=900.0, help="for the whole render")
    parser.add_argument(
        "--warm", action="store_true", help="time a second full render, not the first one"
    )
    parser.add_argument("--state", type=Path, default=None)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--render-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (
        f"{args.services}s-{args.repos}r{args.days}d-p{args.probe_days:g}d{args.probe_step:g}"
        f"-t{args.traffic_hours:g}h-c{args.cost_days}d"
    )
    state = args.state or Path(tempfile.gettempdir()) / "platform-kpi-scale-bench" / f"{shape}.db"
    if args.build_only:
        build(args, state)
        return
    if args.render_only:
        render(args, state)
        return
    rows: list[tuple[str, str]] = []
    if args.rebuild or not state.exists():
        print(f"building {state} ...", file=sys.stderr)
        t0 = time.perf_counter()
        argv = [a for a in sys.argv[1:] if a != "--rebuild"]
        subprocess.run(
            [sys.executable, __file__, *argv, "--build-only", f"--state={state}"],
            check=True,
            env=os.environ,
        )
        rows.append(("state built in", f"{time.perf_counter() - t0:.0f} s"))
    rows += render_rows(args, state)
    rows += delivery_compare(args, state)
    rows += sizes(state, args)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def render_rows(args: argparse.Namespace, state: Path) -> list[tuple[str, str]]:
    """Run the render in a child process; its per-provider lines, or how far it got."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--render-only", f"--state={state}"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ)
    lines: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        out, _ = child.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, _ = child.communicate()
    elapsed = time.monotonic() - started
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    done = [x for x in lines if "provider" in x]
    rows = [
        (f"  {x['provider']}", f"{x['wall'] * 1000:.0f} ms wall, {x['cpu'] * 1000:.0f} ms CPU, {x['series']} series")
        for x in sorted(done, key=lambda x: -x["wall"])
    ]  # fmt: skip
    end = next((x for x in lines if "rss" in x), None)
    if end is None:
        return [(f"full render: not finished in {elapsed:.0f} s; finished providers", ""), *rows]
    total_wall = sum(x["wall"] for x in done)
    total_cpu = sum(x["cpu"] for x in done)
    return [
        ("full render", f"{total_wall:.2f} s wall, {total_cpu:.2f} s CPU"),
        *rows,
        ("series / exposition", f"{sum(x['series'] for x in done)} / {end['text'] / 1e6:.1f} MB text, {end['gzip'] / 1e6:.2f} MB gzip"),
        ("peak RSS (render process)", f"{end['rss']:.0f} MB"),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
