"""Scrape benchmark: /metrics latency from the cached snapshot vs. generate_latest.

For each size (default 10k and 100k series) a child process plays the
exporter: a real :class:`~exporter.daemon.Daemon` renders one snapshot (a
provider yields the benchmark series beside the real providers) and the real
:class:`~exporter.core.server.MetricsServer` serves it on loopback. The parent
scrapes it over one keep-alive connection (``http.client``): plain text, gzip,
and Prometheus' own request (OpenMetrics preferred, gzip), timing each request
until the last byte of the body is read. In the same run it times
``prometheus_client.generate_latest`` on the same series (what a scrape costs
an exporter that renders per request). The child's RSS (current and peak) is
read from ``/proc`` once the scrapes are done.

    python benchmarks/scrape.py                  # 10k and 100k series
    python benchmarks/scrape.py --series 100000 --requests 200

Targets at 100k series: /metrics median at most 1/20 of generate_latest's time;
exporter RSS at most 200 MB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = ["service", "team", "environment", "window"]
WINDOWS = ("1h", "24h", "7d", "30d")


def build_families(series: int) -> list[Any]:
    """``series`` samples spread over 20 families (half gauges, half counters), 4 labels each."""
    return list(iter_families(series))


def iter_families(series: int) -> Iterator[Any]:
    """The same families, built one at a time as a provider yields them."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    per_family = series // 20
    for f in range(20):
        cls = GaugeMetricFamily if f % 2 == 0 else CounterMetricFamily
        name = f"platform_bench_value_{f}" + ("_ratio" if f % 2 == 0 else "")
        fam = cls(name, f"Benchmark family {f}. Cached by the exporter.", labels=LABELS)
        for i in range(per_family):
            fam.add_metric(
                [f"service-{i // 16:05d}", f"team-{i % 97:02d}", f"env-{i % 4}", WINDOWS[i % 4]],
                (i % 1000) / 1000.0 if f % 2 == 0 else float(i * 7),
            )
        yield fam


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def serve(series: int) -> None:
    """Child: render one snapshot, serve it, print the port and render time, wait for stdin EOF.

    The snapshot is built by the daemon's own ``render`` (with a provider yielding
    the benchmark series beside the real ones), so the RSS includes what the daemon
    keeps between refreshes (each provider's last good families).
    """
    import tempfile

    import exporter.daemon
    from exporter.config import Config
    from exporter.core.server import MetricsServer
    from exporter.core.settings import ServerConfig
    from exporter.core.snapshot import SnapshotHolder

    real = exporter.daemon.providers

    def with_bench(**kwargs: Any) -> dict[str, Any]:
        return {**real(**kwargs), "bench": lambda ctx: iter_families(series)}

    exporter.daemon.providers = with_bench
    state = tempfile.mkdtemp(prefix="scrape-bench-")
    daemon = exporter.daemon.Daemon(Config(state={"path": f"{state}/state.db"}), sources=[])
    t0 = time.perf_counter()
    snapshot = daemon.render()
    render = time.perf_counter() - t0
    server = MetricsServer(
        ServerConfig(listen_address="127.0.0.1", port=0), SnapshotHolder(snapshot), lambda: True
    )
    server.start()
    print(
        json.dumps(
            {
                "port": server.port,
                "render": render,
                "bytes": len(snapshot.text),
                "gzip_bytes": len(snapshot.text_gzip),
            }
        ),
        flush=True,
    )
    sys.stdin.read()
    server.stop()


# What Prometheus 2.x itself sends: it prefers OpenMetrics, and gzip.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
VARIANTS: dict[str, dict[str, str]] = {
    "plain": {},
    "gzip": {"Accept-Encoding": "gzip"},
    "prometheus": PROMETHEUS_HEADERS,
}


