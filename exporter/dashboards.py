"""Grafana dashboards as code (grafana-foundation-sdk): ``platform-kpi-exporter dashboards``.

Five dashboards, each with a Prometheus datasource variable and team and service
variables (multi-value, "All" by default) that every query filters on:

* ``platform-review``: the five KPIs by team and service (uptime, latency, cost per
  transaction, adoption, time-to-production) and their trends;
* ``delivery``: the four DORA keys, pipeline health;
* ``reliability``: SLO budgets and burn rates (the generated ``slo:*`` rules and
  the exporter's own ``platform_slo_*``), firing SLO alerts, the calendar-month SLA
  view (this month so far beside last month), probe uptime;
* ``cost``: cost by team, service, provider and category, month to date beside last
  month, budgets, freshness;
* ``exporter-health``: sources up, freshness, poll durations, errors, API budgets, and
  which replica polls which source.

With several replicas every KPI query reads one copy of each series
(:func:`~exporter.core.replicas.one_copy`: the copies differ only in ``instance``, ``pod``
and ``replica``), so nothing is shown twice or summed twice; the health queries take each
source's values from the replica that polls it (docs/metrics.md, "Several replicas").

Output is deterministic (sorted keys, fixed uids, no timestamps), so the JSON in
``dashboards/`` is checked against fresh output by a test. The SDK is the
optional ``dashboards`` extra; the daemon never imports this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from exporter.core import alerts
from exporter.core.alerts import LEASES_HELD
from exporter.core.replicas import one_copy as _one

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
TEAM = 'team=~"$team"'
SVC = 'service=~"$service"'
SEL = f"{TEAM},{SVC}"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: str  # "stat", "timeseries" or "table"
    queries: tuple[Query, ...]
    unit: str = "none"
    description: str = ""
    width: int = 8
    height: int = 7


def _q(expr: str, legend: str = "", instant: bool = False) -> Query:
    return Query(expr, legend, instant)


def _p(title: str, kind: str, *queries: Query, **kw: Any) -> PanelSpec:
    return PanelSpec(title, kind, tuple(queries), **kw)


def _sum(by: str, expr: str) -> str:
    """``expr`` summed by ``by``, each series counted once however many replicas serve it."""
    return f"sum by ({by}) ({_one(expr)})"


def _ratio_table(title: str, expr: str, description: str) -> PanelSpec:
    """A table of one instant ratio query, shown as percent."""
    return _p(title, "table", _q(expr, instant=True), unit="percentunit", description=description)


# --- the dashboards -----------------------------------------------------------------

REVIEW: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Uptime",
        (
            _ratio_table(
                "Probe uptime, 30d",
                _one(f'platform_service_uptime_ratio{{{SEL},window="30d"}}'),
                "Share of successful probe checks over 30 days, per service.",
            ),
            _ratio_table(
                "Request availability, 1d",
                _one(f'platform_service_availability_ratio{{{SEL},window="1d"}}'),
                "1 - share of 5xx answers through the gateways over a day.",
            ),
            _p(
                "Uptime trend (24h window)",
                "timeseries",
                _q(_one(f'platform_service_uptime_ratio{{{SEL},window="24h"}}'), "{{service}}"),
                unit="percentunit",
            ),
        ),
    ),
    (
        "Latency",
        (
            _p(
                "Request latency p95, 1h",
                "timeseries",
                _q(
                    _one(f'platform_service_latency_seconds{{{SEL},window="1h",quantile="0.95"}}'),
                    "{{service}}",
                ),
                unit="s",
                width=12,
            ),
            _p(
                "Probe latency p95, 1h",
                "timeseries",
                _q(
                    _one(
                        f'platform_service_probe_latency_seconds{{{SEL},window="1h",quantile="0.95"}}'
                    ),
                    "{{service}}",
                ),
                unit="s",
                width=12,
            ),
        ),
    ),
    (
        "Cost per transaction",
        (
            _p(
                "Cost per transaction, 30d",
                "table",
                _q(_one(f'platform_cost_per_transaction{{{SEL},window="30d"}}'), instant=True),
                unit="currencyUSD",
                description="Cost on closed UTC days / requests on the same days (per currency).",
                width=12,
            ),
            _p(
                "Cost per transaction trend (1d)",
                "timeseries",
                _q(
                    _one(f'platform_cost_per_transaction{{{SEL},window="1d"}}'),
                    "{{service}} {{currency}}",
                ),
                width=12,
            ),
        ),
    ),
    (
        "Adoption",
        (
            _p(
                "Capability adoption ratio",
                "stat",
                _q(_one("platform_capability_adoption_ratio"), "{{capability}}"),
                unit="percentunit",
                description="Adopting services / services in the catalog (platform-wide).",
            ),
            _p(
                "Capabilities adopted per service",
                "table",
                _q(_one(f"platform_service_capability_adopted{{{SEL}}}") + " == 1", instant=True),
            ),
            _p("Teams onboarded", "stat", _q(_one("platform_teams_onboarded"))),
        ),
    ),
    (
        "Time to production",
        (
            _p(
                "Time to first production deploy",
                "table",
                _q(_one(f"platform_time_to_production_seconds{{{SEL}}}"), instant=True),
                unit="s",
            ),
            _p(
                "Lead time for changes, median 30d",
                "timeseries",
                _q(
                    _one(
                        f'platform_lead_time_quantile_seconds{{{SEL},window="30d",quantile="0.5"}}'
                    ),
                    "{{service}}",
                ),
                unit="s",
            ),
            _p(
                "Deployments per day, 7d",
                "timeseries",
                _q(
                    _one(f'platform_deployment_frequency_per_day{{{SEL},window="7d"}}'),
                    "{{service}}",
                ),
            ),
        ),
    ),
)

DELIVERY: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "DORA",
        (
            _p(
                "Deployment frequency (per day, 30d)",
                "timeseries",
                _q(
                    _one(f'platform_deployment_frequency_per_day{{{SEL},window="30d"}}'),
                    "{{service}}",
                ),
                width=6,
            ),
            _p(
                "Lead time p50 / p90 (30d)",
                "timeseries",
                _q(
                    _one(f'platform_lead_time_quantile_seconds{{{SEL},window="30d"}}'),
                    "{{service}} p{{quantile}}",
                ),
                unit="s",
                width=6,
            ),
            _p(
                "Change failure rate (30d)",
                "timeseries",
                _q(_one(f'platform_change_failure_ratio{{{SEL},window="30d"}}'), "{{service}}"),
                unit="percentunit",
                width=6,
            ),
            _p(
                "Time to restore p50 (30d)",
                "timeseries",
                _q(
                    _one(
                        f'platform_time_to_restore_quantile_seconds{{{SEL},window="30d",quantile="0.5"}}'
                    ),
                    "{{service}}",
                ),
                unit="s",
                width=6,
            ),
            _p(
                "DORA performance level",
                "table",
                _q(_one(f"platform_dora_performance_level{{{SEL}}}") + " == 1", instant=True),
                width=12,
            ),
            _p(
                "Production deployments by result",
                "timeseries",
                _q(
                    _sum(
                        "service, result",
                        f"increase(platform_deployments_total{{{SEL}}}[$__range])",
                    ),
                    "{{service}} {{result}}",
                ),
                width=12,
            ),
        ),
    ),
    (
        "Pipelines",
        (
            _p(
                "Pipeline runs by result",
                "timeseries",
                _q(
                    _sum("service, result", f"platform_pipeline_runs_total{{{SEL}}}"),
                    "{{service}} {{result}}",
                ),
            ),
            _p(
                "Pipeline duration p90",
                "timeseries",
                _q(
                    "histogram_quantile(0.9, "
                    + _sum("service, le", f"platform_pipeline_duration_seconds_bucket{{{SEL}}}")
                    + ")",
                    "{{service}}",
                ),
                unit="s",
            ),
            _p(
                "Pipeline queue time p90",
                "timeseries",
                _q(
                    "histogram_quantile(0.9, "
                    + _sum("service, le", f"platform_pipeline_queue_seconds_bucket{{{SEL}}}")
                    + ")",
                    "{{service}}",
                ),
                unit="s",
            ),
        ),
    ),
)

SLOSEL = 'team=~"$team",sloth_service=~"$service"'
# The calendar windows, side by side: this month so far and the closed previous month.
MONTHS = 'window=~"mtd|last_month"'
SLO_MONTHS = 'window=~"month|last_month"'

RELIABILITY: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Error budgets",
        (
            _ratio_table(
                "Error budget remaining (rules)",
                f"slo:period_error_budget_remaining:ratio{{{SLOSEL}}}",
                "1 - period error ratio / budget, from the generated recording rules.",
            ),
            _ratio_table(
                "Error budget remaining (exporter history)",
                _one(f"platform_slo_error_budget_remaining_ratio{{{SEL}}}"),
                "The same, computed by the exporter from its stored history.",
            ),
            _p(
                "SLO alerts firing",
                "stat",
                _q(
                    f'count(ALERTS{{alertstate="firing",alertname=~"SLO.*",{SLOSEL}}}) or vector(0)'
                ),
            ),
        ),
    ),
    (
        "Calendar-month SLA",
        (
            _p(
                "SLO attainment: this month and last month",
                "table",
                _q(
                    "1 - " + _one(f"platform_slo_sli_error_ratio{{{SEL},{SLO_MONTHS}}}"),
                    instant=True,
                ),
                unit="percentunit",
                description="Share of good events of each SLO over the calendar month so far "
                "(month) and the previous calendar month (last_month), UTC, from the exporter's "
                "history; compare with the objective.",
            ),
            _p(
                "Error budget remaining: this month and last month",
                "table",
                _q(
                    _one(f"platform_slo_error_budget_remaining_ratio{{{SEL},{SLO_MONTHS}}}"),
                    instant=True,
                ),
                unit="percentunit",
                description="1 - error ratio / (1 - objective) over the calendar month; it starts "
                "afresh on the 1st. Negative: the month's budget is overspent.",
            ),
            _p(
                "Uptime and request availability: this month and last month",
                "table",
                _q(_one(f"platform_service_uptime_ratio{{{SEL},{MONTHS}}}"), instant=True),
                _q(_one(f"platform_service_availability_ratio{{{SEL},{MONTHS}}}"), instant=True),
                unit="percentunit",
                description="Probe uptime (A) and 1 - 5xx ratio through the gateways (B) over the "
                "calendar month so far (mtd) and the previous month (last_month).",
            ),
        ),
    ),
    (
        "Burn rates",
        (
            _p(
                "Current burn rate (shortest window)",
                "timeseries",
                _q(
                    f"slo:current_burn_rate:ratio{{{SLOSEL}}}",
                    "{{sloth_service}} {{sloth_slo}}",
                ),
                width=12,
            ),
            _p(
                "Burn rate over 1h (exporter history)",
                "timeseries",
                _q(_one(f'platform_slo_burn_rate{{{SEL},window="1h"}}'), "{{service}} {{slo}}"),
                width=12,
            ),
            _p(
                "SLI error ratio, 1h",
                "timeseries",
                _q(f"slo:sli_error:ratio_rate1h{{{SLOSEL}}}", "{{sloth_service}} {{sloth_slo}}"),
                unit="percentunit",
                width=12,
            ),
            _p(
                "Objectives",
                "table",
                _q(f"slo:objective:ratio{{{SLOSEL}}}", instant=True),
                unit="percentunit",
                width=12,
            ),
        ),
    ),
    (
        "Probes",
        (
            _p(
                "Probe uptime, 24h",
                "timeseries",
                _q(_one(f'platform_service_uptime_ratio{{{SEL},window="24h"}}'), "{{service}}"),
                unit="percentunit",
                width=12,
            ),
            _p(
                "Failed checks by reason",
                "timeseries",
                _q(
                    _sum(
                        "service, reason",
                        f'rate(platform_probe_checks_total{{{SEL},result="failure"}}[$__rate_interval])',
                    )
                    + " or "
                    + _sum(
                        "service", f"rate(platform_probe_checks_total{{{SEL}}}[$__rate_interval])"
                    )
                    + " * 0",
                    "{{service}} {{reason}}",
                ),
                unit="ops",
                width=12,
            ),
        ),
    ),
)

COST: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Spend",
        (
            _p(
                "Cost by team, 30d",
                "timeseries",
                _q(
                    _sum("team, currency", f'platform_cost{{{TEAM},window="30d"}}'),
                    "{{team}} {{currency}}",
                ),
                width=12,
            ),
            _p(
                "Cost by service: month to date and last month",
                "table",
                _q(
                    _sum("service, team, currency, window", f"platform_cost{{{SEL},{MONTHS}}}"),
                    instant=True,
                ),
                description="Closed UTC days of this month (mtd; none on the 1st) beside the whole "
                "previous calendar month (last_month).",
                width=12,
            ),
            _p(
                "Cost by provider and category, 30d",
                "table",
                _q(
                    _sum("provider, category, currency", f'platform_cost{{{SEL},window="30d"}}'),
                    instant=True,
                ),
                width=12,
            ),
            _p(
                "Cost per transaction, 30d",
                "timeseries",
                _q(
                    _one(f'platform_cost_per_transaction{{{SEL},window="30d"}}'),
                    "{{service}} {{currency}}",
                ),
                width=12,
            ),
            _p(
                "Cost by team: month to date and last month",
                "table",
                _q(
                    _sum("team, currency, window", f"platform_cost{{{TEAM},{MONTHS}}}"),
                    instant=True,
                ),
                width=12,
            ),
            _p(
                "Cost per transaction: month to date and last month",
                "table",
                _q(_one(f"platform_cost_per_transaction{{{SEL},{MONTHS}}}"), instant=True),
                description="Cost / requests on the aligned closed days of each calendar window.",
                width=12,
            ),
        ),
    ),
    (
        "Budgets",
        (
            _p(
                "Budget used: month to date and last month",
                "stat",
                _q(
                    _one(f"platform_budget_used_ratio{{{TEAM},{MONTHS}}}"),
                    "{{scope}} {{name}} {{window}}",
                ),
                unit="percentunit",
                description="Spend over the month's complete billing days / the monthly budget; "
                "last_month is the closed month's final ratio once all its days are in "
                "(platform_budget_samples).",
            ),
            _p(
                "Forecast / budget",
                "stat",
                _q(_one(f"platform_budget_forecast_ratio{{{TEAM}}}"), "{{scope}} {{name}}"),
                unit="percentunit",
                description="Month-end forecast at this month's daily run rate; before a day of "
                "the month is complete, at last month's.",
            ),
            _p(
                "Billing data freshness",
                "stat",
                _q("time() - " + _one("platform_cost_data_end_timestamp_seconds"), "{{source}}"),
                unit="s",
                description="Age of the end of the newest closed billing day, per cost source.",
            ),
        ),
    ),
)

# With several replicas only a source's lease holder reports its verdict, freshness, duration
# and API budget: taken per source (max, min) they are the holder's. Errors, requests and
# skipped polls are each replica's own polls: summed, each counts once.
HEALTH: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Sources",
        (
            _p(
                "Sources up",
                "stat",
                _q("max by (source) (platform_exporter_source_up)", "{{source}}"),
                description="The verdict of each source's last poll, from the replica that "
                "polls it (with several replicas, its lease holder).",
                width=12,
            ),
            _p(
                "Seconds since last successful poll",
                "timeseries",
                _q(
                    "time() - max by (source) "
                    "(platform_exporter_source_last_success_timestamp_seconds)",
                    "{{source}}",
                ),
                unit="s",
                width=12,
            ),
            _p(
                "Poll duration",
                "timeseries",
                _q(
                    "max by (source) (platform_exporter_source_poll_duration_seconds)", "{{source}}"
                ),
                unit="s",
                width=12,
            ),
            _p(
                "Failed polls by reason",
                "timeseries",
                _q(
                    "sum by (source, reason) "
                    "(increase(platform_exporter_source_errors_total[$__rate_interval]))",
                    "{{source}} {{reason}}",
                ),
                width=12,
            ),
        ),
    ),
    (
        "Replicas",
        (
            _p(
                "Sources polled, by replica",
                "timeseries",
                _q(
                    f"{LEASES_HELD} or count by (job, instance) "
                    f"({alerts.INTERVAL} unless on (job, instance) {LEASES_HELD})",
                    "{{instance}} {{replica}}",
                ),
                description="The leases each replica holds (one replica without leases: every "
                "source). With N replicas and S sources, each settles at ceil(S / N) or fewer.",
                width=8,
            ),
            _p(
                "Poller of each source",
                "table",
                _q(
                    f"count by (source, kind, instance, replica) (\n{alerts.HOLDERS}\n)",
                    instant=True,
                ),
                description="The replica that holds each source's lease and alone polls it.",
                width=8,
            ),
            _p(
                "Sources no replica polls",
                "stat",
                _q(f"count(\n{alerts.UNLEASED}) or vector(0)"),
                description="Sources no live replica holds the lease of: for a moment while a "
                "lease moves (at most state.lease_ttl after its holder died); longer, and "
                "PlatformExporterSourceUnleased fires.",
                width=8,
            ),
            _p(
                "Seconds since each replica's last refresh",
                "timeseries",
                _q(
                    "time() - platform_exporter_last_refresh_timestamp_seconds",
                    "{{instance}} {{replica}}",
                ),
                unit="s",
                description="How old the snapshot each replica serves is. Each refreshes at "
                "least every metrics.min_refresh; one that falls behind serves older KPIs "
                "than its peers.",
                width=24,
            ),
        ),
    ),
    (
        "Upstream APIs",
        (
            _p(
                "Upstream requests by status",
                "timeseries",
                _q(
                    "sum by (source, code) "
                    "(rate(platform_exporter_source_upstream_requests_total[$__rate_interval]))",
                    "{{source}} {{code}}",
                ),
                unit="reqps",
                width=12,
            ),
            _p(
                "API budget remaining",
                "timeseries",
                _q(
                    "min by (source, resource) (platform_exporter_rate_limit_remaining)",
                    "{{source}} {{resource}}",
                ),
                width=12,
            ),
            _p(
                "Polls skipped (overran their interval)",
                "timeseries",
                _q("sum by (source) (platform_exporter_source_polls_skipped_total)", "{{source}}"),
                width=12,
            ),
            _p(
                "Version",
                "table",
                _q("platform_exporter_build_info", instant=True),
                description="One row per replica.",
                width=12,
            ),
        ),
    ),
)

DASHBOARDS: dict[str, tuple[str, tuple[tuple[str, tuple[PanelSpec, ...]], ...]]] = {
    "platform-review": ("Platform review", REVIEW),
    "delivery": ("Delivery (DORA)", DELIVERY),
    "reliability": ("Reliability and SLOs", RELIABILITY),
    "cost": ("Cost", COST),
    "exporter-health": ("Exporter health", HEALTH),
}


# --- building -----------------------------------------------------------------------


def _variables(board: dash.Dashboard) -> dash.Dashboard:
    board.with_variable(
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
    )
    board.with_variable(
        dash.QueryVariable("team")
        .label("Team")
        .datasource(DS)
        .query("label_values(platform_catalog_entity_info, team)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    board.with_variable(
        dash.QueryVariable("service")
        .label("Service")
        .datasource(DS)
        .query('label_values(platform_catalog_entity_info{team=~"$team"}, service)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    return board


def _visualisation(kind: str) -> Any:
    """An empty panel of ``kind`` with its options set: a panel whose options are left
    unset is written with ``"options": null``, which Grafana cannot display."""
    if kind == "stat":
        return stat.Panel().reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
    if kind == "table":
        return table.Panel().show_header(True)
    return (
        timeseries.Panel()
        .legend(
            common_b.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_b.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)
        )
        # Its field config too: left unset, Grafana (and the SDK) fill in an empty one.
        .line_width(1)
        .fill_opacity(10)
    )


def _panel(spec: PanelSpec) -> Any:
    builder = _visualisation(spec.kind)
    builder = (
        builder.title(spec.title)
        .datasource(DS)
        .unit(spec.unit)
        .span(spec.width)
        .height(spec.height)
    )
    if spec.description:
        builder = builder.description(spec.description)
    for i, query in enumerate(spec.queries):
        target = prometheus.Dataquery().expr(query.expr).ref_id("ABCDEFGH"[i])
        if query.legend:
            target = target.legend_format(query.legend)
        if spec.kind == "table":
            target = target.instant().format(PromQueryFormat.TABLE)
        elif query.instant:
            target = target.instant()
        builder = builder.with_target(target)
    return builder


def build(uid: str) -> dict[str, Any]:
    """The dashboard ``uid`` as Grafana JSON (a plain dict)."""
    title, rows = DASHBOARDS[uid]
    board = (
        dash.Dashboard(title)
        .uid(f"platform-kpi-{uid}")
        .tags(["platform-kpi-exporter"])
        .editable()
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("utc")
    )
    board = _variables(board)
    for row_title, panels in rows:
        board = board.with_row(dash.Row(row_title))
        for spec in panels:
            board = board.with_panel(_panel(spec))
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return data


def render(uid: str) -> str:
    return json.dumps(build(uid), indent=2, sort_keys=True) + "\n"


def queries(uid: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard, variables unexpanded."""
    _, rows = DASHBOARDS[uid]
    return [(p.title, q.expr) for _, panels in rows for p in panels for q in p.queries]


def write_dashboards(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for uid in DASHBOARDS:
        path = out / f"{uid}.json"
        path.write_text(render(uid), encoding="utf-8")
        written.append(path)
    return written
