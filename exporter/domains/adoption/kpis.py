"""Adoption of the platform: which catalog services and teams use each capability, and activity.

Definitions (see docs/kpis.md). ``now`` is the evaluation time; windows are
``(now - window, now]``.

* A service adopts a capability when the capability's rule holds:

  - ``gateway_traffic``: at least ``min_requests`` requests through the
    gateway in the window;
  - ``pipeline_template``: a pipeline run in the window used a matching
    workflow path (or reusable workflow), GitLab ``include`` or pipeline name (globs);
  - ``catalog``: its catalog entry carries the annotation (with the value, if
    given) or the tag;
  - ``probe``: it has a synthetic probe configured.

  A rule whose data is not collected (no gateway, no CI source, or a template
  rule that only names kinds of definitions no configured CI source records) has
  no value.
* Adopting teams: teams owning at least one adopting service.
* Adoption ratio: adopting services / services in the catalog; no services -> no value.
* Active services: catalog services with a production deployment or gateway
  traffic in the last 30 days.
* Teams onboarded: teams owning at least one service that adopts at least one capability.
* New services per month: catalog services by the UTC month of their registration.
* Onboarding time: first successful production deployment - registration, for
  services registered in the last 90 days (0 when it was live before it was registered).
* Cost per adopting service: the capability's running cost over the cost
  window / its adopting services.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from exporter.core.catalog import Catalog, CatalogService
from exporter.core.stats import histogram
from exporter.domains.adoption.settings import (
    CapabilityConfig,
    CatalogRule,
    GatewayTrafficRule,
    PipelineTemplateRule,
    ProbeRule,
)

DAY = 86400.0
ACTIVE_WINDOW = 30 * DAY
ONBOARDING_WINDOW = 90 * DAY
NEW_SERVICE_MONTHS = 12
# Histogram bounds for time to first production deploy, in seconds: 1h .. 90d.
ONBOARDING_BUCKETS = (
    3600.0,
    6 * 3600.0,
    DAY,
    2 * DAY,
    3 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
    60 * DAY,
    90 * DAY,
)


@dataclass(frozen=True, slots=True)
class TrafficFact:
    """Requests one service served through a gateway in one period starting at ``start``."""

    service: str
    start: float
    requests: float


@dataclass(frozen=True, slots=True)
class PipelineFact:
    """The last time a service ran a pipeline that used ``ref``.

    ``kind`` is ``"workflow"`` (a GitHub workflow path or reusable workflow),
    ``"include"`` (a GitLab CI include) or ``"pipeline"`` (the pipeline, workflow
    or job name the CI source records).
    """

    service: str
    kind: str
    ref: str
    last_at: float


@dataclass(frozen=True)
class Evidence:
    """What the collected data says. ``None`` means that kind of data is not collected."""

    traffic: Sequence[TrafficFact] | None = None
    pipelines: Sequence[PipelineFact] | None = None
    # Which PipelineFact kinds the CI data records at all ("pipeline", "workflow", "include").
    pipeline_kinds: frozenset[str] = frozenset({"pipeline", "workflow", "include"})
    # Last and first successful production deployment per service.
    last_deploy: Mapping[str, float] | None = None
    first_deploy: Mapping[str, float] | None = None


@dataclass(frozen=True)
class CapabilityAdoption:
    """The adoption of one capability at one time."""

    capability: str
    services: frozenset[str]
    teams: frozenset[str]
    ratio: float | None
    catalog_services: int

    @property
    def adopting_services(self) -> int:
        return len(self.services)

    @property
    def adopting_teams(self) -> int:
        return len(self.teams)

    def adopted(self, service: str) -> int:
        """1 if ``service`` adopts the capability, else 0."""
        return 1 if service in self.services else 0


def rule_adopters(
    capability: CapabilityConfig, catalog: Catalog, evidence: Evidence, now: float
) -> frozenset[str] | None:
    """The catalog services that satisfy the capability's rule; None when its data is missing."""
    rule = capability.detect
    known = catalog.services
    if isinstance(rule, ProbeRule):
        return frozenset(n for n, s in known.items() if s.has_probes)
    if isinstance(rule, CatalogRule):
        return frozenset(n for n, s in known.items() if _catalog_match(rule, s))
    if isinstance(rule, GatewayTrafficRule):
        if evidence.traffic is None:
            return None
        totals: dict[str, float] = {}
        for fact in evidence.traffic:
            if now - rule.window < fact.start <= now:
                totals[fact.service] = totals.get(fact.service, 0.0) + fact.requests
        return frozenset(s for s, n in totals.items() if n >= rule.min_requests and s in known)
    if isinstance(rule, PipelineTemplateRule):
        wanted = {
            kind
            for kind, patterns in (
                ("workflow", rule.workflow_paths),
                ("include", rule.gitlab_includes),
                ("pipeline", rule.pipeline_names),
            )
            if patterns
        }
        if evidence.pipelines is None or not wanted & evidence.pipeline_kinds:
            return None
        return frozenset(
            f.service
            for f in evidence.pipelines
            if f.service in known
            and now - rule.window < f.last_at <= now
            and _template_match(rule, f)
        )
    raise TypeError(f"unknown rule {rule!r}")  # pragma: no cover


def _catalog_match(rule: CatalogRule, svc: CatalogService) -> bool:
    if rule.tag is not None:
        return rule.tag.lower() in svc.tags
    if rule.annotation is None or rule.annotation not in svc.annotations:
        return False
    return rule.value is None or svc.annotations[rule.annotation] == rule.value


