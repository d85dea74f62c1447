"""Webhook intake benchmark: signed GitHub deployment events over HTTP into the daemon.

A child process, pinned to one CPU, runs the real daemon's server and webhook intake
(``sources.github.webhook`` on, a state file on disk, no polls). The parent, on the
other CPU, sends ``--events`` distinct ``deployment_status`` events (each a finished
production deployment of one of ``--repos`` repos, ~5 kB, as the simulated GitHub
serves them), every one signed with HMAC-SHA256, over ``--connections`` keep-alive
connections as fast as the server answers. It reports:

* sustained events per second (each verified, parsed and committed), and that
  ``platform_deployments_total`` on ``/metrics`` counts every one of them, once;
* the time from the last event of the burst to its count on ``/metrics``;
* with the server idle, the time from one webhook to its value on ``/metrics``
  (``--probes`` times), against the refresh interval (``metrics.min_refresh``).

    python benchmarks/webhooks.py                      # 10,000 events, 200 repos
    python benchmarks/webhooks.py --events 20000 --repos 50 --connections 4

Targets: at least 500 events/s on one core (wall clock, and per CPU-second the server
used: on a shared machine the second says what one core does); every value on /metrics
within one refresh interval.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.config import Config  # noqa: E402
from exporter.daemon import WEBHOOK_LONGEST, Daemon  # noqa: E402
from exporter.domains.delivery.sandbox import github as gh_fake  # noqa: E402
from exporter.domains.delivery.sandbox.data import FakeDeployment, FakeRepo  # noqa: E402

SECRET = "benchmark-webhook-secret"
NOW = 1_760_000_000.0
SERVER_CPU, CLIENT_CPU = 0, 1


def config(state: Path, repos: int) -> Config:
    return Config(
        services=[
            {"name": f"svc-{r:03d}", "team": "t", "ci": [{"github": f"bench/svc-{r:03d}"}]}
            for r in range(repos)
        ],
        sources={
            "probe": {"enabled": False},
            "github": {"token": "ghp_unused", "webhook": {"secret": SECRET}},
        },
        server={"listen_address": "127.0.0.1", "port": 0},
        state={"path": str(state)},
    )


def serve(state: str, repos: int, settle: float | None, ports: Any, stop: Any) -> None:
    """The child: the daemon's server and intake on one CPU, until ``stop`` is set."""
    os.sched_setaffinity(0, {SERVER_CPU})
    if settle is not None:
        import exporter.daemon

        exporter.daemon.WEBHOOK_SETTLE = settle  # the what-if of --settle

    async def run() -> None:
        daemon = Daemon(config(Path(state), repos), clock=lambda: NOW)
        server = daemon.start_server()
        ports.put((server.port, daemon.config.metrics.min_refresh))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await daemon.shutdown()

    asyncio.run(run())


