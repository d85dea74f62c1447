"""The network half every check kind shares: resolve, connect, TLS, and what they tell.

A check opens one new connection per probe, as blackbox_exporter does: what it
measures is what a new client sees (DNS, TCP and TLS included), and no pool
slot or idle connection of another check is ever waited for. Each step is timed
into :class:`Phases` (``resolve``, ``connect``, ``tls``, then the kind's own
``processing`` and ``transfer``) with ``time.perf_counter``, or, where the
kernel timed the event itself (the TCP handshake's round trip; the HTTP probe's
sends and receives, :mod:`.stamps`), with the kernel's own interval; the wall
clock is not read here.

The TLS facts kept are the negotiated version and the earliest ``notAfter`` of
the certificate chain the server sent (the leaf, or an intermediate that
expires first), as Unix seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from exporter.domains.probe.sources.stamps import established, handshake_seconds

IpProtocol = Literal["ip4", "ip6"]

# The failure reasons the wire itself can produce; the kinds add their own.
RESOLVE, CONNECT, TLS, TIMEOUT = "resolve", "connect", "tls", "timeout"


class ProbeFailure(Exception):
    """A check ended with a bounded failure reason (one of the probe domain's reasons)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(slots=True)
class Phases:
    """Seconds spent in each phase of one probe, summed over its redirects."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, phase: str, since: float, now: float | None = None) -> float:
        """Add the time from ``since`` to ``now`` (``perf_counter`` readings; ``now`` is read
        if not given); return ``now``."""
        if now is None:
            now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + (now - since)
        return now

    def put(self, phase: str, seconds: float) -> None:
        """Add ``seconds`` measured elsewhere (a difference of the kernel's stamps)."""
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds


@dataclass(slots=True)
class TlsFacts:
    """What the TLS handshake of the (last) connection showed."""

    version: str | None = None
    # The earliest notAfter in the certificate chain the server sent, as Unix seconds.
    not_after: float | None = None


@dataclass(slots=True)
class Outcome:
    """How one probe ended: ``reason`` is "" on success, else a bounded failure reason."""

    reason: str = ""
    status_code: int | None = None
    http_version: str | None = None
    redirects: int = 0
    duration: float = 0.0
    phases: Phases = field(default_factory=Phases)
    tls: TlsFacts = field(default_factory=TlsFacts)


@lru_cache(maxsize=32)
def client_context(verify: bool, ca_file: str | None, alpn: tuple[str, ...]) -> ssl.SSLContext:
    """One shared TLS client context per option set (building one reads the CA store)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


async def resolve(host: str, port: int, prefer: IpProtocol, fallback: bool) -> tuple[int, str]:
    """(family, address) to connect to: the preferred IP family, else the other if allowed."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # an address needs no lookup (nor a trip through the resolver's threads)
        return (socket.AF_INET6 if literal.version == 6 else socket.AF_INET), str(literal)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        raise ProbeFailure(RESOLVE, str(exc)) from None
    wanted = socket.AF_INET6 if prefer == "ip6" else socket.AF_INET
    for family, *_, sockaddr in infos:
        if family == wanted:
            return family, str(sockaddr[0])
    if fallback:
        for family, *_, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                return family, str(sockaddr[0])
    raise ProbeFailure(RESOLVE, f"{host} has no {prefer} address")


def earliest_not_after(ssl_object: Any) -> float | None:
    """The earliest notAfter of the chain the peer sent.

    Python 3.13 makes the chain public; before that the same method lives on the
    SSL object's inner ``_sslobj``. Without either, only the leaf is known.
    """
    inner = getattr(ssl_object, "_sslobj", ssl_object)
    chain_of = getattr(inner, "get_unverified_chain", None)
    chain = chain_of() if chain_of is not None else None
    stamps: list[float] = []
    for cert in chain or []:
        info = cert.get_info() if hasattr(cert, "get_info") else None
        if info and "notAfter" in info:
            stamps.append(float(ssl.cert_time_to_seconds(info["notAfter"])))
    if not stamps:
        leaf = ssl_object.getpeercert()
        if leaf and "notAfter" in leaf:
            stamps.append(float(ssl.cert_time_to_seconds(str(leaf["notAfter"]))))
    return min(stamps) if stamps else None


async def connect(
    host: str,
    port: int,
    phases: Phases,
    *,
    prefer: IpProtocol = "ip6",
    fallback: bool = True,
    tls: ssl.SSLContext | None = None,
    facts: TlsFacts | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A new connection to ``host:port``, TLS on top if ``tls``; each step timed."""
    t = time.perf_counter()
    _family, address = await resolve(host, port, prefer, fallback)
    t = phases.add("resolve", t)
    try:
        reader, writer = await asyncio.open_connection(address, port)
    except OSError as exc:
        raise ProbeFailure(CONNECT, str(exc)) from None
    t = phases.add("connect", t)
    if tls is None:
        return reader, writer
    try:
        await writer.start_tls(tls, server_hostname=host)
    except (ssl.SSLError, ssl.CertificateError) as exc:
        writer.transport.abort()
        raise ProbeFailure(TLS, str(exc)) from None
    except OSError as exc:
        writer.transport.abort()
        raise ProbeFailure(CONNECT, str(exc)) from None
    phases.add("tls", t)
    if facts is not None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            facts.version = ssl_object.version()
            facts.not_after = earliest_not_after(ssl_object)
    return reader, writer


async def open_socket(
    host: str, port: int, phases: Phases, *, prefer: IpProtocol = "ip6", fallback: bool = True
) -> tuple[socket.socket, float]:
    """A new TCP connection to ``host:port`` as a non-blocking socket, and when it connected.

    The ``connect`` phase is the handshake's round trip as the kernel timed it
    (:func:`.stamps.handshake_seconds`); without it (a SYN was retransmitted, or the
    system does not tell) it runs to the moment the connection was first seen made:
    at once when ``connect()`` itself completed the handshake (loopback does), else
    in the loop's own writability callback. Either way it leaves out the time the
    probe's task then waits for the loop behind other checks' work.
    """
    t = time.perf_counter()
    family, address = await resolve(host, port, prefer, fallback)
    if address == host:  # an address: nothing was looked up
        phases.put("resolve", 0.0)
    else:
        t = phases.add("resolve", t)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        connected = await _connect(sock, (address, port))
    except BaseException as exc:
        sock.close()
        if isinstance(exc, OSError):
            raise ProbeFailure(CONNECT, str(exc)) from None
        raise
    handshake = handshake_seconds(sock)
    if handshake is not None:
        phases.put("connect", handshake)
    else:
        phases.add("connect", t, connected)
    return sock, connected


async def _connect(sock: socket.socket, address: tuple[str, int]) -> float:
    try:
        sock.connect(address)
        return time.perf_counter()
    except BlockingIOError:
        if established(sock):
            return time.perf_counter()
    loop = asyncio.get_running_loop()
    made: asyncio.Future[float] = loop.create_future()

    def writable() -> None:
        if not made.done():
            made.set_result(time.perf_counter())

    # By file number: given the socket, the selector's not-registered KeyError formats
    # the socket's repr (two system calls) on every first registration.
    fd = sock.fileno()
    loop.add_writer(fd, writable)
    try:
        connected = await made
    finally:
        loop.remove_writer(fd)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))
    return connected


def close(writer: asyncio.StreamWriter) -> None:
    """Drop the connection at once: a probe never waits for a polite close."""
    writer.transport.abort()
