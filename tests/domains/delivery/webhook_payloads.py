"""Webhook bodies with the fields and values of the upstreams' documented examples.

Each builder returns the documented example's fields that matter to an event's meaning
(and a few beside them), with the example's own ids, SHAs and times, so a test can
be checked against the page; the bulky URL fields and nested users are left out.

* GitHub ``deployment_status``: the "created" example of
  https://docs.github.com/en/webhooks/webhook-events-and-payloads#deployment_status
  (octokit/webhooks ``payload-examples/api.github.com/deployment_status/payload.json``,
  repo ``Codertocat/Hello-World``, deployment 145988746, status 209916254).
* GitHub ``workflow_run``: the "completed" example of
  https://docs.github.com/en/webhooks/webhook-events-and-payloads#workflow_run
  (octokit/webhooks ``payload-examples/api.github.com/workflow_run/completed.payload.json``,
  repo ``octo-org/octo-repo``, run 289782451).
* GitLab ``Deployment Hook`` and ``Pipeline Hook``: the payload examples of
  https://docs.gitlab.com/user/project/integrations/webhook_events/#deployment-events and
  https://docs.gitlab.com/user/project/integrations/webhook_events/#pipeline-events
"""

from __future__ import annotations

import copy
import json
from typing import Any

GITHUB_USER = {"login": "Codertocat", "id": 21031067, "type": "User", "site_admin": False}


def _github_repository(full_name: str, repo_id: int) -> dict[str, Any]:
    owner, name = full_name.split("/")
    return {
        "id": repo_id,
        "name": name,
        "full_name": full_name,
        "private": False,
        "owner": {**GITHUB_USER, "login": owner},
        "html_url": f"https://github.com/{full_name}",
        "url": f"https://api.github.com/repos/{full_name}",
        "default_branch": "master",
        "archived": False,
    }


def github_deployment_status(
    state: str = "success", *, status_at: str = "2019-05-15T15:20:55Z", status_id: int = 209916254
) -> dict[str, Any]:
    """``deployment_status`` ``created``: deployment 145988746 of Codertocat/Hello-World to
    production, its status ``state`` (``success`` in the example)."""
    dep_url = "https://api.github.com/repos/Codertocat/Hello-World/deployments/145988746"
    return {
        "action": "created",
        "deployment_status": {
            "url": f"{dep_url}/statuses/{status_id}",
            "id": status_id,
            "node_id": "MDE2OkRlcGxveW1lbnRTdGF0dXMyMDk5MTYyNTQ=",
            "state": state,
            "creator": GITHUB_USER,
            "description": "",
            "environment": "production",
            "target_url": "",
            "created_at": status_at,
            "updated_at": status_at,
            "deployment_url": dep_url,
            "repository_url": "https://api.github.com/repos/Codertocat/Hello-World",
        },
        "deployment": {
            "url": dep_url,
            "id": 145988746,
            "node_id": "MDEwOkRlcGxveW1lbnQxNDU5ODg3NDY=",
            "sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
            "ref": "master",
            "task": "deploy",
            "payload": {},
            "original_environment": "production",
            "environment": "production",
            "description": None,
            "creator": GITHUB_USER,
            "created_at": "2019-05-15T15:20:53Z",
            "updated_at": "2019-05-15T15:20:55Z",
            "statuses_url": f"{dep_url}/statuses",
            "repository_url": "https://api.github.com/repos/Codertocat/Hello-World",
            "performed_via_github_app": None,
        },
        "repository": _github_repository("Codertocat/Hello-World", 186853002),
        "sender": GITHUB_USER,
    }


