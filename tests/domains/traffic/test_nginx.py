"""The NGINX source against a real nginx: counts, quantiles, rotation, truncation, bad lines."""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import LATENCY_BUCKETS
from exporter.domains.traffic.sources.nginx import parse_stub_status
from exporter.domains.traffic.store import MALFORMED_TOTAL, ROTATIONS_TOTAL
from tests.domains.traffic.nginx_gateway import NginxServer, wait_for_lines

pytestmark = pytest.mark.integration

# checkout: 10 fast 200, 5 slow (300 ms) 200, 3 x 404, 2 x 502; search: 3 x 200; 2 unmapped.
MIX = (
    [("shop.test", "/checkout/cart/d0/s200")] * 10
    + [("shop.test", "/checkout/pay/d300/s200")] * 5
    + [("shop.test", "/checkout/x/d0/s404")] * 3
    + [("shop.test", "/checkout/y/d0/s502")] * 2
    + [("any.test", "/search/q/d0/s200?q=shoes")] * 3
    + [("other.test", "/elsewhere/d0/s200")] * 2
)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxServer]:
    root = tmp_path / "nginx"
    root.mkdir()
    server = NginxServer(root).start()
    yield server
    server.stop()


def make_config(tmp_path: Path, server: NginxServer) -> Config:
    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {"name": "checkout", "team": "payments", "routes": ["shop.test/checkout"]},
            {"name": "search", "team": "discovery", "routes": ["/search"]},
        ],
        sources={
            "nginx": {
                "access_log": str(server.access_log),
                "stub_status_url": f"{server.url}/stub_status",
                "consumer_field": "api_key",
            }
        },
    )


def poll(daemon: Daemon) -> None:
    """One poll in its own event loop (so the HTTP client is closed with it)."""
    (src,) = daemon.sources

    async def once() -> bool:
        try:
            return await daemon.poll(src)
        finally:
            for client in daemon.clients.values():
                await client.aclose()
            daemon.clients.clear()

    assert asyncio.run(once()), daemon.health[src.name].last_error


def requests_by_class(daemon: Daemon) -> dict[tuple[str, str], float]:
    return {
        (labels["service"], labels["code_class"]): value
        for labels, value in daemon.store.counters(traffic_store.REQUESTS_TOTAL)
    }


