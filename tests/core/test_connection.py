"""The server's HTTP/1.1 framing (RFC 9112): what it accepts, what it refuses, keep-alive.

Each case writes raw bytes to a real server on loopback and reads the raw answer.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from typing import Any, cast

import pytest
from prometheus_client.core import GaugeMetricFamily

from exporter.core.connection import (
    BadRequest,
    Limits,
    Pieces,
    Response,
    parse_head,
    write_response,
)
from exporter.core.server import MetricsServer
from exporter.core.settings import ServerConfig
from exporter.core.snapshot import Snapshot, SnapshotHolder


@pytest.fixture(scope="module")
def server() -> Iterator[MetricsServer]:
    g = GaugeMetricFamily("platform_test_ratio", "A test ratio.")
    g.add_metric([], 0.5)
    config = ServerConfig(listen_address="127.0.0.1", port=0, read_timeout=2)
    srv = MetricsServer(config, SnapshotHolder(Snapshot.render([g], 1.0)), lambda: True)
    seen: list[tuple[str, bytes]] = []

    def echo(method: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
        seen.append((method, body))
        return 200, "text/plain", b"got " + body

    srv.add_route("/hook", echo)
    srv.start()
    yield srv
    srv.stop()


def exchange(server: MetricsServer, data: bytes) -> bytes:
    """Send ``data``, then read until the server closes (or 3 s of silence)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def statuses(answer: bytes) -> list[int]:
    """The status of every response in ``answer`` (bodies here never hold a status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


class TestParseHead:
    def test_a_request_head(self) -> None:
        method, target, headers, keep_alive = parse_head(
            b"get /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: x\r\naccept:  y \r\n\r\n"
        )
        assert (method, target, keep_alive) == ("GET", "/metrics?x=1", True)
        assert headers == {"host": "a", "accept": "x, y"}

    @pytest.mark.parametrize(
        ("head", "keep_alive"),
        [
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", False),
            (b"GET / HTTP/1.0\r\n\r\n", False),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
        ],
    )
    def test_keep_alive(self, head: bytes, keep_alive: bool) -> None:
        assert parse_head(head)[3] is keep_alive

    @pytest.mark.parametrize(
        "head",
        [
            b"GET /\r\n\r\n",  # no version
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",  # no Host
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  # obsolete line folding
            b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
            b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        ],
    )
    def test_refused(self, head: bytes) -> None:
        with pytest.raises(BadRequest) as caught:
            parse_head(head)
        assert caught.value.status == 400


class TestOverTheWire:
    def test_pipelined_requests_are_answered_in_order(self, server: MetricsServer) -> None:
        one = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
        last = b"GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        answer = exchange(server, one + one + last)
        assert statuses(answer) == [200, 200, 404]
        assert answer.count(b"Connection: close") == 1

    def test_a_content_length_body_reaches_the_route(self, server: MetricsServer) -> None:
        answer = exchange(
            server,
            b"POST /hook HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        assert statuses(answer) == [200] and answer.endswith(b"got hello")

    def test_a_chunked_body_reaches_the_route(self, server: MetricsServer) -> None:
        body = b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nX-Trailer: t\r\n\r\n"
        answer = exchange(
            server,
            b"POST /hook HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + body,
        )
        assert statuses(answer) == [200] and answer.endswith(b"got hello!")

    def test_expect_100_continue(self, server: MetricsServer) -> None:
        answer = exchange(
            server,
            b"POST /hook HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\nhi",
        )
        assert statuses(answer) == [100, 200]

    @pytest.mark.parametrize(
        ("data", "status"),
        [
            # Both framings at once: the classic request-smuggling shape.
            (b"POST /hook HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            (b"POST /hook HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST /hook HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\n", 400),
            (b"POST /hook HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
            (b"POST /hook HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999\r\n\r\n", 413),
            (b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
            (b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            (b"POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 405),
        ],
    )  # fmt: skip
    def test_refusals(self, server: MetricsServer, data: bytes, status: int) -> None:
        answer = exchange(server, data)
        assert statuses(answer)[0] == status

    def test_http_1_0_is_answered_and_closed(self, server: MetricsServer) -> None:
        answer = exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n")
        assert statuses(answer) == [200] and b"Connection: close" in answer


class _Writes:
    """A stream writer that keeps what each write was given."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def drain(self) -> None:
        return None


def written(pieces: list[bytes], method: str = "GET") -> list[bytes]:
    writer = _Writes()
    body = Pieces(sum(map(len, pieces)), lambda: pieces)
    response = Response(200, body, "text/plain")
    asyncio.run(write_response(cast(Any, writer), method, response, Limits(), "test"))
    return writer.writes


class TestBodyOfPieces:
    def test_a_small_body_goes_out_in_one_write_with_its_head(self) -> None:
        pieces = [b"\x1f\x8b", b"a" * 70_000, b"bc", b"\x03\x00"]
        (only,) = written(pieces)
        head, body = only.split(b"\r\n\r\n", 1)
        assert b"Content-Length: 70006" in head
        assert body == b"".join(pieces)

    def test_a_large_body_sends_its_large_pieces_as_they_are(self) -> None:
        big = b"x" * (5 * 1024 * 1024)
        pieces = [b"a" * 10, big, b"b" * 20, b"c" * 30]
        writes = written(pieces)
        assert any(w is big for w in writes)  # not copied
        head, body = b"".join(writes).split(b"\r\n\r\n", 1)
        assert f"Content-Length: {len(big) + 60}".encode() in head
        assert body == b"".join(pieces)

    def test_head_announces_the_length_and_sends_no_body(self) -> None:
        (only,) = written([b"a" * 100, b"b" * 5], "HEAD")
        assert only.endswith(b"Content-Length: 105\r\n\r\n")
