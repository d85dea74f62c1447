"""Slow, idle and surplus clients never delay a scrape, over plain HTTP and over TLS.

The server runs with short timeouts here (idle 3 s, read 2.5 s) so the test can watch
it free the connections; the defaults are 30 s and 10 s.
"""

from __future__ import annotations

import http.client
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily

from exporter.core.server import WORKER_THREADS, MetricsServer
from exporter.core.settings import ServerConfig
from exporter.core.snapshot import Snapshot, SnapshotHolder
from tests.support.tls import self_signed

IDLE_TIMEOUT = 3.0
# Not a whole number of seconds: the server's deadline falls between two trickled bytes.
READ_TIMEOUT = 2.5


def snapshot() -> Snapshot:
    g = GaugeMetricFamily("platform_test_ratio", "A test ratio.", labels=["service"])
    for i in range(200):
        g.add_metric([f"svc{i}"], i / 200)
    return Snapshot.render([g], 1.0)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@dataclass
class Served:
    server: MetricsServer
    tls: ssl.SSLContext | None  # the client context, for https

    def connect(self, timeout: float = 5.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=timeout)
        if self.tls is not None:
            return self.tls.wrap_socket(sock, server_hostname="127.0.0.1")
        return sock

    def scrape(self, headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
        """(status, body, seconds) of one GET /metrics on a new connection."""
        t0 = time.monotonic()
        conn: http.client.HTTPConnection
        if self.tls is not None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.server.port, timeout=5, context=self.tls
            )
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        try:
            conn.request("GET", "/metrics", headers=headers or {})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        return resp.status, body, time.monotonic() - t0


def serve(certificate: tuple[Path, Path], tls: bool, **settings: Any) -> Served:
    extra: dict[str, Any] = {"idle_timeout": IDLE_TIMEOUT, "read_timeout": READ_TIMEOUT}
    client = None
    if tls:
        extra["tls"] = {"cert_file": certificate[0], "key_file": certificate[1]}
        client = ssl.create_default_context(cafile=str(certificate[0]))
    config = ServerConfig(listen_address="127.0.0.1", port=0, **{**extra, **settings})
    server = MetricsServer(config, SnapshotHolder(snapshot()), lambda: True)
    server.start()
    return Served(server, client)


@pytest.fixture(params=["http", "https"])
def served(request: pytest.FixtureRequest, certificate: tuple[Path, Path]) -> Iterator[Served]:
    s = serve(certificate, request.param == "https")
    yield s
    s.server.stop()


@dataclass
class Trickler:
    """Slowloris: connections that send a request head one byte per second, never ending it."""

    sockets: list[socket.socket]
    started: float = field(default_factory=time.monotonic)
    closed_at: dict[int, float] = field(default_factory=dict)
    received: dict[int, bytes] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    HEAD = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096

    def run(self) -> None:
        for i in range(len(self.HEAD)):
            if self.stop.is_set() or len(self.closed_at) == len(self.sockets):
                return
            for n, sock in enumerate(self.sockets):
                if n in self.closed_at:
                    continue
                self._poll(n, sock)
                if n not in self.closed_at:
                    try:
                        sock.send(self.HEAD[i : i + 1])
                    except OSError:  # closed since: read what it answered first
                        self._poll(n, sock)
                        self.closed_at.setdefault(n, time.monotonic())
            self._watch(1.0)

    def _watch(self, seconds: float) -> None:
        """Read what the server sends for ``seconds``, noting when it closes each socket."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            open_ = {s: n for n, s in enumerate(self.sockets) if n not in self.closed_at}
            if not open_:
                return
            readable, _, _ = select.select(list(open_), [], [], left)
            for sock in readable:
                self._poll(open_[sock], sock)

    def _poll(self, n: int, sock: socket.socket) -> None:
        readable = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if not readable:
            readable = bool(select.select([sock], [], [], 0)[0])
        if not readable:
            return
        sock.settimeout(0)  # a TLS record that is not data (a session ticket) must not block
        try:
            data = sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return
        except OSError:
            data = b""
        finally:
            sock.settimeout(5)
        self.received[n] = self.received.get(n, b"") + data
        if not data or b"\r\n\r\n" in self.received[n]:
            self.closed_at[n] = time.monotonic()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread


def close_all(sockets: list[socket.socket]) -> None:
    for s in sockets:
        s.close()


def closed_by_server(sock: socket.socket, timeout: float) -> float | None:
    """When the server closed ``sock`` (EOF seen), waiting up to ``timeout``; None if open."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except (TimeoutError, ssl.SSLWantReadError):
        return None
    except OSError:
        return time.monotonic()
    while data:  # a 408 (or TLS alert) before the end
        try:
            data = sock.recv(65536)
        except OSError:
            break
    return time.monotonic()


