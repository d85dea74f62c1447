"""Configuration: a YAML file plus ``PLATFORM_KPI_...`` environment overrides.

Everything is validated up front by pydantic. Unknown keys are errors, secrets
are :class:`~pydantic.SecretStr` (given inline, or as ``{env: NAME}`` or
``{file: /path}`` for Kubernetes secret mounts), and a bad config raises
:class:`ConfigError` whose message names the file, the field path and the
reason. Environment variables override the file, nested with ``__``:
``PLATFORM_KPI_SERVER__PORT=9100``.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "PLATFORM_KPI_"

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ConfigError(Exception):
    """The configuration is invalid. ``str()`` is the message to print."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(
            "\n".join(f"config error in {file}: {p}" for p in problems) or f"config error in {file}"
        )


def parse_duration(value: Any) -> float:
    """Seconds from a number or a Prometheus-style duration such as ``1h30m`` or ``500ms``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 5m, 1h30m, 500ms or 7d")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def resolve_secret(value: Any) -> Any:
    """Accept a literal secret, ``{env: NAME}`` or ``{file: PATH}``."""
    if isinstance(value, dict):
        if set(value) == {"env"}:
            name = str(value["env"])
            if name not in os.environ:
                raise ValueError(f"environment variable {name} is not set")
            return os.environ[name]
        if set(value) == {"file"}:
            path = Path(str(value["file"]))
            try:
                # Secret mounts usually end with a newline that is not part of the secret.
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
        raise ValueError("a secret is a string, {env: NAME} or {file: PATH}")
    return value


def parse_percent(value: Any) -> float:
    """An objective as a percentage such as ``99.9`` (strictly between 0 and 100)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a percentage such as 99.9")
    text = str(value).strip().removesuffix("%")
    try:
        percent = float(text)
    except ValueError:
        raise ValueError(f"invalid percentage {value!r}: use e.g. 99.9") from None
    if not 0 < percent < 100:
        raise ValueError("must be a percentage strictly between 0 and 100, e.g. 99.9")
    if percent <= 1:
        raise ValueError(
            f"{value} looks like a ratio; write the objective as a percentage such as 99.9"
        )
    return percent


def parse_slo_window(value: Any) -> Any:
    """An SLO period: a duration (rolling), or ``month`` for the calendar month (UTC)."""
    if isinstance(value, str) and value.strip() == "month":
        return "month"
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; or month for the calendar month") from None


Duration = Annotated[float, BeforeValidator(parse_duration)]
SLOWindow = Annotated[float | Literal["month"], BeforeValidator(parse_slo_window)]
Percent = Annotated[float, BeforeValidator(parse_percent)]
Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]
# Names become label values and URL parts: keep them tame.
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BasicAuthConfig(StrictModel):
    username: str = Field(min_length=1)
    password: Secret


class TLSConfig(StrictModel):
    cert_file: Path
    key_file: Path

    @model_validator(mode="after")
    def _files_exist(self) -> TLSConfig:
        for name in ("cert_file", "key_file"):
            path: Path = getattr(self, name)
            if not path.is_file():
                raise ValueError(f"{name} {path} does not exist")
        return self


class ServerConfig(StrictModel):
    """Where ``/metrics``, ``/healthz`` and ``/readyz`` listen."""

    listen_address: str = "0.0.0.0"
    port: int = Field(default=9877, ge=0, le=65535)
    basic_auth: BasicAuthConfig | None = None
    tls: TLSConfig | None = None
    # /readyz turns ready once every source has refreshed, or after this long anyway.
    startup_grace: Duration = 120.0


class StateConfig(StrictModel):
    """The SQLite state database."""

    path: Path = Path("state/platform-kpi-exporter.db")
    # Raw events older than this are pruned; counters and histograms are kept forever.
    retention: Duration = 35 * 86400.0


