"""Series taken from an upstream are capped per source (``max_series``), and what is left
out is counted in ``platform_exporter_upstream_series_dropped_total``.

Kong: the cursor's series are kept first, so a series left out is never taken up later
with its whole cumulative value counted as new. Prometheus: an answer with more series
than the cap keeps the first ones (Prometheus is asked for no more with ``limit``,
https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries).
"""

from __future__ import annotations

from pathlib import Path

from exporter.daemon import Daemon
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.sources.prometheus import parse_result
from tests.domains.traffic.test_kong import Scripted, by_class, make_config, run_polls
from tests.support.exposition import Exposition


def kong(checkout: int, payments: int, late: int | None = None) -> str:
    lines = [
        "# TYPE kong_http_requests_total counter",
        'kong_http_requests_total{service="checkout-svc",route="checkout-route",code="200",'
        f'source="service",consumer=""}} {checkout}',
        'kong_http_requests_total{service="payments-svc",route="p",code="200",'
        f'source="service",consumer=""}} {payments}',
    ]
    if late is not None:
        # Sorted before the others, as Kong sorts its series: a cap by order would take it.
        lines.insert(
            1,
            'kong_http_requests_total{service="checkout-svc",route="checkout-route",code="500",'
            f'source="service",consumer=""}} {late}',
        )
    return "\n".join(lines) + "\n"


class TestKongSeriesCap:
    def test_past_the_cap_new_series_are_left_out_and_counted_never_taken_up_late(
        self, tmp_path: Path
    ) -> None:
        """Two series fill the cap; a third, at 1000 already, is left out on both polls
        after it appears: no 5xx spike, and the counter says 2."""
        fake = Scripted(kong(100, 10), kong(110, 15, late=1000), kong(120, 20, late=1010))
        daemon = Daemon(make_config(tmp_path, max_series=2), transport=fake.app.transport())
        assert run_polls(daemon, 3) == [True, True, True]
        assert by_class(daemon) == {("checkout", "2xx"): 20, ("payments-api", "2xx"): 10}
        dropped = daemon.store.counters(traffic_store.SERIES_DROPPED_TOTAL)
        assert dropped == [({"source": "kong"}, 2.0)]
        exp = Exposition.parse(daemon.holder.current.text)
        assert exp.value("platform_exporter_upstream_series_dropped_total", source="kong") == 2
        daemon.store.close()

    def test_under_the_cap_nothing_is_dropped(self, tmp_path: Path) -> None:
        fake = Scripted(kong(100, 10), kong(110, 15, late=3))
        daemon = Daemon(make_config(tmp_path, max_series=3), transport=fake.app.transport())
        assert run_polls(daemon, 2) == [True, True]
        assert by_class(daemon) == {
            ("checkout", "2xx"): 10,
            ("checkout", "5xx"): 3,
            ("payments-api", "2xx"): 5,
        }
        assert daemon.store.counters(traffic_store.SERIES_DROPPED_TOTAL) == []
        daemon.store.close()


class TestPrometheusSeriesCap:
    def test_an_answer_past_the_cap_keeps_the_first_series_and_counts_the_rest(self) -> None:
        payload = {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"service": s}, "value": [1.0, "2"]} for s in ("a", "b", "c", "d")
                ],
            },
        }
        dropped: list[int] = []
        values, warnings = parse_result(payload, "service", max_series=3, dropped=dropped)
        assert values == {"a": 2.0, "b": 2.0, "c": 2.0}
        assert (warnings, dropped) == ([], [1])
