"""RSS of the exporter alone with the probe benchmark's checks: a quicker look than probes.py.

The same config and loopback targets as ``benchmarks/probes.py`` (``--checks`` HTTP
checks every 15 s, committing every 15 s), no blackbox_exporter and no Prometheus:
this script scrapes ``/metrics`` as Prometheus does (OpenMetrics, gzip) every 15 s
and prints the exporter's ``VmRSS`` after each scrape.

    python3 benchmarks/probe_rss.py                  # 1,000 checks for 150 s
    python3 benchmarks/probe_rss.py --seconds 300
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.probes import exporter_config, rss_mib, target_urls  # noqa: E402
from tests.support.net import free_port, port_open, wait_until  # noqa: E402
from tests.support.targets import TargetServer  # noqa: E402

PROMETHEUS_ACCEPT = {
    "Accept": "application/openmetrics-text; version=1.0.0",
    "Accept-Encoding": "gzip",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=150.0)
    args = parser.parse_args()
    targets = TargetServer(workers=2).start()
    work = Path(tempfile.mkdtemp(prefix="bench-probe-rss-"))
    port = free_port()
    config = exporter_config(work, target_urls(targets.url, args.checks), 15.0, port, 15.0)
    exporter = subprocess.Popen(
        [sys.executable, "-m", "exporter", "run", "--config", str(config)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: port_open(port), timeout=60, what="the exporter")
        print(f"listening: {rss_mib(exporter.pid):.1f} MiB", flush=True)
        samples: list[float] = []
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            url = f"http://127.0.0.1:{port}/metrics"
            request = urllib.request.Request(url, headers=PROMETHEUS_ACCEPT)
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            time.sleep(15)
            samples.append(rss_mib(exporter.pid))
        print("VmRSS after each scrape (MiB):", " ".join(f"{s:.0f}" for s in samples))
        print(f"end {samples[-1]:.1f} MiB, max {max(samples):.1f} MiB; work dir {work}")
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)
        targets.stop()


if __name__ == "__main__":
    main()