class ProbeCheckConfig(StrictModel):
    """One synthetic HTTP(S) check of a service."""

    name: Name
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200])
    body_regex: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 5.0
    interval: Duration = 30.0
    tls_verify: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        if not value or any(not 100 <= s <= 599 for s in value):
            raise ValueError("must list HTTP status codes between 100 and 599")
        return value

    @field_validator("body_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("timeout", "interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class ServiceCostConfig(StrictModel):
    """How cost lines are allocated to a service.

    A line belongs to the service if any of its tags equals one of ``tags``
    (key and value), or else if its resource id or its account matches one of the
    glob patterns. Tags are tried first for every service, then resources, then
    accounts; the first service in catalog order wins at each step.
    """

    tags: dict[str, str] = Field(default_factory=dict)
    resources: list[str] = Field(default_factory=list)
    accounts: list[str] = Field(default_factory=list)
    # Shared platform cost: split over the other services by their share of requests.
    shared: bool = False

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not k for k in value):
            raise ValueError("tag keys cannot be empty")
        return value


class AvailabilitySLOConfig(StrictModel):
    """Availability: the share of good events. ``probe``: successful probe checks
    (``platform_probe_checks_total``); ``requests``: requests not answered 5xx
    (``platform_service_requests_total``)."""

    objective: Percent
    sli: Literal["probe", "requests"] = "probe"


