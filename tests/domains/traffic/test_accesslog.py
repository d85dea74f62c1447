"""Parsing access-log lines: what counts, what is malformed, and the latency fields."""

from __future__ import annotations

from exporter.config import Config
from exporter.domains.traffic.accesslog import Aggregator
from exporter.domains.traffic.kpis import LATENCY_BUCKETS
from exporter.domains.traffic.routes import RouteMap

NB = len(LATENCY_BUCKETS)


def aggregator() -> Aggregator:
    config = Config(services=[{"name": "checkout", "team": "payments", "routes": ["/checkout"]}])
    return Aggregator(RouteMap(config), consumer_field="api_key")


def line(**fields: str) -> str:
    base = {"msec": "1767225600.123", "host": "h", "request_uri": "/checkout/x", "status": "200"}
    base.update(fields)
    return "{" + ",".join(f'"{k}":"{v}"' for k, v in base.items()) + "}"


class TestLines:
    def test_request_time_is_the_latency_in_seconds(self) -> None:
        agg = aggregator()
        agg.add_lines([line(request_time="0.042")])
        (delta,) = agg.deltas("b")
        assert delta.service == "checkout" and delta.minute == 1767225600.0
        assert delta.codes == (0, 1, 0, 0, 0)
        assert delta.latency_sum == 0.042
        assert delta.latency_buckets is not None
        assert delta.latency_buckets[LATENCY_BUCKETS.index(0.05)] == 1

    def test_without_request_time_upstream_times_are_summed(self) -> None:
        """Two upstreams tried: "0.010, 0.250" is 0.26 s; "-" is no time."""
        agg = aggregator()
        agg.add_lines(
            [
                line(request_time="-", upstream_response_time="0.010, 0.250"),
                line(upstream_response_time="0.5 : 0.25"),
            ]
        )
        (delta,) = agg.deltas("b")
        assert delta.latency_count == 2 and abs(delta.latency_sum - 1.01) < 1e-9

    def test_time_iso8601_places_the_minute(self) -> None:
        agg = aggregator()
        agg.add_lines(
            ['{"time_iso8601":"2026-01-01T00:01:59+00:00","status":"503","request_time":"1"}']
        )
        (delta,) = agg.deltas("b")
        assert delta.minute == 1767225660.0 and delta.codes[4] == 1 and delta.service == "unmapped"

    def test_malformed_lines_are_counted(self) -> None:
        agg = aggregator()
        agg.add_lines(
            [
                "garbage",
                '{"status":"200"',  # cut short
                line(request_time="0.1") + " trailing",
                line(status="999", request_time="0.1"),
                line(status="abc", request_time="0.1"),
                line(request_time="NaN"),
                line(request_time="-1"),
                line(),  # no latency at all
                '"just a string"',
                '{"status":"200","request_time":"0.1"}',  # no time field
                "",
            ]
        )
        assert agg.malformed == 10
        assert agg.lines == 11
        assert agg.deltas("b") == []

    def test_consumers_are_digests(self) -> None:
        agg = aggregator()
        agg.add_lines(
            [line(request_time="0.1", api_key="secret-key"), line(request_time="0.1", api_key="-")]
        )
        (seen,) = agg.consumers_seen()
        assert (
            seen.service == "checkout"
            and "secret" not in seen.consumer
            and len(seen.consumer) == 16
        )
