"""Grafana dashboards: generated as code, committed, and every panel has data on the demo.

The "has data" test runs ``platform-kpi-exporter demo`` (the real exporter
against the simulated platform), a real Prometheus scraping it every second with
the rules generated from the demo's config, and runs every query of every panel
(variables expanded to "All", as Grafana does with the ``.*`` all-value)
expecting at least one series. It does so at each of the suite's fixed instants
(tests/support/instants.py), with ``demo --as-of`` putting the simulated
platform and the daemon on one clock started there. A panel may lack data only
where absence is the documented answer at that instant: a calendar window with
no closed day yet (:func:`~exporter.domains.cost.kpis.window_bounds`, e.g. month-to-date
cost on the 1st); such a panel must then show nothing at all. A panel showing two
windows (``window=~"mtd|last_month"``) is checked once for each.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import Config
from exporter.core.clock import utc_datetime
from exporter.dashboards import DASHBOARDS, queries, render
from exporter.domains.cost.kpis import WINDOWS as COST_WINDOWS
from exporter.domains.cost.kpis import window_bounds
from exporter.rules import write_rules
from tests.support import internal
from tests.support.daemon import REPO_ROOT, DemoProcess, run_cli
from tests.support.instants import at, each_instant
from tests.support.net import free_port, wait_until
from tests.support.prometheus import PrometheusServer

BOARDS = REPO_ROOT / "dashboards"

# What Grafana substitutes: the "All" value of team and service, and its interval macros
# for a short range with a 1s scrape interval.
EXPANSIONS = {"$team": ".*", "$service": ".*", "$__rate_interval": "1m", "$__range": "5m"}


# The families whose windows count closed billing days only (docs/kpis.md, cost): which of
# their windows hold a closed day at an instant is kpis.cost.window_bounds. Every other
# calendar window (uptime, availability, SLO months) also counts today so far.
CLOSED_DAY_FAMILIES = re.compile(r"\bplatform_(cost|budget)\w*\{")


def expand(expr: str) -> str:
    for var, value in EXPANSIONS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


def per_window(expr: str) -> dict[str, str]:
    """A cost panel's query once per window it shows: ``window=~"mtd|last_month"`` becomes
    one query for ``window="mtd"`` and one for ``window="last_month"``, each checked on its
    own, because the sandbox bills both months at every instant. Other panels are checked
    whole: the demo's probes and SLOs have no history before the demo started."""
    match = re.search(r'window=~"([\w|]+)"', expr)
    if match is None or not CLOSED_DAY_FAMILIES.search(expr):
        return {"": expr}
    return {w: expr.replace(match.group(0), f'window="{w}"') for w in match.group(1).split("|")}


def honestly_empty(expr: str, instant: float) -> bool:
    """True when the query reads a closed-billing-day family over a window that holds no
    closed day at ``instant`` (month to date on the 1st): then no data is the answer."""
    windows = set(re.findall(r'window="([^"]+)"', expr)) & set(COST_WINDOWS)
    if not windows or not CLOSED_DAY_FAMILIES.search(expr):
        return False
    return not windows & set(window_bounds(utc_datetime(instant).date()))


class TestTheHonestAbsenceRule:
    """The rule the panel test uses to tell an honest gap from a panel without data."""

    FIRST, SECOND = at("first-of-month"), at("first-of-month") + 86400.0

    def test_month_to_date_cost_is_empty_on_the_first_and_only_then(self) -> None:
        for expr in (
            'sum by (service) (platform_cost{team=~".*",window="mtd"})',
            'platform_cost_per_transaction{window="mtd"}',
            'platform_budget_used_ratio{team=~".*",window="mtd"}',
        ):
            assert honestly_empty(expr, self.FIRST), expr
            assert not honestly_empty(expr, self.SECOND), expr

    def test_last_month_rolling_and_windowless_panels_are_never_excused(self) -> None:
        for expr in (
            'platform_cost{window="last_month"}',
            'platform_cost{window="30d"}',
            "platform_budget_forecast_ratio{}",
            'platform_service_uptime_ratio{window="mtd"}',  # counts today so far
            'platform_service_uptime_ratio{window="24h"}',
            "platform_exporter_source_up",
        ):
            assert not honestly_empty(expr, self.FIRST), expr

    def test_a_panel_over_two_windows_is_checked_once_per_window(self) -> None:
        assert per_window('platform_cost{team=~".*",window=~"mtd|last_month"}') == {
            "mtd": 'platform_cost{team=~".*",window="mtd"}',
            "last_month": 'platform_cost{team=~".*",window="last_month"}',
        }
        assert per_window('platform_cost{window="30d"}') == {"": 'platform_cost{window="30d"}'}
        uptime = 'platform_service_uptime_ratio{window=~"mtd|last_month"}'
        assert per_window(uptime) == {"": uptime}


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