class LatencySLOConfig(StrictModel):
    """Latency: the share of events faster than ``threshold``, counted from a histogram
    (``platform_probe_duration_seconds`` or ``platform_service_request_duration_seconds``),
    so the threshold must be one of its bucket bounds."""

    objective: Percent
    threshold: Duration
    sli: Literal["probe", "requests"] = "probe"

    @field_validator("threshold")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class SLOConfig(StrictModel):
    """A service's service-level objectives, and the window they are judged over.

    ``alert_windows``: ``workbook`` keeps the SRE Workbook's alert windows (1h/5m,
    6h/30m, 1d/2h, 3d/6h) and derives each burn factor from the same share of the
    budget (14.4, 6, 3, 1 for 30 days); ``scaled`` shrinks the windows in proportion
    to ``window`` (for short windows, as in tests) and keeps the factors.
    ``window: month`` is the calendar month (UTC): the budget starts afresh on the
    1st, and the burn factors follow the month's 28 to 31 days.
    """

    window: SLOWindow = 30 * 86400.0
    alert_windows: Literal["workbook", "scaled"] = "workbook"
    availability: AvailabilitySLOConfig | None = None
    latency: LatencySLOConfig | None = None
    # OpenSLO v1 ``SLO`` (and ``SLI``) documents: inline, or the path of a YAML file.
    openslo: list[str | dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> SLOConfig:
        from exporter.domains.slo.windows import WorkbookWindowsError, check_period

        try:
            check_period(self.window, self.alert_windows)
        except WorkbookWindowsError as exc:
            raise ValueError(f"window: {exc}") from None
        if self.openslo:
            from exporter.domains.slo.openslo import OpenSLOError, load_documents

            try:
                load_documents(self.openslo)
            except OpenSLOError as exc:
                raise ValueError(f"openslo: {exc}") from None
        return self


class RepoRef(StrictModel):
    """One CI/CD upstream object that belongs to a service: exactly one of the keys.

    ``github: owner/repo``, ``gitlab: group/sub/project`` (path) or ``jenkins:
    folder/job`` (full job name). Shell-style wildcards (``acme/checkout-*``) match
    repos discovered through ``sources.github.orgs`` / ``sources.gitlab.groups``.
    """

    github: str | None = Field(default=None, pattern=r"^[\w.*?\[\]-]+/[\w.*?\[\]-]+$")
    gitlab: str | None = Field(default=None, pattern=r"^[\w.*?\[\]-]+(/[\w.*?\[\]-]+)+$")
    jenkins: str | None = Field(default=None, pattern=r"^[^/\s]+(/[^/\s]+)*$")

    @model_validator(mode="after")
    def _exactly_one(self) -> RepoRef:
        given = [k for k in ("github", "gitlab", "jenkins") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of github, gitlab or jenkins")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("github", "gitlab", "jenkins") if getattr(self, k) is not None)

    @property
    def pattern(self) -> str:
        value = getattr(self, self.kind)
        assert isinstance(value, str)
        return value

    @property
    def is_pattern(self) -> bool:
        return any(c in self.pattern for c in "*?[")

    def matches(self, kind: str, name: str) -> bool:
        return kind == self.kind and fnmatch.fnmatchcase(name.lower(), self.pattern.lower())


class ServiceConfig(StrictModel):
    """A service of the catalog: the identity every KPI joins on."""

    name: Name
    team: Name
    probes: list[ProbeCheckConfig] = Field(default_factory=list)
    cost: ServiceCostConfig | None = None
    # When the service entered the catalog (new services per month, onboarding time).
    registered_at: datetime | None = None
    # Catalog tags and annotations; capability rules of kind "catalog" read them.
    tags: list[str] = Field(default_factory=list)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("registered_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone, e.g. 2026-01-31T00:00:00Z")
        return value

    # Gateway identities of this service: a Kong service or route name, an API Gateway
    # API name or id, a Prometheus label value, or an NGINX ``host``, ``host/path-prefix``
    # or ``/path-prefix``. Traffic matching none of any service is ``unmapped``.
    routes: list[str] = Field(default_factory=list)

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: list[str]) -> list[str]:
        for route in value:
            if not route or any(c.isspace() for c in route):
                raise ValueError(f"route {route!r} must be non-empty and contain no spaces")
        return value

    # Objectives; rules and dashboards are generated from them (`platform-kpi-exporter rules`).
    slo: SLOConfig | None = None

    # The repos, projects and jobs whose pipelines and deployments are this service's.
    ci: list[RepoRef] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_probes(self) -> ServiceConfig:
        names = [p.name for p in self.probes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"probe names must be unique within a service: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _slo_fits(self) -> ServiceConfig:
        from exporter.domains.slo.spec import SLOSpecError, check_service_slos

        try:
            check_service_slos(self)
        except SLOSpecError as exc:
            raise ValueError(f"slo: {exc}") from None
        return self


class SourceConfig(StrictModel):
    """Settings every source shares; each source's section extends it."""

    enabled: bool = True
    # How often the source is polled, with a random delay of up to `jitter` added.
    interval: Duration = 60.0
    jitter: Duration = 0.0
    # Per upstream request.
    timeout: Duration = 10.0

    @field_validator("interval")
    @classmethod
    def _interval_positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class ProbeSourceConfig(SourceConfig):
    """The synthetic HTTP probe source. Each check keeps its own interval;
    the source wakes every `interval` and runs the checks that are due."""

    interval: Duration = 5.0
    jitter: Duration = 0.0
    concurrency: int = Field(default=16, ge=1, le=512)


class BackstageAnnotationsConfig(StrictModel):
    """Which entity annotations map a Backstage entity to its repos, routes and cost tags.

    Each list is tried in order; values may hold several items separated by commas.
    """

    github_repos: list[str] = Field(default_factory=lambda: ["github.com/project-slug"])
    gitlab_projects: list[str] = Field(default_factory=lambda: ["gitlab.com/project-slug"])
    gateway_routes: list[str] = Field(
        default_factory=lambda: ["platform-kpi-exporter/gateway-routes"]
    )
    cost_tags: list[str] = Field(default_factory=lambda: ["platform-kpi-exporter/cost-tags"])
    # An ISO 8601 time: when the service entered the catalog.
    registered_at: list[str] = Field(
        default_factory=lambda: ["platform-kpi-exporter/registered-at"]
    )


class BackstageSourceConfig(SourceConfig):
    """The Backstage software catalog: components, systems and groups by
    ``GET {base_url}/entities/by-query`` with cursor pagination."""

    # The catalog backend, usually the Backstage backend URL plus /api/catalog.
    base_url: str
    token: Secret | None = None
    interval: Duration = 300.0
    page_size: int = Field(default=200, ge=1, le=1000)
    # Component spec.type values that count as services; empty means every component.
    component_types: list[str] = Field(default_factory=list)
    # Only entities in these namespaces; empty means all.
    namespaces: list[str] = Field(default_factory=list)
    annotations: BackstageAnnotationsConfig = Field(default_factory=BackstageAnnotationsConfig)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class KongSourceConfig(SourceConfig):
    """Kong: the Prometheus plugin's exposition plus the Admin API's services, routes, consumers."""

    interval: Duration = 30.0
    # Where the exposition is served: the Status API (``http://kong:8100``) or the Admin API.
    status_url: str
    metrics_path: str = "/metrics"
    # The Admin API (``http://kong:8001``); without it, Kong service names map directly.
    admin_url: str | None = None
    admin_token: Secret | None = None
    page_size: int = Field(default=1000, ge=1, le=1000)

    @field_validator("status_url", "admin_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else value


class NginxSourceConfig(SourceConfig):
    """NGINX: a JSON access log tailed incrementally, and optionally ``stub_status``."""

    interval: Duration = 15.0
    access_log: Path
    stub_status_url: str | None = None
    # JSON field holding an API key or consumer id, for active-consumer counts.
    consumer_field: str | None = None
    # A poll reads at most this many bytes (and commits them in chunks); the rest waits.
    max_bytes_per_poll: int = Field(default=256 * 1024 * 1024, ge=4096)


class CloudWatchApiConfig(StrictModel):
    """One AWS API Gateway API and stage."""

    # REST APIs are named by ``ApiName``; HTTP APIs by ``ApiId``.
    type: Literal["rest", "http"] = "rest"
    name: str = Field(min_length=1)
    stage: str = Field(min_length=1)
    # The catalog service; by default the API name is looked up in ``services[].routes``.
    service: Name | None = None


class CloudWatchSourceConfig(SourceConfig):
    """AWS API Gateway metrics through CloudWatch ``GetMetricData`` (boto3)."""

    interval: Duration = 300.0
    region: str = "us-east-1"
    endpoint_url: str | None = None
    apis: list[CloudWatchApiConfig] = Field(min_length=1)
    # CloudWatch data for the last minutes is incomplete: only minutes older than this are read.
    delay: Duration = 300.0
    # How far back the first poll reads.
    backfill: Duration = 3600.0
    # Latency percentiles CloudWatch computes over each window (an empty list skips them).
    latency_statistics: list[str] = Field(default_factory=lambda: ["p50", "p95", "p99"])
    latency_windows: list[Literal["5m", "1h", "1d", "30d"]] = ["5m", "1h", "1d", "30d"]

    @field_validator("latency_statistics")
    @classmethod
    def _percentiles(cls, value: list[str]) -> list[str]:
        for stat in value:
            if not re.fullmatch(r"p(\d{1,2}(\.\d+)?|100)", stat):
                raise ValueError(f"{stat!r} is not a percentile statistic such as p95")
        return value


class PrometheusQueriesConfig(StrictModel):
    """PromQL per service; ``$window`` is replaced by a range such as ``5m`` or ``300s``,
    ``$quantile`` by 0.5, 0.95 or 0.99. Each must return one series per service label."""

    requests: str
    errors_5xx: str
    errors_4xx: str | None = None
    latency_seconds: str | None = None


class PrometheusSourceConfig(SourceConfig):
    """Any Prometheus (or compatible API) that already scrapes a gateway or mesh."""

    interval: Duration = 60.0
    url: str
    bearer_token: Secret | None = None
    service_label: str = "service"
    # The service a scalar result belongs to (a query that returns one number).
    scalar_service: Name | None = None
    queries: PrometheusQueriesConfig
    latency_windows: list[Literal["5m", "1h", "1d", "30d"]] = ["5m", "1h", "1d", "30d"]
    # Each poll evaluates the counts in steps of at most this long, and at most
    # max_catch_up back: a longer outage of the exporter is skipped (and logged).
    max_step: Duration = 3600.0
    max_catch_up: Duration = 86400.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
PositiveInt = Annotated[int, Field(ge=1)]


class FocusSourceConfig(SourceConfig):
    """FOCUS 1.x billing export files (CSV, gzip CSV or Parquet), local or over HTTP(S)."""

    interval: Duration = 3600.0
    timeout: Duration = 300.0
    # Files, directories (every *.csv, *.csv.gz and *.parquet inside, recursively) or globs.
    paths: list[str] = Field(default_factory=list)
    # HTTP(S) URLs of export files; fetched with conditional requests.
    urls: list[str] = Field(default_factory=list)
    # The provider label; by default taken from each row's ProviderName.
    provider: Name | None = None

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.match(r"^https?://[^/\s]+", url):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _something(self) -> FocusSourceConfig:
        if self.enabled and not self.paths and not self.urls:
            raise ValueError("give at least one entry in paths or urls")
        return self


class CostExplorerGroupBy(StrictModel):
    type: Literal["TAG", "DIMENSION", "COST_CATEGORY"]
    key: str = Field(min_length=1)


class AwsAccountConfig(StrictModel):
    """One AWS account read through an assumed role (or the default credentials)."""

    name: Name
    role_arn: str | None = Field(default=None, pattern=r"^arn:aws[\w-]*:iam::\d{12}:role/.+$")
    external_id: Secret | None = None


class AwsCostSourceConfig(SourceConfig):
    """AWS Cost Explorer GetCostAndUsage, daily. Every request costs USD 0.01."""

    interval: Duration = 6 * 3600.0
    timeout: Duration = 60.0
    region: str = "us-east-1"
    # Only for tests or private endpoints; boto3's default otherwise.
    endpoint_url: str | None = None
    metric: Literal["UnblendedCost", "AmortizedCost", "NetAmortizedCost"] = "UnblendedCost"
    group_by: list[CostExplorerGroupBy] = Field(
        default_factory=lambda: [CostExplorerGroupBy(type="TAG", key="service")],
        min_length=1,
        max_length=2,
    )
    # Empty: one scope with the default credential chain.
    accounts: list[AwsAccountConfig] = Field(default_factory=list)
    # Days younger than this are re-queried on every poll: costs settle over 24 to 72 hours.
    data_delay_days: int = Field(default=3, ge=0, le=31)
    lookback_days: int = Field(default=35, ge=1, le=366)
    # At most this many paid requests per UTC day, across accounts.
    daily_call_cap: PositiveInt = 40


class AzureCostSourceConfig(SourceConfig):
    """Azure Cost Management Query API, daily, grouped by a tag."""

    interval: Duration = 6 * 3600.0
    timeout: Duration = 60.0
    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: Secret
    # e.g. /subscriptions/<id> or /providers/Microsoft.Billing/billingAccounts/<id>
    scopes: list[str] = Field(min_length=1)
    tag_key: str = "service"
    cost_type: Literal["ActualCost", "AmortizedCost"] = "ActualCost"
    management_url: str = "https://management.azure.com"
    login_url: str = "https://login.microsoftonline.com"
    api_version: str = "2023-03-01"
    data_delay_days: int = Field(default=3, ge=0, le=31)
    # A daily query spans at most 31 days.
    lookback_days: int = Field(default=31, ge=1, le=31)
    # A 429 asking to wait longer than this fails the poll instead of stalling it.
    max_retry_wait: Duration = 60.0

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        for scope in value:
            if not scope.startswith("/") or scope.endswith("/"):
                raise ValueError(f"scope {scope!r} must start with / and not end with /")
        return value


class RequestTotalsSourceConfig(SourceConfig):
    """Daily request totals per service from a Prometheus query (for cost per transaction)."""

    interval: Duration = 3600.0
    # Prometheus base URL, e.g. http://prometheus:9090
    url: str
    # PromQL evaluated at the end of each closed UTC day; `$window` becomes `1d`.
    query: str = "sum by (service) (increase(http_requests_total[$window]))"
    service_label: str = "service"
    lookback_days: int = Field(default=35, ge=1, le=366)
    # Wait this long after midnight UTC before reading a day (late scrapes).
    settle: Duration = 900.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")


class BudgetConfig(StrictModel):
    """A monthly budget for a team or a service."""

    scope: Literal["team", "service"]
    name: Name
    monthly: float = Field(gt=0)
    currency: Currency = "USD"


class CostConfig(StrictModel):
    """How cost KPIs are computed from the billing sources."""

    # EffectiveCost (amortised, after discounts; FinOps' choice for showback) or BilledCost.
    amount: Literal["effective", "billed"] = "effective"
    # Split the cost of services marked `cost.shared` over the others by request share.
    split_shared_by_requests: bool = False
    budgets: list[BudgetConfig] = Field(default_factory=list)


def _check_patterns(value: list[str]) -> list[str]:
    for pattern in value:
        if not pattern.strip():
            raise ValueError("patterns cannot be empty")
    return value


class DeliveryConfig(StrictModel):
    """The rules the delivery KPIs (DORA) apply to every CI/CD source.

    What counts as a production deployment and as an incident is explicit here,
    not guessed per source.
    """

    # Upstream environment names (shell patterns, case-insensitive) that are production.
    production_environments: list[str] = Field(default_factory=lambda: ["production", "prod"])
    # Other environment names exported as their own `environment` label; the rest are "other".
    environments: list[str] = Field(default_factory=lambda: ["staging"])
    # Lead time counts from the commit's author date or its committer date.
    commit_time: Literal["authored", "committed"] = "committed"
    # A squash-merged merge request (GitLab): lead time counts from the commits it squashed
    # (each by `commit_time`), or from the squash commit alone, made when it was merged.
    squash_lead_time: Literal["original_commits", "squash_commit"] = "original_commits"
    # An incident opened this long after a successful production deployment of the same
    # service (and before the next one) makes that deployment a failed change.
    incident_link_window: Duration = 86400.0
    # How far back the first poll of a source reads history.
    backfill_days: int = Field(default=90, ge=1, le=3650)
    # A regular expression searched in incident issue bodies (GitHub) and descriptions
    # (GitLab); its first group (or the group named `sha`) is the root-cause commit, a full
    # SHA or a prefix, which links the incident to the deployment that shipped it.
    incident_root_cause: str = r"(?i)\broot cause:\s*`?([0-9a-f]{7,40})\b"

    _v_prod = field_validator("production_environments", "environments")(_check_patterns)

    @field_validator("incident_root_cause")
    @classmethod
    def _check_root_cause(cls, value: str) -> str:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if pattern.groups < 1:
            raise ValueError("needs a group that captures the commit SHA")
        return value

    def root_cause_sha(self, text: object) -> str | None:
        """The root-cause commit an incident's text names (lowercased), if any."""
        if not isinstance(text, str):
            return None
        found = re.search(self.incident_root_cause, text)
        if found is None:
            return None
        sha = found.group("sha") if "sha" in found.re.groupindex else found.group(1)
        return sha.strip().lower() if sha and sha.strip() else None

    def environment_label(self, name: str) -> str:
        """The bounded ``environment`` label of an upstream environment name."""
        lowered = name.lower()
        if self.is_production(name):
            return "production"
        for env in self.environments:
            if fnmatch.fnmatchcase(lowered, env.lower()):
                return env.lower() if re.match(r"^[a-z0-9_-]{1,32}$", env.lower()) else "other"
        return "other"

    def is_production(self, name: str) -> bool:
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in self.production_environments)


class OrgSelector(StrictModel):
    """Every repo (project) of an org (group) whose name matches include and not exclude."""

    name: str = Field(min_length=1)
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)

    def selects(self, repo_name: str) -> bool:
        lowered = repo_name.lower()
        return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in self.include) and not any(
            fnmatch.fnmatchcase(lowered, p.lower()) for p in self.exclude
        )


