"""One HTTP/1.1 connection of the server: requests read, responses written, with deadlines.

What makes a slow or idle client harmless to the others, all on one event loop:

- ``idle_timeout``: a connection with no request under way is closed after it;
- ``read_timeout``: once a request's first byte arrives, its head and body must
  arrive within it (a client trickling one header byte a second is answered 408
  and closed, however long it could go on);
- ``write_timeout``: a response the client does not read is dropped after it;
- request heads are at most 16 KiB and bodies at most ``max_body`` bytes.

The request parser is this module's own (RFC 9112), strict where laxness is a risk:
a request line and header fields as the grammar has them, no obsolete line folding,
no header name with whitespace before its colon, ``Content-Length`` digits only and
never beside ``Transfer-Encoding`` (request smuggling), ``chunked`` the only transfer
coding, ``Host`` required in HTTP/1.1. Keep-alive and pipelining as HTTP/1.1 has them
(HTTP/1.0 closes unless it asks for keep-alive). h11 did this at 0.8 ms a request on
the reference machine, most of a scrape's cost; this parser takes a few percent of that.

Nothing here blocks: a waiting client costs a socket and a few kilobytes, not a thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

log = logging.getLogger("exporter.server")

MAX_HEAD = 16 * 1024
# Bodies above this go out in their own write, so they are never copied into a joined buffer.
_JOIN_BELOW = 64 * 1024
# A body of pieces below this is joined (copied) into one write.
_COPY_BELOW = 4 * 1024 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/1\.([01])")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


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
    keep_alive: bool = True


@dataclass(frozen=True)
class Pieces:
    """A body written as several byte strings in turn, never joined into one: ``size``
    is their total length (the Content-Length), ``make`` gives them when the body is
    written (so a body made on the fly, such as one inflated, is made piece by piece)."""

    size: int
    make: Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes | Pieces = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


Handler = Callable[[Request], Awaitable[Response]]


class BadRequest(Exception):
    """The client broke the protocol (or a limit); ``status`` is the answer, then close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


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
    try:
        while True:
            try:
                request = await read_request(reader, writer, limits, peer)
            except BadRequest as exc:
                await write_response(writer, "GET", _error(exc), limits, server_header)
                return True
            if request is None:
                return True
            response = await handler(request)
            if not request.keep_alive:
                response = _closing(response)
            await write_response(writer, request.method, response, limits, server_header)
            if response.close:
                return True
    except TimeoutError:
        log.debug("client %s did not read its response in %.0fs", peer, limits.write_timeout)
    except (ConnectionError, OSError) as exc:
        log.debug("client %s went away: %s", peer, exc)
    return False


def _error(exc: BadRequest) -> Response:
    return Response(exc.status, f"{exc}\n".encode(), close=True)


def _closing(response: Response) -> Response:
    return Response(response.status, response.body, response.content_type, response.headers, True)


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits, peer: str
) -> Request | None:
    """The next request, or None when the client closed or stayed idle past the timeout."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limits.idle_timeout):
            first = await reader.read(1)  # waits for the first byte only: that is idleness
    except TimeoutError:
        return None
    if not first:
        return None
    try:
        async with asyncio.timeout_at(loop.time() + limits.read_timeout):
            head = first + await reader.readuntil(b"\r\n\r\n")
            method, target, headers, keep_alive = parse_head(head)
            body = await _read_body(reader, writer, headers, limits)
    except TimeoutError:
        raise BadRequest(408, "request timeout") from None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head too large") from None
    except asyncio.IncompleteReadError:
        return None  # the client closed in the middle of its request
    return Request(method, target.split("?", 1)[0], headers, body, peer, keep_alive)


def parse_head(head: bytes) -> tuple[str, str, dict[str, str], bool]:
    """(method, target, headers by lower-case name, keep-alive) of a request head."""
    lines = head[:-4].split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        raise BadRequest(400, "malformed request line")
    method, target, minor = line.groups()
    headers: dict[str, str] = {}
    for raw in lines[1:]:
        name, colon, value = raw.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise BadRequest(400, "malformed header field")  # folding, or space before ":"
        value = value.strip(b" \t")
        if _FIELD_VALUE.fullmatch(value) is None:
            raise BadRequest(400, "malformed header field")
        key, text = name.decode("ascii").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if minor == b"1" and "host" not in headers:
        raise BadRequest(400, "missing Host header")
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if minor == b"1" else "keep-alive" in tokens
    return method.decode("ascii").upper(), target.decode("latin-1"), headers, keep_alive


async def _read_body(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    headers: dict[str, str],
    limits: Limits,
) -> bytes:
    coding = headers.get("transfer-encoding")
    length = headers.get("content-length")
    if coding is not None and length is not None:
        raise BadRequest(400, "both Transfer-Encoding and Content-Length")
    if coding is None and length is None:
        return b""
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # RFC 9110 10.1.1: send the body
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise BadRequest(501, "unsupported transfer coding")
        return await _read_chunked(reader, limits.max_body)
    assert length is not None
    if not length.isdigit() or len(length) > 18:
        raise BadRequest(400, "malformed Content-Length")
    size = int(length)
    if size > limits.max_body:
        raise BadRequest(413, "request body too large")
    return await reader.readexactly(size)


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = (await reader.readuntil(b"\r\n"))[:-2]
        size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise BadRequest(400, "malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailer fields: skipped
                pass
            return b"".join(chunks)
        total += size
        if total > max_body:
            raise BadRequest(413, "request body too large")
        chunks.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest(400, "malformed chunk")


async def write_response(
    writer: asyncio.StreamWriter,
    method: str,
    response: Response,
    limits: Limits,
    server_header: str,
) -> None:
    body = response.body
    lines = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}",
        f"Server: {server_header}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(body) if isinstance(body, bytes) else body.size}",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    if response.close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    async with asyncio.timeout(limits.write_timeout):
        if method == "HEAD":
            writer.write(head)
        elif isinstance(body, bytes):
            _write_bytes(writer, head, body)
        else:
            await _write_pieces(writer, head, body)
        await writer.drain()


async def _write_pieces(writer: asyncio.StreamWriter, head: bytes, body: Pieces) -> None:
    """A body under ``_COPY_BELOW`` (a gzip exposition: a header, parts, a trailer) goes
    out in one write with its head: a small write after a large one can wait for the
    client's delayed ACK (40 ms). A larger one: small pieces joined, in writes of at
    least ``_JOIN_BELOW`` bytes, large ones as they are, each drained before the next is
    made (a piece made on the fly is dropped once sent)."""
    if body.size < _COPY_BELOW:
        writer.write(b"".join([head, *body.make()]))
        return
    batch, batched = [head], len(head)
    for piece in body.make():
        if len(piece) >= _JOIN_BELOW:
            writer.write(b"".join(batch))
            batch, batched = [], 0
            writer.write(piece)
            await writer.drain()
            continue
        batch.append(piece)
        batched += len(piece)
        if batched >= _JOIN_BELOW:
            writer.write(b"".join(batch))
            batch, batched = [], 0
            await writer.drain()
    if batch:
        writer.write(b"".join(batch))


def _write_bytes(writer: asyncio.StreamWriter, head: bytes, body: bytes) -> None:
    if len(body) < _JOIN_BELOW:
        writer.write(head + body)  # one segment for small responses
    else:
        writer.write(head)
        writer.write(memoryview(body))
