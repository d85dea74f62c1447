"""One TCP probe: connect (optionally TLS), optionally send a line, optionally expect an answer.

``tcp://host:port`` connects in the clear, ``tls://host:port`` adds a TLS
handshake (verified unless ``tls_verify`` is off). ``send`` is written as is;
``expect`` is a regular expression the server's bytes (decoded as UTF-8) must
match before the deadline, else the check fails with ``body`` (the server
closed first) or ``timeout``. Like every kind, the check's ``timeout`` bounds
it all, and each probe opens a new connection.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from exporter.domains.probe.sources.wire import (
    TIMEOUT,
    IpProtocol,
    Outcome,
    ProbeFailure,
    client_context,
    close,
    connect,
)

# Bytes of the server's answer kept for the match.
EXPECT_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class TcpDialog:
    """What one TCP check connects to, sends and expects."""

    url: str
    send: str | None = None
    expect: str | None = None
    timeout: float = 5.0
    tls_verify: bool = True
    tls_ca_file: str | None = None
    ip_protocol: IpProtocol = "ip6"
    ip_fallback: bool = True


async def _expect(reader: asyncio.StreamReader, pattern: str) -> bool:
    """Read until the answer so far matches ``pattern`` (True) or the server closes (False)."""
    seen = b""
    while len(seen) < EXPECT_LIMIT:
        chunk = await reader.read(4096)
        if not chunk:
            return False
        seen += chunk
        if re.search(pattern, seen.decode("utf-8", errors="replace")):
            return True
    return False


async def probe_tcp(dialog: TcpDialog) -> Outcome:
    """Probe once; never raises for the upstream's faults (cancellation passes through)."""
    outcome = Outcome()
    started = time.perf_counter()
    parts = urlsplit(dialog.url)
    tls = (
        client_context(dialog.tls_verify, dialog.tls_ca_file, ()) if parts.scheme == "tls" else None
    )
    try:
        async with asyncio.timeout(dialog.timeout):
            reader, writer = await connect(
                parts.hostname or "",
                parts.port or 0,
                outcome.phases,
                prefer=dialog.ip_protocol,
                fallback=dialog.ip_fallback,
                tls=tls,
                facts=outcome.tls,
            )
            try:
                t = time.perf_counter()
                if dialog.send is not None:
                    writer.write(dialog.send.encode())
                    await writer.drain()
                if dialog.expect is not None and not await _expect(reader, dialog.expect):
                    outcome.reason = "body"
                outcome.phases.add("processing", t)
            except OSError:
                outcome.reason = "connect"
            finally:
                close(writer)
    except TimeoutError:
        outcome.reason = TIMEOUT
    except ProbeFailure as failure:
        outcome.reason = failure.reason
    outcome.duration = time.perf_counter() - started
    if outcome.duration > dialog.timeout:
        outcome.reason = TIMEOUT
    return outcome