def scrape_latencies(port: int, requests: int, headers: dict[str, str]) -> list[float]:
    """Latencies of ``requests`` scrapes on one connection; the first (cold) one comes first."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out = []
    for _ in range(requests + 1):
        t0 = time.perf_counter()
        conn.request("GET", "/metrics", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - t0
        assert resp.status == 200 and body
        out.append(elapsed)
    conn.close()
    return out


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def time_generate_latest(series: int, repeats: int) -> float:
    """Median seconds for generate_latest over the same series (families rebuilt once)."""
    from prometheus_client.exposition import generate_latest

    class Families:
        """A collector yielding the same families on every collect, as a registry would."""

        def __init__(self, families: list[Any]) -> None:
            self.families = families

        def collect(self) -> list[Any]:
            return self.families

    registry = Families(build_families(series))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate_latest(registry)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(series: int, requests: int, repeats: int) -> dict[str, Any]:
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(series)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None and child.stdin is not None
    info = json.loads(child.stdout.readline())
    try:
        # Prometheus first: its first scrape of a fresh snapshot is what every real
        # scrape after a refresh costs.
        runs = {
            name: scrape_latencies(info["port"], requests, VARIANTS[name])
            for name in ("prometheus", "plain", "gzip")
        }
        rss, hwm = rss_kib(child.pid)
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    gen = time_generate_latest(series, repeats)
    return {
        "series": series,
        "bytes": info["bytes"],
        "gzip_bytes": info["gzip_bytes"],
        "render": info["render"],
        "generate_latest": gen,
        **{f"{name}_first": lat[0] for name, lat in runs.items()},
        **{f"{name}_median": statistics.median(lat[1:]) for name, lat in runs.items()},
        **{f"{name}_p99": p99(lat[1:]) for name, lat in runs.items()},
        "rss_mb": rss / 1024,
        "hwm_mb": hwm / 1024,
        "requests": requests,
    }


def table(rows: list[dict[str, Any]]) -> str:
    ms = 1000.0
    head = (
        "| series | exposition | generate_latest | /metrics median | /metrics p99 "
        "| gzip median | Prometheus (OpenMetrics, gzip) first / median / p99 "
        "| generate_latest / median | snapshot render | RSS (peak) |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['series']:,} | {r['bytes'] / 1e6:.1f} MB ({r['gzip_bytes'] / 1e6:.2f} MB gz) "
            f"| {r['generate_latest'] * ms:.1f} ms | {r['plain_median'] * ms:.2f} ms "
            f"| {r['plain_p99'] * ms:.2f} ms | {r['gzip_median'] * ms:.2f} ms "
            f"| {r['prometheus_first'] * ms:.2f} / {r['prometheus_median'] * ms:.2f} / "
            f"{r['prometheus_p99'] * ms:.2f} ms "
            f"| {r['generate_latest'] / r['plain_median']:.0f}x "
            f"| {r['render'] * ms:.0f} ms | {r['rss_mb']:.0f} MB ({r['hwm_mb']:.0f} MB) |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--requests", type=int, default=200, help="scrapes per size and encoding")
    parser.add_argument("--repeats", type=int, default=5, help="generate_latest runs per size")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    rows = [bench(n, args.requests, args.repeats) for n in args.series]
    print(table(rows))
    big = max(rows, key=lambda r: r["series"])
    worst = max(big["plain_median"], big["prometheus_median"], big["prometheus_first"])
    ratio_ok = worst <= big["generate_latest"] / 20
    rss_ok = big["hwm_mb"] <= 200
    print(
        f"\ntargets at {big['series']:,} series: /metrics median (plain, and Prometheus' own "
        f"request, first and median) <= generate_latest / 20: "
        f"{'met' if ratio_ok else 'MISSED'} ({big['generate_latest'] / worst:.0f}x); "
        f"peak RSS <= 200 MB: {'met' if rss_ok else 'MISSED'} ({big['hwm_mb']:.0f} MB)"
    )
    return 0 if ratio_ok and rss_ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