class GitHubAppConfig(StrictModel):
    """A GitHub App installation: the source mints short-lived installation tokens."""

    app_id: int = Field(ge=1)
    installation_id: int = Field(ge=1)
    private_key: Secret


class GitHubSourceConfig(SourceConfig):
    """GitHub (github.com or Enterprise Server): Actions runs, deployments, commits, incidents."""

    interval: Duration = 300.0
    # GitHub Enterprise Server: https://HOST/api/v3
    base_url: str = "https://api.github.com"
    token: Secret | None = None
    app: GitHubAppConfig | None = None
    # Orgs whose repos are read (each repo must map to a service through `repos` patterns).
    orgs: list[OrgSelector] = Field(default_factory=list)
    # In repos with no deployments, runs of these workflows (name patterns) that succeed or
    # fail on the default branch are the production deployments.
    deploy_workflows: list[str] = Field(default_factory=list)
    # Issues carrying this label are incidents.
    incident_label: str = "incident"
    # Requests in flight at once, and requests per second at most, against this host.
    concurrency: int = Field(default=8, ge=1, le=64)
    requests_per_second: float = Field(default=20.0, gt=0)
    # Pause requests when fewer than this many remain in the rate-limit window.
    rate_limit_reserve: int = Field(default=100, ge=0)

    @model_validator(mode="after")
    def _one_auth(self) -> GitHubSourceConfig:
        if self.token is not None and self.app is not None:
            raise ValueError("give either token or app, not both")
        return self


