"""HTTP probe transports compared by measurement: CPU per probe, latency error, import RSS.

Each transport makes the same probe (a new connection, ``GET`` with
``Connection: close``, the whole body) against the loopback targets of
``tests/support/targets.py`` (``/delay/20``: 20 ms, timed by the target),
``--probes`` of them at ``--concurrency`` at once, in a fresh interpreter of
its own, so that its imports and its CPU are its own:

* ``h11-protocol``: what the exporter uses (``exporter.domains.probe.sources.http``),
  the whole probe: h11 on a socket whose sends and receives the kernel stamps, one
  deadline, its headers, redirects, TLS facts; the others do only the request and
  the answer;
* ``h11-streams``: h11 over ``asyncio.open_connection`` streams, read in the task
  (the exporter's transport before);
* ``raw-protocol``: an asyncio protocol with a minimal status line / header /
  ``Content-Length`` parser of its own (what hand-written parsing would save);
* ``aiohttp`` (if installed): one ``ClientSession`` with a ``force_close`` connector;
* ``httpx``: one ``AsyncClient`` (its pool, keep-alive off by ``Connection: close``).

Reported per transport: CPU ms per probe (``time.process_time``), the median and
p90 of (measured duration - 20 ms), and the RSS its import adds to a bare
interpreter with asyncio loaded.

    python3 benchmarks/probe_transports.py --probes 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRANSPORTS = ("h11-protocol", "h11-streams", "raw-protocol", "aiohttp", "httpx")
DELAY = 0.020
Probe = Callable[[], Awaitable[float]]


def rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def _request(url: str) -> tuple[str, int, str, bytes]:
    """(host, port, path, the request's bytes) of a plain http:// URL."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
    return parts.hostname or "", parts.port or 80, parts.path, head.encode()


def h11_protocol(url: str) -> Probe:
    from exporter.domains.probe.sources.http import HttpRequest, probe_http

    request = HttpRequest(url=url)

    async def probe() -> float:
        outcome = await probe_http(request)
        assert outcome.reason == "", outcome.reason
        return outcome.duration

    return probe


def h11_streams(url: str) -> Probe:
    import h11

    host, port, path, _ = _request(url)

    async def probe() -> float:
        t = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, port)
        conn = h11.Connection(our_role=h11.CLIENT)
        headers = [("Host", f"{host}:{port}"), ("Connection", "close")]
        writer.write(conn.send(h11.Request(method="GET", target=path, headers=headers)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        writer.transport.abort()
        return time.perf_counter() - t

    return probe


class _Raw(asyncio.Protocol):
    """Status line, headers, then Content-Length bytes of body; nothing else of HTTP."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = b""
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep or self.done.done():
            return
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if match and len(body) >= int(match.group(1)):
            self.done.set_result(time.perf_counter())


def raw_protocol(url: str) -> Probe:
    host, port, _, request = _request(url)

    async def probe() -> float:
        t = time.perf_counter()
        raw = _Raw(request)
        transport, _ = await asyncio.get_running_loop().create_connection(lambda: raw, host, port)
        end = await raw.done
        transport.abort()
        return end - t

    return probe


def aiohttp_probe(url: str) -> Probe:
    import aiohttp

    session: list[aiohttp.ClientSession] = []

    async def probe() -> float:
        if not session:
            connector = aiohttp.TCPConnector(force_close=True, limit=0)
            session.append(aiohttp.ClientSession(connector=connector))
        t = time.perf_counter()
        async with session[0].get(url) as resp:
            await resp.read()
        return time.perf_counter() - t

    return probe


def httpx_probe(url: str) -> Probe:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    client = httpx.AsyncClient(headers={"Connection": "close"}, limits=limits)

    async def probe() -> float:
        t = time.perf_counter()
        resp = await client.get(url)
        resp.raise_for_status()
        return time.perf_counter() - t

    return probe


MAKERS: dict[str, Callable[[str], Probe]] = {
    "h11-protocol": h11_protocol,
    "h11-streams": h11_streams,
    "raw-protocol": raw_protocol,
    "aiohttp": aiohttp_probe,
    "httpx": httpx_probe,
}


# The library each transport imports (the RSS it adds); the exporter's module also
# imports the probe domain's package (its settings, store, metrics), not counted here.
LIBRARIES = {"h11-protocol": "h11", "h11-streams": "h11", "aiohttp": "aiohttp", "httpx": "httpx"}


def child(name: str, url: str, probes: int, concurrency: int) -> None:
    """In a fresh interpreter: import one transport, run the probes, print one JSON line."""
    import importlib

    bare = rss_mib()
    if name in LIBRARIES:
        importlib.import_module(LIBRARIES[name])
    imported = rss_mib()
    probe = MAKERS[name](url)

    async def run() -> tuple[list[float], float]:
        places = asyncio.Semaphore(concurrency)

        async def one() -> float:
            async with places:
                return await probe()

        await asyncio.gather(*(one() for _ in range(concurrency)))  # warm-up
        cpu = time.process_time()
        durations = await asyncio.gather(*(one() for _ in range(probes)))
        return durations, time.process_time() - cpu

    durations, cpu = asyncio.run(run())
    errors = sorted(d - DELAY for d in durations)
    print(json.dumps({
        "transport": name,
        "cpu_ms_per_probe": cpu / probes * 1000,
        "median_error_ms": statistics.median(errors) * 1000,
        "p90_error_ms": errors[int(len(errors) * 0.9)] * 1000,
        "import_rss_mib": imported - bare,
        "rss_mib": rss_mib(),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.probes, args.concurrency)
        return
    from tests.support.targets import TargetServer

    targets = TargetServer(workers=2).start()
    rows = []
    try:
        for name in TRANSPORTS:
            if (
                name == "aiohttp"
                and subprocess.run(
                    [sys.executable, "-c", "import aiohttp"], capture_output=True
                ).returncode
            ):
                print(f"{name}: not installed, left out")
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, "--url", f"{targets.url}/delay/20",
                 "--probes", str(args.probes), "--concurrency", str(args.concurrency)],
                capture_output=True, text=True, check=True, cwd=ROOT,
            )  # fmt: skip
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        targets.stop()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"{args.probes} probes of a 20 ms target, {args.concurrency} at once; "
          f"load average {' '.join(load)}")  # fmt: skip
    print()
    print("| transport | CPU ms per probe | median error | p90 error | RSS its import adds |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['transport']} | {r['cpu_ms_per_probe']:.3f} | {r['median_error_ms']:+.2f} ms"
              f" | {r['p90_error_ms']:+.2f} ms | {r['import_rss_mib']:.1f} MiB |")  # fmt: skip


if __name__ == "__main__":
    main()
