"""Cost per transaction end to end: FOCUS files for cost, a Prometheus-API fake
for daily request totals, lined up on UTC days."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.sandbox.app import App, Request, Response
from exporter.daemon import Daemon
from tests.domains.cost.test_focus_source import line, write_csv
from tests.support.exposition import Exposition

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC).timestamp()


def day_end(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() + 86400


def days_ending(first: str, last: str) -> list[float]:
    """The end of each day from ``first`` to ``last`` (inclusive), in order."""
    start = datetime.fromisoformat(first).replace(tzinfo=UTC).timestamp()
    count = round((datetime.fromisoformat(last).replace(tzinfo=UTC).timestamp() - start) / 86400)
    return [start + 86400 * (n + 1) for n in range(count + 1)]


def prometheus_fake(totals: dict[str, dict[str, float]], queries: list[dict[str, str]]) -> App:
    """Answers /api/v1/query like Prometheus: a vector per service at `time`."""
    app = App()

    @app.route("GET", "/api/v1/query")
    def query(request: Request) -> Response:
        params = {k: v[-1] for k, v in request.query.items()}
        queries.append(params)
        if "bad" in params["query"]:
            return Response.json(
                {"status": "error", "errorType": "bad_data", "error": "parse error"}, 400
            )
        at = float(params["time"])
        day = next((d for d in totals if day_end(d) == at), None)
        result = [
            {"metric": {"service": s}, "value": [at, str(v)]}
            for s, v in (totals.get(day, {}) if day else {}).items()
        ]
        return Response.json(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    return app


def config(tmp_path: Path, **rt: Any) -> Config:
    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}},
            {"name": "search", "team": "discovery", "cost": {"tags": {"service": "search"}}},
        ],
        sources={
            "focus": {"paths": [str(tmp_path / "exports")]},
            "request_totals": {
                "url": "http://prometheus.test",
                "query": "sum by (service) (increase(http_requests_total[$window]))",
                "lookback_days": 3,
                **rt,
            },
        },
    )


class TestCostPerTransaction:
    def test_a_day_boundary_splits_cost_and_traffic_correctly(self, tmp_path: Path) -> None:
        """Cost of the 20th only (the 21st's not in yet); requests on both days.

        7d = 10 / 1000 (the 21st's 500 requests are not divided into the 20th's cost);
        1d is absent. When the 21st's cost (2) arrives: 1d = 2 / 500, 7d = 12 / 1500.
        """
        exports = tmp_path / "exports"
        exports.mkdir()
        write_csv(exports / "a.csv", [line(10, 10, "2026-11-20", service="checkout")])
        queries: list[dict[str, str]] = []
        totals = {
            "2026-11-20": {"checkout": 1000.0},
            "2026-11-21": {"checkout": 500.0, "search": 70.0},
        }
        app = prometheus_fake(totals, queries)
        daemon = Daemon(config(tmp_path), transport=app.transport(), clock=lambda: NOW)
        asyncio.run(daemon.poll_all())
        exp = Exposition.parse(daemon.holder.current.text)
        assert queries[0]["query"] == ("sum by (service) (increase(http_requests_total[1d]))")
        # One query per closed day, at the day's end: the last 3 days (`lookback_days`)
        # and every day of last month, so `last_month` has a whole month of requests. A
        # first poll reads the newest 40 of those 52 days, oldest first.
        assert [float(q["time"]) for q in queries] == days_ending("2026-10-13", "2026-11-21")
        cpt = "platform_cost_per_transaction"
        assert exp.value(cpt, service="checkout", window="7d", currency="USD") == pytest.approx(
            0.01
        )
        assert exp.value(cpt, service="checkout", window="1d") is None
        assert exp.value(f"{cpt}_samples", service="checkout", window="1d") == 0
        assert exp.value(f"{cpt}_samples", service="checkout", window="7d") == 1
        assert exp.value(f"{cpt}_requests", service="checkout", window="7d") == 1000
        # search has requests but no cost lines at all: no value, never 0.
        assert exp.samples(cpt, service="search") == []

        write_csv(exports / "b.csv", [line(2, 2, "2026-11-21", service="checkout")])
        asyncio.run(daemon.poll_all())
        exp = Exposition.parse(daemon.holder.current.text)
        assert exp.value(cpt, service="checkout", window="1d") == pytest.approx(2 / 500)
        assert exp.value(cpt, service="checkout", window="7d") == pytest.approx(12 / 1500)
        # The second poll reads the rest of October; days already read are not queried again.
        times = [float(q["time"]) for q in queries]
        assert times[40:] == days_ending("2026-10-01", "2026-10-12")
        assert len(set(times)) == len(times) == 52
        asyncio.run(daemon.shutdown())

    def test_a_query_error_marks_the_source_down(self, tmp_path: Path) -> None:
        (tmp_path / "exports").mkdir()
        app = prometheus_fake({}, [])
        daemon = Daemon(
            config(tmp_path, query="bad query"), transport=app.transport(), clock=lambda: NOW
        )
        asyncio.run(daemon.poll_all())
        health = daemon.health["request_totals"]
        assert health.up is False
        assert health.errors["http_4xx"] == 1
        assert "parse error" in (health.last_error or "")
        asyncio.run(daemon.shutdown())

    def test_a_day_is_not_read_before_it_settles(self, tmp_path: Path) -> None:
        (tmp_path / "exports").mkdir()
        queries: list[dict[str, str]] = []
        app = prometheus_fake({}, queries)
        early = datetime(2026, 11, 22, 0, 5, tzinfo=UTC).timestamp()  # 5 min after midnight
        daemon = Daemon(config(tmp_path), transport=app.transport(), clock=lambda: early)
        asyncio.run(daemon.poll_all())
        times = [float(q["time"]) for q in queries]
        assert times[-2:] == [day_end("2026-11-19"), day_end("2026-11-20")]
        assert day_end("2026-11-21") not in times
        asyncio.run(daemon.shutdown())


class TestGatewayRequestTotals:
    def test_gateway_minutes_either_side_of_midnight_land_on_their_own_days(
        self, tmp_path: Path
    ) -> None:
        """Traffic at 23:59 on the 20th and 00:01 on the 21st; cost on the 20th only.

        The gateway's daily totals (traffic store) put 300 requests on the 20th and 100
        on the 21st; cost per transaction for the 20th is 6 / 300 = 0.02, and the 21st's
        requests (no cost yet) stay out of the week's value.
        """
        from exporter.core.store import write_records
        from exporter.domains.traffic.records import TrafficDelta

        exports = tmp_path / "exports"
        exports.mkdir()
        write_csv(exports / "a.csv", [line(6, 6, "2026-11-20", service="checkout")])
        cfg = Config(
            state={"path": str(tmp_path / "state.db")},
            services=[
                {"name": "checkout", "team": "payments", "cost": {"tags": {"service": "checkout"}}}
            ],
            sources={"focus": {"paths": [str(exports)]}},
        )
        daemon = Daemon(cfg, clock=lambda: NOW)
        before = datetime(2026, 11, 20, 23, 59, tzinfo=UTC).timestamp()
        after = datetime(2026, 11, 21, 0, 1, tzinfo=UTC).timestamp()
        with daemon.store.transaction() as tx:
            write_records(
                tx,
                [
                    TrafficDelta("nginx", "checkout", before, "b1", (0, 290, 0, 5, 5)),
                    TrafficDelta("nginx", "checkout", after, "b1", (0, 100, 0, 0, 0)),
                ],
            )
        asyncio.run(daemon.poll_all())
        exp = Exposition.parse(daemon.holder.current.text)
        cpt = "platform_cost_per_transaction"
        assert exp.value(cpt, service="checkout", window="7d") == pytest.approx(6 / 300)
        assert exp.value(f"{cpt}_requests", service="checkout", window="7d") == 300
        assert exp.value(cpt, service="checkout", window="1d") is None
        asyncio.run(daemon.shutdown())
