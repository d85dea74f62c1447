"""The CloudWatch source through boto3 against moto in server mode: REST and HTTP APIs."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from exporter.config import Config
from exporter.daemon import Daemon
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.settings import CloudWatchApiConfig
from exporter.domains.traffic.sources.cloudwatch import (
    percentile_queries,
    quantile_of,
    window_latencies,
)

NOW = math.floor(time.time() / 60) * 60 + 30.0
END = math.floor((NOW - 120) / 60) * 60  # the last minute a poll at NOW may read ends here
REST = [{"Name": "ApiName", "Value": "shop"}, {"Name": "Stage", "Value": "prod"}]
HTTP = [{"Name": "ApiId", "Value": "a1b2c3"}, {"Name": "Stage", "Value": "$default"}]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    httpx.post(f"{moto_url}/moto-api/reset")
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return boto3.client("cloudwatch", region_name="eu-west-1", endpoint_url=moto_url)


def put(cw: Any, dims: list[dict[str, str]], at: float, **values: float) -> None:
    cw.put_metric_data(
        Namespace="AWS/ApiGateway",
        MetricData=[
            {
                "MetricName": name.replace("e4xx", "4XXError").replace("e5xx", "5XXError")
                if dims is REST
                else name.replace("e4xx", "4xx").replace("e5xx", "5xx"),
                "Dimensions": dims,
                "Timestamp": datetime.fromtimestamp(at, UTC),
                "Value": value,
                "Unit": "Milliseconds" if name == "Latency" else "Count",
            }
            for name, value in values.items()
        ],
    )


def make_daemon(tmp_path: Path, moto_url: str, clock: list[float]) -> Daemon:
    config = Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {"name": "payments-api", "team": "payments", "routes": ["shop"]},
            {"name": "search", "team": "discovery", "routes": ["a1b2c3"]},
        ],
        sources={
            "cloudwatch": {
                "region": "eu-west-1",
                "endpoint_url": moto_url,
                "delay": "2m",
                "backfill": "10m",
                "apis": [
                    {"type": "rest", "name": "shop", "stage": "prod"},
                    {"type": "http", "name": "a1b2c3", "stage": "$default"},
                ],
                # moto computes Sum and Average but not percentiles (it fails the whole
                # call); percentile parsing is tested on its own below.
                "latency_statistics": [],
            }
        },
    )
    return Daemon(config, clock=lambda: clock[0])


def poll(daemon: Daemon) -> bool:
    return asyncio.run(daemon.poll(daemon.sources[0]))


def by_class(daemon: Daemon) -> dict[tuple[str, str], float]:
    return {
        (lab["service"], lab["code_class"]): v
        for lab, v in daemon.store.counters(traffic_store.REQUESTS_TOTAL)
    }


class TestGetMetricData:
    def test_rest_and_http_apis_are_read_per_minute_up_to_the_delay(
        self, tmp_path: Path, moto_url: str, aws: Any
    ) -> None:
        put(aws, REST, END - 300, Count=100, e4xx=5, e5xx=2, Latency=250)
        put(aws, REST, END - 240, Count=50)
        put(aws, HTTP, END - 300, Count=20, e5xx=4, Latency=40)
        put(aws, REST, END + 60, Count=999)  # inside the delay: not yet
        put(aws, REST, END - 900, Count=777)  # before the backfill: never
        clock = [NOW]
        daemon = make_daemon(tmp_path, moto_url, clock)
        assert poll(daemon), daemon.health["cloudwatch"].last_error
        assert by_class(daemon) == {
            ("payments-api", "2xx"): 143,
            ("payments-api", "4xx"): 5,
            ("payments-api", "5xx"): 2,
            ("search", "2xx"): 16,
            ("search", "5xx"): 4,
        }
        assert daemon.store.get_cursor("cloudwatch", "until") == f"{END:.0f}"
        # Two minutes later the delayed minute is read, and nothing twice.
        clock[0] = NOW + 120
        assert poll(daemon)
        assert by_class(daemon)[("payments-api", "2xx")] == 143 + 999
        assert poll(daemon)
        assert by_class(daemon)[("payments-api", "2xx")] == 143 + 999
        assert daemon.health["cloudwatch"].requests == {"200": 2}
        daemon.store.close()

    def test_latency_arrives_in_seconds(self, tmp_path: Path, moto_url: str, aws: Any) -> None:
        """Average Latency 250 ms over 100 requests is 25 request-seconds, not 25000."""
        put(aws, REST, END - 300, Count=100, Latency=250)
        put(aws, HTTP, END - 300, Count=20, Latency=40)
        daemon = make_daemon(tmp_path, moto_url, [NOW])
        assert poll(daemon)
        rows = {
            r[0]: (r[1], r[2])
            for r in daemon.store.query(
                "SELECT a.service, SUM(latency_sum), SUM(latency_count) FROM traffic_minutes "
                "JOIN traffic_idents a USING (source, ident) GROUP BY a.service"
            )
        }
        assert rows["payments-api"][0] == pytest.approx(25.0) and rows["payments-api"][1] == 100
        assert rows["search"][0] == pytest.approx(0.8) and rows["search"][1] == 20
        # The daily total is there for cost per request.
        day = datetime.fromtimestamp(END - 300, UTC).date()
        assert traffic_store.daily_requests(daemon.store, "payments-api", day) == 100
        daemon.store.close()

    def test_an_unreachable_endpoint_marks_the_source_down(
        self, tmp_path: Path, aws: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from exporter.domains.traffic.sources import cloudwatch
        from tests.support.net import free_port

        monkeypatch.setattr(cloudwatch, "MAX_ATTEMPTS", 1)  # no backoff in a test

        daemon = make_daemon(tmp_path, f"http://127.0.0.1:{free_port()}", [NOW])
        assert not poll(daemon)
        assert daemon.health["cloudwatch"].errors["connect"] == 1
        assert daemon.store.get_cursor("cloudwatch", "until") is None
        daemon.store.close()


class TestPercentiles:
    APIS = [
        CloudWatchApiConfig(type="rest", name="shop", stage="prod"),
        CloudWatchApiConfig(type="http", name="a1b2c3", stage="$default"),
    ]

    def test_one_query_per_api_and_statistic_with_the_window_as_period(self) -> None:
        queries = percentile_queries(self.APIS, ["p50", "p99.9"], 3600)
        assert [q["Id"] for q in queries] == ["q_0_p50", "q_0_p99_9", "q_1_p50", "q_1_p99_9"]
        assert queries[3]["MetricStat"]["Period"] == 3600
        assert queries[3]["MetricStat"]["Metric"]["Dimensions"] == HTTP
        assert queries[0]["MetricStat"]["Metric"]["Dimensions"] == REST

    def test_percentiles_arrive_in_seconds(self) -> None:
        """A GetMetricData result as boto3 returns it: milliseconds in, seconds out."""
        ts = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
        results = [
            {
                "Id": "q_0_p50",
                "Label": "Latency",
                "Timestamps": [ts],
                "Values": [120.0],
                "StatusCode": "Complete",
            },
            {
                "Id": "q_0_p99",
                "Label": "Latency",
                "Timestamps": [ts],
                "Values": [870.0],
                "StatusCode": "Complete",
            },
            {
                "Id": "q_1_p50",
                "Label": "Latency",
                "Timestamps": [],
                "Values": [],
                "StatusCode": "Complete",
            },
        ]
        got = window_latencies(
            self.APIS, ["payments-api", "search"], ["p50", "p99"], "1h", results, 5.0
        )
        assert [(p.service, p.quantile, p.seconds) for p in got] == [
            ("payments-api", 0.5, pytest.approx(0.12)),
            ("payments-api", 0.99, pytest.approx(0.87)),
        ]
        assert quantile_of("p99.9") == pytest.approx(0.999)

    def test_a_non_percentile_statistic_is_a_config_error(self) -> None:
        with pytest.raises(ValueError, match="percentile"):
            Config(
                sources={
                    "cloudwatch": {
                        "apis": [{"name": "shop", "stage": "prod"}],
                        "latency_statistics": ["Average"],
                    }
                }
            )