def _nulls(value: object, path: str = "") -> Iterator[str]:
    """The JSON path of every ``null`` in ``value``."""
    if value is None:
        yield path or "."
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nulls(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nulls(item, f"{path}[{i}]")


class TestGrafanaAcceptsTheDashboards:
    """Grafana's own schema, as grafana-foundation-sdk decodes it, takes every panel back
    unchanged: a panel with ``"options": null`` makes the SDK's ``from_json`` raise, and
    Grafana cannot display it (grafana/cog#60)."""

    @pytest.fixture(scope="class")
    def sdk(self) -> Iterator[None]:
        from grafana_foundation_sdk.cog.plugins import register_default_plugins

        # The panel plugins' option types are decoded only once they are registered.
        register_default_plugins()
        yield

    @staticmethod
    def _encode(obj: object) -> object:
        from grafana_foundation_sdk.cog.encoder import JSONEncoder

        return json.loads(json.dumps(obj, cls=JSONEncoder))

    @pytest.mark.parametrize("uid", sorted(DASHBOARDS))
    def test_no_committed_dashboard_holds_a_null(self, uid: str) -> None:
        board = json.loads((BOARDS / f"{uid}.json").read_text(encoding="utf-8"))
        assert list(_nulls(board)) == []

    @pytest.mark.parametrize("uid", sorted(DASHBOARDS))
    def test_every_panel_round_trips_through_the_sdk(self, uid: str, sdk: None) -> None:
        from grafana_foundation_sdk.models.dashboard import Panel, RowPanel

        board = json.loads((BOARDS / f"{uid}.json").read_text(encoding="utf-8"))
        for panel in board["panels"]:
            if panel["type"] == "row":
                assert self._encode(RowPanel.from_json(panel)) == panel, panel["title"]
                continue
            decoded = Panel.from_json(panel)
            # The options became the panel plugin's own type, not a raw dict.
            assert type(decoded.options).__module__ == (
                f"grafana_foundation_sdk.models.{panel['type']}"
            ), panel["title"]
            assert self._encode(decoded) == panel, panel["title"]

    @pytest.mark.parametrize("uid", sorted(DASHBOARDS))
    def test_every_dashboard_round_trips_through_the_sdk(self, uid: str, sdk: None) -> None:
        from grafana_foundation_sdk.models.dashboard import Dashboard

        board = json.loads((BOARDS / f"{uid}.json").read_text(encoding="utf-8"))
        assert self._encode(Dashboard.from_json(board)) == board


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


def panel_queries() -> dict[str, str]:
    """Every panel's query (once per window it shows), variables expanded, by
    "dashboard / panel [window]: query"."""
    return {
        f"{uid} / {title}{f' [{w}]' if w else ''}: {expr}": one
        for uid in DASHBOARDS
        for title, expr in queries(uid)
        for w, one in per_window(expand(expr)).items()
    }


class PanelBench:
    """One Prometheus for the demos of every instant, so each test waits for data only.

    Prometheus scrapes a new target only some 5 s after it starts, so the demos of
    all instants listen, one after another, on the same port it already scrapes,
    and the samples of the previous instant are wiped before each one's test.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.prometheus: PrometheusServer | None = None
        self.rules: list[str] = []

    def ready_for(self, demo: DemoProcess) -> PrometheusServer:
        """Prometheus with the rules of ``demo``'s config, holding nothing but its samples."""
        rules = write_rules(Config(**demo.config()), demo.dir / "rules")
        texts = [p.read_text(encoding="utf-8") for p in rules]
        if self.prometheus is None:
            self.rules = texts
            self.prometheus = PrometheusServer(
                self.dir / "prometheus",
                [f"127.0.0.1:{self.port}"],
                rule_files=[str(p) for p in rules],
                admin_api=True,
            ).start()
        else:
            # The rules depend on the demo's services and objectives, never on the date.
            assert texts == self.rules
            self.prometheus.wipe()
        return self.prometheus

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()


@pytest.fixture(scope="class")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelBench]:
    shared = PanelBench(tmp_path_factory.mktemp("panels"))
    yield shared
    shared.stop()


