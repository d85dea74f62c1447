"""The landing page ``/``: the week's review rendered with the snapshot, served as bytes.

The daemon renders the page at refresh time from committed state (the seeded
history here), so a request reads bytes only; the server asks for the same
credentials on ``/`` as on ``/metrics``.
"""

from __future__ import annotations

import base64
from pathlib import Path

from exporter.core.clock import FixedClock
from exporter.core.server import MetricsServer
from exporter.core.settings import ServerConfig
from exporter.core.snapshot import Snapshot, SnapshotHolder
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
            assert daemon.holder.current.page == b""  # before the first: the plain index
            daemon.render_page()
            page = daemon.holder.current.page.decode()
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
            daemon.holder.set(daemon.render())
            assert daemon.holder.current.page is page  # later snapshots carry it
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
        snap = Snapshot.assemble([], 1.0, b"<html>the review</html>")
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
