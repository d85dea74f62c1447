"""GitHub webhook events: ``deployment_status`` and ``workflow_run``.

Fields read (the webhook's ``deployment``, ``deployment_status`` and ``workflow_run``
objects are the REST API's deployment, deployment status and workflow run):

* ``deployment_status``: ``repository.full_name``; ``deployment.id``, ``.sha``,
  ``.environment``, ``.created_at``; ``deployment_status.state`` and ``.created_at``.
  The deployment becomes the record the poll of ``/deployments/{id}/statuses`` makes of
  it with that status newest: ``success``, ``failure`` and ``error`` finish it, an
  ``inactive`` status of an unfinished deployment records nothing, the others keep it
  pending. Key ``github/<owner>/<repo>/<deployment id>``.
* ``workflow_run`` with ``workflow_run.status == "completed"``: the run (attempt) the
  poll of ``/actions/runs`` makes of it (key ``github/<owner>/<repo>/<run id>[/attempt/N]``);
  in a repo the poll found without Deployments, a run of ``deploy_workflows`` on the
  default branch is also its production deployment (``.../run/<run id>``), as polled.
* ``ping`` (sent when the webhook is created) and any other event: accepted, ignored.

https://docs.github.com/en/webhooks/webhook-events-and-payloads#deployment_status
https://docs.github.com/en/webhooks/webhook-events-and-payloads#workflow_run
"""

from __future__ import annotations

from typing import Any

from exporter.domains.delivery.sources.common import with_repo
from exporter.domains.delivery.sources.github import (
    GitHubSource,
    deployment_record,
    pipeline_run,
    workflow_deployment,
)
from exporter.domains.delivery.webhooks.events import (
    Event,
    Hook,
    Record,
    Scope,
    ignored,
    json_object,
    parsed,
)

KIND = GitHubSource.kind
EVENTS = ("deployment_status", "workflow_run")


def github_event(event: str, body: bytes, scope: Scope) -> Event:
    """The records of one delivery of ``event`` (the ``X-GitHub-Event`` header)."""
    if event not in EVENTS:
        return ignored(f"event {event or '(none)'} is not read")
    payload = json_object(body)
    if event == "deployment_status":
        return parsed(event, lambda: _deployment_status(payload, scope))
    return parsed(event, lambda: _workflow_run(payload, scope))


def _repo(payload: dict[str, Any]) -> str:
    repo = payload["repository"]["full_name"]
    if not isinstance(repo, str) or repo.count("/") != 1:
        raise ValueError(f"repository.full_name {repo!r} is not owner/repo")
    return repo


def _deployment_status(payload: dict[str, Any], scope: Scope) -> Event:
    repo = _repo(payload)
    dep, status = dict(payload["deployment"]), payload["deployment_status"]
    if not isinstance(dep["id"], int) or not isinstance(status["state"], str):
        raise TypeError("deployment.id is not an integer or deployment_status.state not a string")
    unit = scope.unit(KIND, repo)
    if unit is None:
        return ignored(f"repo {repo} maps to no service the github source reads")
    repo, service = unit
    record = deployment_record(scope.rules, repo, service, dep, [status])
    if record is None:
        return ignored("deployment superseded (inactive) before it finished")
    return Event(tuple(with_repo([record], KIND, repo)))


def _workflow_run(payload: dict[str, Any], scope: Scope) -> Event:
    repo = _repo(payload)
    run = dict(payload["workflow_run"])
    if not isinstance(run["id"], int):
        raise TypeError("workflow_run.id is not an integer")
    if run["status"] != "completed":
        return ignored(f"workflow run {run['status']}: recorded once completed")
    unit = scope.unit(KIND, repo)
    if unit is None:
        return ignored(f"repo {repo} maps to no service the github source reads")
    repo, service = unit
    if not run.get("path"):
        # Older payloads carry the workflow file's path in ``workflow`` only.
        run["path"] = (payload.get("workflow") or {}).get("path")
    records: list[Record] = [pipeline_run(repo, service, run)]
    patterns = scope.deploy_workflows(KIND)
    if patterns and scope.uses_deployments(KIND, repo) is False:
        dep = workflow_deployment(repo, service, run, patterns)
        if dep is not None:
            records.append(dep)
    return Event(tuple(with_repo(records, KIND, repo)))


HOOK = Hook(KIND, "x-github-event", github_event, ("x-github-delivery",))
