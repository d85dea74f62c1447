"""The facts adoption rules are evaluated on, read from the other store domains.

Each function is a small, explicit input interface for the pure functions of
:mod:`exporter.domains.adoption.kpis`: gateway traffic per service and period,
pipeline template use per service, first and last production deployment per
service, active API consumers, and running cost. Each returns ``None`` when its
data is not collected at all (no source of that kind is configured), so a
rule on missing data has no value rather than a false 0.
"""

from __future__ import annotations

from datetime import UTC, datetime

from exporter.config import Config
from exporter.core.store import Store
from exporter.domains.adoption.kpis import Evidence, PipelineFact, TrafficFact

# The config blocks under ``sources:`` that feed each kind of evidence.
GATEWAY_SOURCES = ("kong", "nginx", "cloudwatch", "prometheus")
CI_SOURCES = ("github", "gitlab", "jenkins")
COST_SOURCES = ("focus", "aws_cost", "azure_cost")


def configured(config: Config, kinds: tuple[str, ...]) -> bool:
    """Whether any of these sources is configured and enabled: its data is collected."""
    for kind in kinds:
        block = getattr(config.sources, kind, None)
        if block is not None and getattr(block, "enabled", True):
            return True
    return False


def gateway_traffic(config: Config, store: Store, since: float) -> list[TrafficFact] | None:
    """Requests per service and UTC day, for days starting after ``since`` minus one day.

    None when no gateway source is configured (adoption through the gateway is unknown).
    """
    if not configured(config, GATEWAY_SOURCES):
        return None
    from exporter.domains.traffic import store as traffic_store

    first = datetime.fromtimestamp(since, UTC).date()
    return [
        TrafficFact(service, datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp(), float(n))
        for (service, d), n in sorted(traffic_store.daily_totals(store, first).items())
    ]


def api_consumers(config: Config, store: Store, since: float) -> int | None:
    """Distinct API consumers seen at or after ``since`` across every service and gateway."""
    if not configured(config, GATEWAY_SOURCES):
        return None
    row = store.query_one(
        "SELECT COUNT(*) FROM (SELECT DISTINCT source, consumer FROM traffic_consumers "
        "WHERE last_seen >= ?)",
        (since,),
    )
    return int(row[0]) if row is not None else 0


# What each CI source records that the pipeline_template rule can match: "pipeline"
# (the pipeline, workflow or job name of every run, delivery domain), "workflow" (a GitHub
# run's workflow file and reusable workflows) and "include" (GitLab CI includes), both as
# TemplateUse records.
TEMPLATE_KINDS: dict[str, frozenset[str]] = {
    "github": frozenset({"pipeline", "workflow"}),
    "gitlab": frozenset({"pipeline", "include"}),
    "jenkins": frozenset({"pipeline"}),
}


def template_kinds(config: Config) -> frozenset[str]:
    """Which kinds of pipeline facts the configured CI sources record."""
    out: frozenset[str] = frozenset()
    for kind, kinds in TEMPLATE_KINDS.items():
        if configured(config, (kind,)):
            out |= kinds
    return out


def pipeline_templates(config: Config, store: Store, since: float) -> list[PipelineFact] | None:
    """The last run per service and workflow path, include or pipeline name after ``since``.

    None without a CI source.
    """
    if not configured(config, CI_SOURCES):
        return None
    from exporter.domains.catalog import store as catalog_store

    facts = [
        PipelineFact(service, kind, ref, at)
        for service, kind, ref, at in catalog_store.template_uses(store, since)
    ]
    if _has_table(store, "pipeline_runs"):
        rows = store.query(
            "SELECT service, pipeline, MAX(finished_at) FROM pipeline_runs "
            "WHERE finished_at > ? GROUP BY service, pipeline",
            (since,),
        )
        facts += [PipelineFact(str(r[0]), "pipeline", str(r[1]), float(r[2])) for r in rows]
    return facts


def _has_table(store: Store, table: str) -> bool:
    row = store.query_one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    return row is not None


def production_deploys(
    config: Config, store: Store
) -> tuple[dict[str, float], dict[str, float]] | None:
    """(first, last) successful production deployment per service; None without a CI source."""
    if not configured(config, CI_SOURCES) or not _has_table(store, "deployments"):
        return None
    rows = store.query(
        "SELECT service, MIN(finished_at), MAX(finished_at) FROM deployments "
        "WHERE production = 1 AND status = 'success' AND finished_at IS NOT NULL "
        "GROUP BY service"
    )
    first = {str(r[0]): float(r[1]) for r in rows}
    last = {str(r[0]): float(r[2]) for r in rows}
    return first, last


def capability_costs(config: Config, store: Store, now: float) -> dict[str, dict[str, float]]:
    """Each capability's running cost per currency over the last 30 closed UTC days.

    The cost of a capability is the allocated cost of its ``cost_services``; a capability
    without them, or with no cost row in the window, is absent (no cost data is not 0).
    """
    wanted = {c.name: set(c.cost_services) for c in config.capabilities if c.cost_services}
    if not wanted or not configured(config, COST_SOURCES):
        return {}
    from exporter.core.periods import utc_date
    from exporter.domains.cost import store as cost_store
    from exporter.domains.cost.kpis import window_bounds

    first, last = window_bounds(utc_date(now))["30d"]
    rows = cost_store.daily_costs(store, first, last, config.cost.amount)
    out: dict[str, dict[str, float]] = {}
    for _day, service, _team, _provider, _category, currency, amount in rows:
        for capability, services in wanted.items():
            if service in services:
                per = out.setdefault(capability, {})
                per[currency] = per.get(currency, 0.0) + amount
    return out


def collect(config: Config, store: Store, now: float, window: float) -> Evidence:
    """Everything the adoption rules need for windows up to ``window`` before ``now``."""
    since = now - window
    deploys = production_deploys(config, store)
    return Evidence(
        traffic=gateway_traffic(config, store, since),
        pipelines=pipeline_templates(config, store, since),
        pipeline_kinds=template_kinds(config),
        first_deploy=deploys[0] if deploys else None,
        last_deploy=deploys[1] if deploys else None,
    )
