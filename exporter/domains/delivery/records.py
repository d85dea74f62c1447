"""The records CI/CD sources produce and the delivery store keeps: runs, deployments,
commits, merge requests and incidents.

A source turns upstream JSON into records (each domain's ``records`` module holds
its own) and nothing else; every KPI is computed from them. Each record has a
``key``: its upstream identity, so that a re-poll or a restart upserts instead of
double-counting. Times are Unix seconds (UTC), durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # The upstream identity the record was read from ("github:acme/checkout",
    # "gitlab:group/project", "jenkins:folder/job"); resolved to a service again when the
    # catalog changes (see exporter.domains.delivery.attribution). Empty: not known.
    repo: str = ""

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
    repo: str = ""  # as for PipelineRun

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
    repo: str = ""  # as for PipelineRun

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
    repo: str = ""  # as for PipelineRun

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
    repo: str = ""  # as for PipelineRun: the repo of an issue incident

    @property
    def key(self) -> str:
        return f"{self.source}/{self.incident_id}"
