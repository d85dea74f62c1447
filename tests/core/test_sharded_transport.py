"""The upstream client's connection handling (``ShardedTransport``, used by ``build_client``).

A source may start many more requests than it has connections (a CI/CD source
reads three lists of 48 repos at once). Requests then wait in one queue for a
free connection, never more are in flight than ``max_connections``, connections
are kept alive and reused, and a connection slot always comes back: when the body
is read, when a streamed response is closed, after a timeout, and when the waiting
task is cancelled.

The upstream is a small keep-alive HTTP/1.1 server on loopback that counts the
requests it is answering at once and the connections it has seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from exporter.core.health import SourceHealth
from exporter.core.httpclient import ShardedTransport, build_client, send


class CountingUpstream:
    """``GET /wait/<ms>`` answers after that many milliseconds; ``GET /hold`` answers
    once :attr:`release` is set. Counts requests in flight and connections."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.answered = 0
        self.release = asyncio.Event()
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    if path.startswith("/wait/"):
                        await asyncio.sleep(int(path.rsplit("/", 1)[1]) / 1000)
                    elif path == "/hold":
                        await self.release.wait()
                finally:
                    self.in_flight -= 1
                body = b'{"ok":true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
                self.answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CountingUpstream]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            self.release.set()
            server.close()


def client_for(
    upstream: CountingUpstream, max_connections: int, timeout: float = 5.0
) -> httpx.AsyncClient:
    return build_client(
        SourceHealth("test", "test", 60.0),
        timeout=timeout,
        base_url=upstream.url,
        max_connections=max_connections,
    )


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


class TestConcurrency:
    def test_no_more_requests_are_in_flight_than_connections(self) -> None:
        """30 requests started at once over 6 connections: at most 6 reach the upstream
        together, every one is answered, and keep-alive reuses the 6 connections."""

        async def go() -> None:
            async with CountingUpstream().running() as upstream:
                async with client_for(upstream, max_connections=6) as client:
                    responses = await asyncio.gather(*(client.get("/wait/30") for _ in range(30)))
                assert [r.status_code for r in responses] == [200] * 30
                assert upstream.answered == 30
                assert upstream.max_in_flight == 6
                assert upstream.connections == 6

        run(go)

    def test_all_connections_are_used_when_requests_outnumber_them(self) -> None:
        """9 connections (three shards of 3): 12 requests the upstream holds put exactly 9
        in flight at once, so the shards together offer every connection."""

        async def go() -> None:
            async with CountingUpstream().running() as upstream:
                async with client_for(upstream, max_connections=9) as client:
                    tasks = [asyncio.create_task(client.get("/hold")) for _ in range(12)]
                    for _ in range(200):
                        if upstream.in_flight == 9:
                            break
                        await asyncio.sleep(0.01)
                    assert upstream.in_flight == 9
                    upstream.release.set()
                    responses = await asyncio.gather(*tasks)
                assert [r.status_code for r in responses] == [200] * 12
                assert upstream.max_in_flight == 9

        run(go)

    def test_shards_split_the_connections_evenly(self) -> None:
        transport = ShardedTransport(10, shard_size=4)
        assert sorted(transport._sizes) == [3, 3, 4]
        assert sum(ShardedTransport(48)._sizes) == 48
        assert ShardedTransport(1)._sizes == [1]


class TestSlotsComeBack:
    def test_after_timeouts(self) -> None:
        """Two requests that time out on a 2-connection client leave both connections
        free: the next three requests are answered."""

        async def go() -> None:
            async with CountingUpstream().running() as upstream:
                async with client_for(upstream, max_connections=2, timeout=0.2) as client:
                    for outcome in await asyncio.gather(
                        client.get("/hold"), client.get("/hold"), return_exceptions=True
                    ):
                        assert isinstance(outcome, httpx.ReadTimeout)
                    upstream.release.set()
                    # The next requests get a timeout of their own, long enough for a
                    # loaded machine: what is checked is that the slots come back at all.
                    responses = await asyncio.wait_for(
                        asyncio.gather(*(client.get("/wait/1", timeout=4) for _ in range(3))), 5
                    )
                assert [r.status_code for r in responses] == [200] * 3

        run(go)

    def test_a_streamed_response_holds_its_connection_until_closed(self) -> None:
        async def go() -> None:
            async with CountingUpstream().running() as upstream:
                async with client_for(upstream, max_connections=1) as client:
                    async with client.stream("GET", "/wait/1") as streamed:
                        second = asyncio.create_task(client.get("/wait/1"))
                        await asyncio.sleep(0.2)
                        assert not second.done()  # the only connection is still taken
                        assert await streamed.aread() == b'{"ok":true}'
                    response = await asyncio.wait_for(second, 5)
                assert response.status_code == 200

        run(go)

    def test_a_request_cancelled_while_waiting_takes_no_slot(self) -> None:
        async def go() -> None:
            async with CountingUpstream().running() as upstream:
                async with client_for(upstream, max_connections=1) as client:
                    holding = asyncio.create_task(client.get("/hold"))
                    await asyncio.sleep(0.1)
                    waiting = asyncio.create_task(client.get("/wait/1"))
                    await asyncio.sleep(0.1)
                    waiting.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await waiting
                    upstream.release.set()
                    assert (await holding).status_code == 200
                    third = await asyncio.wait_for(client.get("/wait/1"), 5)
                assert third.status_code == 200
                assert upstream.answered == 2

        run(go)

    def test_the_retry_policy_runs_over_it(self) -> None:
        """``send`` through a one-connection client: a timeout is retried on a fresh
        attempt and the answer comes through."""

        async def go() -> None:
            async with CountingUpstream().running() as upstream:
                async with client_for(upstream, max_connections=1, timeout=0.2) as client:

                    async def no_wait(_: float) -> None:
                        upstream.release.set()

                    response = await send(client, "GET", "/hold", sleep=no_wait, attempts=2)
                assert response.status_code == 200

        run(go)
