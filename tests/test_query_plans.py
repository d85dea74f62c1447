"""Every query a render runs uses an index on the tables that grow with history.

A small state is seeded for every domain (a record of each type every domain writes),
one full render runs through the real daemon, every SELECT it sends to SQLite is
captured with ``set_trace_callback``, and ``EXPLAIN QUERY PLAN`` of each must not
``SCAN`` a table that grows with history: the cost of a render grows with services x
windows, not with the history kept. Config-sized tables (one row per service, source,
metric or identity) may be scanned.

Every table the migrations create is listed below as one or the other, so a new
table is classified by whoever adds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.core.catalog import CatalogEntity
from exporter.core.clock import FixedClock
from exporter.core.store import Store, write_records
from exporter.domains import domains, open_store, providers, render_context
from exporter.domains.catalog.records import CatalogListing, CatalogServicesSeen, TemplateUse
from exporter.domains.cost.records import CostContribution, CostDay, RequestTotal
from exporter.domains.delivery.records import (
    Commit,
    Deployment,
    Incident,
    MergeRequest,
    PipelineRun,
)
from exporter.domains.delivery.webhooks.store import PushedDeployment
from exporter.domains.incident.records import AlertGroupNotice, OnCallIncident
from exporter.domains.probe.records import ProbeResult, ProbeSkipped
from exporter.domains.traffic.kpis import LATENCY_BUCKETS
from exporter.domains.traffic.records import ConsumerSeen, TrafficDelta, TrafficLatency
from exporter.review.build import build_review
from tests.support.instants import at

NOW = at("mid-month")
DAY = 86400.0

# Tables whose rows grow with the history kept: a render may only SEARCH them.
HISTORY = frozenset(
    {
        "commits",
        "cost_coverage",
        "cost_daily",
        "cost_origins",
        "cost_paid_calls",
        "cost_request_totals",
        "delivery_lead_times",
        "delivery_links",
        "deployments",
        "incidents",
        "merge_requests",
        "oncall_incidents",
        "pipeline_runs",
        "probe_daily",
        "probe_latency_bins",
        "probe_results",
        "probe_rollup",
        "template_uses",
        "traffic_batches",
        "traffic_consumers",
        "traffic_daily",
        "traffic_daily_counts",
        "traffic_hours",
        "traffic_minutes",
    }
)
# Tables sized by the config, the catalog or the gateways' identities: may be scanned.
SMALL = frozenset(
    {
        "catalog_entities",
        "catalog_listings",
        "catalog_registrations",
        "cost_idents",
        "counters",
        "cursors",
        "delivery_lead_totals",
        "delivery_repos",
        "delivery_restore_totals",
        "delivery_rollup_pending",
        "delivery_services",
        "histograms",
        "probe_last",
        "probe_last_success",
        "probe_rollup_kept",
        "schema_version",
        "traffic_idents",
        "traffic_latency",
    }
)

# Renders' queries known to scan a history table still, each with the table and a
# fragment of its SQL, until their domain reads a rollup or an index: remove the entry
# with the fix (the test fails on an entry that no longer matches).
PENDING: tuple[tuple[str, str], ...] = ()

SERVICES = ("checkout", "search")


def config(tmp_path: Path, **extra: Any) -> Config:
    (tmp_path / "focus").mkdir()
    return Config(
        state={"path": str(tmp_path / "state.db")},
        services=[
            {
                "name": name,
                "team": "shop",
                "probes": [{"name": "health", "url": f"http://{name}.test/health"}],
                "routes": [f"{name}.test"],
                "ci": [{"github": f"shop/{name}"}],
                "slo": {
                    "availability": {"objective": 99.5, "sli": "requests"},
                    "latency": {"objective": 99, "threshold": "0.25s", "sli": "probe"},
                },
            }
            for name in SERVICES
        ],
        sources={
            "nginx": {"access_log": str(tmp_path / "access.log")},
            "probe": {"interval": "15s"},
            "github": {"token": "ghp_planstoken000000000000000000000000000"},
            "focus": {"paths": [str(tmp_path / "focus")]},
            "backstage": {"base_url": "http://backstage.test", "token": "bs-token"},
        },
        **extra,
    )


def traffic(service: str, minute: float, batch: str) -> TrafficDelta:
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[3] = 9
    return TrafficDelta(
        "nginx", service, minute, batch, (0, 8, 0, 0, 1), tuple(buckets), 0.4, 9, f"{service}.test"
    )


def records() -> list[Any]:
    """A few days of every record type, for every service."""
    out: list[Any] = []
    for i, svc in enumerate(SERVICES):
        for k in range(4):
            t = NOW - k * DAY - 3600
            day = CostDay(
                f"2027-07-{10 + k:02d}", svc, "shop", "aws", "compute", "USD", 4.0, 3.5
            )  # fmt: skip
            out += [
                PipelineRun("github", svc, "ci", f"{svc}/{k}", "success", t, t + 5, t + 300),
                Commit(svc, f"{i}{k:039d}", t - 600, t - 600, ()),
                Deployment(
                    "github", svc, "production", True, f"{svc}-{k}", f"{i}{k:039d}", "success", t, t
                ),
                MergeRequest("gitlab", svc, f"shop/{svc}!{k}", t, "a" * 40, None, None, False, ()),
                # An hour after the on-call ones: not their duplicate, so both are stored.
                Incident("github", svc, f"{svc}-inc-{k}", t + 3600, t + 4500),
                OnCallIncident(
                    "pagerduty", svc, f"P{k}", t, t + 60, t + 900, "high", True, f"g{k}"
                ),
                OnCallIncident(
                    "opsgenie", svc, f"A{k}", t + 30, None, t + 950, "P1", True, f"g{k}"
                ),
                AlertGroupNotice(
                    f"{svc}-group-{k}", svc, k > 0, t, None if k > 0 else t + 600, "page"
                ),
                ProbeResult(svc, "health", t, 0.05, k != 2, "", 200),
                traffic(svc, t - t % 60, f"b{k}"),
                ConsumerSeen("nginx", svc, f"consumer-{k}", t, f"{svc}.test"),
                TemplateUse("github", svc, "workflow", f"shop/templates/{k}", t),
                RequestTotal(svc, day.day, 1000.0, "focus"),
                CostContribution("focus", f"export-{svc}-{k}.csv", f"sig-{k}", (day,), True, 1),
            ]
        pushed = Deployment(
            "github",
            svc,
            "staging",
            False,
            f"{svc}-hook",
            "b" * 40,
            "success",
            NOW - 900,
            NOW - 600,
        )
        out += [
            PushedDeployment(pushed),  # a deployment a webhook reported
            ProbeResult(svc, "health", NOW - 60, 0.05, True, "", 200),
            ProbeSkipped(svc, "health", 1),
            traffic(svc, NOW - NOW % 60 - 120, "recent"),
            TrafficLatency("cloudwatch", svc, "5m", 0.95, 0.2, NOW - 60),
        ]
    entity = CatalogEntity(
        "backstage", "component", "default", "billing", "shop", routes=("b.test",)
    )
    out += [
        CatalogListing("backstage", NOW - 600, (entity,)),
        CatalogServicesSeen(NOW - 600, (("billing", "shop"),)),
    ]
    return out


def seeded(tmp_path: Path, cfg: Config) -> Store:
    store = open_store(str(tmp_path / "state.db"), FixedClock(NOW))
    with store.transaction() as tx:
        write_records(tx, records())
    for domain in domains():
        if domain.refresh is not None:
            domain.refresh(cfg, store, NOW)
    return store


_NAMED = re.compile(r"\b(?:FROM|JOIN)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?", re.IGNORECASE)
_KEYWORDS = {"where", "left", "inner", "join", "on", "group", "order", "limit", "cross", "union"}


def aliases(sql: str) -> dict[str, str]:
    """Names and aliases of the tables a statement reads, to the table."""
    out = {}
    for table, alias in _NAMED.findall(sql):
        out[table] = table
        if alias and alias.lower() not in _KEYWORDS:
            out[alias] = table
    return out


def scans(store: Store, sql: str) -> list[str]:
    """The history tables ``sql``'s plan scans in full (an index scan is a full scan too)."""
    names = aliases(sql)
    found = []
    for row in store.query(f"EXPLAIN QUERY PLAN {sql}"):
        m = re.match(r"SCAN (\w+)", str(row[3]))
        if m and (table := names.get(m.group(1), m.group(1))) in HISTORY:
            found.append(table)
    return found