CK = {"service": "checkout", "team": "payments"}


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class TestCountsAndQuantiles:
    def test_a_known_mix_is_counted_by_service_and_status_class(
        self, tmp_path: Path, nginx: NginxServer
    ) -> None:
        """Every request nginx logged is counted once, under the service its route maps to."""
        assert sorted(nginx.run(MIX)) == sorted(int(p[1].split("/s")[-1][:3]) for p in MIX)
        wait_for_lines(nginx.access_log, len(MIX))
        daemon = Daemon(make_config(tmp_path, nginx))
        poll(daemon)
        assert requests_by_class(daemon) == {
            ("checkout", "2xx"): 15,
            ("checkout", "4xx"): 3,
            ("checkout", "5xx"): 2,
            ("search", "2xx"): 3,
            ("unmapped", "2xx"): 2,
        }
        text = daemon.render().text
        got = samples(text)
        assert got[
            key("platform_service_error_ratio", **CK, code_class="5xx", window="5m")
        ] == pytest.approx(2 / 20)
        assert got[
            key("platform_service_error_ratio", **CK, code_class="4xx", window="5m")
        ] == pytest.approx(3 / 20)
        assert got[key("platform_service_availability_ratio", **CK, window="1h")] == pytest.approx(
            0.9
        )
        assert got[key("platform_service_request_rate", **CK, window="5m")] == pytest.approx(
            20 / 300
        )
        assert got[key("platform_service_request_samples", **CK, window="30d")] == 20
        # Unmapped traffic is shown, never dropped.
        assert (
            got[
                key(
                    "platform_service_request_samples",
                    service="unmapped",
                    team="unknown",
                    window="5m",
                )
            ]
            == 2
        )
        daemon.store.close()

    def test_latency_quantiles_are_right_to_within_a_bucket(
        self, tmp_path: Path, nginx: NginxServer
    ) -> None:
        """15 fast requests and 5 of 300 ms. Each quantile lies in the bucket that holds the
        matching request_time nginx logged, and each bucket counts the logged times under it
        (compared with the log itself, since a loaded machine may slow any request)."""
        nginx.run(MIX[:20])
        wait_for_lines(nginx.access_log, 20)
        logged = sorted(
            float(json.loads(line)["request_time"])
            for line in nginx.access_log.read_bytes().splitlines()
        )
        # The five 300 ms requests are slow; on a loaded machine others may be slow too.
        assert len(logged) == 20 and sum(t >= 0.3 for t in logged) >= 5
        daemon = Daemon(make_config(tmp_path, nginx))
        poll(daemon)
        got = samples(daemon.render().text)
        bounds = [0.0, *LATENCY_BUCKETS]
        for q in (0.5, 0.95, 0.99):
            value = got[
                key("platform_service_latency_seconds", **CK, quantile=f"{q:g}", window="5m")
            ]
            nth = logged[math.ceil(q * len(logged)) - 1]
            i = bisect.bisect_left(LATENCY_BUCKETS, nth)
            assert bounds[i] <= value <= bounds[i + 1], (q, value, nth)
        assert got[key("platform_service_latency_samples", **CK, window="5m")] == 20
        hist = {
            dict(labels)["le"]: v
            for (name, labels), v in got.items()
            if name == "platform_service_request_duration_seconds_bucket"
            and dict(labels)["service"] == "checkout"
        }
        assert list(hist) == [f"{b:g}" for b in LATENCY_BUCKETS] + ["+Inf"]
        for b in LATENCY_BUCKETS:
            assert hist[f"{b:g}"] == sum(t <= b for t in logged), b
        assert hist["+Inf"] == 20
        total = got[key("platform_service_request_duration_seconds_sum", **CK, source="nginx")]
        # In seconds, as nginx logs them (5 x 0.3 s and more), not milliseconds.
        assert total == pytest.approx(sum(logged), abs=1e-6)
        assert 1.5 <= total < 20
        daemon.store.close()

    def test_the_exposition_passes_promtool(self, tmp_path: Path, nginx: NginxServer) -> None:
        nginx.run(MIX)
        wait_for_lines(nginx.access_log, len(MIX))
        daemon = Daemon(make_config(tmp_path, nginx))
        poll(daemon)
        promtool = shutil.which("promtool")
        if promtool is None:
            pytest.skip("promtool is not installed")
        result = subprocess.run(
            [promtool, "check", "metrics"], input=daemon.render().text, capture_output=True
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout + result.stderr == b""
        daemon.store.close()

    def test_stub_status_connections_are_read(self, tmp_path: Path, nginx: NginxServer) -> None:
        nginx.run(MIX[:3])
        daemon = Daemon(make_config(tmp_path, nginx))
        poll(daemon)
        got = samples(daemon.render().text)
        assert got[key("platform_gateway_connections", source="nginx", state="active")] >= 1
        assert got[key("platform_gateway_requests_total", source="nginx")] >= 3
        daemon.store.close()


class TestTailing:
    def test_a_restart_neither_recounts_nor_skips(self, tmp_path: Path, nginx: NginxServer) -> None:
        nginx.run(MIX[:10])
        wait_for_lines(nginx.access_log, 10)
        config = make_config(tmp_path, nginx)
        first = Daemon(config)
        poll(first)
        first.store.close()
        nginx.run(MIX[:5])
        wait_for_lines(nginx.access_log, 15)
        second = Daemon(config)
        poll(second)
        poll(second)
        assert requests_by_class(second) == {("checkout", "2xx"): 15}
        second.store.close()

    def test_rotation_by_rename_and_reopen_loses_nothing(
        self, tmp_path: Path, nginx: NginxServer
    ) -> None:
        """Lines written to the renamed file before the reopen, and to the new file, all count."""
        daemon = Daemon(make_config(tmp_path, nginx))
        nginx.run(MIX[:4])
        wait_for_lines(nginx.access_log, 4)
        poll(daemon)
        rotated = Path(f"{nginx.access_log}.1")
        nginx.access_log.rename(rotated)
        nginx.run(MIX[:3])  # still written to the renamed file
        wait_for_lines(rotated, 7)
        nginx.reopen_logs()
        nginx.run(MIX[15:18])  # 404s, into the new file
        wait_for_lines(nginx.access_log, 3)
        poll(daemon)
        assert requests_by_class(daemon) == {("checkout", "2xx"): 7, ("checkout", "4xx"): 3}
        poll(daemon)
        assert requests_by_class(daemon) == {("checkout", "2xx"): 7, ("checkout", "4xx"): 3}
        assert daemon.store.counters(ROTATIONS_TOTAL) == [
            ({"reason": "rotated", "source": "nginx"}, 1.0)
        ]
        daemon.store.close()

    def test_rotation_while_stopped_reads_the_rest_of_the_renamed_file(
        self, tmp_path: Path, nginx: NginxServer
    ) -> None:
        config = make_config(tmp_path, nginx)
        first = Daemon(config)
        nginx.run(MIX[:2])
        wait_for_lines(nginx.access_log, 2)
        poll(first)
        first.store.close()
        nginx.run(MIX[:2])
        wait_for_lines(nginx.access_log, 4)
        nginx.access_log.rename(f"{nginx.access_log}.1")
        nginx.reopen_logs()
        nginx.run(MIX[:1])
        wait_for_lines(nginx.access_log, 1)
        second = Daemon(config)
        poll(second)
        assert requests_by_class(second) == {("checkout", "2xx"): 5}
        second.store.close()

    def test_truncation_restarts_from_the_beginning(
        self, tmp_path: Path, nginx: NginxServer
    ) -> None:
        daemon = Daemon(make_config(tmp_path, nginx))
        nginx.run(MIX[:6])
        wait_for_lines(nginx.access_log, 6)
        poll(daemon)
        with open(nginx.access_log, "r+b") as fh:  # what copytruncate does
            fh.truncate(0)
        nginx.run(MIX[18:20])  # two 502s, written at the start of the emptied file
        wait_for_lines(nginx.access_log, 2)
        poll(daemon)
        assert requests_by_class(daemon) == {("checkout", "2xx"): 6, ("checkout", "5xx"): 2}
        with open(nginx.access_log, "r+b") as fh:  # emptied again, and nothing written since
            fh.truncate(0)
        poll(daemon)
        poll(daemon)
        assert daemon.store.counters(ROTATIONS_TOTAL) == [
            ({"reason": "truncated", "source": "nginx"}, 2.0)
        ]
        daemon.store.close()

    def test_malformed_lines_are_counted_and_skipped(
        self, tmp_path: Path, nginx: NginxServer
    ) -> None:
        nginx.run(MIX[:2])
        wait_for_lines(nginx.access_log, 2)
        with open(nginx.access_log, "ab") as fh:
            fh.write(b"not json at all\n")
            fh.write(b'{"status":"abc","request_time":"0.1","msec":"1700000000.000"}\n')
            fh.write(b"[1, 2, 3]\n")
            fh.write(b'{"status":"200","msec":"1700000000.000"}\n')  # no latency
        nginx.run(MIX[:1])
        wait_for_lines(nginx.access_log, 7)
        daemon = Daemon(make_config(tmp_path, nginx))
        poll(daemon)
        assert requests_by_class(daemon) == {("checkout", "2xx"): 3}
        assert daemon.store.counters(MALFORMED_TOTAL) == [({"source": "nginx"}, 4.0)]
        got = samples(daemon.render().text)
        assert got[key("platform_exporter_access_log_malformed_lines_total", source="nginx")] == 4
        daemon.store.close()

    def test_an_unfinished_last_line_waits_for_its_end(
        self, tmp_path: Path, nginx: NginxServer
    ) -> None:
        nginx.run(MIX[:1])
        wait_for_lines(nginx.access_log, 1)
        line = nginx.access_log.read_bytes().splitlines()[0]
        with open(nginx.access_log, "ab") as fh:
            fh.write(line[:20])
        daemon = Daemon(make_config(tmp_path, nginx))
        poll(daemon)
        assert requests_by_class(daemon) == {("checkout", "2xx"): 1}
        with open(nginx.access_log, "ab") as fh:
            fh.write(line[20:] + b"\n")
        poll(daemon)
        assert requests_by_class(daemon) == {("checkout", "2xx"): 2}
        daemon.store.close()

    def test_active_consumers_come_from_the_configured_field(
        self, tmp_path: Path, nginx: NginxServer
    ) -> None:
        for api_key in ("k1", "k2", "k1", "k3"):
            nginx.get("shop.test", "/checkout/a/d0/s200", api_key=api_key)
        nginx.get("shop.test", "/checkout/a/d0/s200")
        wait_for_lines(nginx.access_log, 5)
        daemon = Daemon(make_config(tmp_path, nginx))
        poll(daemon)
        got = samples(daemon.render().text)
        assert (
            got[key("platform_service_active_consumers", service="checkout", team="payments")] == 3
        )
        daemon.store.close()


class TestStubStatus:
    def test_the_page_is_parsed(self) -> None:
        page = (
            "Active connections: 291 \nserver accepts handled requests\n 16630948 16630948 "
            "31070465 \nReading: 6 Writing: 179 Waiting: 106 \n"
        )
        assert parse_stub_status(page) == {
            "active": 291,
            "accepts": 16630948,
            "handled": 16630948,
            "requests": 31070465,
            "reading": 6,
            "writing": 179,
            "waiting": 106,
        }
