"""One HTTP(S) probe: a new connection, one request, the whole body, under one deadline.

The check's ``timeout`` bounds everything together (DNS, connect, TLS, sending
the request, the whole body and the body match), as blackbox_exporter's probe
deadline does; httpx's ``timeout=`` is per phase, so a body trickling in a few
bytes at a time never tripped it. HTTP/1.1 is spoken with ``h11`` (the same
parser httpx uses underneath) from an asyncio protocol, one connection per probe
with ``Connection: close``; each phase is stamped in the loop callback that sees
its event.

Phases follow blackbox_exporter's ``probe_http_duration_seconds``: ``resolve``,
``connect``, ``tls``, ``processing`` (request sent until the first byte of the
answer) and ``transfer`` (first byte to the end of the body), summed over the
redirects followed.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, urljoin, urlsplit

import h11

from exporter import __version__
from exporter.domains.probe.sources.wire import (
    CONNECT,
    TIMEOUT,
    TLS,
    IpProtocol,
    Outcome,
    Phases,
    ProbeFailure,
    TlsFacts,
    client_context,
    earliest_not_after,
    open_socket,
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


@lru_cache(maxsize=4096)
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


class _Exchange(asyncio.Protocol):
    """One request and its answer on a connected socket, timed where the loop sees each event.

    The request goes out in ``connection_made`` and the answer is parsed as it
    arrives in ``data_received``, so the phases are stamped in the loop's own
    callbacks, not when the probe's task next gets the loop after other checks'
    work (see :func:`probe_http`).
    """

    def __init__(self, request: bytes, phases: Phases, connected: float) -> None:
        self.request = request
        self.phases = phases
        self.connected = connected
        self.conn = h11.Connection(our_role=h11.CLIENT)
        self.done: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.first_byte: float | None = None
        self.response: h11.Response | None = None
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if transport.get_extra_info("ssl_object") is not None:
            self.connected = self.phases.add("tls", self.connected)
        # Stamped before the write: on loopback the send wakes the server, which may run (and
        # start its answer's clock) before the write returns to us.
        self.sent = time.perf_counter()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.first_byte is None:
            self.first_byte = self.phases.add("processing", self.sent, now)
        self._feed(data, now)

    def eof_received(self) -> bool:
        self._feed(b"", time.perf_counter())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            detail = str(exc) if exc else "the connection closed before the whole answer"
            self.done.set_exception(ProbeFailure(CONNECT, detail))

    def close(self) -> None:
        """The exchange is over (answered, failed or cancelled): what comes later is dropped."""
        if not self.done.done():
            self.done.cancel()
        elif not self.done.cancelled():
            self.done.exception()  # retrieved, even when nobody awaited it (a cancelled probe)

    def _feed(self, data: bytes, now: float) -> None:
        if self.done.done():
            return
        try:
            self.conn.receive_data(data)
            while (event := self.conn.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Response):
                    self.response = event
                elif isinstance(event, h11.Data):
                    room = BODY_LIMIT - len(self.body)
                    if room > 0:
                        self.body += bytes(event.data[:room])
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    self._finish(now)
                    return
        except h11.ProtocolError as exc:
            self.done.set_exception(ProbeFailure(CONNECT, f"malformed HTTP answer: {exc}"))

    def _finish(self, now: float) -> None:
        response = self.response
        if response is None:
            self.done.set_exception(ProbeFailure(CONNECT, "the connection closed before an answer"))
            return
        if self.first_byte is not None:
            self.phases.add("transfer", self.first_byte, now)
        headers = list(response.headers)
        location = next((v.decode("latin-1") for k, v in headers if k == b"location"), None)
        self.done.set_result(
            _Answer(
                response.status_code,
                response.http_version.decode("ascii"),
                location,
                bytes(self.body),
                _charset(headers),
            )
        )


@lru_cache(maxsize=4096)
def _request_bytes(request: HttpRequest, url: str, method: str) -> bytes:
    """The request's bytes, built once per check (and redirect): h11 validates every header."""
    _host, _port, target, _tls, host_header = _target(url)
    conn = h11.Connection(our_role=h11.CLIENT)
    headers = [
        ("Host", host_header),
        ("User-Agent", USER_AGENT),
        ("Accept", "*/*"),
        ("Connection", "close"),
        *basic_auth(url, request.headers),
        *request.headers,
    ]
    head = conn.send(h11.Request(method=method, target=target, headers=headers))
    return (head or b"") + (conn.send(h11.EndOfMessage()) or b"")


async def _exchange(
    request: HttpRequest, url: str, method: str, phases: Phases, facts: TlsFacts
) -> _Answer:
    """One request on a new connection; the answer with at most BODY_LIMIT bytes of body."""
    host, port, _target_path, tls, _host_header = _target(url)
    context = (
        client_context(request.tls_verify, request.tls_ca_file, ("http/1.1",)) if tls else None
    )
    try:
        wire_request = _request_bytes(request, url, method)
    except h11.LocalProtocolError as exc:
        raise ProbeFailure(CONNECT, f"request not sendable: {exc}") from None
    sock, connected = await open_socket(
        host, port, phases, prefer=request.ip_protocol, fallback=request.ip_fallback
    )
    exchange = _Exchange(wire_request, phases, connected)
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_connection(
            lambda: exchange, sock=sock, ssl=context, server_hostname=host if tls else None
        )
    except BaseException as exc:
        sock.close()
        if isinstance(exc, ssl.SSLError | ssl.CertificateError):
            raise ProbeFailure(TLS, str(exc)) from None
        if isinstance(exc, OSError):
            raise ProbeFailure(CONNECT, str(exc)) from None
        raise
    try:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            facts.version = ssl_object.version()
            facts.not_after = earliest_not_after(ssl_object)
        return await exchange.done
    finally:
        exchange.close()
        transport.abort()


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
    """Probe once; never raises for the upstream's faults (cancellation passes through).

    An answered probe's duration is the sum of its phases, each stamped in the
    loop callback that saw its event; the moments between, when the probe only
    waited for the loop to finish other checks' work, are the prober's queue,
    not the target's latency. A probe that got no whole answer took the time it
    took to fail, and the deadline is always wall time.
    """
    outcome = Outcome()
    started = time.perf_counter()
    answered = False
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
            answered = True
    except TimeoutError:
        outcome.reason = TIMEOUT
    except ProbeFailure as failure:
        outcome.reason = failure.reason
    elapsed = time.perf_counter() - started
    # The match runs on the CPU, where no timer can interrupt it: past the deadline is late.
    if elapsed > request.timeout:
        outcome.reason, answered = TIMEOUT, False
    outcome.duration = sum(outcome.phases.seconds.values()) if answered else elapsed
    return outcome