@pytest.mark.integration
class TestEveryPanelHasData:
    @each_instant
    def test_every_query_returns_a_series_on_the_demo(
        self,
        instant: float,
        bench: PanelBench,
        demo_process: Callable[..., DemoProcess],
    ) -> None:
        demo = demo_process(at=instant, port=bench.port)
        prom = bench.ready_for(demo)

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

        everything = panel_queries()
        excused = {k for k, expr in everything.items() if honestly_empty(expr, instant)}
        pending = {k: expr for k, expr in everything.items() if k not in excused}
        deadline = time.monotonic() + 90
        while pending and time.monotonic() < deadline:
            for key, expr in list(pending.items()):
                if prom.query(expr):
                    del pending[key]
            if pending:
                time.sleep(1)
        assert pending == {}, "panels without data:\n" + "\n".join(pending)
        # Where no data is the honest answer, there is none (no zero standing in for it).
        shown = sorted(k for k in excused if prom.query(everything[k]))
        assert shown == [], "panels showing data for a window with no closed day:\n" + "\n".join(
            shown
        )


# --- several replicas ------------------------------------------------------------------

# The labels one replica's copy of a series has of its own (exporter.core.replicas).
COPY_LABELS = frozenset({"instance", "pod", "replica"})


class Bodies:
    """A loopback HTTP server answering ``/metrics`` with a body the test sets (and may change)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.body
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def replicas_job(*targets: tuple[str, str]) -> dict[str, object]:
    """A scrape job of one target per (address, pod) pair, its ``instance`` the pod's name, as
    Kubernetes' pods of one Deployment are scraped."""
    return {
        "static_configs": [
            {"targets": [address], "labels": {"pod": pod}} for address, pod in targets
        ],
        "relabel_configs": [{"source_labels": ["pod"], "target_label": "instance"}],
    }


def one_copy_each(result: list[dict[str, Any]]) -> list[tuple[tuple[tuple[str, str], ...], str]]:
    """A query's answer as (labels other than a copy's own, value), sorted; a series shown
    twice stays twice."""
    return sorted(
        (
            tuple(sorted((k, v) for k, v in r["metric"].items() if k not in COPY_LABELS)),
            r["value"][1],
        )
        for r in result
    )


KPI_BOARDS = [uid for uid in DASHBOARDS if uid != "exporter-health"]


