"""One HTTP/1.1 connection of the server: requests read, responses written, with deadlines.

The framing is h11's (a well-kept, sans-I/O HTTP/1.1 implementation: keep-alive,
pipelining, chunked bodies, malformed input refused); this module adds what makes a
slow or idle client harmless to the others, all on one event loop:

- ``idle_timeout``: a connection with no request under way is closed after it;
- ``read_timeout``: once a request's first byte arrives, its head and body must
  arrive within it (a client trickling one header byte a second is answered 408
  and closed, however long it could go on);
- ``write_timeout``: a response the client does not read is dropped after it;
- request heads are at most 16 KiB and bodies at most ``max_body`` bytes.

Nothing here blocks: a waiting client costs a socket and a few kilobytes, not a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11

log = logging.getLogger("exporter.server")

MAX_HEAD = 16 * 1024
READ_CHUNK = 64 * 1024
# Bodies above this go out in their own write, so they are never copied into a joined buffer.
_JOIN_BELOW = 64 * 1024
_REASONS = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}


@dataclass(frozen=True)
class Limits:
    """The deadlines and sizes one connection lives by (seconds, bytes)."""

    idle_timeout: float = 30.0
    read_timeout: float = 10.0
    write_timeout: float = 30.0
    max_body: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    """A whole request: method, path (query cut off), headers by lower-case name, body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: str


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


Handler = Callable[[Request], Awaitable[Response]]


class _Timeout(Exception):
    """A request that began did not arrive within the read timeout."""


async def serve(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    limits: Limits,
    peer: str,
    server_header: str,
) -> bool:
    """Serve requests on one connection until either side closes it or a deadline passes.

    False when the client stopped reading (what is still buffered for it is to be dropped).
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        while True:
            try:
                request = await _read_request(conn, reader, writer, limits, peer)
            except _Timeout:
                await _reply_error(conn, writer, limits, 408, server_header)
                return True
            except h11.RemoteProtocolError as exc:
                await _reply_error(conn, writer, limits, exc.error_status_hint, server_header)
                return True
            if request is None:
                return True
            response = await handler(request)
            await _write(conn, writer, request.method, response, limits, server_header)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return True
            conn.start_next_cycle()
    except TimeoutError:
        log.debug("client %s did not read its response in %.0fs", peer, limits.write_timeout)
    except (ConnectionError, h11.LocalProtocolError, OSError) as exc:
        log.debug("client %s went away: %s", peer, exc)
    return False


async def _read_request(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    limits: Limits,
    peer: str,
) -> Request | None:
    """The next request, or None when the client closed or stayed idle past the timeout."""
    loop = asyncio.get_running_loop()
    started = bool(conn.trailing_data[0])  # a pipelined request already buffered
    deadline = loop.time() + (limits.read_timeout if started else limits.idle_timeout)
    head: h11.Request | None = None
    body: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                # Expect: 100-continue (RFC 9110 10.1.1): tell the client to send its body.
                continue_ = conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                writer.write(continue_ or b"")
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                if started:
                    raise _Timeout from None
                return None
            if data and not started:
                started = True
                deadline = loop.time() + limits.read_timeout
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > limits.max_body:
                raise h11.RemoteProtocolError("request body too large", error_status_hint=413)
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return _request(head, b"".join(body), peer)
        else:  # ConnectionClosed, or PAUSED after a request we have not answered
            return None


def _request(head: h11.Request, body: bytes, peer: str) -> Request:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    target = head.target.decode("latin-1")
    return Request(
        method=head.method.decode("ascii").upper(),
        path=target.split("?", 1)[0],
        headers=headers,
        body=body,
        peer=peer,
    )


async def _write(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    method: str,
    response: Response,
    limits: Limits,
    server_header: str,
) -> None:
    headers = [
        ("Server", server_header),
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        *response.headers,
    ]
    if response.close:
        headers.append(("Connection", "close"))
    reason = _REASONS.get(response.status, b"")
    head = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    assert head is not None
    body = response.body if method != "HEAD" else b""
    if body:
        conn.send_with_data_passthrough(h11.Data(data=body))  # frames the body; no copy
    conn.send(h11.EndOfMessage())
    if len(body) < _JOIN_BELOW:
        writer.write(head + body)  # one segment for small responses
    else:
        writer.write(head)
        writer.write(memoryview(body))
    async with asyncio.timeout(limits.write_timeout):
        await writer.drain()


async def _reply_error(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    limits: Limits,
    status: int,
    server_header: str,
) -> None:
    """Answer a request we cannot serve (when it is still our turn), then close."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    text = {408: b"request timeout\n", 413: b"request too large\n", 431: b"headers too large\n"}
    response = Response(status, text.get(status, b"bad request\n"), close=True)
    try:
        await _write(conn, writer, "GET", response, limits, server_header)
    except h11.LocalProtocolError:
        # h11 cannot frame a response here (the request head never parsed): write it raw.
        writer.write(_raw(response, server_header))
        async with asyncio.timeout(limits.write_timeout):
            await writer.drain()


def _raw(response: Response, server_header: str) -> bytes:
    reason = _REASONS.get(response.status, b"").decode("ascii")
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"Server: {server_header}\r\nContent-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + response.body
