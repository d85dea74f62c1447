"""NGINX access-log ingest benchmark: lines per second and peak RSS.

Writes a synthetic JSON access log (the ``log_format`` of docs/kpis.md) of ``--lines``
lines spread over one day, for eight hosts and paths (six catalog services, the rest
unmapped), with 2% 404s, 0.5% 5xx, 0.1% malformed lines and latencies from 1 ms to 3 s.
Then, for each size in ``--sizes`` (a prefix of the file) it runs, in a fresh child
process, the exporter's own tailer (``NginxSource.tail``: read, parse, map, aggregate
and commit to a new state database) and prints a table. Peak RSS is the child's
``ru_maxrss``: the whole process, interpreter included. Throughput is per wall second
and per CPU second of the child (one thread, so one core).

    python benchmarks/access_log.py --lines 5000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HOSTS = [
    ("shop.example.com", "/checkout/cart"),
    ("shop.example.com", "/checkout/pay"),
    ("api.example.com", "/payments/v1/charge"),
    ("api.example.com", "/search"),
    ("api.example.com", "/accounts/me"),
    ("recs.example.com", "/for-you"),
    ("static.example.com", "/assets/app.js"),
    ("other.example.com", "/health"),
]
SERVICES = [
    {"name": "checkout", "team": "payments", "routes": ["shop.example.com/checkout"]},
    {"name": "payments-api", "team": "payments", "routes": ["api.example.com/payments"]},
    {"name": "search", "team": "discovery", "routes": ["/search"]},
    {"name": "accounts", "team": "identity", "routes": ["/accounts"]},
    {"name": "recommendations", "team": "discovery", "routes": ["recs.example.com"]},
    {"name": "static", "team": "web", "routes": ["static.example.com"]},
]


def write_log(path: Path, lines: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    start = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    step = 86400.0 / lines
    size = 0
    with open(path, "w", encoding="utf-8") as fh:
        chunk: list[str] = []
        for i in range(lines):
            host, path_ = HOSTS[i % len(HOSTS)]
            u = rng.random()
            status = 404 if u < 0.02 else (503 if u < 0.025 else 200)
            latency = min(rng.lognormvariate(-3.0, 1.0), 3.0)
            if u > 0.999:
                line = '{"msec":"broken'
            else:
                line = (
                    f'{{"msec":"{start + i * step:.3f}","host":"{host}",'
                    f'"request_uri":"{path_}?q={i % 97}","status":"{status}",'
                    f'"request_time":"{latency:.3f}","upstream_response_time":"{latency:.3f}",'
                    f'"api_key":"key-{i % 500}"}}'
                )
            chunk.append(line)
            if len(chunk) >= 10000:
                text = "\n".join(chunk) + "\n"
                size += len(text)
                fh.write(text)
                chunk.clear()
        if chunk:
            text = "\n".join(chunk) + "\n"
            size += len(text)
            fh.write(text)
    return size


def child(log: str, state: str) -> None:
    """Ingest ``log`` once with the real tailer; print a JSON line of measurements."""
    import logging

    from exporter.config import Config
    from exporter.core.health import SourceHealth
    from exporter.core.source import PollContext
    from exporter.domains import open_store
    from exporter.domains.traffic.sources.nginx import NginxSource

    config = Config(
        state={"path": state},
        services=SERVICES,
        sources={
            "nginx": {
                "access_log": log,
                "consumer_field": "api_key",
                "max_bytes_per_poll": 1 << 40,
            }
        },
    )
    assert config.sources.nginx is not None
    store = open_store(state)
    source = NginxSource(config, config.sources.nginx)
    ctx = PollContext(
        store=store,
        health=SourceHealth("nginx", "nginx", 15),
        client=None,  # type: ignore[arg-type]
        now=lambda: 1_767_312_000.0,
        log=logging.getLogger("bench"),
    )
    c0 = time.process_time()
    t0 = time.perf_counter()
    lines = source.tail(ctx)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    malformed = store.query_one("SELECT value FROM counters WHERE metric LIKE '%malformed%'")
    rows = store.query_one("SELECT COUNT(*) FROM traffic_minutes")
    requests = store.query_one("SELECT SUM(requests) FROM traffic_daily")
    store.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "lines": lines,
                "wall": wall,
                "cpu": cpu,
                "peak_mib": peak_kib / 1024,
                "malformed": int(malformed[0]) if malformed else 0,
                "minute_rows": int(rows[0]) if rows else 0,
                "requests": int(requests[0]) if requests and requests[0] else 0,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--lines", type=int, default=5_000_000)
    parser.add_argument(
        "--sizes",
        type=str,
        default="",
        help="comma-separated line counts to ingest (prefixes of the file); default: "
        "a tenth of --lines and --lines",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s] or [args.lines // 10, args.lines]
    with tempfile.TemporaryDirectory(prefix="access-log-bench-") as tmp:
        full = Path(tmp) / "access.log"
        t0 = time.perf_counter()
        write_log(full, max(sizes))
        print(
            f"wrote {max(sizes):,} lines ({full.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - t0:.1f}s",
            flush=True,
        )
        print()
        print(
            "| lines | file | wall | lines/s (wall) | lines/s (CPU) | MB/s | malformed | minute rows | peak RSS |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in sizes:
            log = full
            if n != max(sizes):
                log = Path(tmp) / f"access-{n}.log"
                with open(full, "rb") as src, open(log, "wb") as dst:
                    for i, line in enumerate(src):
                        if i >= n:
                            break
                        dst.write(line)
            state = Path(tmp) / f"state-{n}.db"
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(log), str(state)],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            size_mb = log.stat().st_size / 1e6
            print(
                f"| {r['lines']:,} | {size_mb:.0f} MB | {r['wall']:.1f} s | "
                f"{r['lines'] / r['wall']:,.0f} | {r['lines'] / r['cpu']:,.0f} | "
                f"{size_mb / r['wall']:.1f} | {r['malformed']:,} | {r['minute_rows']:,} | "
                f"{r['peak_mib']:.0f} MiB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
