"""Webhook intake: Alertmanager notifications into ``/webhooks/alertmanager`` of a real daemon.

The exporter runs as ``platform-kpi-exporter run`` pinned to one core (``taskset -c 0``;
the load generator runs on the others), with its receiver authenticated either by a bearer
token (as Alertmanager's ``http_config`` sends it) or by an HMAC-SHA256 signature of the
body (every request's signature computed and checked). ``--clients`` keep-alive
connections post notifications for ``--seconds``, each group firing then resolving (each
notification stored, and its service's DORA incidents derived, in its own transaction); then, on an idle daemon,
``--probes`` times one more notification and polls ``/metrics`` until its incident is
counted there: the time from a webhook to its value on ``/metrics``. The daemon's CPU
seconds over the load (``/proc/<pid>/stat``) give events per CPU-second, the rate one
core would sustain were it the daemon's alone.

    python3 benchmarks/alertmanager_intake.py
    python3 benchmarks/alertmanager_intake.py --clients 8 --seconds 20 --auth hmac
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.daemon import exporter_env  # noqa: E402
from tests.support.net import free_port, http_get, wait_until  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
TOKEN = "bench-token"
SECRET = "bench-secret"
SERVICES = 20


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def config(state: Path, port: int, auth: str) -> dict[str, Any]:
    receiver: dict[str, Any] = {"matchers": ['severity=~"critical|page"']}
    if auth == "hmac":
        receiver["auth"] = {"hmac": {"secret": SECRET, "header": "X-Signature-256"}}
    else:
        receiver["auth"] = {"bearer_token": TOKEN}
    return {
        "server": {"listen_address": "127.0.0.1", "port": port},
        "state": {"path": str(state / "bench.db")},
        "metrics": {"min_refresh": "15s"},
        "services": [
            {"name": f"svc-{i:02d}", "team": "bench", "ci": [{"jenkins": f"bench/svc-{i:02d}"}]}
            for i in range(SERVICES)
        ],
        "sources": {"probe": {"enabled": False}},
        "incidents": {"alertmanager": receiver},
    }


BASE = 1_795_000_000.0  # 2026-11-17: the episodes' times, one a minute, 5 min long


def notification(n: int, service: str, status: str = "firing") -> bytes:
    """Group ``n``'s notification: firing, or resolved 5 min after it started."""
    labels = {"alertname": f"Alert{n}", "service": service, "severity": "critical"}
    starts = iso(BASE + 60 * n)
    ends = iso(BASE + 60 * n + 300) if status == "resolved" else "0001-01-01T00:00:00Z"
    return json.dumps(
        {
            "version": "4",
            "groupKey": f'{{}}:{{alertname="Alert{n}", service="{service}"}}',
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "exporter",
            "groupLabels": labels,
            "commonLabels": labels,
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [
                {
                    "status": status,
                    "labels": labels,
                    "annotations": {"summary": "bench"},
                    "startsAt": starts,
                    "endsAt": ends,
                    "generatorURL": "http://prometheus:9090/graph",
                    "fingerprint": f"{n:016x}",
                }
            ],
        }
    ).encode()


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def headers(body: bytes, auth: str) -> dict[str, str]:
    out = {"Content-Type": "application/json"}
    if auth == "hmac":
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        out["X-Signature-256"] = f"sha256={digest}"
    else:
        out["Authorization"] = f"Bearer {TOKEN}"
    return out


