"""A small stored history with hand-checked numbers, for the review's tests.

Three services: ``checkout`` (payments) and ``search`` (discovery) from the config,
and one the catalog (Backstage) adds with a hostile name and team. The reviewed week
is 2026-W53 (Monday 2026-12-28 to Sunday 2027-01-03: it holds the year end and the
1st of January); the week before is 2026-W52. What was stored, and what follows:

* probe checks: checkout 10 in W53 (9 succeed), 4 in W52 (all succeed); search 4 in
  W53 (all succeed). Uptime W53: checkout 0.9, search 1.0, platform 13/14; W52: 1.0.
* gateway minute 2027-01-03 23:58 (nginx): checkout 1000 requests (980 2xx, 10 4xx,
  10 5xx), all in the latency bucket (0.1, 0.25]; search 500 (no distribution); the
  hostile service 100.
* billing (focus), per day: checkout 10 USD in W53, 5 in W52; search 2 in both.
  Cost W53: checkout 70, search 14. Cost per transaction: only 2027-01-03 has request
  totals, so checkout 10/1000 = 0.01, search 2/500 = 0.004, platform 12/1500 = 0.008.
* deliveries (github) of checkout: commit a1 (root) at 12-29 08:00 deployed 10:00
  (lead 2 h), a2 at 12-31 06:00 deployed 10:00 (lead 4 h); an incident caused by a2,
  12-31 11:00 to 12:30 (restore 1.5 h). Median lead 3 h, change failure 1/2, time to
  production 2 h (root commit to first deploy).
* checkout's availability SLO (99 %, 30 d, probe): 1 bad check of 14 over the 30 days
  to the week's end: budget left 1 - (1/14)/0.01 = -6.142857...; 1.0 at W52's end.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.config import Config
from exporter.core.backend import PostgresTarget
from exporter.core.catalog import CatalogEntity
from exporter.core.store import write_records
from exporter.domains import open_store
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.cost.records import CostContribution, CostDay
from exporter.domains.delivery.records import Commit, Deployment, Incident
from exporter.domains.probe.records import ProbeResult
from exporter.domains.traffic.kpis import LATENCY_BUCKETS
from exporter.domains.traffic.records import TrafficDelta

HOSTILE = "<script>alert(1)</script>"
HOSTILE_TEAM = "<img src=x onerror=alert(2)>|*team*"
HOSTILE_INCIDENT = "<b>INC-1</b>|[x](javascript:alert(3))"
WEEK = "2026-W53"


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


#: The review's instant: Monday 2027-01-04 06:00 UTC, once the week's last gateway day
#: has settled (cost per transaction counts a gateway day 15 minutes after it ends).
AS_OF = t("2027-01-04T06:00:00")
H = 3600.0


def config(tmp_path: Path, **extra: Any) -> Config:
    return Config(**config_data(tmp_path, **extra))


def config_data(
    tmp_path: Path, state: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """The config as YAML-shaped data (its ``state`` section: a file in ``tmp_path``)."""
    (tmp_path / "exports").mkdir(exist_ok=True)
    (tmp_path / "access.log").touch()
    probe = [{"name": "health", "url": "http://checkout.test/health"}]
    return dict(
        state=state or {"path": str(tmp_path / "state.db")},
        services=[
            {
                "name": "checkout",
                "team": "payments",
                "probes": probe,
                "slo": {"availability": {"objective": 99}},
                "cost": {"tags": {"service": "checkout"}},
                "ci": [{"github": "acme/checkout"}],
            },
            {
                "name": "search",
                "team": "discovery",
                "probes": [{"name": "health", "url": "http://search.test/health"}],
                "cost": {"tags": {"service": "search"}},
            },
        ],
        sources={
            "focus": {"paths": [str(tmp_path / "exports")]},
            "nginx": {"access_log": str(tmp_path / "access.log")},
            "github": {"token": "ghp_" + "x" * 36},
            "backstage": {"base_url": "http://backstage.test", "token": "t0ken"},
        },
        capabilities=[
            {"name": "api-gateway", "detect": {"rule": "gateway_traffic"}},
            {"name": "observability", "detect": {"rule": "probe"}},
        ],
        **extra,
    )


def _checks(service: str, first: str, n: int, failures: int, step: float) -> list[ProbeResult]:
    start = t(first)
    return [
        ProbeResult(
            service,
            "health",
            start + i * step,
            0.05,
            i >= failures,
            "" if i >= failures else "status",
        )
        for i in range(n)
    ]


def _cost(days: list[str], service: str, team: str, amount: float) -> list[CostDay]:
    return [CostDay(d, service, team, "aws", "Compute", "USD", amount, amount) for d in days]


def records() -> list[object]:
    w52 = [f"2026-12-{d}" for d in range(21, 28)]
    w53 = [f"2026-12-{d}" for d in range(28, 32)] + [f"2027-01-0{d}" for d in range(1, 4)]
    bucket = [0] * (len(LATENCY_BUCKETS) + 1)
    bucket[LATENCY_BUCKETS.index(0.25)] = 1000
    minute = t("2027-01-03T23:58:00")
    days = (
        _cost(w52, "checkout", "payments", 5.0)
        + _cost(w53, "checkout", "payments", 10.0)
        + _cost(w52 + w53, "search", "discovery", 2.0)
    )
    hostile = CatalogEntity(
        source="backstage",
        kind="component",
        namespace="default",
        name=HOSTILE,
        team=HOSTILE_TEAM,
        registered_at=t("2026-12-30T09:00:00"),
    )
    return [
        # W53: one failure first, then nine successes, the last at 2027-01-03 23:59.
        *_checks("checkout", "2027-01-03T23:50:00", 10, 1, 60.0),
        *_checks("checkout", "2026-12-27T23:56:00", 4, 0, 60.0),
        *_checks("search", "2027-01-03T23:56:00", 4, 0, 60.0),
        TrafficDelta(
            "nginx", "checkout", minute, "b1", (0, 980, 0, 10, 10), tuple(bucket), 150.0, 1000
        ),
        TrafficDelta("nginx", "search", minute, "b1", (0, 500, 0, 0, 0)),
        TrafficDelta("nginx", HOSTILE, minute, "b1", (0, 100, 0, 0, 0)),
        CostContribution("focus", "export-1", "sig", tuple(days), covered_days=tuple(w52 + w53)),
        Commit("checkout", "a1" * 20, t("2026-12-29T08:00:00"), t("2026-12-29T08:00:00"), ()),
        Commit(
            "checkout", "a2" * 20, t("2026-12-31T06:00:00"), t("2026-12-31T06:00:00"), ("a1" * 20,)
        ),
        Deployment(
            "github",
            "checkout",
            "production",
            True,
            "d1",
            "a1" * 20,
            "success",
            t("2026-12-29T09:50:00"),
            t("2026-12-29T10:00:00"),
        ),
        Deployment(
            "github",
            "checkout",
            "production",
            True,
            "d2",
            "a2" * 20,
            "success",
            t("2026-12-31T09:50:00"),
            t("2026-12-31T10:00:00"),
        ),
        Incident(
            "github",
            "checkout",
            HOSTILE_INCIDENT,
            t("2026-12-31T11:00:00"),
            t("2026-12-31T12:30:00"),
            "a2" * 20,
        ),
        CatalogListing("backstage", t("2027-01-03T23:59:00"), (hostile,)),
    ]


def seeded(tmp_path: Path, history: list[object] | None = None, **extra: Any) -> Config:
    """The config, with the history above (or ``history``) stored in its state database."""
    cfg = config(tmp_path, **extra)
    store_history(cfg.state.location(), history)
    return cfg


def store_history(location: Path | PostgresTarget, history: list[object] | None = None) -> None:
    """Store the history above (or ``history``) in the state database at ``location``."""
    store = open_store(location)
    try:
        with store.transaction() as tx:
            write_records(tx, records() if history is None else history)
    finally:
        store.close()