class GitLabSourceConfig(SourceConfig):
    """GitLab (gitlab.com or self-managed): pipelines, deployments, commits, incidents."""

    interval: Duration = 300.0
    base_url: str = "https://gitlab.com"
    token: Secret | None = None
    groups: list[OrgSelector] = Field(default_factory=list)
    incident_label: str = "incident"
    concurrency: int = Field(default=8, ge=1, le=64)
    requests_per_second: float = Field(default=10.0, gt=0)
    rate_limit_reserve: int = Field(default=50, ge=0)


class JenkinsSourceConfig(SourceConfig):
    """Jenkins: builds of the services' jobs through the JSON API with ``tree=``."""

    interval: Duration = 120.0
    base_url: str = Field(pattern=r"^https?://")
    username: str | None = None
    api_token: Secret | None = None
    # Folders whose jobs (recursively) are read when a service's `ci` patterns match them.
    folders: list[str] = Field(default_factory=list)
    # Builds of jobs whose full name matches one of these patterns are deployments...
    deploy_jobs: list[str] = Field(default_factory=lambda: ["*deploy*"])
    # ...to this environment.
    deploy_environment: str = "production"
    concurrency: int = Field(default=4, ge=1, le=64)
    requests_per_second: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _auth_pair(self) -> JenkinsSourceConfig:
        if (self.username is None) != (self.api_token is None):
            raise ValueError("give both username and api_token, or neither")
        return self


