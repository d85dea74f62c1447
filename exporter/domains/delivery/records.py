"""Normalised, immutable records that sources produce and the store keeps.

A source turns upstream JSON into these records and nothing else; every KPI is
computed from them. Each record has a ``key``: its upstream identity, so that a
re-poll or a restart upserts instead of double-counting. Times are Unix seconds
(UTC), durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One synthetic HTTP check of one service's endpoint."""

    service: str
    probe: str
    started_at: float
    duration_seconds: float
    success: bool
    # "" on success; otherwise one of exporter.domains.probe.kpis.FAILURE_REASONS.
    reason: str
    status_code: int | None = None

    @property
    def key(self) -> str:
        # A probe never starts twice at the same instant, so this is unique.
        return f"{self.service}/{self.probe}/{self.started_at:.6f}"


@dataclass(frozen=True, slots=True)
class CatalogEntity:
    """One entity of an external service catalog (a Backstage Component, System or Group).

    ``team`` is the name part of the owner's entity ref; ``repos`` are
    ``github:owner/repo`` or ``gitlab:group/project``; ``routes`` and
    ``cost_tags`` come from the configured annotation keys.
    """

    source: str
    kind: str  # "component", "system" or "group"
    namespace: str
    name: str
    team: str
    system: str = ""
    type: str = ""
    lifecycle: str = ""
    tags: tuple[str, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    repos: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    cost_tags: tuple[str, ...] = ()
    registered_at: float | None = None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.kind}:{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class CatalogListing:
    """Everything one catalog source lists at ``listed_at``: the whole set, not a delta.

    Storing it replaces that source's entities, so an entity that left the
    catalog leaves the store (and ``/metrics``) in the same transaction.
    """

    source: str
    listed_at: float
    entities: tuple[CatalogEntity, ...]

    @property
    def key(self) -> str:
        return self.source


@dataclass(frozen=True, slots=True)
class CatalogServicesSeen:
    """Every service of the merged catalog, as (name, team), at ``seen_at``.

    Storing it counts each name the store has never seen as one registration
    (``platform_catalog_services_registered_total{team}``), once and for all.
    """

    seen_at: float
    services: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        return "merged-catalog"


@dataclass(frozen=True, slots=True)
class TrafficDelta:
    """Requests a gateway served for one service in one UTC minute, as read by one poll.

    Deltas add up: the store sums every delta of a (service, source, minute). ``batch``
    names the read that produced it (a log offset, a poll's end time), so the same read
    is never counted twice. ``latency_buckets`` are non-cumulative counts per bound of
    :data:`exporter.domains.traffic.kpis.LATENCY_BUCKETS` plus one overflow count, or ``None``
    when the gateway gives no distribution (CloudWatch, Prometheus queries).
    """

    source: str
    service: str
    minute: float
    batch: str
    # Requests by status class 1xx, 2xx, 3xx, 4xx, 5xx.
    codes: tuple[int, int, int, int, int]
    latency_buckets: tuple[int, ...] | None = None
    latency_sum: float = 0.0
    latency_count: int = 0

    @property
    def key(self) -> str:
        return f"{self.source}/{self.batch}/{self.service}/{self.minute:.0f}"


@dataclass(frozen=True, slots=True)
class TrafficLatency:
    """A latency quantile a gateway computed itself over a window, in seconds."""

    source: str
    service: str
    window: str
    quantile: float
    seconds: float
    at: float

    @property
    def key(self) -> str:
        return f"{self.source}/{self.service}/{self.window}/{self.quantile:g}"


@dataclass(frozen=True, slots=True)
class ConsumerSeen:
    """An API consumer (Kong consumer, API key from a log) that sent traffic to a service.

    ``consumer`` is a digest of the upstream identity, never a metric label.
    """

    source: str
    service: str
    consumer: str
    at: float

    @property
    def key(self) -> str:
        return f"{self.source}/{self.service}/{self.consumer}"


@dataclass(frozen=True, slots=True)
class CostDay:
    """Allocated cost of one UTC day for one (service, provider, category, currency).

    Amounts are sums over billing lines and may be negative (credits, corrections).
    """

    day: str  # YYYY-MM-DD, UTC
    service: str
    team: str
    provider: str
    category: str
    currency: str
    billed: float
    effective: float
    lines: int = 1

    @property
    def key(self) -> str:
        return "/".join(
            (self.day, self.service, self.team, self.provider, self.category, self.currency)
        )


@dataclass(frozen=True, slots=True)
class CostContribution:
    """Everything one billing origin says, replacing what it said before.

    An origin is one export file, or one (account, day) answer of a cost API. Re-reading
    an origin replaces its rows, so a changed file or a settled day never double-counts.
    ``final`` origins are never asked for again (each Cost Explorer request is paid).
    """

    source: str
    origin: str
    signature: str
    days: tuple[CostDay, ...]
    final: bool = False
    rows_read: int = 0
    rows_rejected: int = 0
    # Closed days the origin covers even when it has no cost on them: YYYY-MM-DD.
    covered_days: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.source}/{self.origin}"


