"""The `tcp` and `dns` check kinds against loopback servers the test starts.

The TCP server answers ``PONG`` to ``PING`` and ``NOPE`` to anything else; the
DNS server (dnspython's message codec over a UDP socket) answers ``A 192.0.2.1``
for ``svc.test.``, ``REFUSED`` for ``refused.test.`` and NXDOMAIN otherwise.
Both run in the test's own event loop, beside the probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from exporter.domains.probe.settings import ProbeCheckConfig
from exporter.domains.probe.sources.dns import DnsQuery, probe_dns
from exporter.domains.probe.sources.tcp import TcpDialog, probe_tcp
from exporter.domains.probe.sources.wire import Outcome
from tests.support.net import closed_port
from tests.support.tls import signed_chain

T = TypeVar("T")


async def _pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    line = await reader.readline()
    writer.write(b"PONG\n" if line.strip() == b"PING" else b"NOPE\n")
    await writer.drain()
    writer.close()


def with_tcp_server(probe: Callable[[int], Awaitable[T]], tls: Any = None) -> T:
    async def go() -> T:
        server = await asyncio.start_server(_pong, "127.0.0.1", 0, ssl=tls)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await probe(port)

    return asyncio.run(go())


class _Dns(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        answer = dns.message.make_response(query)
        name = query.question[0].name.to_text()
        if name == "svc.test.":
            answer.answer.append(dns.rrset.from_text("svc.test.", 60, "IN", "A", "192.0.2.1"))
        elif name == "refused.test.":
            answer.set_rcode(dns.rcode.REFUSED)
        else:
            answer.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(answer.to_wire(), addr)  # type: ignore[attr-defined]


def with_dns_server(probe: Callable[[int], Awaitable[T]]) -> T:
    async def go() -> T:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Dns, local_addr=("127.0.0.1", 0))
        try:
            return await probe(transport.get_extra_info("sockname")[1])
        finally:
            transport.close()

    return asyncio.run(go())


class TestTcp:
    def test_an_expected_answer_succeeds(self) -> None:
        got = with_tcp_server(
            lambda port: probe_tcp(
                TcpDialog(f"tcp://127.0.0.1:{port}", send="PING\n", expect="^PONG")
            )
        )
        assert got.reason == ""
        assert set(got.phases.seconds) == {"resolve", "connect", "processing"}

    def test_connect_only_succeeds_when_something_listens(self) -> None:
        got = with_tcp_server(lambda port: probe_tcp(TcpDialog(f"tcp://127.0.0.1:{port}")))
        assert got.reason == ""

    def test_a_refused_connection_is_connect(self) -> None:
        got = asyncio.run(probe_tcp(TcpDialog(f"tcp://127.0.0.1:{closed_port()}")))
        assert got.reason == "connect"

    def test_a_wrong_answer_is_body(self) -> None:
        got = with_tcp_server(
            lambda port: probe_tcp(
                TcpDialog(f"tcp://127.0.0.1:{port}", send="HELLO\n", expect="^PONG")
            )
        )
        assert got.reason == "body"

    def test_no_answer_before_the_deadline_is_timeout(self) -> None:
        """Expecting an answer without sending the PING: the server waits, so the deadline ends it."""
        got = with_tcp_server(
            lambda port: probe_tcp(
                TcpDialog(f"tcp://127.0.0.1:{port}", expect="^PONG", timeout=0.3)
            )
        )
        assert got.reason == "timeout"
        assert 0.27 <= got.duration <= 0.33

    def test_tls_on_top_with_its_certificate_expiry(self, tmp_path: Path) -> None:
        import ssl

        chain, key, ca = signed_chain(tmp_path, ca_days=30, leaf_days=3)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, key)
        got: Outcome = with_tcp_server(
            lambda port: probe_tcp(
                TcpDialog(
                    f"tls://127.0.0.1:{port}", send="PING\n", expect="^PONG", tls_ca_file=str(ca)
                )
            ),
            tls=context,
        )
        assert got.reason == ""
        assert got.tls.version in ("TLSv1.2", "TLSv1.3")
        assert got.tls.not_after is not None
        untrusted = with_tcp_server(
            lambda port: probe_tcp(TcpDialog(f"tls://127.0.0.1:{port}")), tls=context
        )
        assert untrusted.reason == "tls"


class TestDns:
    def test_the_expected_answer_succeeds(self) -> None:
        got = with_dns_server(
            lambda port: probe_dns(
                DnsQuery(f"dns://127.0.0.1:{port}", "svc.test", expect=r"A 192\.0\.2\.1$")
            )
        )
        assert got.reason == ""

    def test_a_refusing_server_is_answer(self) -> None:
        got = with_dns_server(
            lambda port: probe_dns(DnsQuery(f"dns://127.0.0.1:{port}", "refused.test"))
        )
        assert got.reason == "answer"

    def test_a_wrong_answer_is_answer(self) -> None:
        got = with_dns_server(
            lambda port: probe_dns(
                DnsQuery(f"dns://127.0.0.1:{port}", "svc.test", expect=r"192\.0\.2\.9")
            )
        )
        assert got.reason == "answer"

    def test_a_name_that_does_not_exist_is_answer(self) -> None:
        got = with_dns_server(
            lambda port: probe_dns(DnsQuery(f"dns://127.0.0.1:{port}", "nope.test"))
        )
        assert got.reason == "answer"

    def test_no_server_is_timeout_or_connect_within_the_deadline(self) -> None:
        """Nothing listens: the port-unreachable answer (connect) or silence (timeout)."""
        got = asyncio.run(
            probe_dns(DnsQuery(f"dns://127.0.0.1:{closed_port()}", "svc.test", timeout=0.3))
        )
        assert got.reason in ("connect", "timeout")
        assert got.duration <= 0.33


class TestConfig:
    @pytest.mark.parametrize(
        ("url", "kind"),
        [
            ("https://svc.test/health", "http"),
            ("tcp://127.0.0.1:25", "tcp"),
            ("tls://[::1]:443", "tcp"),
            ("dns://127.0.0.1:53", "dns"),
        ],
    )
    def test_the_kind_follows_the_url(self, url: str, kind: str) -> None:
        extra = {"query_name": "svc.test"} if kind == "dns" else {}
        assert ProbeCheckConfig(name="c", url=url, **extra).kind == kind

    @pytest.mark.parametrize(
        "fields",
        [
            {"url": "dns://127.0.0.1"},  # no question
            {"url": "tcp://127.0.0.1:25", "body_regex": "x"},
            {"url": "http://svc.test/", "expect": "x"},
            {"url": "http://svc.test/", "query_name": "svc.test"},
            {"url": "tcp://svc.test"},  # no port
            {"url": "ftp://svc.test/"},
        ],
    )
    def test_fields_of_another_kind_are_rejected(self, fields: dict[str, str]) -> None:
        with pytest.raises(ValueError):
            ProbeCheckConfig(name="c", **fields)


class TestIpProtocol:
    """Which address a name's lookup picks, with the resolver answering both families."""

    @staticmethod
    def pick(prefer: str, fallback: bool, families: tuple[int, ...]) -> tuple[int, str]:
        import socket

        from exporter.domains.probe.sources import wire

        answers = {
            socket.AF_INET: (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1", 80)),
            socket.AF_INET6: (
                socket.AF_INET6,
                socket.SOCK_STREAM,
                6,
                "",
                ("2001:db8::1", 80, 0, 0),
            ),
        }

        async def go() -> tuple[int, str]:
            loop = asyncio.get_running_loop()

            async def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
                return [answers[f] for f in families]

            loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]
            return await wire.resolve("svc.test", 80, prefer, fallback)  # type: ignore[arg-type]

        return asyncio.run(go())

    def test_the_preferred_family_wins_when_the_name_has_both(self) -> None:
        import socket

        both = (socket.AF_INET, socket.AF_INET6)
        assert self.pick("ip6", True, both) == (socket.AF_INET6, "2001:db8::1")
        assert self.pick("ip4", True, both) == (socket.AF_INET, "192.0.2.1")

    def test_the_other_family_only_with_fallback(self) -> None:
        import socket

        from exporter.domains.probe.sources.wire import ProbeFailure

        assert self.pick("ip6", True, (socket.AF_INET,)) == (socket.AF_INET, "192.0.2.1")
        with pytest.raises(ProbeFailure) as failure:
            self.pick("ip6", False, (socket.AF_INET,))
        assert failure.value.reason == "resolve"

    def test_an_ipv6_literal_needs_no_lookup_and_connects(self) -> None:
        """A probe of [::1] against a server on ::1, if this machine has IPv6 loopback."""
        import socket

        if not socket.has_ipv6:
            pytest.skip("no IPv6")

        async def go() -> Outcome:
            try:
                server = await asyncio.start_server(_pong, "::1", 0)
            except OSError:
                pytest.skip("no IPv6 loopback")
            port = server.sockets[0].getsockname()[1]
            async with server:
                return await probe_tcp(
                    TcpDialog(f"tcp://[::1]:{port}", send="PING\n", expect="^PONG")
                )

        assert asyncio.run(go()).reason == ""