class SourcesConfig(StrictModel):
    """One block per upstream."""

    probe: ProbeSourceConfig = Field(default_factory=ProbeSourceConfig)
    focus: FocusSourceConfig | None = None
    aws_cost: AwsCostSourceConfig | None = None
    azure_cost: AzureCostSourceConfig | None = None
    request_totals: RequestTotalsSourceConfig | None = None
    backstage: BackstageSourceConfig | None = None
    kong: KongSourceConfig | None = None
    nginx: NginxSourceConfig | None = None
    cloudwatch: CloudWatchSourceConfig | None = None
    prometheus: PrometheusSourceConfig | None = None

    github: GitHubSourceConfig | None = None
    gitlab: GitLabSourceConfig | None = None
    jenkins: JenkinsSourceConfig | None = None


class GatewayTrafficRule(StrictModel):
    """Adopted when the service served traffic through the gateway within ``window``."""

    rule: Literal["gateway_traffic"]
    window: Duration = 30 * 86400.0
    min_requests: int = Field(default=1, ge=1)


class PipelineTemplateRule(StrictModel):
    """Adopted when a pipeline run of the service used the platform's template within ``window``:
    a GitHub workflow path (or reusable workflow), a GitLab ``include``, or a pipeline
    (workflow, job) name that only the template defines; all matched as globs."""

    rule: Literal["pipeline_template"]
    window: Duration = 30 * 86400.0
    workflow_paths: list[str] = Field(default_factory=list)
    gitlab_includes: list[str] = Field(default_factory=list)
    pipeline_names: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> PipelineTemplateRule:
        if not (self.workflow_paths or self.gitlab_includes or self.pipeline_names):
            raise ValueError(
                "list at least one of workflow_paths, gitlab_includes or pipeline_names"
            )
        return self


