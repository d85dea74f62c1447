"""One HTTP(S) probe: a new connection, one request, the whole body, under one deadline.

The check's ``timeout`` bounds everything together (DNS, connect, TLS, sending
the request, the whole body and the body match), as blackbox_exporter's probe
deadline does; httpx's ``timeout=`` is per phase, so a body trickling in a few
bytes at a time never tripped it. HTTP/1.1 is spoken with ``h11`` (the same
parser httpx uses underneath), one connection per probe with ``Connection:
close``, TLS through ``ssl`` memory BIOs, all on a socket whose sends and
receives the kernel stamps (:mod:`.stamps`): a probe's phases are the target's
and the network's time, not the time its task then waited for the loop behind
other checks' work.

Phases follow blackbox_exporter's ``probe_http_duration_seconds``: ``resolve``,
``connect``, ``tls`` (the ClientHello leaving until the server's last handshake
flight arrives), ``processing`` (the request's last byte leaving until the
answer's first byte arrives) and ``transfer`` (first byte to the end of the
body), summed over the redirects followed.
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
from exporter.domains.probe.sources.stamps import Stamp, StampedSocket
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


class _Plain:
    """The answer's bytes as they come off the socket."""

    def __init__(self, wire: StampedSocket) -> None:
        self.wire = wire

    async def send(self, data: bytes) -> Stamp:
        return await self.wire.send(data)

    async def recv(self) -> tuple[bytes, Stamp]:
        return await self.wire.recv()


class _Tls:
    """TLS on the stamped socket through memory BIOs: each stretch of plaintext carries
    the stamp of the socket read that completed it, each send the stamp of its bytes."""

    def __init__(self, wire: StampedSocket, context: ssl.SSLContext, host: str) -> None:
        self.wire = wire
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self.incoming, self.outgoing, server_hostname=host)
        self.stamp: Stamp | None = None  # of the latest socket read

    async def handshake(self, phases: Phases, facts: TlsFacts) -> None:
        """The handshake, timed from the ClientHello leaving to the server's last flight
        arriving (the prober's own work of building and checking them is not the target's)."""
        hello: Stamp | None = None
        while True:
            try:
                self.ssl_object.do_handshake()
                break
            except ssl.SSLWantReadError:
                sent = await self._flush()
                hello = hello or sent
                if not await self._fill():
                    raise ProbeFailure(
                        CONNECT, "the connection closed in the TLS handshake"
                    ) from None
            except ssl.SSLError as exc:  # certificate verification failures included
                raise ProbeFailure(TLS, str(exc)) from None
        await self._flush()  # the client's Finished
        if hello is not None and self.stamp is not None:
            phases.put("tls", hello.until(self.stamp))
        facts.version = self.ssl_object.version()
        facts.not_after = earliest_not_after(self.ssl_object)

    async def send(self, data: bytes) -> Stamp:
        self.ssl_object.write(data)
        stamp = await self._flush()
        assert stamp is not None
        return stamp

    async def recv(self) -> tuple[bytes, Stamp]:
        while True:
            try:
                data = self.ssl_object.read(_READ)
            except ssl.SSLWantReadError:
                if self.incoming.eof:
                    data = b""
                else:
                    await self._flush()  # a post-handshake message may ask for an answer
                    await self._fill()
                    continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""  # a close, with close_notify or without (h11 judges the message)
            except ssl.SSLError as exc:
                raise ProbeFailure(CONNECT, f"TLS: {exc}") from None
            assert self.stamp is not None  # a read returns only what a socket read brought
            return data, self.stamp

    async def _flush(self) -> Stamp | None:
        data = self.outgoing.read()
        return await self.wire.send(data) if data else None

    async def _fill(self) -> bool:
        raw, self.stamp = await self.wire.recv()
        if raw:
            self.incoming.write(raw)
        else:
            self.incoming.write_eof()
        return bool(raw)


def _answer(response: h11.Response, body: bytearray) -> _Answer:
    headers = list(response.headers)
    location = next((v.decode("latin-1") for k, v in headers if k == b"location"), None)
    return _Answer(
        response.status_code,
        response.http_version.decode("ascii"),
        location,
        bytes(body),
        _charset(headers),
    )


async def _ask(channel: _Plain | _Tls, request: bytes, phases: Phases) -> _Answer:
    """Send the request, read the whole answer; ``processing`` runs from the request's last
    byte leaving to the answer's first arriving, ``transfer`` from there to its last."""
    sent = await channel.send(request)
    conn = h11.Connection(our_role=h11.CLIENT)
    response: h11.Response | None = None
    body = bytearray()
    first: Stamp | None = None
    while True:
        data, stamp = await channel.recv()
        if first is None and data:
            first = stamp
            phases.put("processing", sent.until(stamp))
        try:
            conn.receive_data(data)
            while (event := conn.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    room = BODY_LIMIT - len(body)
                    if room > 0:
                        body += bytes(event.data[:room])
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    if response is None:
                        raise ProbeFailure(CONNECT, "the connection closed before an answer")
                    if first is not None:
                        phases.put("transfer", first.until(stamp))
                    return _answer(response, body)
        except h11.ProtocolError as exc:
            raise ProbeFailure(CONNECT, f"malformed HTTP answer: {exc}") from None
        if not data:
            raise ProbeFailure(CONNECT, "the connection closed before the whole answer")


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
    sock, _connected = await open_socket(
        host, port, phases, prefer=request.ip_protocol, fallback=request.ip_fallback
    )
    wire = StampedSocket(sock)
    try:
        channel: _Plain | _Tls = _Plain(wire)
        if context is not None:
            channel = _Tls(wire, context, host)
            await channel.handshake(phases, facts)
        return await _ask(channel, wire_request, phases)
    except OSError as exc:
        raise ProbeFailure(CONNECT, str(exc)) from None
    finally:
        wire.close()


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

    An answered probe's duration is the sum of its phases, timed by the kernel
    where it can (see the module docstring); the moments between, when the probe
    only waited for the loop to finish other checks' work, are the prober's queue,
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
