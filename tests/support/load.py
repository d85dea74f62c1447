"""A scrape load against the real server in its own process, with idle connections held.

``scrape_load`` holds ``idle`` connections that send nothing, and meanwhile runs
``wrk`` (the Debian package: a C load generator, so the load costs the machine
little of the CPU the server needs) with ``scrapers`` keep-alive connections
scraping ``/metrics`` back to back for ``duration`` seconds: half of them plain
text, half gzip, at the same time. It returns wrk's latency percentiles and error
counts per encoding, and when the server closed each idle connection. The server
is a child process (``python -m tests.support.load --serve``) so it shares no
interpreter lock with the test.

Used by tests/core/test_server_load.py and benchmarks/server_load.py.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

KINDS = {"plain": [], "gzip": ["-H", "Accept-Encoding: gzip"]}
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass
class WrkResult:
    """What wrk reported for one encoding."""

    requests: int
    percentiles: dict[int, float]  # 50, 75, 90, 99 -> seconds
    errors: dict[str, int]  # connect, read, write, timeout, non-2xx
    output: str


@dataclass
class LoadResult:
    runs: dict[str, WrkResult] = field(default_factory=dict)
    # Seconds from opening to the server's close, per idle connection (None: still open).
    idle_closed_after: list[float | None] = field(default_factory=list)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert match, text
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """wrk --latency's report: the percentiles, the request count and every error count."""
    percentiles = {int(p): _seconds(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\S+)$", output, re.M)}
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non-2xx": 0}
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        for name, value in zip(
            ("connect", "read", "write", "timeout"), socket_errors.groups(), strict=True
        ):
            errors[name] = int(value)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors["non-2xx"] = int(non_2xx.group(1))
    return WrkResult(requests, percentiles, errors, output)


class ServerProcess:
    """The real MetricsServer serving a snapshot of ``series`` series, in a child process."""

    def __init__(self, series: int, idle_timeout: float) -> None:
        argv = [sys.executable, "-m", "tests.support.load", "--serve", str(series)]
        argv += ["--idle-timeout", str(idle_timeout)]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        self.info = json.loads(self.proc.stdout.readline())
        self.port: int = self.info["port"]

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _hold_idle(port: int, count: int, wait: float, result: LoadResult) -> threading.Thread:
    """Open ``count`` connections now; a thread notes when the server closes each one."""
    opened = time.monotonic()
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    result.idle_closed_after = [None] * count

    def watch() -> None:
        import selectors

        sel = selectors.DefaultSelector()
        for i, sock in enumerate(sockets):
            sel.register(sock, selectors.EVENT_READ, i)
        deadline = opened + wait
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(1)
                except OSError:
                    data = b""
                if not data:
                    result.idle_closed_after[key.data] = time.monotonic() - opened
                sel.unregister(sock)
        for sock in sockets:
            sock.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def scrape_load(
    port: int, scrapers: int, duration: float, idle: int, idle_wait: float
) -> LoadResult:
    """Hold ``idle`` connections (watched for up to ``idle_wait`` s) and run wrk meanwhile."""
    result = LoadResult()
    watcher = _hold_idle(port, idle, idle_wait, result)
    url = f"http://127.0.0.1:{port}/metrics"
    per_kind = max(1, scrapers // len(KINDS))
    procs = {
        kind: subprocess.Popen(
            ["wrk", "-t1", f"-c{per_kind}", f"-d{duration:g}s", "--latency", *headers, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for kind, headers in KINDS.items()
    }
    for kind, proc in procs.items():
        out, _ = proc.communicate(timeout=duration + 60)
        result.runs[kind] = parse_wrk(out)
    watcher.join(idle_wait + 5)
    return result


def _serve(series: int, idle_timeout: float) -> None:
    """Child: serve ``series`` gauge series with the real server until stdin closes."""
    sys.path.insert(0, str(ROOT))
    from prometheus_client.core import GaugeMetricFamily

    from exporter.core.server import MetricsServer
    from exporter.core.settings import ServerConfig
    from exporter.core.snapshot import Snapshot, SnapshotHolder

    fam = GaugeMetricFamily(
        "platform_load_ratio", "Load test series.", labels=["service", "window"]
    )
    for i in range(series):
        fam.add_metric([f"service-{i // 4:05d}", ("1h", "24h", "7d", "30d")[i % 4]], i / series)
    snapshot = Snapshot.render([fam], 1.0)
    settings = ServerConfig(listen_address="127.0.0.1", port=0, idle_timeout=idle_timeout)
    server = MetricsServer(settings, SnapshotHolder(snapshot), lambda: True)
    server.start()
    info = {"port": server.port, "bytes": len(snapshot.text), "gzip": len(snapshot.text_gzip)}
    print(json.dumps(info), flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", type=int, required=True)
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    args = parser.parse_args()
    _serve(args.serve, args.idle_timeout)