class TestSlowClients:
    def test_idle_and_slowloris_clients_do_not_delay_a_scrape(self, served: Served) -> None:
        """200 connections that send nothing and 20 that send a header byte a second:
        meanwhile every scrape on a new connection answers within 1 s."""
        idle = [socket.create_connection(("127.0.0.1", served.server.port)) for _ in range(200)]
        slow = Trickler([served.connect() for _ in range(20)])
        thread = slow.start()
        try:
            times = []
            deadline = time.monotonic() + 1.5 * READ_TIMEOUT
            while time.monotonic() < deadline:
                status, body, seconds = served.scrape()
                assert status == 200 and body == served.server.holder.current.text
                times.append(seconds)
                time.sleep(0.2)
            assert len(times) >= 5
            assert max(times) < 1.0, times
        finally:
            slow.stop.set()
            thread.join(5)
            close_all(idle + slow.sockets)

    def test_slow_connections_are_freed_after_their_timeout(self, served: Served) -> None:
        """A request head still unfinished after the read timeout is answered 408 and
        closed; a connection with no request is closed at the idle timeout (over TLS, a
        connection that never starts its handshake, at the read timeout)."""
        opened = time.monotonic()
        idle = [socket.create_connection(("127.0.0.1", served.server.port)) for _ in range(50)]
        slow = Trickler([served.connect() for _ in range(20)])
        thread = slow.start()
        try:
            thread.join(READ_TIMEOUT + 4)
            assert sorted(slow.closed_at) == list(range(20)), "slowloris connections left open"
            for n, at in slow.closed_at.items():
                assert READ_TIMEOUT - 0.1 <= at - slow.started <= READ_TIMEOUT + 2.0
                assert slow.received[n].startswith(b"HTTP/1.1 408 ")
            expected = READ_TIMEOUT if served.tls else IDLE_TIMEOUT
            for sock in idle:
                at = closed_by_server(sock, expected + 3)
                assert at is not None, "an idle connection was left open"
                assert expected - 0.1 <= at - opened <= expected + 2.5
            wait_for(lambda: served.server.active == 0, 3)
        finally:
            slow.stop.set()
            close_all(idle + slow.sockets)

    def test_a_keep_alive_connection_is_closed_when_idle(self, served: Served) -> None:
        sock = served.connect()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = time.monotonic()
        at = closed_by_server(sock, IDLE_TIMEOUT + 3)
        assert at is not None
        assert IDLE_TIMEOUT - 0.1 <= at - answered <= IDLE_TIMEOUT + 2
        sock.close()


def wait_for(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class TestBounds:
    @pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
    def test_past_max_connections_the_answer_is_503(
        self, certificate: tuple[Path, Path], tls: bool
    ) -> None:
        s = serve(certificate, tls, max_connections=10)
        held = [s.connect() for _ in range(10)]
        try:
            wait_for(lambda: s.server.active == 10, 3)
            status, _, seconds = s.scrape()
            assert status == 503 and seconds < 1.0
            close_all(held)
            held = []
            wait_for(lambda: s.server.active == 0, 3)
            assert s.scrape()[0] == 200
        finally:
            close_all(held)
            s.server.stop()

    def test_connections_cost_no_threads(self, certificate: tuple[Path, Path]) -> None:
        """200 open connections and a scrape: no thread beyond the loop's and the
        bounded worker pool's."""
        s = serve(certificate, False)
        before = threading.active_count()
        held = [s.connect() for _ in range(200)]
        try:
            wait_for(lambda: s.server.active == 200, 10)
            assert s.scrape()[0] == 200
            assert threading.active_count() <= before + WORKER_THREADS
        finally:
            close_all(held)
            s.server.stop()

    @pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
    def test_listen_backlog_is_at_least_128(self, certificate: tuple[Path, Path]) -> None:
        s = serve(certificate, False)
        try:
            out = subprocess.run(
                ["ss", "-Hltn", f"sport = :{s.server.port}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            # State Recv-Q Send-Q ...: for a listening socket Send-Q is its backlog.
            assert int(out[2]) == 1024
        finally:
            s.server.stop()
