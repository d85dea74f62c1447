"""A simulated GitLab REST API (v4) serving the delivery scenario's projects.

Follows GitLab's documented fields and headers: ``PRIVATE-TOKEN`` auth (``401
{"message": "401 Unauthorized"}``), offset pagination with ``X-Page``,
``X-Next-Page`` (empty on the last page), ``X-Total`` and ``Link``; keyset
pagination (``pagination=keyset&order_by=id``, ``Link rel="next"`` only) on the
group projects list; ``RateLimit-Limit/-Remaining/-Reset`` headers; weak ETags
with ``If-None-Match`` -> ``304``. Filters: ``updated_after`` + ``order_by=
updated_at`` on pipelines and deployments, ``since`` on commits, ``issue_type``,
``labels`` and ``updated_after`` on issues, ``state``, ``target_branch`` and
``updated_after`` (on or after) on merge requests. The CI lint API answers the
default branch's configuration with its ``includes`` (:data:`INCLUDES`).

Paths (under ``/gitlab`` in the sandbox): ``/api/v4/projects/{id or path}``,
``.../pipelines``, ``.../pipelines/{id}``, ``.../deployments``,
``.../repository/commits``, ``.../issues``, ``.../merge_requests``,
``.../merge_requests/{iid}/commits``, ``.../repository/compare``, ``.../ci/lint``,
``/api/v4/groups/{path}/projects``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from exporter.core.clock import Clock, system_clock
from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.fakes import FaultPlan, etag_of, int_arg, iso_ms, page_slice, parse_iso
from exporter.core.sandbox.scenario import Scenario
from exporter.domains.delivery.sandbox.data import (
    DeliveryScenario,
    FakeCommit,
    FakeDeployment,
    FakeMergeRequest,
    FakeRepo,
    FakeRun,
    ancestors,
    sha_of,
)

TOKEN = "glpat-sandbox0000000000000"
RATE_LIMIT = 2000
WEB = "https://gitlab.example.com"

_PIPELINE_STATUS = {
    "success": "success",
    "failed": "failed",
    "failure": "failed",
    "canceled": "canceled",
    "cancelled": "canceled",
    None: "running",
}
_DEPLOY_STATUS = {"success": "success", "failure": "failed", "in_progress": "running"}


def project(repo: FakeRepo) -> dict[str, Any]:
    namespace, _, name = repo.full_name.rpartition("/")
    return {
        "id": repo.id,
        "description": f"The {repo.service} service",
        "name": name,
        "name_with_namespace": f"{namespace} / {name}",
        "path": name,
        "path_with_namespace": repo.full_name,
        "created_at": iso_ms(repo.created_at or 1_500_000_000.0),
        "default_branch": repo.default_branch,
        "web_url": f"{WEB}/{repo.full_name}",
        "archived": False,
        "namespace": {
            "id": 50,
            "name": namespace,
            "path": namespace,
            "kind": "group",
            "full_path": namespace,
        },
    }


def pipeline(repo: FakeRepo, run: FakeRun, detail: bool) -> dict[str, Any]:
    status = _PIPELINE_STATUS.get(run.conclusion, "failed")
    out: dict[str, Any] = {
        "id": run.id,
        "iid": run.number,
        "project_id": repo.id,
        "sha": run.head_sha,
        "ref": run.branch,
        "status": status,
        "source": "push",
        "name": run.name,
        "created_at": iso_ms(run.created_at),
        "updated_at": iso_ms(run.updated_at),
        "web_url": f"{WEB}/{repo.full_name}/-/pipelines/{run.id}",
    }
    if detail:
        finished = run.conclusion is not None
        out.update(
            {
                "before_sha": "0" * 40,
                "tag": False,
                "yaml_errors": None,
                "user": {"id": 1, "username": "dev", "name": "Dev"},
                "started_at": iso_ms(run.started_at),
                "finished_at": iso_ms(run.updated_at) if finished else None,
                "committed_at": None,
                "duration": int(run.updated_at - run.started_at) if finished else None,
                "queued_duration": run.started_at - run.created_at,
                "coverage": None,
                "detailed_status": {"text": status, "label": status, "group": status},
            }
        )
    return out


def deployment(repo: FakeRepo, dep: FakeDeployment) -> dict[str, Any]:
    state = dep.statuses[-1][1] if dep.statuses else "created"
    status = _DEPLOY_STATUS.get(state, state)
    finished = dep.statuses[-1][2] if status in ("success", "failed") else None
    commit = next((c for c in repo.commits if c.sha == dep.sha), None)
    return {
        "id": dep.id,
        "iid": dep.id % 1000,
        "ref": dep.ref,
        "sha": dep.sha,
        "created_at": iso_ms(dep.created_at),
        "updated_at": iso_ms(dep.updated_at),
        "finished_at": iso_ms(finished) if finished else None,
        "status": status,
        "user": {"id": 1, "username": "deployer", "name": "Deployer", "state": "active"},
        "environment": {
            "id": 60 + (dep.environment == "production"),
            "name": dep.environment,
            "external_url": f"https://{dep.environment}.example.com",
        },
        "deployable": {
            "id": dep.id * 10,
            "status": status,
            "stage": "deploy",
            "name": f"deploy:{dep.environment}",
            "ref": dep.ref,
            "created_at": iso_ms(dep.created_at),
            "started_at": iso_ms(dep.created_at + 30),
            "finished_at": iso_ms(finished) if finished else None,
            "commit": {
                "id": dep.sha,
                "short_id": dep.sha[:8],
                "title": commit.message if commit else "change",
                "created_at": iso_ms(commit.committed_at if commit else dep.created_at),
            },
        },
    }


# One ``include`` of a CI configuration: (type, location, extra), as the CI lint API names them.
Include = tuple[str, str, dict[str, str]]

# discovery/search builds with the platform's shared GitLab template (a file of the
# acme/platform-templates project), plus a local file and a GitLab template.
INCLUDES: dict[str, list[Include]] = {
    "discovery/search": [
        ("file", "gitlab/build.gitlab-ci.yml", {"project": "acme/platform-templates", "ref": "v2"}),
        ("local", ".gitlab/ci/test.gitlab-ci.yml", {}),
        ("template", "Jobs/SAST.gitlab-ci.yml", {}),
    ],
}


def lint_include(repo: FakeRepo, head: str | None, include: Include) -> dict[str, Any]:
    """One item of ``includes`` in ``GET /projects/:id/ci/lint``: ``blob`` and ``raw`` URLs
    pinned to the resolved commit, ``extra`` (project and ref of a ``file`` include), and the
    project and commit the include was resolved in."""
    kind, location, extra = include
    blob: str | None = None
    raw: str | None = None
    if kind == "file":
        project = extra["project"]
        sha = sha_of(project, extra.get("ref", "HEAD"))
        blob = f"{WEB}/{project}/-/blob/{sha}/{location}"
        raw = f"{WEB}/{project}/-/raw/{sha}/{location}"
    elif kind == "local" and head is not None:
        blob = f"{WEB}/{repo.full_name}/-/blob/{head}/{location}"
        raw = f"{WEB}/{repo.full_name}/-/raw/{head}/{location}"
    elif kind == "template":
        raw = (
            f"https://gitlab.com/gitlab-org/gitlab/-/raw/master/lib/gitlab/ci/templates/{location}"
        )
    elif kind == "remote":
        raw = location
    return {
        "type": kind,
        "location": location,
        "blob": blob,
        "raw": raw,
        "extra": dict(extra),
        "context_project": repo.full_name,
        "context_sha": head,
    }


def commit(repo: FakeRepo, c: FakeCommit) -> dict[str, Any]:
    return {
        "id": c.sha,
        "short_id": c.sha[:8],
        "title": c.message,
        "message": c.message,
        "author_name": "Dev",
        "author_email": "dev@example.com",
        "authored_date": iso_ms(c.authored_at),
        "committer_name": "Dev",
        "committer_email": "dev@example.com",
        "committed_date": iso_ms(c.committed_at),
        "created_at": iso_ms(c.committed_at),
        "parent_ids": list(c.parents),
        "trailers": {},
        "extended_trailers": {},
        "web_url": f"{WEB}/{repo.full_name}/-/commit/{c.sha}",
    }


def merge_request(repo: FakeRepo, mr: FakeMergeRequest) -> dict[str, Any]:
    user = {"id": 1, "username": "dev", "name": "Dev", "state": "active", "locked": False}
    return {
        "id": repo.id * 100 + mr.iid,
        "iid": mr.iid,
        "project_id": repo.id,
        "title": f"{mr.source_branch}: change",
        "description": "",
        "state": "merged",
        "created_at": iso_ms(mr.created_at),
        "updated_at": iso_ms(mr.updated_at),
        "merged_at": iso_ms(mr.merged_at),
        "closed_at": None,
        "merge_user": user,
        "author": user,
        "target_branch": repo.default_branch,
        "source_branch": mr.source_branch,
        "source_project_id": repo.id,
        "target_project_id": repo.id,
        "draft": False,
        "detailed_merge_status": "not_open",
        "sha": mr.commits[-1].sha,
        "merge_commit_sha": mr.merge_commit_sha,
        "squash_commit_sha": mr.squash_commit_sha,
        "squash": mr.squash_commit_sha is not None,
        "squash_on_merge": mr.squash_commit_sha is not None,
        "references": {
            "short": f"!{mr.iid}",
            "relative": f"!{mr.iid}",
            "full": f"{repo.full_name}!{mr.iid}",
        },
        "web_url": f"{WEB}/{repo.full_name}/-/merge_requests/{mr.iid}",
    }


class GitLabFake:
    """The simulated API over a :class:`DeliveryScenario`; ``plan`` injects faults."""

    def __init__(
        self,
        scenario: DeliveryScenario,
        token: str = TOKEN,
        clock: Clock = system_clock,
        prefix: str = "",
        includes: dict[str, list[Include]] | None = None,
    ) -> None:
        self.scenario = scenario
        self.token = token
        self.clock = clock
        self.prefix = prefix
        # The includes of each project's CI configuration (tests may change them).
        self.includes = {
            k: list(v) for k, v in (INCLUDES if includes is None else includes).items()
        }
        self.plan = FaultPlan()
        self.remaining = RATE_LIMIT
        self.app = self.plan.wrap(self._routes())

    def _rate_headers(self, cost: int) -> dict[str, str]:
        self.remaining = max(0, self.remaining - cost)
        reset = int(self.clock()) // 60 * 60 + 60
        return {
            "RateLimit-Limit": str(RATE_LIMIT),
            "RateLimit-Observed": str(RATE_LIMIT - self.remaining),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(reset),
        }

    def _project(self, ident: str) -> FakeRepo | None:
        ident = unquote(ident)
        for repo in self.scenario.gitlab.values():
            if ident in (str(repo.id), repo.full_name):
                return repo
        return None

    def _child(
        self,
        request: Request,
        collection: Callable[[FakeRepo], Sequence[Any]],
        param: str,
        ident: Callable[[Any], object],
    ) -> tuple[FakeRepo, Any] | None:
        """The project's item whose ``ident`` is the path parameter ``param``, if any."""
        repo = self._project(request.params["id"])
        if repo is None:
            return None
        wanted = request.params[param]
        item = next((x for x in collection(repo) if str(ident(x)) == wanted), None)
        return None if item is None else (repo, item)

    def _list(
        self, request: Request, items: list[Any], render: Callable[[Any], Any], version: object
    ) -> Response:
        per_page = int_arg(request, "per_page", 20, 100)
        page = int_arg(request, "page", 1)
        query = sorted((k, v[-1]) for k, v in request.query.items())
        etag = etag_of(request.path, query, version)
        if request.headers.get("if-none-match") == etag:
            return Response(304, b"", {"ETag": etag, **self._rate_headers(0)})
        chunk, more = page_slice(items, page, per_page)
        total_pages = max(1, (len(items) + per_page - 1) // per_page)
        headers = {
            "ETag": etag,
            "X-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-Next-Page": str(page + 1) if more else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
            "X-Total": str(len(items)),
            "X-Total-Pages": str(total_pages),
            **self._rate_headers(1),
        }
        host = request.headers.get("host", "gitlab.example.com")
        origin = f"{'http' if ':' in host else 'https'}://{host}{self.prefix}"
        base_q = [(k, v) for k, v in query if k != "page"]
        if more:
            q = "&".join(f"{k}={quote(v, safe='')}" for k, v in [*base_q, ("page", str(page + 1))])
            headers["Link"] = f'<{origin}{quote(request.path)}?{q}>; rel="next"'
        return Response.json([render(i) for i in chunk], 200, headers)

    def _routes(self) -> App:
        app = App()
        for method, path, handler in (
            ("GET", "/api/v4/groups/{group:path}/projects", self._group_projects),
            ("GET", "/api/v4/projects/{id}/ci/lint", self._ci_lint),
            ("GET", "/api/v4/projects/{id}/pipelines/{pipeline_id}", self._one_pipeline),
            ("GET", "/api/v4/projects/{id}/pipelines", self._pipelines),
            ("GET", "/api/v4/projects/{id}/deployments", self._deployments),
            ("GET", "/api/v4/projects/{id}/repository/commits", self._commits),
            ("GET", "/api/v4/projects/{id}/repository/compare", self._compare),
            (
                "GET",
                "/api/v4/projects/{id}/merge_requests/{iid}/commits",
                self._merge_request_commits,
            ),
            ("GET", "/api/v4/projects/{id}/merge_requests", self._merge_requests),
            ("GET", "/api/v4/projects/{id}/issues", self._issues),
            ("GET", "/api/v4/projects/{path:path}", self._get_project),
        ):
            app.route(method, path)(self._guarded(handler))
        return app

    def _guarded(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """The handler behind the token check, holding the scenario's lock."""

        def inner(request: Request) -> Response:
            if request.headers.get("private-token") != self.token:
                return Response.json({"message": "401 Unauthorized"}, 401)
            with self.scenario.lock:
                return handler(request)

        return inner

    def _group_projects(self, request: Request) -> Response:
        group = unquote(request.params["group"])
        repos = sorted(
            (r for r in self.scenario.gitlab.values() if r.full_name.startswith(group + "/")),
            key=lambda r: r.id,
        )
        if request.arg("pagination") != "keyset":
            return self._list(request, repos, project, tuple(r.id for r in repos))
        # Keyset: id_after from the previous page's last id; only Link rel="next".
        per_page = int_arg(request, "per_page", 20, 100)
        after = int(request.arg("id_after") or 0)
        rest = [r for r in repos if r.id > after]
        chunk = rest[:per_page]
        headers = self._rate_headers(1)
        if len(rest) > per_page:
            host = request.headers.get("host", "gitlab.example.com")
            origin = f"{'http' if ':' in host else 'https'}://{host}{self.prefix}"
            q = f"pagination=keyset&order_by=id&sort=asc&per_page={per_page}&id_after={chunk[-1].id}"
            headers["Link"] = f'<{origin}{quote(request.path)}?{q}>; rel="next"'
        return Response.json([project(r) for r in chunk], 200, headers)

    def _ci_lint(self, request: Request) -> Response:
        repo = self._project(request.params["id"])
        if repo is None:
            return _not_found()
        if not repo.commits:
            return Response.json({"message": "404 Repository Not Found"}, 404)
        head = request.arg("content_ref") or repo.commits[-1].sha
        if all(c.sha != head for c in repo.commits):
            return Response.json({"message": "404 Commit Not Found"}, 404)
        includes = [lint_include(repo, head, i) for i in self.includes.get(repo.full_name, [])]
        body = {
            "valid": True,
            "errors": [],
            "warnings": [],
            "merged_yaml": "---\nbuild:\n  script: make\n",
            "includes": includes,
        }
        return Response.json(body, 200, self._rate_headers(1))

    def _one_pipeline(self, request: Request) -> Response:
        found = self._child(request, lambda r: r.runs, "pipeline_id", lambda run: run.id)
        if found is None:
            return Response.json({"message": "404 Not found"}, 404)
        repo, run = found
        return Response.json(pipeline(repo, run, True), 200, self._rate_headers(1))

    def _pipelines(self, request: Request) -> Response:
        repo = self._project(request.params["id"])
        if repo is None:
            return _not_found()
        items = _updated_filter(request, list(repo.runs))
        return self._list(request, items, lambda r: pipeline(repo, r, False), repo.version)

    def _deployments(self, request: Request) -> Response:
        repo = self._project(request.params["id"])
        if repo is None:
            return _not_found()
        items = _updated_filter(request, list(repo.deployments))
        env = request.arg("environment")
        if env:
            items = [d for d in items if d.environment == env]
        return self._list(request, items, lambda d: deployment(repo, d), repo.version)

    def _commits(self, request: Request) -> Response:
        repo = self._project(request.params["id"])
        if repo is None:
            return _not_found()
        items = sorted(
            (c for c in repo.commits if c.on_default_branch), key=lambda c: -c.committed_at
        )
        since = request.arg("since")
        if since:
            items = [c for c in items if c.committed_at >= parse_iso(since)]
        return self._list(request, items, lambda c: commit(repo, c), repo.version)

    def _compare(self, request: Request) -> Response:
        repo = self._project(request.params["id"])
        base, head = request.arg("from"), request.arg("to")
        by_sha = {c.sha: c for c in repo.commits} if repo else {}
        if repo is None or base not in by_sha or head not in by_sha:
            return Response.json({"message": "404 Ref Not Found"}, 404)
        # straight=false (the default): from...to, the commits of `to` since the merge base.
        ahead = ancestors(by_sha, head) - ancestors(by_sha, base)
        commits = sorted((by_sha[s] for s in ahead), key=lambda c: c.committed_at)
        body = {
            "commit": commit(repo, commits[-1]) if commits else None,
            "commits": [commit(repo, c) for c in commits],
            "diffs": [],
            "compare_timeout": False,
            "compare_same_ref": base == head,
            "web_url": f"{WEB}/{repo.full_name}/-/compare/{base}...{head}",
        }
        return Response.json(body, 200, self._rate_headers(1))

    def _merge_request_commits(self, request: Request) -> Response:
        found = self._child(request, lambda r: r.merge_requests, "iid", lambda m: m.iid)
        if found is None:
            return Response.json({"message": "404 Not found"}, 404)
        repo, mr = found
        items = list(reversed(mr.commits))  # newest first, as git log lists them
        return self._list(request, items, lambda c: commit(repo, c), repo.version)

    def _merge_requests(self, request: Request) -> Response:
        repo = self._project(request.params["id"])
        if repo is None:
            return _not_found()
        items = list(repo.merge_requests)  # all merged
        if request.arg("state", "all") not in ("merged", "all"):
            items = []
        target = request.arg("target_branch")
        if target and target != repo.default_branch:
            items = []
        after = request.arg("updated_after")
        if after:  # "updated on or after the given time"
            items = [m for m in items if m.updated_at >= parse_iso(after)]
        desc = request.arg("sort", "desc") == "desc"
        if request.arg("order_by") == "updated_at":
            items.sort(key=lambda m: (m.updated_at, m.iid), reverse=desc)
        else:
            items.sort(key=lambda m: (m.created_at, m.iid), reverse=desc)
        return self._list(request, items, lambda m: merge_request(repo, m), repo.version)

    def _issues(self, request: Request) -> Response:
        repo = self._project(request.params["id"])
        if repo is None:
            return _not_found()
        items = list(repo.incidents)
        if request.arg("issue_type") == "incident":
            items = [i for i in items if "incident" in i.labels]
        labels = [x for x in (request.arg("labels") or "").split(",") if x]
        items = [i for i in items if all(lb in i.labels for lb in labels)]
        after = request.arg("updated_after")
        if after:
            items = [i for i in items if i.updated_at > parse_iso(after)]
        items.sort(key=lambda i: i.updated_at)

        def render(i: Any) -> dict[str, Any]:
            return {
                "id": repo.id * 1000 + i.number,
                "iid": i.number,
                "project_id": repo.id,
                "title": i.title,
                "description": i.body,
                "state": "closed" if i.closed_at else "opened",
                "created_at": iso_ms(i.created_at),
                "updated_at": iso_ms(i.updated_at),
                "closed_at": iso_ms(i.closed_at) if i.closed_at else None,
                "labels": list(i.labels),
                "issue_type": "incident",
                "type": "INCIDENT",
                "web_url": f"{WEB}/{repo.full_name}/-/issues/{i.number}",
            }

        return self._list(request, items, render, repo.version)

    def _get_project(self, request: Request) -> Response:
        repo = self._project(request.params["path"])
        if repo is None:
            return _not_found()
        return Response.json(project(repo), 200, self._rate_headers(1))


def _not_found() -> Response:
    return Response.json({"message": "404 Project Not Found"}, 404)


def _updated_filter(request: Request, items: list[Any]) -> list[Any]:
    """``updated_after`` and the ``order_by``/``sort`` of GitLab's list endpoints."""
    after = request.arg("updated_after")
    if after:
        t = parse_iso(after)
        items = [i for i in items if i.updated_at > t]
    if request.arg("order_by") == "updated_at":
        items.sort(key=lambda i: (i.updated_at, i.id), reverse=request.arg("sort") == "desc")
    else:
        items.sort(key=lambda i: i.id, reverse=request.arg("sort", "desc") == "desc")
    return items


def apps(scenario: Scenario) -> dict[str, App]:
    from exporter.domains.delivery.sandbox.data import delivery_of

    fake = GitLabFake(delivery_of(scenario), clock=scenario.clock, prefix="/gitlab")
    return {"/gitlab": fake.app}


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Watch the simulated GitLab group; map its projects to the catalog's services."""
    from exporter.domains.delivery.sandbox.data import delivery_of

    delivery = delivery_of(scenario)
    config["sources"]["gitlab"] = {
        "base_url": f"{base_url}/gitlab",
        "token": TOKEN,
        "interval": "10s",
        # The first poll is a backfill: let it finish rather than stop at the interval.
        "poll_timeout": "60s",
    }
    for svc in config["services"]:
        for name, repo in delivery.gitlab.items():
            if repo.service == svc["name"]:
                svc.setdefault("ci", []).append({"gitlab": name})
