"""One DNS probe: ask a server one question, and judge its answer.

``dns://server:port`` names the server asked (an IP address; port 53 by
default); ``query_name`` and ``query_type`` (``A`` by default) the question.
The check succeeds when the answer's code is NOERROR, it holds at least one
record, and, if ``expect`` is set, one of the answer records (in zone-file text,
e.g. ``example.com. 300 IN A 192.0.2.1``) matches that regular expression;
otherwise it fails with ``answer``. The query goes over UDP, and over TCP
when the UDP answer is truncated (dnspython's ``udp_with_fallback``), all
within the check's one deadline.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode

from exporter.domains.probe.sources.wire import CONNECT, TIMEOUT, Outcome

ANSWER = "answer"


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """What one DNS check asks, of which server, and what it expects back."""

    url: str
    name: str
    rdtype: str = "A"
    expect: str | None = None
    timeout: float = 5.0


def _judge(answer: dns.message.Message, expect: str | None) -> str:
    if answer.rcode() != dns.rcode.NOERROR:
        return ANSWER
    lines = [line for rrset in answer.answer for line in rrset.to_text().splitlines()]
    if not lines:
        return ANSWER
    if expect is not None and not any(re.search(expect, line) for line in lines):
        return ANSWER
    return ""


async def probe_dns(query: DnsQuery) -> Outcome:
    """Probe once; never raises for the upstream's faults (cancellation passes through)."""
    outcome = Outcome()
    started = time.perf_counter()
    parts = urlsplit(query.url)
    question = dns.message.make_query(query.name, query.rdtype)
    try:
        async with asyncio.timeout(query.timeout):
            answer, _tcp = await dns.asyncquery.udp_with_fallback(
                question, parts.hostname or "", port=parts.port or 53
            )
        outcome.phases.add("processing", started)
        outcome.reason = _judge(answer, query.expect)
    except TimeoutError:
        outcome.reason = TIMEOUT
    except (OSError, dns.exception.DNSException):
        outcome.reason = CONNECT
    outcome.duration = time.perf_counter() - started
    if outcome.duration > query.timeout:
        outcome.reason = TIMEOUT
    return outcome
