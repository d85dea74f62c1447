"""RSS of the exporter alone with the probe benchmark's checks: a quicker look than probes.py.

The same config and loopback targets as ``benchmarks/probes.py`` (``--checks`` HTTP
checks every 15 s, committing every 15 s), no blackbox_exporter and no Prometheus:
this script scrapes ``/metrics`` as Prometheus does (OpenMetrics, gzip) every 15 s
and prints the exporter's ``VmRSS`` after each scrape.

    python3 benchmarks/probe_rss.py                  # 1,000 checks for 150 s
    python3 benchmarks/probe_rss.py --seconds 300
    python3 benchmarks/probe_rss.py --seconds 1200 --breakdown   # where it is, every 2 minutes

``--breakdown`` starts the exporter through ``benchmarks/memory_breakdown.py`` and prints,
every ``--every`` seconds and at the end, its resident memory by kind of mapping and the
allocators' own statistics (the full readings are kept in the work dir's ``memory.txt``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import memory_breakdown  # noqa: E402
from benchmarks.probes import exporter_config, rss_mib, target_urls  # noqa: E402
from tests.support.net import free_port, port_open, wait_until  # noqa: E402
from tests.support.targets import TargetServer  # noqa: E402

PROMETHEUS_ACCEPT = {
    "Accept": "application/openmetrics-text; version=1.0.0",
    "Accept-Encoding": "gzip",
}


def load() -> str:
    """The 1-minute load average."""
    return Path("/proc/loadavg").read_text().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--breakdown", action="store_true", help="memory by kind, and why")
    parser.add_argument(
        "--trace", action="store_true", help="with --breakdown: trace Python's allocations"
    )
    parser.add_argument("--verbose", action="store_true", help="each reading as it is made")
    parser.add_argument("--every", type=float, default=120.0, help="seconds between breakdowns")
    args = parser.parse_args()
    targets = TargetServer(workers=2).start()
    work = Path(tempfile.mkdtemp(prefix="bench-probe-rss-"))
    port = free_port()
    config = exporter_config(work, target_urls(targets.url, args.checks), 15.0, port, 15.0)
    run = ["run", "--config", str(config)]
    dump = work / "memory.txt"
    plain = [sys.executable, "-m", "exporter", *run]
    command = memory_breakdown.child_command(run) if args.breakdown else plain
    env = {**os.environ, memory_breakdown.DUMP_ENV: str(dump)}
    if args.trace:
        env[memory_breakdown.TRACE_ENV] = "1"
    exporter = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def report(label: str) -> None:
        if args.breakdown:
            print(f"[{label}] {memory_breakdown.format_breakdown(exporter.pid)}", flush=True)
            reading = memory_breakdown.ask_reading(exporter.pid, dump, label)
            print(memory_breakdown.summary(reading), flush=True)

    try:
        wait_until(lambda: port_open(port), timeout=60, what="the exporter")
        print(f"listening: {rss_mib(exporter.pid):.1f} MiB", flush=True)
        samples: list[float] = []
        started = time.monotonic()
        next_report = args.every
        while time.monotonic() - started < args.seconds:
            url = f"http://127.0.0.1:{port}/metrics"
            request = urllib.request.Request(url, headers=PROMETHEUS_ACCEPT)
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            time.sleep(15)
            samples.append(rss_mib(exporter.pid))
            elapsed = time.monotonic() - started
            if args.verbose:
                print(f"{elapsed:5.0f} s  {samples[-1]:.1f} MiB  load {load()}", flush=True)
            if elapsed >= next_report:
                report(f"{elapsed:.0f} s, {samples[-1]:.1f} MiB, load {load()}")
                next_report += args.every
        report(f"end, {samples[-1]:.1f} MiB, load {load()}")
        print("VmRSS after each scrape (MiB):", " ".join(f"{s:.0f}" for s in samples))
        print(f"end {samples[-1]:.1f} MiB, max {max(samples):.1f} MiB; work dir {work}")
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)
        targets.stop()


if __name__ == "__main__":
    main()
