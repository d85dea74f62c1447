"""The landing page ``/``: the week's review rendered with the snapshot, served as bytes.

The daemon renders the page at refresh time from committed state (the seeded
history here), so a request reads bytes only; the server asks for the same
credentials on ``/`` as on ``/metrics``.
"""

from __future__ import annotations

import base64
import gzip
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.core.clock import FixedClock
from exporter.core.errors import StateError
from exporter.core.server import MetricsServer
from exporter.core.settings import ServerConfig
from exporter.core.snapshot import Page, Snapshot, SnapshotHolder
from exporter.daemon import Daemon
from tests.report import seed
from tests.support.net import http_get


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class TestLandingPage:
    def test_the_daemon_renders_the_weeks_review_with_its_snapshot(self, tmp_path: Path) -> None:
        cfg = seed.seeded(tmp_path)
        daemon = Daemon(cfg, sources=[], clock=FixedClock(seed.AS_OF))
        try:
            assert daemon.holder.current.page.html == b""  # before the first: the plain index
            daemon.render_page()
            page = daemon.holder.current.page.html.decode()
            # AS_OF is Monday 2027-01-04: the current week is 2027-W01, W53 the one before.
            assert "<h1>Platform review 2027-W01</h1>" in page
            assert '<a href="/metrics">Metrics</a>' in page
            assert "2026-W53" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        finally:
            daemon.store.close()

    def test_the_page_is_rendered_at_most_once_per_min_refresh_and_kept_by_snapshots(
        self, tmp_path: Path
    ) -> None:
        cfg = seed.seeded(tmp_path)
        clock = FixedClock(seed.AS_OF)
        daemon = Daemon(cfg, sources=[], clock=clock)
        try:
            daemon.render_page()
            page = daemon.holder.current.page
            # Its gzip copy is made with it, when it is rendered.
            assert gzip.decompress(page.gzip) == page.html
            daemon.holder.set(daemon.render())
            assert daemon.holder.current.page is page  # later snapshots carry it as it is
            clock.advance(1.0)
            daemon.render_page()
            assert daemon.page.at == seed.AS_OF  # within min_refresh: not rendered again
            clock.advance(cfg.metrics.min_refresh)
            daemon.render_page()
            assert daemon.page.at == seed.AS_OF + 1.0 + cfg.metrics.min_refresh
        finally:
            daemon.store.close()

    def test_it_asks_for_the_same_credentials_as_metrics(self) -> None:
        config = ServerConfig(
            listen_address="127.0.0.1",
            port=0,
            basic_auth={"username": "pm", "password": "s3cret"},
        )
        snap = Snapshot.assemble([], 1.0, Page.of(b"<html>the review</html>"))
        server = MetricsServer(config, SnapshotHolder(snap), lambda: True)
        server.start()
        try:
            for path in ("/", "/metrics"):
                assert http_get(server.url + path)[0] == 401
                assert http_get(server.url + path, _basic("pm", "wrong"))[0] == 401
            status, headers, body = http_get(server.url + "/", _basic("pm", "s3cret"))
            assert (status, body) == (200, b"<html>the review</html>")
            assert headers["Content-Type"] == "text/html; charset=utf-8"
        finally:
            server.stop()

    def test_before_the_first_review_it_serves_the_plain_index(self) -> None:
        config = ServerConfig(listen_address="127.0.0.1", port=0)
        server = MetricsServer(config, SnapshotHolder(), lambda: True)
        server.start()
        try:
            status, _, body = http_get(server.url + "/")
            assert status == 200 and b'<a href="/metrics">' in body
        finally:
            server.stop()

    def test_a_state_outage_keeps_the_page_and_is_logged_once_not_at_every_rendering(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        cfg = seed.seeded(tmp_path)
        clock = FixedClock(seed.AS_OF)
        daemon = Daemon(cfg, sources=[], clock=clock)
        try:
            daemon.render_page()
            page = daemon.holder.current.page
            failing = StateError("disk I/O error")

            def unreadable(_ctx: object) -> None:
                raise failing

            monkeypatch.setattr("exporter.review.page.build_review", unreadable)
            with caplog.at_level(logging.INFO, logger="exporter.review"):
                for _ in range(3):
                    clock.advance(cfg.metrics.min_refresh)
                    daemon.render_page()
                    assert daemon.holder.current.page.html == page.html
                monkeypatch.undo()
                clock.advance(cfg.metrics.min_refresh)
                daemon.render_page()
            lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
            assert lines == [
                (
                    "WARNING",
                    "the review page: state unreadable (disk I/O error); serving the previous "
                    "one until it is readable again",
                    None,
                ),
                ("INFO", "the review page rendered again from the state", None),
            ]
        finally:
            daemon.store.close()


# A page the size of a large organisation's review repeats its rows' markup: ~1 MB.
BIG_PAGE = b"<html><body><table>" + b"<tr><td>svc</td><td>99.9%</td></tr>" * 30000 + b"</table>"


@pytest.fixture
def big_page_server() -> Iterator[MetricsServer]:
    config = ServerConfig(listen_address="127.0.0.1", port=0)
    holder = SnapshotHolder(Snapshot.assemble([], 1.0, Page.of(BIG_PAGE)))
    server = MetricsServer(config, holder, lambda: True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class TestTheLandingPageCompressed:
    """``/`` is served gzipped to a client that accepts it, as ``/metrics`` is, from the
    copy compressed when the page was rendered."""

    def test_gzip_when_the_client_accepts_it(self, big_page_server: MetricsServer) -> None:
        status, headers, body = http_get(
            big_page_server.url + "/", {"Accept-Encoding": "deflate, gzip;q=0.8"}
        )
        assert status == 200
        assert headers["Content-Encoding"] == "gzip"
        assert headers["Vary"] == "Accept-Encoding"
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert gzip.decompress(body) == BIG_PAGE
        assert len(body) < len(BIG_PAGE) / 20

    @pytest.mark.parametrize("accept", [None, "gzip;q=0", "identity", "br"])
    def test_plain_otherwise(self, big_page_server: MetricsServer, accept: str | None) -> None:
        asked = {} if accept is None else {"Accept-Encoding": accept}
        status, headers, body = http_get(big_page_server.url + "/", asked)
        assert (status, body) == (200, BIG_PAGE)
        assert "Content-Encoding" not in headers
        assert headers["Vary"] == "Accept-Encoding"

    def test_a_request_compresses_nothing(
        self, big_page_server: MetricsServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With zlib's compressors out of order, both forms are still served: a request
        only picks the bytes made at rendering time."""

        def broken(*args: object, **kwargs: object) -> None:
            raise AssertionError("compressed while serving a request")

        monkeypatch.setattr(zlib, "compress", broken)
        monkeypatch.setattr(zlib, "compressobj", broken)
        _, headers, body = http_get(big_page_server.url + "/", {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == BIG_PAGE
        assert http_get(big_page_server.url + "/")[2] == BIG_PAGE