def github_workflow_run(
    action: str = "completed", *, name: str = "", conclusion: str | None = "success"
) -> dict[str, Any]:
    """``workflow_run`` ``completed``: run 289782451 (#163) of workflow ``test``
    (``.github/workflows/test.yml``) in octo-org/octo-repo on ``master``. The example's
    run has an empty ``name`` and no ``path`` (its workflow object carries the path)."""
    status = "completed" if action == "completed" else "queued"
    run_url = "https://api.github.com/repos/octo-org/octo-repo/actions/runs/289782451"
    return {
        "action": action,
        "organization": {"login": "octo-org", "id": 41548062},
        "repository": _github_repository("octo-org/octo-repo", 300029405),
        "sender": GITHUB_USER,
        "workflow": {
            "id": 2823525,
            "name": "test",
            "path": ".github/workflows/test.yml",
            "state": "active",
            "created_at": "2020-10-02T12:42:30.000Z",
            "updated_at": "2020-10-03T19:24:48.000Z",
        },
        "workflow_run": {
            "name": name,
            "id": 289782451,
            "node_id": "MDExOldvcmtmbG93UnVuMjg5NzgyNDUx",
            "check_suite_id": 1291536064,
            "conclusion": conclusion if status == "completed" else None,
            "created_at": "2020-10-05T16:33:24Z",
            "event": "repository_dispatch",
            "head_branch": "master",
            "head_sha": "3484a3fb816e0859fd6e1cea078d76385ff50625",
            "html_url": "https://github.com/octo-org/octo-repo/actions/runs/289782451",
            "pull_requests": [],
            "run_number": 163,
            "status": status,
            "updated_at": "2020-10-05T16:33:49Z",
            "url": run_url,
            "workflow_id": 2823525,
        },
    }


_GITLAB_DEPLOYMENT: dict[str, Any] = {
    "object_kind": "deployment",
    "status": "success",
    "status_changed_at": "2021-04-28 21:50:00 +0200",
    "deployment_id": 15,
    "deployable_id": 796,
    "deployable_url": "http://10.126.0.2:3000/root/test-deployment-webhooks/-/jobs/796",
    "environment": "staging",
    "environment_tier": "staging",
    "environment_slug": "staging",
    "environment_external_url": "https://staging.example.com",
    "project": {
        "id": 30,
        "name": "test-deployment-webhooks",
        "web_url": "http://10.126.0.2:3000/root/test-deployment-webhooks",
        "namespace": "Administrator",
        "path_with_namespace": "root/test-deployment-webhooks",
        "default_branch": "master",
    },
    "short_sha": "279484c0",
    "user": {"id": 1, "name": "Administrator", "username": "root"},
    "user_url": "http://10.126.0.2:3000/root",
    "commit_url": "http://10.126.0.2:3000/root/test-deployment-webhooks/-/commit/"
    "279484c09fbe69ededfced8c1bb6e6d24616b468",
    "commit_title": "Add new file",
}

_GITLAB_PIPELINE: dict[str, Any] = {
    "object_kind": "pipeline",
    "object_attributes": {
        "id": 31,
        "iid": 3,
        "name": "Pipeline for branch: master",
        "ref": "master",
        "tag": False,
        "sha": "bcbb5ec396a2c0f828686f14fac9b80b780504f2",
        "before_sha": "bcbb5ec396a2c0f828686f14fac9b80b780504f2",
        "source": "merge_request_event",
        "status": "success",
        "stages": ["build", "test", "deploy"],
        "created_at": "2016-08-12 15:23:28 UTC",
        "finished_at": "2016-08-12 15:26:29 UTC",
        "duration": 63,
        "url": "http://example.com/gitlab-org/gitlab-test/-/pipelines/31",
    },
    "user": {"id": 1, "name": "Administrator", "username": "root"},
    "project": {
        "id": 1,
        "name": "Gitlab Test",
        "web_url": "http://192.168.64.1:3005/gitlab-org/gitlab-test",
        "namespace": "Gitlab Org",
        "path_with_namespace": "gitlab-org/gitlab-test",
        "default_branch": "master",
    },
    "commit": {
        "id": "bcbb5ec396a2c0f828686f14fac9b80b780504f2",
        "message": "test\n",
        "timestamp": "2016-08-12T17:23:21+02:00",
    },
    "builds": [],
}


def gitlab_deployment(**changes: Any) -> dict[str, Any]:
    """The Deployment Hook example (deployment 15 of root/test-deployment-webhooks to
    staging, ``success`` at 2021-04-28 21:50:00 +0200), with ``changes``."""
    return {**copy.deepcopy(_GITLAB_DEPLOYMENT), **changes}


def gitlab_pipeline(**attributes: Any) -> dict[str, Any]:
    """The Pipeline Hook example (pipeline 31 of gitlab-org/gitlab-test, ``success``,
    created 15:23:28 UTC and finished 15:26:29 UTC on 2016-08-12, 63 s), with
    ``attributes`` changed in ``object_attributes``."""
    body = copy.deepcopy(_GITLAB_PIPELINE)
    body["object_attributes"].update(attributes)
    return body


def encoded(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()