def event(n: int, repos: int) -> tuple[bytes, bytes]:
    """(body, the HTTP request carrying it) of event ``n``: deployment 10_000 + n."""
    repo = FakeRepo(f"bench/svc-{n % repos:03d}", 500 + n % repos, f"svc-{n % repos:03d}")
    sha = hashlib.sha1(str(n).encode()).hexdigest()
    statuses = [(n * 10 + 1, "success", NOW - 60)]
    dep = FakeDeployment(10_000 + n, sha, "production", NOW - 120, statuses)
    body = json.dumps(
        {
            "action": "created",
            "deployment_status": gh_fake.deployment_status(repo, dep, statuses[0]),
            "deployment": gh_fake.deployment(repo, dep),
            "repository": gh_fake.repository(repo),
            "sender": gh_fake.user("deploy-bot", 4242, "Bot"),
        }
    ).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    head = (
        "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "User-Agent: GitHub-Hookshot/bench\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: deployment_status\r\nX-GitHub-Delivery: bench-{n}\r\n"
        f"X-Hub-Signature-256: sha256={digest}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return body, head.encode() + body


class Client:
    """One keep-alive connection sending prepared requests, reading each answer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, request: bytes) -> int:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self._recv()
        self.buffer = rest[length:]
        return int(head.split(b" ", 2)[1])

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def deployments_on_metrics(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("platform_deployments_total{")
    )


def until_count(port: int, want: float, limit: float) -> float | None:
    """Seconds until /metrics counts ``want`` deployments (None past ``limit``)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if deployments_on_metrics(port) >= want:
            return time.perf_counter() - started
        time.sleep(0.01)
    return None


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def burst(port: int, requests: list[bytes], connections: int) -> tuple[float, dict[int, int]]:
    """Send every request over ``connections`` connections; (seconds, statuses)."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    shares = [requests[i::connections] for i in range(connections)]

    def work(share: list[bytes]) -> None:
        client, seen = Client(port), {}
        try:
            for request in share:
                status = client.send(request)
                seen[status] = seen.get(status, 0) + 1
        finally:
            client.close()
        with lock:
            for status, count in seen.items():
                statuses[status] = statuses.get(status, 0) + count

    threads = [threading.Thread(target=work, args=(s,)) for s in shares]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, statuses


def probe(port: int, prepared: list[tuple[bytes, bytes]], n: int, refresh: float) -> float | None:
    """Seconds from sending event ``n`` to its count on /metrics (None: not within 4
    refresh intervals)."""
    client = Client(port)
    sent = time.perf_counter()
    assert client.send(prepared[n][1]) == 200
    client.close()
    waited = until_count(port, n + 1, 4 * refresh)
    return None if waited is None else time.perf_counter() - sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repos", type=int, default=200)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--lone", type=int, default=5)
    parser.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds a push's refresh waits (default: the daemon's WEBHOOK_SETTLE)",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CPU})
    lone_from = args.events + args.probes
    prepared = [event(n, args.repos) for n in range(lone_from + args.lone)]
    size = statistics.mean(len(body) for body, _ in prepared)
    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    with tempfile.TemporaryDirectory() as tmp:
        child = ctx.Process(
            target=serve, args=(f"{tmp}/state.db", args.repos, args.settle, ports, stop)
        )
        child.start()
        try:
            port, refresh = ports.get(timeout=60)
            assert child.pid is not None
            cpu_before = cpu_seconds(child.pid)
            seconds, statuses = burst(
                port, [r for _, r in prepared[: args.events]], args.connections
            )
            cpu = cpu_seconds(child.pid) - cpu_before
            settle = until_count(port, args.events, 4 * refresh)
            counted = deployments_on_metrics(port)
            probes = [probe(port, prepared, n, refresh) for n in range(args.events, lone_from)]
            lone = []
            for n in range(lone_from, lone_from + args.lone):
                time.sleep(WEBHOOK_LONGEST + 1.0)  # past any pacing of the last render
                lone.append(probe(port, prepared, n, refresh))
        finally:
            stop.set()
            child.join(30)
    rate = statuses.get(200, 0) / seconds
    print(
        f"{args.events:,} signed deployment_status events ({size / 1e3:.1f} kB each) over "
        f"{args.connections} keep-alive connections; {args.repos} repos; server on 1 CPU; "
        f"push refresh settle {'default' if args.settle is None else f'{args.settle:g} s'}\n"
    )
    print("| measure | value | target |")
    print("|---|---:|---:|")
    print(f"| events accepted | {statuses.get(200, 0):,} of {args.events:,} | all |")
    print(
        f"| other answers | {({k: v for k, v in statuses.items() if k != 200}) or 'none'} | none |"
    )
    print(
        f"| sustained events/s (verified, parsed, committed), wall clock | {rate:,.0f} | >= 500 |"
    )
    per_cpu = statuses.get(200, 0) / cpu if cpu > 0 else float("inf")
    print(
        f"| events per CPU-second of the server ({cpu:.1f} s of CPU in {seconds:.1f} s) "
        f"| {per_cpu:,.0f} | >= 500 |"
    )
    print(f"| deployments counted on /metrics after the burst | {counted:,.0f} | {args.events:,} |")
    shown = "not within 4 refreshes" if settle is None else f"{settle:.2f} s"
    print(f"| last event of the burst to /metrics | {shown} | <= {refresh:g} s |")
    done = [p for p in probes if p is not None]
    if done:
        print(
            f"| one webhook to /metrics, each sent once the one before is shown (p50 / max "
            f"of {len(probes)}) | {statistics.median(done):.2f} s / {max(done):.2f} s "
            f"| <= {refresh:g} s |"
        )
    alone = [p for p in lone if p is not None]
    if alone:
        print(
            f"| one webhook to /metrics, alone ({WEBHOOK_LONGEST + 1:g} s after the last "
            f"render; p50 / max of {len(lone)}) | {statistics.median(alone):.2f} s / "
            f"{max(alone):.2f} s | <= {refresh:g} s |"
        )
    ok = (
        statuses.get(200, 0) == args.events
        and min(rate, per_cpu) >= 500
        and counted == args.events
        and settle is not None
        and settle <= refresh
        and len(done) == len(probes)
        and len(alone) == len(lone)
        and max([*done, *alone], default=0.0) <= refresh
    )
    print(f"\ntargets: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
