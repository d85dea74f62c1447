"""One HTTP(S) probe: a new connection, one request, the whole body, under one deadline.

The check's ``timeout`` bounds everything together (DNS, connect, TLS, sending
the request, the whole body and the body match), as blackbox_exporter's probe
deadline does; httpx's ``timeout=`` is per phase, so a body trickling in a few
bytes at a time never tripped it. HTTP/1.1 is spoken with ``h11`` over asyncio
streams (the same parser httpx uses underneath), one connection per probe with
``Connection: close``.

Phases follow blackbox_exporter's ``probe_http_duration_seconds``: ``resolve``,
``connect``, ``tls``, ``processing`` (request sent until the first byte of the
answer) and ``transfer`` (first byte to the end of the body), summed over the
redirects followed.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urljoin, urlsplit

import h11

from exporter import __version__
from exporter.domains.probe.sources.wire import (
    CONNECT,
    TIMEOUT,
    IpProtocol,
    Outcome,
    Phases,
    ProbeFailure,
    TlsFacts,
    client_context,
    close,
    connect,
)

USER_AGENT = f"platform-kpi-exporter/{__version__}"
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
# Bytes of the body kept for the match; the rest is read (the deadline covers it) and dropped.
BODY_LIMIT = 1 << 20
_READ = 64 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What one HTTP check sends and expects."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    expect_status: frozenset[int] = frozenset({200})
    body_regex: str | None = None
    timeout: float = 5.0
    tls_verify: bool = True
    tls_ca_file: str | None = None
    follow_redirects: bool = True
    ip_protocol: IpProtocol = "ip6"
    ip_fallback: bool = True


@dataclass(slots=True)
class _Answer:
    status: int
    http_version: str
    location: str | None
    body: bytes
    charset: str


def _target(url: str) -> tuple[str, int, str, bool, str]:
    """(host, port, request target, is TLS, Host header) of an http(s) URL."""
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = (tls and port == 443) or (not tls and port == 80)
    bracketed = f"[{host}]" if ":" in host else host
    return host, port, target, tls, bracketed if default else f"{bracketed}:{port}"


def basic_auth(url: str, headers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """An ``Authorization: Basic`` header from the URL's userinfo (RFC 7617), as HTTP clients
    send it; none when the URL has no user or the check sets its own ``Authorization``."""
    parts = urlsplit(url)
    if parts.username is None or any(k.lower() == "authorization" for k, _ in headers):
        return []
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return [("Authorization", "Basic " + base64.b64encode(pair.encode()).decode("ascii"))]


def _charset(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"content-type":
            match = re.search(rb"charset=\"?([\w.-]+)", value, re.IGNORECASE)
            if match:
                return match.group(1).decode("ascii")
    return "utf-8"


def _decode(body: bytes, charset: str) -> str:
    try:
        return body.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace")


async def _exchange(
    request: HttpRequest, url: str, method: str, phases: Phases, facts: TlsFacts
) -> _Answer:
    """One request on a new connection; the answer with at most BODY_LIMIT bytes of body."""
    host, port, target, tls, host_header = _target(url)
    context = (
        client_context(request.tls_verify, request.tls_ca_file, ("http/1.1",)) if tls else None
    )
    reader, writer = await connect(
        host,
        port,
        phases,
        prefer=request.ip_protocol,
        fallback=request.ip_fallback,
        tls=context,
        facts=facts,
    )
    try:
        conn = h11.Connection(our_role=h11.CLIENT)
        headers = [
            ("Host", host_header),
            ("User-Agent", USER_AGENT),
            ("Accept", "*/*"),
            ("Connection", "close"),
            *basic_auth(url, request.headers),
            *request.headers,
        ]
        t = time.perf_counter()
        writer.write(conn.send(h11.Request(method=method, target=target, headers=headers)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return await _read_answer(conn, reader, phases, t)
    except h11.ProtocolError as exc:
        raise ProbeFailure(CONNECT, f"malformed HTTP answer: {exc}") from None
    except OSError as exc:
        raise ProbeFailure(CONNECT, str(exc)) from None
    finally:
        close(writer)


async def _read_answer(
    conn: h11.Connection, reader: asyncio.StreamReader, phases: Phases, sent: float
) -> _Answer:
    first_byte: float | None = None
    response: h11.Response | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await reader.read(_READ)
            if first_byte is None:
                first_byte = phases.add("processing", sent)
            conn.receive_data(chunk)
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            room = BODY_LIMIT - len(body)
            if room > 0:
                body += bytes(event.data[:room])
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if response is None:
        raise ProbeFailure(CONNECT, "the connection closed before an answer")
    if first_byte is not None:
        phases.add("transfer", first_byte)
    location = next((v.decode("latin-1") for k, v in response.headers if k == b"location"), None)
    return _Answer(
        response.status_code,
        response.http_version.decode("ascii"),
        location,
        bytes(body),
        _charset(list(response.headers)),
    )


async def _follow(request: HttpRequest, outcome: Outcome) -> _Answer:
    """The request, following redirects if asked (at most MAX_REDIRECTS)."""
    url, method = request.url, request.method
    while True:
        answer = await _exchange(request, url, method, outcome.phases, outcome.tls)
        if not (request.follow_redirects and answer.status in REDIRECTS and answer.location):
            return answer
        if outcome.redirects >= MAX_REDIRECTS:
            return answer  # judged by its status: a redirect is not an expected answer
        outcome.redirects += 1
        url = urljoin(url, answer.location)
        if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
            method = "GET"


async def probe_http(request: HttpRequest) -> Outcome:
    """Probe once; never raises for the upstream's faults (cancellation passes through)."""
    outcome = Outcome()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(request.timeout):
            answer = await _follow(request, outcome)
            outcome.status_code = answer.status
            outcome.http_version = answer.http_version
            if answer.status not in request.expect_status:
                outcome.reason = "status"
            elif request.body_regex is not None:
                text = _decode(answer.body, answer.charset)
                if re.search(request.body_regex, text) is None:
                    outcome.reason = "body"
    except TimeoutError:
        outcome.reason = TIMEOUT
    except ProbeFailure as failure:
        outcome.reason = failure.reason
    outcome.duration = time.perf_counter() - started
    # The match runs on the CPU, where no timer can interrupt it: past the deadline is late.
    if outcome.duration > request.timeout:
        outcome.reason = TIMEOUT
    return outcome