def pending(table: str, sql: str) -> tuple[str, str] | None:
    """The PENDING entry that names this scan, if any."""
    flat = " ".join(sql.split())
    return next((p for p in PENDING if p[0] == table and p[1] in flat), None)


def test_every_table_is_classified(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.db"))
    tables = {str(r[0]) for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables - HISTORY - SMALL == set(), "classify new tables in HISTORY or SMALL"
    assert (HISTORY | SMALL) - tables == set(), "a listed table no longer exists"


def test_the_seed_writes_every_record_type_of_every_domain() -> None:
    written = {type(r) for r in records()}
    for domain in domains():
        assert set(domain.writers) <= written, domain.name


def selects_of(store: Store, work: Callable[[], object]) -> list[str]:
    """The distinct SELECTs ``work`` sends to SQLite, through either connection."""
    statements: list[str] = []
    connections = list({id(c): c for c in (store._reader, store._conn)}.values())
    for conn in connections:
        conn.set_trace_callback(statements.append)
    try:
        work()
    finally:
        for conn in connections:
            conn.set_trace_callback(None)
    return sorted({s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))})


def assert_no_history_scan(store: Store, selects: list[str]) -> None:
    found = [(table, sql) for sql in selects for table in scans(store, sql)]
    assert [(t, " ".join(sql.split())) for t, sql in found if pending(t, sql) is None] == []
    matched = {pending(t, sql) for t, sql in found}
    assert [p for p in PENDING if p not in matched] == [], "fixed: remove it from PENDING"


