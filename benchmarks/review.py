"""Review benchmark: the weekly platform review of a large organisation, and ``/`` serving it.

The state is built once with the project's own record writers and cached outside the
checkout (``--state``; ``--rebuild`` builds it again): ``--services`` services (500)
in 50 teams, each with a probe, an NGINX route, cost tags and a GitHub repo, and
``--days`` (90) of history for every one of them: a probe check and a gateway minute
every ``--step-hours`` (6), a FOCUS cost line every day, and 200 runs, 40 deployments and 80 commits
per repo (benchmarks/refresh.py's CI history). The review runs in a child process, so
its peak RSS is the review's alone.

It reports the time of ``report --format html`` (and json, markdown) of the last
complete week from that state, with the 12 weeks of trend, the peak RSS, and the
median and p99 of 500 sequential GETs of ``/`` from a server whose snapshot holds the
rendered page (keep-alive, one client), gzipped and plain, and what the gzip copy
costs to make (once per page render).

    python benchmarks/review.py                      # 500 services x 90 days
    python benchmarks/review.py --services 50 --days 30   # a quick look

Targets (issue 20): the review <= 5 s and <= 300 MB RSS; ``/`` median < 5 ms.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = 86400.0
HOUR = 3600.0
# The state's "now": Wednesday 2027-07-14 09:30 UTC; the last complete week is 2027-W27.
ANCHOR = datetime(2027, 7, 14, 9, 30, tzinfo=UTC).timestamp()


def _names(args: argparse.Namespace) -> list[str]:
    return [f"svc-{i:04d}" for i in range(args.services)]


def config(args: argparse.Namespace, state: Path) -> Any:
    from exporter.config import Config

    services = [
        {
            "name": name,
            "team": f"team-{i % 50:02d}",
            "probes": [{"name": "health", "url": f"http://{name}.bench/health"}],
            "routes": [f"{name}.bench"],
            "ci": [{"github": f"bench/{name}"}],
            "cost": {"tags": {"service": name}},
            "slo": {"availability": {"objective": 99.5}},
        }
        for i, name in enumerate(_names(args))
    ]
    return Config(
        state={"path": str(state)},
        delivery={"backfill_days": args.days},
        services=services,
        sources={
            "nginx": {"access_log": str(state.parent / "access.log")},
            "github": {"token": "ghp_benchtoken0000000000000000000000000000"},
            "focus": {"paths": [str(state.parent / "focus")]},
        },
        capabilities=[{"name": "api-gateway", "detect": {"rule": "gateway_traffic"}}],
    )


def samples(args: argparse.Namespace) -> Iterator[list[Any]]:
    """A probe check and a gateway minute per service every ``--step-hours``, a day's
    worth per transaction."""
    from benchmarks.refresh import delta
    from exporter.domains.probe.records import ProbeResult

    steps = int(args.days * 24 / args.step_hours)
    batch: list[Any] = []
    for k in range(steps, 0, -1):
        t = (ANCHOR // HOUR - k * args.step_hours) * HOUR
        batch += [
            ProbeResult(n, "health", t + i * 1e-3, 0.05, (i + k) % 97 != 0, "", 200)
            for i, n in enumerate(_names(args))
        ]
        batch += [delta(n, t, f"seed-{k}") for n in _names(args)]
        if k % int(24 / args.step_hours) == 0:
            yield batch
            batch = []
    if batch:
        yield batch


def daily_cost(args: argparse.Namespace) -> Iterator[list[Any]]:
    from exporter.domains.cost.records import CostContribution, CostDay

    for d in range(int(args.days), 0, -1):
        day = datetime.fromtimestamp(ANCHOR - d * DAY, UTC).date().isoformat()
        days = tuple(
            CostDay(day, n, f"team-{i % 50:02d}", "aws", "compute", "USD", 4.0 + i % 7, 3.5)
            for i, n in enumerate(_names(args))
        )
        yield [
            CostContribution(
                "focus", f"export-{day}.csv", f"sig-{day}", days, True, len(days), 0, (day,)
            )
        ]


def build(args: argparse.Namespace, state: Path) -> None:
    from benchmarks.refresh import delivery_records, write_state

    ci = argparse.Namespace(repos=args.services, days=args.days)
    parts = (
        ("delivery", delivery_records(ci)),
        ("probe+traffic", samples(args)),
        ("cost", daily_cost(args)),
    )
    write_state(state, lambda path: config(args, path), parts)


def review_child(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    """In this (child) process: every format of the last complete week, timed."""
    from exporter.review.command import review_of
    from exporter.review.render import render
    from exporter.review.weeks import IsoWeek

    cfg = config(args, state)
    week = IsoWeek.of(ANCHOR).shifted(-1)
    out: dict[str, Any] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    review = review_of(cfg, ANCHOR, week)
    out["build"] = time.perf_counter() - t0
    out["build_cpu"] = time.process_time() - c0
    for fmt in ("html", "markdown", "json"):
        t1, c1 = time.perf_counter(), time.process_time()
        text = render(review, fmt)
        out[fmt] = time.perf_counter() - t1
        out[f"{fmt}_cpu"] = time.process_time() - c1
        out[f"{fmt}_bytes"] = len(text.encode())
        if fmt == "html":
            (state.parent / "review.html").write_text(text, encoding="utf-8")
    out["total_html"] = out["build"] + out["html"]
    out["total_html_cpu"] = out["build_cpu"] + out["html_cpu"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds of this process (imports included): what a loaded machine inflates least.
    out["cpu"] = usage.ru_utime + usage.ru_stime
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rows"] = len(review.services)
    return out


def landing(page: bytes, requests: int, accept: str | None) -> tuple[float, float, int]:
    """(median, p99 seconds, body bytes) of GET / from a server holding ``page`` in its
    snapshot, asked with ``Accept-Encoding: accept`` (none if None)."""
    from exporter.core.server import MetricsServer
    from exporter.core.settings import ServerConfig
    from exporter.core.snapshot import Page, Snapshot, SnapshotHolder

    server = MetricsServer(
        ServerConfig(listen_address="127.0.0.1", port=0),
        SnapshotHolder(Snapshot.assemble([], ANCHOR, Page.of(page))),
        lambda: True,
    )
    server.start()
    headers = {} if accept is None else {"Accept-Encoding": accept}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        times = []
        for _ in range(requests):
            t0 = time.perf_counter()
            conn.request("GET", "/", headers=headers)
            body = conn.getresponse().read()
            times.append(time.perf_counter() - t0)
            assert (gzip.decompress(body) if accept else body) == page
        conn.close()
    finally:
        server.stop()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1], len(body)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--step-hours", type=int, default=6, choices=[1, 2, 3, 4, 6, 12, 24])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--state", type=Path, default=None)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--child", choices=["build", "review"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    from exporter.core.snapshot import Page

    shape = f"{args.services}s-{args.days}d-{args.step_hours}h"
    state = args.state or Path(tempfile.gettempdir()) / "platform-kpi-review-bench" / f"{shape}.db"
    if args.child == "build":
        build(args, state)
        return
    if args.child == "review":
        print(json.dumps(review_child(args, state)))
        return
    base = [
        sys.executable,
        __file__,
        f"--services={args.services}",
        f"--days={args.days}",
        f"--state={state}",
    ]
    if args.rebuild or not state.exists():
        print(f"building {state} ...", file=sys.stderr)
        subprocess.run([*base, "--child=build"], check=True)
    out = json.loads(
        subprocess.run([*base, "--child=review"], check=True, capture_output=True, text=True).stdout
    )
    page = (state.parent / "review.html").read_bytes()
    t0 = time.process_time()
    Page.of(page)
    compress = time.process_time() - t0
    median, p99, _ = landing(page, args.requests, None)
    zmedian, zp99, zsize = landing(page, args.requests, "gzip")
    rows = [
        ("services x days", f"{args.services} x {args.days} ({out['rows']} rows)"),
        ("review built (12 weeks read)", f"{out['build']:.2f} s"),
        ("html rendered", f"{out['html']:.2f} s ({out['html_bytes'] / 1e6:.1f} MB)"),
        ("markdown rendered", f"{out['markdown']:.2f} s ({out['markdown_bytes'] / 1e6:.1f} MB)"),
        ("json rendered", f"{out['json']:.2f} s ({out['json_bytes'] / 1e6:.1f} MB)"),
        ("report --format html (target <= 5 s)", f"{out['total_html']:.2f} s"),
        ("  its CPU (build + html)", f"{out['total_html_cpu']:.2f} s"),
        ("CPU of the review process (imports, all formats)", f"{out['cpu']:.2f} s"),
        ("peak RSS (target <= 300 MB)", f"{out['rss_mb']:.0f} MB"),
        (
            "/ gzip copy (made once per page render)",
            f"{zsize / 1e3:.0f} kB, {compress * 1000:.0f} ms CPU",
        ),
        (f"GET / gzip median of {args.requests} (target < 5 ms)", f"{zmedian * 1000:.2f} ms"),
        ("GET / gzip p99", f"{zp99 * 1000:.2f} ms"),
        (f"GET / plain median of {args.requests} (target < 5 ms)", f"{median * 1000:.2f} ms"),
        ("GET / plain p99", f"{p99 * 1000:.2f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
