"""GitLab webhook events: ``Deployment Hook`` and ``Pipeline Hook``.

Fields read:

* Deployment: ``project.path_with_namespace``, ``deployment_id`` (the id the
  Deployments API lists), ``environment``, ``status``, ``status_changed_at``, and the
  commit's full SHA from ``commit_url`` (``short_sha`` if it holds none). ``success``
  and ``failed`` finish it at ``status_changed_at``; ``created`` and ``running`` keep it
  pending; ``canceled``, ``skipped`` and ``blocked`` record nothing, as in the poll.
  Key ``gitlab/<project path>/<deployment id>``.
* Pipeline with a finished ``object_attributes.status``: the run the poll makes of
  ``/pipelines/:id`` (key ``gitlab/<project path>/<pipeline id>``), started after its
  ``queued_duration``, else ``duration`` before it finished.

Times come as ``2021-04-28 21:50:00 +0200`` or ``2016-08-12 15:23:28 UTC``.

https://docs.gitlab.com/user/project/integrations/webhook_events/#deployment-events
https://docs.gitlab.com/user/project/integrations/webhook_events/#pipeline-events
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from exporter.core.clock import utc_datetime
from exporter.core.webhooks import Malformed
from exporter.domains.delivery.sources.common import with_repo
from exporter.domains.delivery.sources.gitlab import (
    DEPLOY_SKIPPED,
    PIPELINE_FINISHED,
    GitLabSource,
    deployment_record,
    pipeline_run,
)
from exporter.domains.delivery.webhooks.events import (
    Event,
    Hook,
    Scope,
    ignored,
    json_object,
    parsed,
)

KIND = GitLabSource.kind
EVENTS = {"Deployment Hook": "deployment", "Pipeline Hook": "pipeline"}
_COMMIT_URL_SHA = re.compile(r"/commit/([0-9a-f]{40})(?:[/?#]|$)")


def gitlab_time(value: Any) -> float:
    """Unix seconds of a webhook time (``... +0200``, ``... UTC`` or ISO 8601)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a time, got {value!r}")
    text = value.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    parsed_at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed_at.tzinfo is None:
        raise ValueError(f"time {value!r} has no offset")
    return parsed_at.timestamp()


def _iso(value: Any) -> str | None:
    """A webhook time in ISO 8601 (UTC), as the API writes it; None for none."""
    return None if value in (None, "") else utc_datetime(gitlab_time(value)).isoformat()


def gitlab_event(event: str, body: bytes, scope: Scope) -> Event:
    """The records of one delivery of ``event`` (the ``X-Gitlab-Event`` header)."""
    kind = EVENTS.get(event)
    if kind is None:
        return ignored(f"event {event or '(none)'} is not read")
    payload = json_object(body)
    if payload.get("object_kind") != kind:
        raise Malformed(f"object_kind {payload.get('object_kind')!r} is not a {event}")
    if kind == "deployment":
        return parsed(event, lambda: _deployment(payload, scope))
    return parsed(event, lambda: _pipeline(payload, scope))


def _project(payload: dict[str, Any]) -> str:
    path = payload["project"]["path_with_namespace"]
    if not isinstance(path, str) or "/" not in path:
        raise ValueError(f"project.path_with_namespace {path!r} is not group/project")
    return path


def _deployment(payload: dict[str, Any], scope: Scope) -> Event:
    path = _project(payload)
    status = payload["status"]
    deployment_id = payload["deployment_id"]
    if not isinstance(status, str) or not isinstance(deployment_id, int):
        raise TypeError("status is not a string or deployment_id not an integer")
    at = gitlab_time(payload["status_changed_at"])
    if status in DEPLOY_SKIPPED:
        return ignored(f"deployment {status}: not a deployment that ran")
    unit = scope.unit(KIND, path)
    if unit is None:
        return ignored(f"project {path} maps to no service the gitlab source reads")
    path, service = unit
    found = _COMMIT_URL_SHA.search(str(payload.get("commit_url") or ""))
    sha = found.group(1) if found else str(payload["short_sha"])
    record = deployment_record(
        scope.rules,
        path,
        service,
        deployment_id=deployment_id,
        environment=str(payload["environment"]),
        sha=sha,
        status=status,
        created_at=at,
        finished_at=at,
    )
    return Event(tuple(with_repo([record], KIND, path)))


def _pipeline(payload: dict[str, Any], scope: Scope) -> Event:
    path = _project(payload)
    attrs = payload["object_attributes"]
    if not isinstance(attrs["id"], int):
        raise TypeError("object_attributes.id is not an integer")
    result = PIPELINE_FINISHED.get(str(attrs["status"]))
    created = _iso(attrs["created_at"])
    finished = _iso(attrs.get("finished_at"))
    if result is None:
        return ignored(f"pipeline {attrs['status']}: recorded once finished")
    unit = scope.unit(KIND, path)
    if unit is None:
        return ignored(f"project {path} maps to no service the gitlab source reads")
    path, service = unit
    detail = {
        "name": attrs.get("name"),
        "created_at": created,
        "finished_at": finished,
        "updated_at": finished or created,
        "queued_duration": attrs.get("queued_duration"),
        "started_at": _started(finished, attrs.get("duration"), attrs.get("queued_duration")),
    }
    run = pipeline_run(path, service, attrs["id"], detail, result)
    return Event(tuple(with_repo([run], KIND, path)))


def _started(finished: str | None, duration: Any, queued: Any) -> str | None:
    """When the pipeline started, if the hook says: ``duration`` before it finished
    (when ``queued_duration`` is absent; with it, the run starts after the queue)."""
    if queued is not None or finished is None or not isinstance(duration, int | float):
        return None
    return utc_datetime(datetime.fromisoformat(finished).timestamp() - duration).isoformat()


# GitLab 17.4+ sends Idempotency-Key, the same on every retry of one event; before it,
# X-Gitlab-Event-UUID names the event.
HOOK = Hook(KIND, "x-gitlab-event", gitlab_event, ("idempotency-key", "x-gitlab-event-uuid"))