class CatalogRule(StrictModel):
    """Adopted when the catalog entry carries the annotation (with ``value``, if given) or the tag."""

    rule: Literal["catalog"]
    annotation: str | None = None
    value: str | None = None
    tag: str | None = None

    @model_validator(mode="after")
    def _one(self) -> CatalogRule:
        if (self.annotation is None) == (self.tag is None):
            raise ValueError("give exactly one of annotation or tag")
        if self.value is not None and self.annotation is None:
            raise ValueError("value needs an annotation")
        return self


class ProbeRule(StrictModel):
    """Adopted when the service has at least one synthetic probe configured."""

    rule: Literal["probe"]


CapabilityRule = Annotated[
    GatewayTrafficRule | PipelineTemplateRule | CatalogRule | ProbeRule,
    Field(discriminator="rule"),
]


class CapabilityConfig(StrictModel):
    """A platform offering whose adoption is measured, and the rule that detects it."""

    name: Name
    description: str = ""
    detect: CapabilityRule
    # Cost-allocation services whose cost is this capability's running cost (cost per adopting service).
    cost_services: list[Name] = Field(default_factory=list)


class Config(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerConfig = Field(default_factory=ServerConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    services: list[ServiceConfig] = Field(default_factory=list)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    capabilities: list[CapabilityConfig] = Field(default_factory=list)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _unique_services(self) -> Config:
        names = [s.name for s in self.services]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"service names must be unique: {', '.join(dupes)}")
        caps = [c.name for c in self.capabilities]
        dupes = sorted({n for n in caps if caps.count(n) > 1})
        if dupes:
            raise ValueError(f"capability names must be unique: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _unique_routes(self) -> Config:
        owner: dict[str, str] = {}
        for svc in self.services:
            for route in svc.routes:
                if owner.setdefault(route, svc.name) != svc.name:
                    raise ValueError(
                        f"route {route!r} is claimed by both {owner[route]} and {svc.name}"
                    )
        return self

    @model_validator(mode="after")
    def _known_budgets(self) -> Config:
        services = {s.name for s in self.services}
        teams = {s.team for s in self.services}
        for b in self.cost.budgets:
            known = services if b.scope == "service" else teams
            if b.name not in known:
                raise ValueError(
                    f"cost.budgets: {b.scope} {b.name!r} is not in the service catalog"
                )
        return self

    def service(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)

    @cached_property
    def ci_claims(self) -> Callable[[str], str | None]:
        """``kind:name`` -> the service whose ``ci`` refs claim it (see :func:`repo_claims`)."""
        return repo_claims(self.services)

    def service_of_repo(self, kind: str, name: str) -> str | None:
        """The service a CI/CD repo, project or job belongs to (exact refs before patterns)."""
        return self.ci_claims(f"{kind}:{name}")


def repo_claims(config_services: Sequence[ServiceConfig]) -> Callable[[str], str | None]:
    """``kind:name`` -> the config service whose ``ci`` refs claim that repo (exact refs
    before patterns), with the exact refs indexed once."""
    exact: dict[tuple[str, str], str] = {}
    patterns: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    for svc in config_services:
        for ref in svc.ci:
            if ref.is_pattern:
                rx = re.compile(fnmatch.translate(ref.pattern.lower()))
                patterns.setdefault(ref.kind, []).append((svc.name, rx))
            else:
                exact.setdefault((ref.kind, ref.pattern.lower()), svc.name)
    # One alternation per kind rejects a name no pattern matches in a single pass.
    any_of = {
        kind: re.compile("|".join(f"(?:{rx.pattern})" for _, rx in pats))
        for kind, pats in patterns.items()
    }

    def owner(repo: str) -> str | None:
        kind, _, name = repo.partition(":")
        lowered = name.lower()
        found = exact.get((kind, lowered))
        if found is None and kind in any_of and any_of[kind].match(lowered):
            found = next(s for s, rx in patterns[kind] if rx.match(lowered))
        return found

    return owner


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem: ``field.path: reason``."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(f"{_loc(loc)}: {msg}")
    return problems


def load_config(path: str | Path) -> Config:
    """Read, merge with the environment, and validate; raise ConfigError naming the problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [f"cannot read file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(file, [f"invalid YAML: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(file, ["(top level): must be a mapping of sections"])
    try:
        return Config(**data)
    except ValidationError as exc:
        raise ConfigError(file, format_validation_error(exc)) from None


def masked(config: Config) -> dict[str, Any]:
    """The resolved config as plain data, with every secret shown as ``**********``."""
    return config.model_dump(mode="json")