def test_a_full_render_scans_no_history_table(tmp_path: Path) -> None:
    """Every provider renders once from the seeded state (nothing reused); none of the
    SELECTs it runs scans a history table."""
    cfg = config(tmp_path)
    store = seeded(tmp_path, cfg)
    ctx = render_context(cfg, store, NOW)
    names: set[str] = set()

    def render() -> None:
        for spec in providers().values():
            names.update(s.name for family in spec.collect(ctx) for s in family.samples)

    selects = selects_of(store, render)
    assert "platform_service_request_rate" in names  # the render did read the seed
    assert len(selects) > 20
    assert_no_history_scan(store, selects)
    store.close()


def test_the_weekly_review_scans_no_history_table(tmp_path: Path) -> None:
    """The review of the week (its 12 weeks of trend, with adoption rules that read
    gateway traffic and pipeline templates) runs no SELECT that scans a history table:
    its cost grows with services x weeks, not with the history kept."""
    capabilities = [
        {"name": "api-gateway", "detect": {"rule": "gateway_traffic"}},
        {
            "name": "golden-path",
            "detect": {"rule": "pipeline_template", "workflow_paths": ["shop/templates/*"]},
        },
    ]
    cfg = config(tmp_path, capabilities=capabilities)
    store = seeded(tmp_path, cfg)
    ctx = render_context(cfg, store, NOW)
    reviews = []
    selects = selects_of(store, lambda: reviews.append(build_review(ctx)))
    review = reviews[0]
    assert [r.name for r in review.services] == ["billing", *SERVICES]  # it read the seed
    assert review.services[1].uptime.value is not None
    assert review.services[1].adopted == ("golden-path",)
    assert len(selects) > 20
    assert_no_history_scan(store, selects)
    store.close()
