"""Settings of the delivery domain: a service's CI/CD objects, the DORA rules, the CI/CD sources."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from exporter.core.catalog import is_pattern, repo_claims
from exporter.core.settings import (
    ConfigBase,
    Duration,
    HttpUrl,
    Secret,
    Section,
    ServiceFields,
    SourceConfig,
    StrictModel,
)
from exporter.core.webhooks import MAX_BODY_LIMIT, WebhookSettings


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
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of github, gitlab or jenkins")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def pattern(self) -> str:
        value = getattr(self, self.kind)
        assert isinstance(value, str)
        return value

    @property
    def is_pattern(self) -> bool:
        return is_pattern(self.pattern)

    def matches(self, kind: str, name: str) -> bool:
        return kind == self.kind and fnmatch.fnmatchcase(name.lower(), self.pattern.lower())


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


#: How often a CI/CD source with webhooks on polls, unless its ``interval`` is given: the
#: poll then only reconciles what a webhook missed (a lost delivery, downtime).
WEBHOOK_POLL_INTERVAL = 3600.0


class WebhookConfig(StrictModel):
    """Push events from a CI/CD upstream, at ``POST /webhooks/<kind>``: off unless given."""

    enabled: bool = True
    # The poll's interval while webhooks are on, unless the source's `interval` is given.
    poll_interval: Duration = WEBHOOK_POLL_INTERVAL
    # Bodies larger than this are answered 413 and not read.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1, le=MAX_BODY_LIMIT)

    def intake(self) -> WebhookSettings:
        """The endpoint's settings for the webhook intake."""
        raise NotImplementedError

    def _settings(self, auth: dict[str, Any]) -> WebhookSettings:
        return WebhookSettings.model_validate(
            {"enabled": self.enabled, "auth": auth, "max_body_bytes": self.max_body_bytes}
        )

    @field_validator("poll_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class GitHubWebhookConfig(WebhookConfig):
    """GitHub ``deployment_status`` and ``workflow_run`` events, signed (HMAC-SHA256,
    ``X-Hub-Signature-256``) with the webhook's secret."""

    secret: Secret

    def intake(self) -> WebhookSettings:
        return self._settings({"hmac": {"secret": self.secret.get_secret_value()}})


class GitLabWebhookConfig(WebhookConfig):
    """GitLab ``Deployment Hook`` and ``Pipeline Hook`` events, carrying the webhook's
    secret token in ``X-Gitlab-Token``."""

    token: Secret

    def intake(self) -> WebhookSettings:
        return self._settings({"token": {"token": self.token.get_secret_value()}})


def _webhook_interval(data: Any) -> Any:
    """A source block with a ``webhook`` and no ``interval`` polls every
    ``webhook.poll_interval`` (raw input: the block is frozen once built)."""
    if not isinstance(data, dict) or "interval" in data:
        return data
    hook = data.get("webhook")
    if isinstance(hook, WebhookConfig):
        hook = {"enabled": hook.enabled, "poll_interval": hook.poll_interval}
    if isinstance(hook, dict) and hook.get("enabled", True) is not False:
        return {**data, "interval": hook.get("poll_interval", WEBHOOK_POLL_INTERVAL)}
    return data


class GitHubSourceConfig(SourceConfig):
    """GitHub (github.com or Enterprise Server): Actions runs, deployments, commits, incidents."""

    interval: Duration = 300.0
    # GitHub Enterprise Server: https://HOST/api/v3
    base_url: HttpUrl = "https://api.github.com"
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
    # Deployment and workflow-run events pushed at POST /webhooks/github.
    webhook: GitHubWebhookConfig | None = None

    _v_webhook_interval = model_validator(mode="before")(_webhook_interval)

    @model_validator(mode="after")
    def _one_auth(self) -> GitHubSourceConfig:
        if self.token is not None and self.app is not None:
            raise ValueError("give either token or app, not both")
        return self


class GitLabSourceConfig(SourceConfig):
    """GitLab (gitlab.com or self-managed): pipelines, deployments, commits, incidents."""

    interval: Duration = 300.0
    base_url: HttpUrl = "https://gitlab.com"
    token: Secret | None = None
    groups: list[OrgSelector] = Field(default_factory=list)
    incident_label: str = "incident"
    concurrency: int = Field(default=8, ge=1, le=64)
    requests_per_second: float = Field(default=10.0, gt=0)
    rate_limit_reserve: int = Field(default=50, ge=0)
    # Deployment and pipeline events pushed at POST /webhooks/gitlab.
    webhook: GitLabWebhookConfig | None = None

    _v_webhook_interval = model_validator(mode="before")(_webhook_interval)


class JenkinsSourceConfig(SourceConfig):
    """Jenkins: builds of the services' jobs through the JSON API with ``tree=``."""

    interval: Duration = 120.0
    base_url: HttpUrl
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


class DeliveryServiceFields(ServiceFields):
    """The repos, projects and jobs whose pipelines and deployments are this service's."""

    ci: list[RepoRef] = Field(default_factory=list)

    def repo_refs(self) -> list[tuple[str, str]]:
        return [*super().repo_refs(), *((ref.kind, ref.pattern) for ref in self.ci)]


class DeliverySection(Section):
    """The ``delivery:`` section, and which service a CI/CD object belongs to."""

    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)

    @cached_property
    def ci_claims(self) -> Callable[[str], str | None]:
        """``kind:name`` -> the service whose ``ci`` refs claim it (see ``repo_claims``)."""
        assert isinstance(self, ConfigBase)
        return repo_claims(self.services)

    def service_of_repo(self, kind: str, name: str) -> str | None:
        """The service a CI/CD repo, project or job belongs to (exact refs before patterns)."""
        return self.ci_claims(f"{kind}:{name}")
