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
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

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


class _Target(asyncio.Protocol):
    """One connection: read the request head, answer it (see the module docstring).

    A protocol rather than a stream and a task per connection: the clock of a
    ``/delay`` starts in the callback that completes the request head and the
    answer is written from the loop's timer callback, with no task between.
    """

    def __init__(self, log: TextIO | None) -> None:
        self.log = log
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.arrived = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.arrived:
            return  # one request per connection
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        self.arrived = time.perf_counter()
        try:
            self._answer(self.head.split(b" ", 2)[1].decode().strip("/").split("/"))
        except (IndexError, ValueError):
            self._send(_response(404, b"not found"))

    def _answer(self, parts: list[str]) -> None:
        loop = asyncio.get_running_loop()
        if parts[0] == "delay":
            delay = int(parts[1]) / 1000
            loop.call_at(loop.time() + delay - (time.perf_counter() - self.arrived), self._late)
        elif parts[0] == "drip":
            pieces, gap = int(parts[1]), int(parts[2]) / 1000
            self._write(_head(200, pieces))
            for i in range(pieces):
                loop.call_later(gap * (i + 1), self._write, b"x")
            loop.call_later(gap * pieces, self._close)
        elif parts[0] == "status":
            self._send(_response(int(parts[1]), b"status"))
        elif parts[0] == "redirect":
            n = int(parts[1])
            location = f"Location: /redirect/{n - 1}\r\n"
            self._send(_response(302, b"", location) if n > 0 else _response(200, b"ok"))
        else:
            self._send(_response(404, b"not found"))

    def _late(self) -> None:
        """The ``/delay`` answer; the time it really took is logged for the tests that ask."""
        self._send(_response(200, b"ok"))
        if self.log is not None:
            path = self.head.split(b" ", 2)[1].decode()
            self.log.write(f"{path} {time.perf_counter() - self.arrived:.6f}\n")
            self.log.flush()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _send(self, data: bytes) -> None:
        self._write(data)
        self._close()


async def _main(ports: list[int], log_dir: str | None) -> None:
    loop = asyncio.get_running_loop()
    log = open(Path(log_dir) / f"answers-{os.getpid()}", "a") if log_dir else None  # noqa: SIM115
    servers = [
        await loop.create_server(
            lambda: _Target(log), "127.0.0.1", p, backlog=4096, reuse_port=True
        )
        for p in ports
    ]
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.gather(*(s.serve_forever() for s in servers))


class TargetServer:
    """The target process; ``urls`` are its base URLs, one per port."""

    def __init__(self, ports: int = 1, workers: int = 1, log_answers: bool = False) -> None:
        from tests.support.net import free_port

        self.ports = [free_port() for _ in range(ports)]
        # Where each process logs how long its /delay answers really took (see answer_times).
        self.log_dir = tempfile.mkdtemp(prefix="targets-") if log_answers else None
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
                [
                    sys.executable,
                    "-m",
                    "tests.support.targets",
                    *(["--log", self.log_dir] if self.log_dir else []),
                    *map(str, self.ports),
                ],
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

    def answer_times(self) -> dict[str, list[float]]:
        """Per ``/delay`` path, the seconds each answer really took, from the request head's
        arrival to the answer's write, as the target processes measured them."""
        out: dict[str, list[float]] = {}
        for log in self._logs():
            for line in log.read_text().splitlines():
                path, seconds = line.split()
                out.setdefault(path, []).append(float(seconds))
        return out

    def clear_answer_times(self) -> None:
        for log in self._logs():
            log.write_text("")

    def _logs(self) -> list[Path]:
        return sorted(Path(self.log_dir).glob("answers-*")) if self.log_dir else []

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=5)
        if self.log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", help="a folder to log each /delay answer's real time in")
    parser.add_argument("ports", nargs="+", type=int)
    args = parser.parse_args()
    asyncio.run(_main(args.ports, args.log))