class Load:
    """``clients`` threads posting distinct notifications until stopped."""

    def __init__(self, port: int, clients: int, auth: str) -> None:
        self.port, self.clients, self.auth = port, clients, auth
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = self.errors = 0
        self.next = 0
        self.latencies: list[float] = []

    def ticket(self) -> int:
        with self.lock:
            self.next += 1
            return self.next

    def worker(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            n = self.ticket()
            # Each group fires, then resolves: half the events open an incident, half close one.
            group, status = n // 2, ("firing", "resolved")[n % 2]
            body = notification(group, f"svc-{group % SERVICES:02d}", status)
            started = time.perf_counter()
            try:
                conn.request("POST", "/webhooks/alertmanager", body, headers(body, self.auth))
                resp = conn.getresponse()
                resp.read()
                good = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                good = False
            elapsed = time.perf_counter() - started
            with self.lock:
                if good:
                    self.ok += 1
                    self.latencies.append(elapsed)
                else:
                    self.errors += 1
        conn.close()

    def run(self, seconds: float) -> float:
        threads = [threading.Thread(target=self.worker) for _ in range(self.clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(seconds)
        self.stop.set()
        for t in threads:
            t.join()
        return time.perf_counter() - started


def incidents_on_metrics(port: int, service: str) -> float:
    _, _, body = http_get(f"http://127.0.0.1:{port}/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("platform_incidents_total{") and f'service="{service}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def to_metrics(port: int, auth: str, probes: int, first: int) -> list[float]:
    """Seconds from each POST (on an idle daemon) to its incident counted on /metrics."""
    out = []
    for i in range(probes):
        service = f"svc-{i % SERVICES:02d}"
        before = incidents_on_metrics(port, service)
        body = notification(first + i, service)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        started = time.perf_counter()
        conn.request("POST", "/webhooks/alertmanager", body, headers(body, auth))
        assert conn.getresponse().status == 200
        conn.close()
        wait_until(
            lambda s=service, b=before: incidents_on_metrics(port, s) > b, timeout=30, interval=0.01
        )
        out.append(time.perf_counter() - started)
        time.sleep(0.6)  # idle again: the next probe does not ride on this one's refresh
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--auth", choices=("bearer", "hmac", "both"), default="both")
    args = parser.parse_args()
    modes = ("bearer", "hmac") if args.auth == "both" else (args.auth,)
    rows = []
    for auth in modes:
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(config(Path(tmp), port, auth)), encoding="utf-8")
            argv = [sys.executable, "-m", "exporter", "run", "--config", str(path)]
            if shutil.which("taskset"):
                argv = ["taskset", "-c", "0", *argv]
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=exporter_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_until(
                    lambda p=port: http_get(f"http://127.0.0.1:{p}/healthz")[0] == 200, timeout=30
                )
                load = Load(port, args.clients, auth)
                cpu = cpu_seconds(proc.pid)
                elapsed = load.run(args.seconds)
                cpu = cpu_seconds(proc.pid) - cpu
                time.sleep(2.0)
                lags = to_metrics(port, auth, args.probes, load.next)
                lat = sorted(load.latencies)
                rows.append(
                    (
                        auth,
                        load.ok,
                        load.ok / elapsed,
                        load.ok / cpu if cpu else 0.0,
                        lat[len(lat) // 2] * 1000 if lat else 0.0,
                        lat[int(len(lat) * 0.99)] * 1000 if lat else 0.0,
                        load.errors,
                        statistics.median(lags),
                        max(lags),
                    )
                )
            finally:
                proc.terminate()
                proc.wait(timeout=20)
    print(
        f"clients {args.clients}, {args.seconds:g} s of load, daemon on one core; {args.probes} probes"
    )
    with open("/proc/loadavg", encoding="ascii") as f:
        print(f"load average at the end: {' '.join(f.read().split()[:3])}")
    print(
        "| auth | accepted | events/s | events per daemon CPU-s | p50 | p99 | errors "
        "| webhook to /metrics median | max |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for auth, ok, rate, per_cpu, p50, p99, errors, lag, worst in rows:
        print(
            f"| {auth} | {ok:,} | {rate:,.0f} | {per_cpu:,.0f} | {p50:.1f} ms | {p99:.1f} ms "
            f"| {errors} | {lag:.2f} s | {worst:.2f} s |"
        )


if __name__ == "__main__":
    main()