def replica_body(replica: str, holds: str, peer: str, leased: bool = True) -> bytes:
    """One replica's own health as it renders it: it polls ``holds`` (while ``leased``: then it
    reports its verdict, freshness and budget), ``peer``'s lease is another replica's."""
    mine = f'source="{holds}",kind="{holds}",replica="{replica}"'
    theirs = f'source="{peer}",kind="{peer}",replica="{replica}"'
    lines = [
        f'platform_exporter_build_info{{version="0.1.0",python="3.11.7",replica="{replica}"}} 1',
        *(
            line
            for key in (mine, theirs)
            for line in (
                f"platform_exporter_source_interval_seconds{{{key}}} 60",
                f'platform_exporter_source_errors_total{{{key},reason="timeout"}} 1',
                f'platform_exporter_source_upstream_requests_total{{{key},code="200"}} 10',
                f"platform_exporter_source_polls_skipped_total{{{key}}} 0",
            )
        ),
        f"platform_exporter_source_leased{{{mine}}} {int(leased)}",
        f"platform_exporter_source_leased{{{theirs}}} 0",
        f'platform_exporter_leases_held{{replica="{replica}"}} {int(leased)}',
    ]
    if leased:
        lines += [
            f"platform_exporter_source_up{{{mine}}} 1",
            f"platform_exporter_source_last_success_timestamp_seconds{{{mine}}} 1.7e9",
            f"platform_exporter_source_poll_duration_seconds{{{mine}}} 0.25",
            f'platform_exporter_rate_limit_remaining{{{mine},resource="core"}} 4000',
        ]
    return ("\n".join(lines) + "\n").encode()


def without_health(body: bytes) -> bytes:
    """``body`` without the exporter's own health (the KPI families only)."""
    return b"".join(
        line
        for line in body.splitlines(keepends=True)
        if not re.match(rb"(# (HELP|TYPE) )?(platform_exporter_|process_|python_)", line)
    )


class ReplicaBench:
    """Prometheus ``one`` scrapes a recorded body of the demo's KPIs once; ``two`` scrapes two
    replicas (pods kpi-0 and kpi-1) serving those KPIs, each with its own health beside them
    (kpi-0 holds github's lease, kpi-1 probe's). Both run the demo's rules."""

    def __init__(self, directory: Path, body: bytes, rules: list[Path]) -> None:
        self.kpis = without_health(body)
        self.served = Bodies(self.kpis)
        self.kpi0 = Bodies(self.kpis + replica_body("kpi-0", holds="github", peer="probe"))
        self.kpi1 = Bodies(self.kpis + replica_body("kpi-1", holds="probe", peer="github"))
        files = [str(p) for p in rules]
        self.one = PrometheusServer(directory / "one", [self.served.address], rule_files=files)
        pods = ((self.kpi0.address, "kpi-0"), (self.kpi1.address, "kpi-1"))
        self.two = PrometheusServer(
            directory / "two", [], job=replicas_job(*pods), rule_files=files
        )

    def start(self) -> ReplicaBench:
        self.one.start()
        self.two.start()
        for prom, targets in ((self.one, 1), (self.two, 2)):
            # Two scrapes of every target within the rate interval, and the rules run on them.
            wait_until(
                lambda prom=prom, targets=targets: (
                    len(prom.query("count_over_time(up[1m]) >= 3")) == targets
                    and prom.query("count_over_time(slo:objective:ratio[1m]) >= 2") != []
                ),
                timeout=60,
                what=f"{targets} targets scraped",
            )
        return self

    def stop(self) -> None:
        for prom in (self.one, self.two):
            prom.stop()
        for served in (self.served, self.kpi0, self.kpi1):
            served.stop()


@pytest.fixture(scope="class")
def replica_bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaBench]:
    """The bench on one /metrics body of the demo at mid-month, taken once every family a KPI
    panel reads is in it, and the rule files of its config."""
    directory = tmp_path_factory.mktemp("replicas")
    demo = DemoProcess(directory / "demo", at("mid-month")).start()
    try:
        rules = write_rules(Config(**demo.config()), directory / "rules")
        wanted = {
            name.encode()
            for uid in KPI_BOARDS
            for _, expr in queries(uid)
            for name in re.findall(r"\b(platform_[a-z_]+)\b", expr)
        }
        body = b""

        def complete() -> bool:
            nonlocal body
            with urllib.request.urlopen(f"{demo.url}/metrics", timeout=10) as resp:
                body = resp.read()
            return wanted <= set(re.findall(rb"^(platform_[a-z_]+)[{ ]", body, flags=re.M))

        wait_until(complete, timeout=90, what="every KPI panel's family in the demo's /metrics")
    finally:
        demo.stop()
        internal.note_log("demo", demo.log())
    bench = ReplicaBench(directory, body, rules)
    try:
        yield bench.start()
    finally:
        bench.stop()


