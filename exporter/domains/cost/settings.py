"""Settings of the cost domain: a service's cost allocation, the billing sources, budgets."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from exporter.core.settings import (
    ConfigBase,
    Duration,
    FieldError,
    HttpEndpoint,
    HttpUrl,
    Name,
    Secret,
    Section,
    ServiceFields,
    SourceConfig,
    StrictModel,
)
from exporter.domains.cost.kpis import UNALLOCATED


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


Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


PositiveInt = Annotated[int, Field(ge=1)]


class FocusS3Config(StrictModel):
    """FOCUS exports under an S3 prefix (AWS Data Exports), read through boto3 (the `aws` extra)."""

    # s3://bucket/prefix/ (the prefix may be empty).
    url: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    # Read through sts:AssumeRole with this role, as with Cost Explorer; else the default chain.
    role_arn: str | None = Field(default=None, pattern=r"^arn:aws[\w-]*:iam::\d{12}:role/.+$")
    external_id: Secret | None = None
    region: str = "us-east-1"
    # Only for tests or private endpoints; boto3's default otherwise.
    endpoint_url: HttpUrl | None = None


class FocusSourceConfig(SourceConfig):
    """FOCUS 1.x billing export files (CSV, gzip CSV or Parquet), local, over HTTP(S) or in S3."""

    interval: Duration = 3600.0
    timeout: Duration = 300.0
    # Files, directories (every *.csv, *.csv.gz and *.parquet inside, recursively) or globs.
    paths: list[str] = Field(default_factory=list)
    # HTTP(S) URLs of export files; fetched with conditional requests.
    urls: list[HttpEndpoint] = Field(default_factory=list)
    # S3 prefixes of exports; an object is fetched again only when its ETag changes.
    s3: list[FocusS3Config] = Field(default_factory=list)
    # The provider label; by default taken from each row's ProviderName.
    provider: Name | None = None
    # The exports' FOCUS version (1.0, 1.1 or 1.2), or `auto`: told from each file's columns.
    focus_version: str = Field(default="auto", pattern=r"^(auto|\d+\.\d+)$")

    @model_validator(mode="after")
    def _something(self) -> FocusSourceConfig:
        if self.enabled and not self.paths and not self.urls and not self.s3:
            raise ValueError("give at least one entry in paths, urls or s3")
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
    endpoint_url: HttpUrl | None = None
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
    # How the token is got: a client secret (the default), or through azure-identity (the
    # `azure` extra) a workload identity (AKS mounts a federated token file and sets
    # AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE) or a managed identity
    # (client_id picks a user-assigned one).
    auth: Literal["client_secret", "workload_identity", "managed_identity"] = "client_secret"
    tenant_id: str | None = Field(default=None, min_length=1)
    client_id: str | None = Field(default=None, min_length=1)
    client_secret: Secret | None = None
    # Workload identity: the federated token file (else AZURE_FEDERATED_TOKEN_FILE).
    federated_token_file: str | None = Field(default=None, min_length=1)
    # e.g. /subscriptions/<id> or /providers/Microsoft.Billing/billingAccounts/<id>
    scopes: list[str] = Field(min_length=1)
    tag_key: str = "service"
    cost_type: Literal["ActualCost", "AmortizedCost"] = "ActualCost"
    management_url: HttpUrl = "https://management.azure.com"
    login_url: HttpUrl = "https://login.microsoftonline.com"
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

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.auth == "client_secret":
            missing = [
                name
                for name in ("tenant_id", "client_id", "client_secret")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"auth client_secret needs {', '.join(missing)}")
        elif self.client_secret is not None:
            raise ValueError(f"client_secret is not used with auth {self.auth}; remove it")
        return self


class RequestTotalsSourceConfig(SourceConfig):
    """Daily request totals per service from a Prometheus query (for cost per transaction)."""

    interval: Duration = 3600.0
    # Prometheus base URL, e.g. http://prometheus:9090
    url: HttpUrl
    # PromQL evaluated at the end of each closed UTC day; `$window` becomes `1d`.
    query: str = "sum by (service) (increase(http_requests_total[$window]))"
    service_label: str = "service"
    lookback_days: int = Field(default=35, ge=1, le=366)
    # Wait this long after midnight UTC before reading a day (late scrapes).
    settle: Duration = 900.0


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


class CostServiceFields(ServiceFields):
    """How cost lines are allocated to a service."""

    cost: ServiceCostConfig | None = None

    def catalog_fields(self) -> dict[str, object]:
        tags = self.cost.tags if self.cost is not None else {}
        cost_tags = tuple(f"{k}={v}" for k, v in sorted(tags.items()))
        return {**super().catalog_fields(), "cost_tags": cost_tags}


class CostSection(Section):
    """The ``cost:`` section, and the check that every budget names a known team or service."""

    cost: CostConfig = Field(default_factory=CostConfig)

    @model_validator(mode="after")
    def _known_budgets(self) -> Self:
        assert isinstance(self, ConfigBase)
        services = {s.name for s in self.services}
        teams = {s.team for s in self.services}
        for i, b in enumerate(CostSection.of(self).cost.budgets):
            known = services if b.scope == "service" else teams
            if b.name not in known:
                raise FieldError(
                    f"cost.budgets[{i}].name", f"{b.scope} {b.name!r} is not in the service catalog"
                )
        return self

    def implicit_services(self) -> tuple[str, ...]:
        # Cost that no service claims is allocated to this one.
        return (*super().implicit_services(), UNALLOCATED)