def _template_match(rule: PipelineTemplateRule, fact: PipelineFact) -> bool:
    patterns = {
        "workflow": rule.workflow_paths,
        "include": rule.gitlab_includes,
        "pipeline": rule.pipeline_names,
    }.get(fact.kind, [])
    ref = fact.ref.split("@", 1)[
        0
    ]  # a reusable workflow's ref (@v1, @main) is not part of its path
    return any(fnmatch.fnmatchcase(ref, p) or fnmatch.fnmatchcase(fact.ref, p) for p in patterns)


def adoption(
    capability: CapabilityConfig, catalog: Catalog, evidence: Evidence, now: float
) -> CapabilityAdoption | None:
    """Adopting services and teams, and the ratio; None when the rule's data is missing."""
    services = rule_adopters(capability, catalog, evidence, now)
    if services is None:
        return None
    teams = catalog.owning_teams(services)
    total = len(catalog.services)
    return CapabilityAdoption(
        capability=capability.name,
        services=services,
        teams=teams,
        ratio=len(services) / total if total else None,
        catalog_services=total,
    )


def active_services(
    catalog: Catalog, evidence: Evidence, now: float, window: float = ACTIVE_WINDOW
) -> frozenset[str] | None:
    """Catalog services deployed to production or serving gateway traffic in the window.

    None when neither deployments nor traffic are collected.
    """
    if evidence.last_deploy is None and evidence.traffic is None:
        return None
    out: set[str] = set()
    for service, at in (evidence.last_deploy or {}).items():
        if now - window < at <= now:
            out.add(service)
    for fact in evidence.traffic or ():
        if fact.requests > 0 and now - window < fact.start <= now:
            out.add(fact.service)
    return frozenset(out & set(catalog.services))


def evidence_window(capabilities: Sequence[CapabilityConfig]) -> float:
    """How far back the evidence must reach: the activity window, or a longer window of
    a capability's detection rule."""
    windows = [c.detect.window for c in capabilities if hasattr(c.detect, "window")]
    return max([ACTIVE_WINDOW, *windows])


def active_since(now: float) -> float:
    """Where the activity window (``window="30d"``) starts."""
    return now - ACTIVE_WINDOW


def active_service_count(catalog: Catalog, evidence: Evidence, now: float) -> int | None:
    """How many catalog services are active (see :func:`active_services`); None when
    neither deployments nor traffic are collected."""
    active = active_services(catalog, evidence, now)
    return None if active is None else len(active)


def teams_onboarded_count(catalog: Catalog, adoptions: Iterable[CapabilityAdoption]) -> int:
    """How many teams are onboarded (see :func:`teams_onboarded`)."""
    return len(teams_onboarded(catalog, adoptions))


def teams_onboarded(catalog: Catalog, adoptions: Iterable[CapabilityAdoption]) -> frozenset[str]:
    """Teams owning at least one service that adopts at least one capability (a service
    without owner makes no team onboarded)."""
    services: set[str] = set()
    for a in adoptions:
        services |= a.services
    return catalog.owning_teams(services)


def month_of(t: float) -> str:
    """``YYYY-MM`` of a Unix time, in UTC."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m")


def last_months(now: float, months: int = NEW_SERVICE_MONTHS) -> list[str]:
    """The ``months`` UTC months ending with the current one, oldest first."""
    d = datetime.fromtimestamp(now, UTC)
    year, month = d.year, d.month
    out = []
    for _ in range(months):
        out.append(f"{year:04d}-{month:02d}")
        month -= 1
        if month == 0:
            year, month = year - 1, 12
    return out[::-1]


def new_services_per_month(
    catalog: Catalog, now: float, months: int = NEW_SERVICE_MONTHS
) -> dict[str, int]:
    """Services registered in each of the last ``months`` UTC months (registered after now: none).

    Services without a registration time are not counted (see :func:`unregistered`).
    """
    counts = dict.fromkeys(last_months(now, months), 0)
    for svc in catalog.services.values():
        if svc.registered_at is None or svc.registered_at > now:
            continue
        month = month_of(svc.registered_at)
        if month in counts:
            counts[month] += 1
    return counts


def unregistered(catalog: Catalog) -> int:
    """Catalog services whose registration time is unknown."""
    return sum(1 for s in catalog.services.values() if s.registered_at is None)


@dataclass(frozen=True)
class Onboarding:
    """Services registered in the window: time to first production deploy of those deployed."""

    seconds: Mapping[str, float] = field(default_factory=dict)
    waiting: frozenset[str] = frozenset()

    @property
    def deployed_count(self) -> int:
        return len(self.seconds)

    @property
    def waiting_count(self) -> int:
        return len(self.waiting)

    def histogram(self) -> tuple[list[int], float, int]:
        """(cumulative counts per :data:`ONBOARDING_BUCKETS` bound, sum, count) of the
        times to first deploy."""
        return histogram(self.seconds.values(), ONBOARDING_BUCKETS)


def onboarding(
    catalog: Catalog,
    first_deploy: Mapping[str, float],
    now: float,
    window: float = ONBOARDING_WINDOW,
) -> Onboarding:
    """Time from registration to first successful production deploy, for recent registrations."""
    seconds: dict[str, float] = {}
    waiting: set[str] = set()
    for name, svc in catalog.services.items():
        if svc.registered_at is None or not now - window < svc.registered_at <= now:
            continue
        first = first_deploy.get(name)
        if first is None or first > now:
            waiting.add(name)
        else:
            seconds[name] = max(0.0, first - svc.registered_at)
    return Onboarding(seconds, frozenset(waiting))


def cost_per_adopting_service(cost: float | None, adopting: int) -> float | None:
    """Running cost / adopting services; None without cost data or without adopters."""
    if cost is None or adopting <= 0:
        return None
    return cost / adopting
