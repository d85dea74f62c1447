"""Grafana dashboards: generated as code, committed, and every panel has data on the demo.

The "has data" test runs the real exporter against the simulated platform with
the demo's config, a real Prometheus scraping it every second with the rules
generated from that config, and runs every query of every panel (variables
expanded to "All", as Grafana does with the ``.*`` all-value) expecting at least
one series.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from exporter.config import Config
from exporter.dashboards import DASHBOARDS, queries, render
from exporter.rules import write_rules
from exporter.sandbox import platform
from exporter.sandbox.app import SandboxServer
from exporter.sandbox.scenario import Scenario
from tests.support.daemon import REPO_ROOT, DaemonProcess, run_cli
from tests.support.net import wait_until
from tests.support.prometheus import PrometheusServer

BOARDS = REPO_ROOT / "dashboards"

# What Grafana substitutes: the "All" value of team and service, and its interval macros
# for a short range with a 1s scrape interval.
EXPANSIONS = {"$team": ".*", "$service": ".*", "$__rate_interval": "1m", "$__range": "5m"}


def expand(expr: str) -> str:
    for var, value in EXPANSIONS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


class TestCommittedDashboards:
    def test_committed_json_equals_fresh_output(self) -> None:
        committed = {p.stem: p.read_text(encoding="utf-8") for p in BOARDS.glob("*.json")}
        assert set(committed) == set(DASHBOARDS)
        for uid in DASHBOARDS:
            assert committed[uid] == render(uid), (
                f"dashboards/{uid}.json is stale: run platform-kpi-exporter dashboards"
            )

    def test_generation_is_deterministic(self) -> None:
        assert [render(u) for u in DASHBOARDS] == [render(u) for u in DASHBOARDS]

    def test_command_writes_every_dashboard(self, tmp_path: Path) -> None:
        proc = run_cli("dashboards", "--out", str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{u}.json" for u in DASHBOARDS)


class TestDashboardShape:
    @pytest.mark.parametrize("uid", sorted(DASHBOARDS))
    def test_datasource_team_and_service_variables(self, uid: str) -> None:
        board = json.loads(render(uid))
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in ("team", "service"):
            assert variables[name]["type"] == "query"
            assert variables[name]["includeAll"] is True
            assert variables[name]["multi"] is True
            assert variables[name]["datasource"]["uid"] == "${datasource}"

    @pytest.mark.parametrize("uid", sorted(DASHBOARDS))
    def test_every_panel_queries_the_selected_datasource(self, uid: str) -> None:
        board = json.loads(render(uid))
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert panels
        for panel in panels:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]

    def test_the_review_dashboard_shows_the_five_kpis(self) -> None:
        board = json.loads(render("platform-review"))
        rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
        assert rows == [
            "Uptime",
            "Latency",
            "Cost per transaction",
            "Adoption",
            "Time to production",
        ]

    def test_provisioning_points_at_a_prometheus_datasource_and_the_dashboards(self) -> None:
        ds = yaml.safe_load((BOARDS / "provisioning/datasources/prometheus.yaml").read_text())
        assert ds["datasources"][0]["type"] == "prometheus"
        prov = yaml.safe_load(
            (BOARDS / "provisioning/dashboards/platform-kpi-exporter.yaml").read_text()
        )
        assert prov["providers"][0]["type"] == "file"


@pytest.fixture
def sandbox() -> Iterator[tuple[Scenario, SandboxServer]]:
    scenario = Scenario(seed=42)
    server = platform.start(scenario)
    yield scenario, server
    server.stop()


@pytest.mark.integration
class TestEveryPanelHasData:
    def test_every_query_returns_a_series_on_the_demo(
        self,
        tmp_path: Path,
        sandbox: tuple[Scenario, SandboxServer],
        daemon_process: Callable[..., DaemonProcess],
        prometheus: Callable[..., PrometheusServer],
    ) -> None:
        scenario, server = sandbox
        data = platform.demo_config(server.url, tmp_path, scenario, 0)
        data["server"].pop("port")
        daemon = daemon_process(data).start()
        rules = write_rules(Config(**daemon.config), tmp_path / "rules")
        prom = prometheus([f"127.0.0.1:{daemon.port}"], rule_files=[str(p) for p in rules])

        # Variables first: each must list values.
        for var, match in (
            ("team", "platform_catalog_entity_info"),
            ("service", 'platform_catalog_entity_info{team=~".*"}'),
        ):
            wait_until(
                lambda var=var, match=match: (
                    prom.api(f"label/{var}/values", **{"match[]": match}) != []
                ),
                timeout=60,
                what=f"values of ${var}",
            )

        pending: dict[str, str] = {}
        for uid in DASHBOARDS:
            for title, expr in queries(uid):
                pending[f"{uid} / {title}: {expr}"] = expand(expr)
        deadline = time.monotonic() + 90
        while pending and time.monotonic() < deadline:
            for key, expr in list(pending.items()):
                if prom.query(expr):
                    del pending[key]
            if pending:
                time.sleep(1)
        assert pending == {}, "panels without data:\n" + "\n".join(pending)
