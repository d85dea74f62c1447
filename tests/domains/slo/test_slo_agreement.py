"""The exporter's own SLO metrics agree with the generated rules evaluated by a real Prometheus.

A hand-made probe history (one check a second for 90 minutes, two outages, one
check in seven slower than the latency threshold) is written to the store. The
exporter's probe metrics are rendered every 5 seconds of that history, backfilled
into a real Prometheus with ``promtool tsdb create-blocks-from openmetrics``, and
every ``slo:sli_error:ratio_rate<w>`` expression of the generated rule file is
evaluated there at the end of the history. Each must equal what the exporter
computes from its stored history (``platform_slo_sli_error_ratio``).

Every series reads 0 at each render before it first appears (as if its labels were
initialised): Prometheus cannot see events counted before a series' first scrape
(a real deployment's first failure, say), and this test is about the two
computations, not about that.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from exporter.config import Config
from exporter.core.store import write_records
from exporter.domains import open_store, render_context
from exporter.domains.probe import metrics as probe_metrics
from exporter.domains.probe.records import ProbeResult
from exporter.domains.slo import metrics as slo_metrics
from exporter.rules import rule_files
from tests.support.prometheus import PROMTOOL, PrometheusServer

pytestmark = pytest.mark.integration

STEP = 5  # seconds between renders ("scrapes"); every alert window is a multiple of it
HISTORY = 90 * 60


def _history(start: int, end: int) -> list[ProbeResult]:
    """One check per second; failing in [start+20m, start+30m) and in the last 40s but 10s."""
    out = []
    for s in range(start + 1, end + 1):
        at = s - 0.5  # never on a render boundary
        down = start + 1200 <= s < start + 1800 or end - 40 <= s < end - 10
        out.append(
            ProbeResult(
                service="checkout",
                probe="health",
                started_at=at,
                duration_seconds=0.2 if s % 7 == 0 else 0.05,
                success=not down,
                reason="status" if down else "",
                status_code=503 if down else 200,
            )
        )
    return out


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


class TestExporterAgreesWithRules:
    def test_sli_error_ratios_equal_prometheus_evaluation_of_the_rules(
        self, tmp_path: Path
    ) -> None:
        config = Config(
            state={"path": str(tmp_path / "state.db")},
            services=[
                {
                    "name": "checkout",
                    "team": "payments",
                    "probes": [{"name": "health", "url": "http://checkout.test/health"}],
                    "slo": {
                        "window": "12h",
                        "alert_windows": "scaled",
                        "availability": {"objective": 99},
                        "latency": {"objective": 95, "threshold": "100ms"},
                    },
                }
            ],
        )
        store = open_store(str(tmp_path / "state.db"))
        end = int(time.time()) // 60 * 60 - 3600
        start = end - HISTORY
        results = _history(start, end)

        # Render the exporter's probe families every STEP seconds of the history.
        series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        i = 0
        for t in range(start, end + 1, STEP):
            batch = []
            while i < len(results) and results[i].started_at <= t:
                batch.append(results[i])
                i += 1
            if batch:
                with store.transaction() as tx:
                    write_records(tx, batch)
            ctx = render_context(config, store, float(t))
            for family in probe_metrics.collect(ctx):
                if family.name not in ("platform_probe_checks", "platform_probe_duration_seconds"):
                    continue
                for sample in family.samples:
                    series[(sample.name, _labels(sample.labels))].append((t, sample.value))

        lines = []
        for name in sorted({n for n, _ in series}):
            lines.append(f"# TYPE {name} unknown")
            for (n, labels), points in sorted(series.items()):
                if n != name:
                    continue
                first = points[0][0]
                points[:0] = [(t, 0.0) for t in range(start, first, STEP)]
                lines += [f"{name}{labels} {v:g} {t}" for t, v in points]
        lines.append("# EOF")
        om = tmp_path / "history.om"
        om.write_text("\n".join(lines) + "\n")
        prom = PrometheusServer(tmp_path / "prometheus", targets=[])
        subprocess.run(
            [
                PROMTOOL,
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                str(om),
                str(prom.dir / "data"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        prom.start()
        try:
            doc = yaml.safe_load(rule_files(config)["slo.rules.yml"])
            recorded = [
                rule
                for group in doc["groups"]
                for rule in group["rules"]
                if rule.get("record", "").startswith("slo:sli_error:")
            ]
            promql = {
                (r["labels"]["sloth_slo"], r["labels"]["sloth_window"]): prom.api(
                    "query", query=r["expr"], time=str(end)
                )["result"]
                for r in recorded
            }
        finally:
            prom.stop()

        ctx = render_context(config, store, float(end))
        exporter = {
            family.name: {
                (s.labels["slo"], s.labels["window"]): s.value
                for s in family.samples
                if "window" in s.labels
            }
            for family in slo_metrics.collect(ctx)
        }
        ratios = exporter["platform_slo_sli_error_ratio"]
        # The calendar windows (month, last_month) of a rolling SLO have no recording rule.
        in_rules = {k for k in ratios if k[1] not in ("month", "last_month")}
        assert in_rules == set(promql)
        assert len(in_rules) == 16  # 2 SLOs x (7 alert windows + the 12h period)
        for key, result in sorted(promql.items()):
            assert len(result) == 1, (key, result)
            assert math.isclose(
                float(result[0]["value"][1]), ratios[key], rel_tol=1e-9, abs_tol=1e-12
            ), key

        # The history makes the windows differ, so the comparison means something.
        # Checks of seconds end-29 .. end; those up to end-11 failed.
        assert ratios[("availability", "30s")] == pytest.approx(19 / 30)
        assert ratios[("availability", "5s")] == 0.0
        assert ratios[("availability", "12h")] == pytest.approx((600 + 30) / HISTORY)
        assert ratios[("latency", "12h")] == pytest.approx(
            sum(1 for r in _history(start, end) if r.success and r.duration_seconds > 0.1)
            / sum(1 for r in _history(start, end) if r.success)
        )
        # Burn rates and the budget left follow from the ratios and the objective.
        burn = exporter["platform_slo_burn_rate"]
        assert burn[("availability", "1m")] == pytest.approx(ratios[("availability", "1m")] / 0.01)
        remaining = exporter["platform_slo_error_budget_remaining_ratio"]
        rolling = {k for k in remaining if k[1] not in ("month", "last_month")}
        assert rolling == {("availability", "12h"), ("latency", "12h")}
        assert remaining[("availability", "12h")] == pytest.approx(
            1 - ratios[("availability", "12h")] / 0.01
        )
        store.close()
