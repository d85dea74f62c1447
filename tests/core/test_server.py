"""/metrics, /healthz, /readyz over real HTTP: content negotiation, auth, and atomic snapshots."""

from __future__ import annotations

import asyncio
import base64
import gzip
import http.client
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse

import exporter.daemon as daemon_module
from exporter.core import exposition
from exporter.core.provider import RenderContext
from exporter.core.server import MetricsServer, wants_gzip, wants_openmetrics
from exporter.core.settings import ServerConfig
from exporter.core.snapshot import Snapshot, SnapshotHolder, render_part
from exporter.daemon import Daemon
from exporter.domains import providers
from tests.support.exposition import Exposition
from tests.support.net import http_get


def families() -> list[Any]:
    g = GaugeMetricFamily("platform_test_ratio", "A test ratio.", labels=["service"])
    g.add_metric(["a"], 0.25)
    g.add_metric(["b"], 1.0)
    return [g]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[MetricsServer]:
    settings = getattr(request, "param", {})
    config = ServerConfig(listen_address="127.0.0.1", port=0, **settings)
    srv = MetricsServer(config, SnapshotHolder(Snapshot.render(families(), 1.0)), lambda: True)
    srv.start()
    yield srv
    srv.stop()


class TestContentNegotiation:
    def test_plain_text_by_default(self, server: MetricsServer) -> None:
        status, headers, body = http_get(f"{server.url}/metrics")
        assert status == 200
        assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "Content-Encoding" not in headers
        assert Exposition.parse(body).value("platform_test_ratio", service="a") == 0.25

    def test_gzip_when_accepted(self, server: MetricsServer) -> None:
        status, headers, body = http_get(
            f"{server.url}/metrics", {"Accept-Encoding": "deflate, gzip;q=0.8"}
        )
        assert status == 200
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Vary"] == "Accept-Encoding"
        assert int(headers["Content-Length"]) == len(body)
        assert gzip.decompress(body) == server.holder.current.text

    def test_gzip_refused_with_q_zero(self, server: MetricsServer) -> None:
        _, headers, body = http_get(f"{server.url}/metrics", {"Accept-Encoding": "gzip;q=0"})
        assert "Content-Encoding" not in headers
        assert body == server.holder.current.text

    def test_openmetrics_when_asked_for(self, server: MetricsServer) -> None:
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        status, headers, body = http_get(f"{server.url}/metrics", {"Accept": accept})
        assert status == 200
        assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        assert body.endswith(b"# EOF\n")
        (fam,) = [f for f in om_parse(body.decode()) if f.name == "platform_test_ratio"]
        assert sorted(s.value for s in fam.samples) == [0.25, 1.0]

    def test_openmetrics_gzipped(self, server: MetricsServer) -> None:
        _, headers, body = http_get(
            f"{server.url}/metrics",
            {"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"},
        )
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body).endswith(b"# EOF\n")

    def test_no_scrape_renders_anything(
        self, server: MetricsServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Both formats are rendered with the snapshot: Prometheus asks for OpenMetrics
        first, and its first scrape after a refresh must not pay for a render."""
        import exporter.core.exposition as exposition_module
        import exporter.core.snapshot as snapshot_module

        def no(*args: object) -> bytes:
            raise AssertionError("rendered on the scrape path")

        monkeypatch.setattr(exposition_module, "write", no)
        monkeypatch.setattr(snapshot_module, "deflate", no)
        monkeypatch.setattr(snapshot_module, "gzip_pieces", no)
        for headers in ({}, {"Accept": "application/openmetrics-text; version=1.0.0"}):
            for encoding in ({}, {"Accept-Encoding": "gzip"}):
                assert http_get(f"{server.url}/metrics", {**headers, **encoding})[0] == 200

    def test_head_sends_headers_only(self, server: MetricsServer) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("HEAD", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == len(server.holder.current.text)
        assert resp.read() == b""
        conn.close()

    def test_unknown_path_is_404(self, server: MetricsServer) -> None:
        assert http_get(f"{server.url}/nope")[0] == 404

    def test_keep_alive_serves_many_requests_on_one_connection(self, server: MetricsServer) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for _ in range(20):
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            assert resp.read() == server.holder.current.text
        conn.close()

    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("gzip", True),
            ("GZIP", True),
            ("br, gzip;q=0.5", True),
            ("*", True),
            ("gzip;q=0", False),
            ("gzip;q=0.0", False),
            ("identity", False),
            ("", False),
        ],
    )
    def test_wants_gzip(self, header: str, expected: bool) -> None:
        assert wants_gzip(header) is expected

    def test_wants_openmetrics(self) -> None:
        assert wants_openmetrics("application/openmetrics-text; version=1.0.0")
        assert not wants_openmetrics("text/plain;version=0.0.4")


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class TestBasicAuth:
    AUTH: dict[str, Any] = {"basic_auth": {"username": "prom", "password": "s3cret"}}

    @pytest.mark.parametrize("server", [AUTH], indirect=True)
    def test_metrics_needs_the_right_credentials(self, server: MetricsServer) -> None:
        url = f"{server.url}/metrics"
        status, headers, _ = http_get(url)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic realm=")
        assert http_get(url, basic("prom", "wrong"))[0] == 401
        assert http_get(url, basic("other", "s3cret"))[0] == 401
        status, _, body = http_get(url, basic("prom", "s3cret"))
        assert status == 200 and body == server.holder.current.text

    @pytest.mark.parametrize("server", [AUTH], indirect=True)
    def test_every_path_needs_credentials_by_default(self, server: MetricsServer) -> None:
        """As in the exporter-toolkit, auth guards the whole server unless told otherwise."""
        for path in ("/healthz", "/readyz", "/-/healthy", "/-/ready", "/"):
            assert http_get(f"{server.url}{path}")[0] == 401, path
        assert http_get(f"{server.url}/healthz", basic("prom", "s3cret"))[0] == 200

    @pytest.mark.parametrize("server", [{**AUTH, "health_without_auth": True}], indirect=True)
    def test_probes_need_no_credentials_when_configured(self, server: MetricsServer) -> None:
        """Kubernetes liveness and readiness probes carry no credentials:
        ``health_without_auth`` opens the four health paths, and only those."""
        for path in ("/healthz", "/readyz", "/-/healthy", "/-/ready"):
            assert http_get(f"{server.url}{path}")[0] == 200, path
        assert http_get(f"{server.url}/metrics")[0] == 401
        assert http_get(f"{server.url}/")[0] == 401


MARKER_SERIES = 1000
REFRESHES = 25


@pytest.fixture
def generations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A provider whose every render yields MARKER_SERIES series all equal to a new generation."""
    counter = [0]
    real = providers()

    def marker(ctx: RenderContext) -> Iterator[Any]:
        counter[0] += 1
        gen = counter[0]
        fam = GaugeMetricFamily("platform_test_marker", "Marker series.", labels=["i"])
        for i in range(MARKER_SERIES):
            fam.add_metric([str(i)], gen)
        yield fam
        last = GaugeMetricFamily("platform_test_generation", "Render generation.")
        last.add_metric([], gen)
        yield last

    monkeypatch.setattr(daemon_module, "providers", lambda **_: {**real, "marker": marker})
    return counter


class TestSnapshotAtomicity:
    def test_concurrent_scrapes_during_refreshes_see_whole_snapshots(
        self, tmp_path: Path, generations: list[int]
    ) -> None:
        """Four scrapers on keep-alive connections while the daemon re-renders 25 times:
        every body parses, holds the complete marker family, and every series of it
        belongs to one and the same generation."""
        from exporter.config import Config

        config = Config(
            server={"listen_address": "127.0.0.1", "port": 0},
            state={"path": str(tmp_path / "s.db")},
        )
        daemon = Daemon(config, sources=[])
        server = daemon.start_server()
        stop = threading.Event()
        seen: list[int] = []
        problems: list[str] = []
        lock = threading.Lock()

        def scrape(headers: dict[str, str]) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            while not stop.is_set():
                conn.request("GET", "/metrics", headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if resp.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                try:
                    check(body, "openmetrics" in headers.get("Accept", ""))
                except Exception as exc:
                    with lock:
                        problems.append(repr(exc))
            conn.close()

        def check(body: bytes, om: bool) -> None:
            text = body.decode()
            fams = {f.name: f for f in om_parse(text)} if om else Exposition.parse(text).families
            marker = fams["platform_test_marker"].samples
            (gen,) = (s.value for s in fams["platform_test_generation"].samples)
            assert len(marker) == MARKER_SERIES, f"{len(marker)} marker series"
            assert {s.value for s in marker} == {gen}, "mixed generations"
            assert "platform_exporter_build_info" in fams
            with lock:
                seen.append(int(gen))

        variants = [
            {},
            {"Accept-Encoding": "gzip"},
            {"Accept": "application/openmetrics-text; version=1.0.0"},
            {"Accept": "application/openmetrics-text", "Accept-Encoding": "gzip"},
        ]
        threads = [threading.Thread(target=scrape, args=(v,)) for v in variants]
        for t in threads:
            t.start()

        async def refresh_many() -> None:
            for _ in range(REFRESHES):
                await daemon.refresh()

        try:
            asyncio.run(refresh_many())
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
            server.stop()
        assert problems == []
        assert generations[0] == REFRESHES + 1  # the initial render and the refreshes
        assert len(seen) >= REFRESHES
        assert len(set(seen)) > 2, "scrapes overlapped the refreshes"

    def test_refresh_requests_during_a_render_coalesce(
        self, tmp_path: Path, generations: list[int]
    ) -> None:
        """Ten refreshes asked for at once cost at most two renders, and the last state wins."""
        from exporter.config import Config

        config = Config(state={"path": str(tmp_path / "s.db")})
        daemon = Daemon(config, sources=[])
        before = generations[0]

        async def burst() -> None:
            await asyncio.gather(*(daemon.refresh() for _ in range(10)))

        asyncio.run(burst())
        assert 1 <= generations[0] - before <= 2
        exp = Exposition.parse(daemon.holder.current.text)
        assert exp.value("platform_test_generation") == generations[0]


class TestClientsThatGoAway:
    def test_a_reset_connection_prints_no_traceback(
        self, server: MetricsServer, capfd: pytest.CaptureFixture[str]
    ) -> None:
        """Prometheus hanging up mid-scrape is routine, not an error worth a traceback."""
        import socket
        import struct
        import time

        conn = socket.create_connection(("127.0.0.1", server.port))
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST
        time.sleep(0.2)
        assert http_get(f"{server.url}/healthz")[0] == 200
        assert "Traceback" not in capfd.readouterr().err


class TestTLS:
    def test_metrics_over_https_with_the_configured_certificate(self, tmp_path: Path) -> None:
        import ssl
        import urllib.request

        from tests.support.tls import self_signed

        cert, key = self_signed(tmp_path)
        config = ServerConfig(
            listen_address="127.0.0.1", port=0, tls={"cert_file": cert, "key_file": key}
        )
        srv = MetricsServer(config, SnapshotHolder(Snapshot.render(families(), 1.0)), lambda: True)
        srv.start()
        try:
            assert srv.url.startswith("https://127.0.0.1:")
            context = ssl.create_default_context(cafile=str(cert))
            with urllib.request.urlopen(f"{srv.url}/metrics", context=context, timeout=5) as r:
                assert r.status == 200
                assert Exposition.parse(r.read()).value("platform_test_ratio", service="b") == 1.0
        finally:
            srv.stop()

    def test_missing_certificate_files_are_a_config_error(self, tmp_path: Path) -> None:
        from pydantic import ValidationError

        with pytest.raises(ValidationError, match=r"cert_file .* does not exist"):
            ServerConfig(tls={"cert_file": tmp_path / "no.crt", "key_file": tmp_path / "no.key"})


def many_families(parts: int, series: int) -> list[list[Any]]:
    """``parts`` groups of two families of ``series`` samples each: enough bytes (over
    64 KiB a format) that a served body goes out piece by piece."""
    groups = []
    for p in range(parts):
        g = GaugeMetricFamily(f"platform_part{p}_ratio", f"Part {p}.", labels=["service"])
        c = CounterMetricFamily(f"platform_part{p}_events", f"Part {p} events.", labels=["s"])
        for i in range(series):
            g.add_metric([f"svc-{i}"], i / series)
            c.add_metric([f"svc-{i}"], i)
        groups.append([g, c])
    return groups


class TestServedAsParts:
    """A snapshot is served as its parts' deflated pieces, never joined: every body is
    still byte for byte what one render of all the families gives."""

    @pytest.fixture
    def parted(self) -> Iterator[tuple[MetricsServer, bytes, bytes]]:
        groups = many_families(3, 1500)
        whole_text, whole_om = exposition.write([f for g in groups for f in g])
        snap = Snapshot.assemble([render_part(g) for g in groups], 1.0)
        config = ServerConfig(listen_address="127.0.0.1", port=0)
        srv = MetricsServer(config, SnapshotHolder(snap), lambda: True)
        srv.start()
        yield srv, whole_text, whole_om + b"# EOF\n"
        srv.stop()

    def test_plain_text_equals_a_single_render(
        self, parted: tuple[MetricsServer, bytes, bytes]
    ) -> None:
        srv, text, _ = parted
        assert len(text) > 64 * 1024
        _, headers, body = http_get(f"{srv.url}/metrics")
        assert int(headers["Content-Length"]) == len(text)
        assert body == text

    def test_gzip_is_one_member_that_decodes_to_a_single_render(
        self, parted: tuple[MetricsServer, bytes, bytes]
    ) -> None:
        srv, text, _ = parted
        _, headers, body = http_get(f"{srv.url}/metrics", {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip"
        assert int(headers["Content-Length"]) == len(body)
        one = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert one.decompress(body) == text
        assert one.eof and one.unused_data == b""  # one member, its CRC and length checked

    def test_openmetrics_plain_and_gzipped_equal_a_single_render(
        self, parted: tuple[MetricsServer, bytes, bytes]
    ) -> None:
        srv, _, om = parted
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        assert http_get(f"{srv.url}/metrics", accept)[2] == om
        zipped = http_get(f"{srv.url}/metrics", {**accept, "Accept-Encoding": "gzip"})[2]
        assert gzip.decompress(zipped) == om

    def test_head_announces_the_inflated_length(
        self, parted: tuple[MetricsServer, bytes, bytes]
    ) -> None:
        srv, text, _ = parted
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("HEAD", "/metrics")
        resp = conn.getresponse()
        assert int(resp.headers["Content-Length"]) == len(text)
        assert resp.read() == b""
        conn.close()
