"""Loopback probe targets with latencies the test fixes, in a process of their own.

``TargetServer(ports=n).start()`` runs ``python3 -m tests.support.targets`` on
``n`` free loopback ports (its own processes and event loops, ``workers`` of them
sharing each port, so the prober's work never delays the target's timers, as it
would sharing the GIL). Every answer is
an HTTP/1.1 ``Connection: close`` response:

* ``GET /delay/<ms>``: ``200 ok`` that many milliseconds after the request's
  last byte arrived, as the kernel stamped it;
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
import contextlib
import os
import shutil
import socket
import struct
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


# <linux/net_tstamp.h>: software send and receive stamps, stamps only, send stamps by offset.
_SO_TIMESTAMPING = 37
_RX_STAMPING = (1 << 3) | (1 << 4)
_STAMPING = _RX_STAMPING | (1 << 1) | (1 << 7) | (1 << 11)
_TIMESPEC = struct.Struct("@ll")
# How early a logged /delay answer's timer fires, to wait out the rest exactly (see _late).
_SPIN = 0.0012


def _kernel_stamp(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPING:
            seconds, nanos = _TIMESPEC.unpack_from(payload)
            if seconds or nanos:
                return int(seconds) * 1_000_000_000 + int(nanos)
    return None


class _KernelClock:
    """Maps the kernel's packet stamps (CLOCK_REALTIME, which libfaketime cannot fake) onto
    ``perf_counter``: a datagram to itself is stamped by the kernel inside ``sendto``."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _RX_STAMPING)
        self.offset = 0
        self.calibrated = -1e9

    def perf_ns(self, kernel: int) -> int:
        """The ``perf_counter_ns`` reading of a kernel stamp (recalibrated once a second)."""
        if time.perf_counter() - self.calibrated > 1.0:
            self._calibrate()
        return kernel - self.offset

    def _calibrate(self) -> None:
        best: tuple[int, int] | None = None
        for _ in range(5):
            before = time.perf_counter_ns()
            self.udp.sendto(b"t", self.udp.getsockname())
            after = time.perf_counter_ns()
            _data, ancillary, _flags, _addr = self.udp.recvmsg(16, 256)
            kernel = _kernel_stamp(ancillary)
            if kernel is not None and (best is None or after - before < best[0]):
                best = (after - before, kernel - (before + after) // 2)
        if best is not None:
            self.offset = best[1]
        self.calibrated = time.perf_counter()


class _Target:
    """One connection: read the request head, answer it (see the module docstring).

    A raw socket rather than an asyncio transport, read with the kernel's receive
    stamps: a ``/delay``'s clock starts when the request's last byte arrived (not
    when this process's loop got to it, which under load is milliseconds later),
    and what it logs is the kernel's own time from that arrival to the answer's
    leaving, the answer's real latency as the network sees it.
    """

    def __init__(self, sock: socket.socket, clock: _KernelClock, log: TextIO | None) -> None:
        self.sock = sock
        self.clock = clock
        self.log = log
        self.loop = asyncio.get_running_loop()
        self.head = b""
        self.arrived: int | None = None  # the kernel's stamp of the head's last bytes
        self.seen = 0  # perf_counter_ns when this process read them
        self.due = 0  # perf_counter_ns when a /delay answer is due
        self.sent = 0
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _STAMPING)
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(65536, 256)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        if not data:
            self._close()
            return
        if self.arrived is not None:
            return  # one request per connection
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        self.seen = time.perf_counter_ns()
        self.arrived = _kernel_stamp(ancillary)
        try:
            self._answer(self.head.split(b" ", 2)[1].decode().strip("/").split("/"))
        except (IndexError, ValueError):
            self._send(_response(404, b"not found"))

    def _answer(self, parts: list[str]) -> None:
        loop = self.loop
        if parts[0] == "delay":
            delay = int(parts[1]) / 1000
            start = self.seen if self.arrived is None else self.clock.perf_ns(self.arrived)
            self.due = start + int(parts[1]) * 1_000_000
            late = (time.perf_counter_ns() - start) / 1e9
            early = _SPIN if self.log is not None else 0.0
            loop.call_at(loop.time() + delay - late - early, self._late)
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
        """The ``/delay`` answer; the time it really took is logged for the tests that ask.

        For them the loop's timer fires a little early and the rest is waited out on
        the CPU: the loop's epoll wait rounds up to whole milliseconds, up to 1 ms late.
        """
        while time.perf_counter_ns() < self.due and self.log is not None:
            pass
        self._write(_response(200, b"ok"))
        if self.log is not None:
            left = self._sent_stamp()
            path = self.head.split(b" ", 2)[1].decode()
            if left is not None and self.arrived is not None:
                took = left - self.arrived
            else:  # no kernel stamps: from when this process read the request
                took = time.perf_counter_ns() - self.seen
            self.log.write(f"{path} {took / 1e9:.6f}\n")
            self.log.flush()
        self._close()

    def _sent_stamp(self) -> int | None:
        """The kernel's stamp of the last byte written (on loopback, queued within send())."""
        stamp = None
        while True:
            try:
                _d, ancillary, _f, _a = self.sock.recvmsg(0, 256, socket.MSG_ERRQUEUE)
            except OSError:
                return stamp
            stamp = _kernel_stamp(ancillary) or stamp

    def _write(self, data: bytes) -> None:
        if self.sock.fileno() < 0:
            return
        try:
            self.sock.sendall(data)  # small answers: the socket's buffer takes them at once
        except OSError:
            self._close()
            return
        if self.log is None:
            self._sent_stamp()  # drained, or the stamps keep the socket polling ready

    def _close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    def _send(self, data: bytes) -> None:
        self._write(data)
        self._close()


def _ahead_of_the_prober() -> None:
    """A remote server's timers do not wait for the prober's CPU (nor for whatever else
    loads this machine): where allowed, the targets run at a real-time priority (they
    only wait on timers and answer), else at a raised one."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return
    with contextlib.suppress(OSError):
        os.nice(-10)


async def _main(ports: list[int], log_dir: str | None) -> None:
    _ahead_of_the_prober()
    loop = asyncio.get_running_loop()
    log = open(Path(log_dir) / f"answers-{os.getpid()}", "a") if log_dir else None  # noqa: SIM115
    clock = _KernelClock()
    listeners = []
    for port in ports:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(4096)
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), _accept, listener, clock, log)
        listeners.append(listener)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def _accept(listener: socket.socket, clock: _KernelClock, log: TextIO | None) -> None:
    for _ in range(64):
        try:
            sock, _addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        _Target(sock, clock, log)


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
        arrival to the answer's leaving, as the kernel stamped both."""
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