@dataclass(frozen=True, slots=True)
class RequestTotal:
    """Requests a service served on one closed UTC day."""

    service: str
    day: str  # YYYY-MM-DD, UTC
    requests: float
    source: str

    @property
    def key(self) -> str:
        return f"{self.service}/{self.day}"


@dataclass(frozen=True, slots=True)
class TemplateUse:
    """A finished pipeline run of a service used a pipeline definition at ``at``.

    ``kind`` is ``"workflow"`` (the run's GitHub workflow file, or a reusable
    workflow it called, as ``owner/repo/.github/workflows/x.yml@ref``) or
    ``"include"`` (a GitLab CI include). Only the latest use per (service, kind,
    ref) is kept: it is what platform template adoption is judged on.
    """

    source: str
    service: str
    kind: str
    ref: str
    at: float

    @property
    def key(self) -> str:
        return f"{self.source}/{self.service}/{self.kind}/{self.ref}"


# --- delivery (CI/CD) -------------------------------------------------------------

# Results a pipeline run or a deployment can end with; bounded, so they can be labels.
RUN_RESULTS = ("success", "failure", "cancelled", "skipped", "other")


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One finished CI run: a GitHub Actions workflow run, a GitLab pipeline, a Jenkins build."""

    source: str
    service: str
    # Workflow, pipeline or job name: a bounded label, never a run id or a branch.
    pipeline: str
    # Upstream identity within the source, e.g. "acme/checkout/123456".
    run_id: str
    result: str  # one of RUN_RESULTS
    created_at: float
    started_at: float | None
    finished_at: float

    @property
    def key(self) -> str:
        return f"{self.source}/{self.run_id}"


@dataclass(frozen=True, slots=True)
class Deployment:
    """A deployment of one commit of a service to an environment.

    ``status`` is "success" or "failure" once it has finished, "pending" before;
    ``finished_at`` is set once it has finished.
    """

    source: str
    service: str
    environment: str  # the bounded label: "production", a configured name, or "other"
    production: bool
    deploy_id: str
    sha: str
    status: str
    created_at: float
    finished_at: float | None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.deploy_id}"


@dataclass(frozen=True, slots=True)
class Commit:
    """A commit of a service's repo, with its parents (to walk history between deploys)."""

    service: str
    sha: str
    authored_at: float
    committed_at: float
    parents: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.service}/{self.sha}"


@dataclass(frozen=True, slots=True)
class MergeRequest:
    """A merged merge request: its head, its merge or squash commit and its own commits.

    A squash merge replaces ``commits`` on the target branch by ``squash_commit_sha``;
    lead time may then count from the original commits instead.
    """

    source: str
    service: str
    mr_id: str  # "<project path>!<iid>"
    merged_at: float
    sha: str  # the source branch head that was merged
    merge_commit_sha: str | None
    squash_commit_sha: str | None
    squash: bool
    commits: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.source}/{self.mr_id}"


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident of a service: opened, and resolved once ``resolved_at`` is set.

    ``deployment_sha`` is an explicit link to the deployment that caused it, when
    the upstream records one.
    """

    source: str
    service: str
    incident_id: str
    opened_at: float
    resolved_at: float | None
    deployment_sha: str | None = None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.incident_id}"
