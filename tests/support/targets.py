"""Loopback probe targets with latencies the test fixes, in a process of their own.

``TargetServer(ports=n).start()`` runs ``python3 -m tests.support.targets`` on
``n`` free loopback ports (its own processes and event loops, ``workers`` of them
sharing each port, so the prober's work never delays the target's timers, as it
would sharing the GIL). Every answer is
an HTTP/1.1 ``Connection: close`` response:

* ``GET /delay/<ms>``: ``200 ok`` after exactly that many milliseconds;
* ``GET /drip/<pieces>/<gap_ms>``: ``200`` with a ``Content-Length`` of
  ``pieces`` bytes, sent one byte every ``gap_ms`` milliseconds (a body that
  trickles in, each gap shorter than the probe's timeout);
* ``GET /status/<code>``: that status at once;
* ``GET /redirect/<n>``: ``302`` to ``/redirect/<n-1>``, and ``/redirect/0`` is ``200``.

The benchmark uses the same server for its 1,000 targets.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _head(status: int, length: int, extra: str = "") -> bytes:
    reason = {200: "OK", 302: "Found", 404: "Not Found", 503: "Service Unavailable"}.get(
        status, "Status"
    )
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: {length}\r\n"
        f"Content-Type: text/plain\r\nConnection: close\r\n{extra}\r\n"
    ).encode()


def _response(status: int, body: bytes, extra: str = "") -> bytes:
    return _head(status, len(body), extra) + body


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        parts = path.strip("/").split("/")
        if parts[0] == "delay":
            await asyncio.sleep(int(parts[1]) / 1000)
            writer.write(_response(200, b"ok"))
        elif parts[0] == "drip":
            pieces, gap = int(parts[1]), int(parts[2]) / 1000
            writer.write(_head(200, pieces))
            for _ in range(pieces):
                await writer.drain()
                await asyncio.sleep(gap)
                writer.write(b"x")
        elif parts[0] == "status":
            writer.write(_response(int(parts[1]), b"status"))
        elif parts[0] == "redirect":
            n = int(parts[1])
            if n > 0:
                writer.write(_response(302, b"", f"Location: /redirect/{n - 1}\r\n"))
            else:
                writer.write(_response(200, b"ok"))
        else:
            writer.write(_response(404, b"not found"))
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
        pass
    finally:
        writer.close()


async def _main(ports: list[int]) -> None:
    servers = [
        await asyncio.start_server(_serve, "127.0.0.1", p, backlog=4096, reuse_port=True)
        for p in ports
    ]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*(s.serve_forever() for s in servers))


class TargetServer:
    """The target process; ``urls`` are its base URLs, one per port."""

    def __init__(self, ports: int = 1, workers: int = 1) -> None:
        from tests.support.net import free_port

        self.ports = [free_port() for _ in range(ports)]
        # Processes sharing each port (SO_REUSEPORT: the kernel spreads connections over them).
        self.workers = workers
        self.procs: list[subprocess.Popen[str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def start(self) -> TargetServer:
        for _ in range(self.workers):
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.targets", *map(str, self.ports)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                self.stop()
                raise RuntimeError("the target server did not start")
        return self

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ports", nargs="+", type=int)
    asyncio.run(_main(parser.parse_args().ports))
