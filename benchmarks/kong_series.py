"""Kong exposition benchmark: the daemon's memory while it reads a Kong with many series.

A child process plays Kong: it serves ``/metrics`` with ``--series`` samples of
``kong_http_requests_total`` (service, route, code, source, consumer labels, as Kong
3.x writes them), each counter a little higher at every request. This process runs a
real ``Daemon`` with the Kong source (``max_series`` as given) and polls it
``--polls`` times: the first takes the baseline, the others count the increases. RSS
is read from ``/proc/self/status`` before the first poll (``VmRSS``, after start-up)
and after each poll (``VmRSS`` and the peak ``VmHWM``); the growth is peak minus the
RSS before the first poll. Target: 200k upstream series raise RSS by at most 150 MB.

    python benchmarks/kong_series.py --series 200000 --max-series 20000
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config import Config
from exporter.daemon import Daemon

KONG = textwrap.dedent(
    """
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    SERIES = int(sys.argv[1])
    reads = [0]

    class Kong(BaseHTTPRequestHandler):
        def do_GET(self):
            reads[0] += 1
            step = reads[0]
            head = "# HELP kong_http_requests_total HTTP status codes per consumer/service/route in Kong\\n# TYPE kong_http_requests_total counter\\n"
            lines = [head] + [
                f'kong_http_requests_total{{service="svc-{i % 500}",route="route-{i % 5000}",'
                f'code="{200 + (i % 4) * 100}",source="service",consumer="consumer-{i}"}} {1000 + i + step * 3}\\n'
                for i in range(SERIES)
            ]
            body = "".join(lines).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Kong)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=200_000)
    parser.add_argument("--max-series", type=int, default=20_000)
    parser.add_argument("--polls", type=int, default=3)
    args = parser.parse_args()

    kong = subprocess.Popen(
        [sys.executable, "-c", KONG, str(args.series)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert kong.stdout is not None
        port = int(kong.stdout.readline())
        state = Path(tempfile.mkdtemp(prefix="kong-bench-"))
        config = Config(
            state={"path": str(state / "s.db")},
            services=[{"name": "svc-0", "team": "t", "routes": ["svc-0"]}],
            sources={
                "probe": {"enabled": False},
                "kong": {
                    "status_url": f"http://127.0.0.1:{port}",
                    "max_series": args.max_series,
                    "timeout": "120s",
                    "interval": "300s",
                },
            },
        )
        daemon = Daemon(config)
        source = daemon.sources[0]
        before = status_kb("VmRSS")
        rows = []

        async def polls() -> None:
            for n in range(1, args.polls + 1):
                t0 = time.perf_counter()
                ok = await daemon.poll(source)
                took = time.perf_counter() - t0
                rows.append((n, ok, took, status_kb("VmRSS"), status_kb("VmHWM")))
            dropped.extend(daemon.store.counters("platform_exporter_upstream_series_dropped_total"))
            await daemon.shutdown()

        dropped: list[tuple[dict[str, str], float]] = []
        asyncio.run(polls())
    finally:
        kong.terminate()
        kong.wait(timeout=10)

    print(f"series upstream: {args.series:,}   max_series: {args.max_series:,}")
    print(f"RSS before the first poll: {before / 1024:.0f} MB")
    print("| poll | ok | seconds | RSS after | peak RSS | growth (peak - before) |")
    print("|---:|:---:|---:|---:|---:|---:|")
    for n, ok, took, rss, hwm in rows:
        print(
            f"| {n} | {'yes' if ok else 'no'} | {took:.2f} | {rss / 1024:.0f} MB "
            f"| {hwm / 1024:.0f} MB | {(hwm - before) / 1024:.0f} MB |"
        )
    print(f"series dropped (counter): {sum(v for _, v in dropped):,.0f}")


if __name__ == "__main__":
    main()