@pytest.mark.integration
class TestTwoReplicasScraped:
    """Two replicas sharing one state serve the same KPI series; Prometheus keeps a copy of
    each per replica, and each replica's own health. A recorded body keeps the copies equal (a
    live demo moves between two scrapes)."""

    def test_every_kpi_panel_answers_as_with_one_replica(self, replica_bench: ReplicaBench) -> None:
        """Every KPI panel shows what one replica alone shows: nothing twice, nothing summed
        twice (the SLO panels read the rules' records, which count each event once too)."""
        one, two = replica_bench.one, replica_bench.two
        everything = {
            f"{uid} / {title}: {expr}": expand(expr)
            for uid in KPI_BOARDS
            for title, expr in queries(uid)
        }
        differ: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while True:
            # Both at one instant of Prometheus' clock (a panel may read time()).
            when = f"{one.now() - 1:.3f}"
            answers = {
                k: (
                    one.api("query", query=e, time=when)["result"],
                    two.api("query", query=e, time=when)["result"],
                )
                for k, e in everything.items()
            }
            differ = {
                k: f"one replica {one_copy_each(a)}\n  two replicas {one_copy_each(b)}"
                for k, (a, b) in answers.items()
                if one_copy_each(a) != one_copy_each(b)
            }
            if not differ or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert differ == {}, "panels that differ with two replicas:\n" + "\n".join(
            f"{k}\n  {v}" for k, v in differ.items()
        )
        shown = [k for k, (a, _) in answers.items() if a]
        assert len(shown) >= 0.8 * len(everything), sorted(set(everything) - set(shown))

    def test_health_shows_each_source_once_from_its_poller(
        self, replica_bench: ReplicaBench
    ) -> None:
        """kpi-0 polls github, kpi-1 probe: each source is shown once, from its poller; each
        replica's failed polls are its own (both count); and a source whose lease nobody
        holds is counted."""
        prom = replica_bench.two
        panels = {title: expand(expr) for title, expr in queries("exporter-health")}

        def answer(title: str, *labels: str) -> list[tuple[tuple[str, ...], float]]:
            return sorted(
                (tuple(r["metric"].get(k, "") for k in labels), float(r["value"][1]))
                for r in prom.query(panels[title])
            )

        assert answer("Sources up", "source") == [(("github",), 1.0), (("probe",), 1.0)]
        assert answer("Poll duration", "source") == [(("github",), 0.25), (("probe",), 0.25)]
        assert answer("API budget remaining", "source", "resource") == [
            (("github", "core"), 4000.0),
            (("probe", "core"), 4000.0),
        ]
        assert answer("Poller of each source", "source", "replica") == [
            (("github", "kpi-0"), 1.0),
            (("probe", "kpi-1"), 1.0),
        ]
        assert answer("Sources polled, by replica", "replica") == [
            (("kpi-0",), 1.0),
            (("kpi-1",), 1.0),
        ]
        assert answer("Sources no replica polls") == [((), 0.0)]
        errors = 'sum by (source) (platform_exporter_source_errors_total{reason="timeout"})'
        assert sorted((r["metric"]["source"], r["value"][1]) for r in prom.query(errors)) == [
            ("github", "2"),
            ("probe", "2"),
        ]
        assert len(prom.query(panels["Version"])) == 2  # one row per replica

        # kpi-1 loses the probe lease (it cannot renew it) and nobody takes it.
        replica_bench.kpi1.body = replica_bench.kpis + replica_body(
            "kpi-1", holds="probe", peer="github", leased=False
        )
        wait_until(
            lambda: answer("Sources no replica polls") == [((), 1.0)],
            timeout=30,
            what="the unheld probe source counted",
        )
        assert answer("Poller of each source", "source", "replica") == [(("github", "kpi-0"), 1.0)]
        assert answer("Sources up", "source") == [(("github",), 1.0)]
