"""A simulated GitHub REST API (v3) serving the delivery scenario's repos.

Bodies follow GitHub's OpenAPI description (a contract test validates every
one); the headers behave like GitHub's: ``Link`` pagination (``per_page`` up to
100, ``rel="next"``/``rel="last"``), weak ``ETag``s with ``If-None-Match`` →
``304`` that costs no rate limit, ``X-RateLimit-*`` per token, ``401 Bad
credentials``. Installation tokens for GitHub Apps are minted by
``POST /app/installations/{id}/access_tokens`` (the app JWT is checked for shape
and issuer, not signature).

Served paths (under the ``/github`` prefix in the sandbox; a GitHub Enterprise
style ``/api/v3`` prefix works too through the config's ``base_url``):
``/orgs/{org}/repos``, ``/repos/{o}/{r}/actions/runs``, ``.../deployments``,
``.../deployments/{id}/statuses``, ``.../commits``, ``.../compare/{base}...{head}``,
``.../issues``, ``/rate_limit``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from exporter.core.clock import Clock, system_clock
from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.fakes import FaultPlan, etag_of, int_arg, iso, page_slice, parse_iso
from exporter.core.sandbox.scenario import Scenario
from exporter.domains.delivery.sandbox.data import (
    DeliveryScenario,
    FakeCommit,
    FakeDeployment,
    FakeIncident,
    FakeRepo,
    FakeRun,
    ancestors,
)

API = "https://api.github.com"
TOKEN = "ghp_sandboxtoken0000000000000000000000"
RATE_LIMIT = 5000


def user(login: str, uid: int = 1, kind: str = "User") -> dict[str, Any]:
    base = f"{API}/users/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": f"MDQ6VXNlcnt{uid}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "",
        "url": base,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": kind,
        "site_admin": False,
    }


_REPO_URLS = {
    "archive_url": "/{archive_format}{/ref}",
    "assignees_url": "/assignees{/user}",
    "blobs_url": "/git/blobs{/sha}",
    "branches_url": "/branches{/branch}",
    "collaborators_url": "/collaborators{/collaborator}",
    "comments_url": "/comments{/number}",
    "commits_url": "/commits{/sha}",
    "compare_url": "/compare/{base}...{head}",
    "contents_url": "/contents/{+path}",
    "contributors_url": "/contributors",
    "deployments_url": "/deployments",
    "downloads_url": "/downloads",
    "events_url": "/events",
    "forks_url": "/forks",
    "git_commits_url": "/git/commits{/sha}",
    "git_refs_url": "/git/refs{/sha}",
    "git_tags_url": "/git/tags{/sha}",
    "hooks_url": "/hooks",
    "issue_comment_url": "/issues/comments{/number}",
    "issue_events_url": "/issues/events{/number}",
    "issues_url": "/issues{/number}",
    "keys_url": "/keys{/key_id}",
    "labels_url": "/labels{/name}",
    "languages_url": "/languages",
    "merges_url": "/merges",
    "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}",
    "pulls_url": "/pulls{/number}",
    "releases_url": "/releases{/id}",
    "stargazers_url": "/stargazers",
    "statuses_url": "/statuses/{sha}",
    "subscribers_url": "/subscribers",
    "subscription_url": "/subscription",
    "tags_url": "/tags",
    "teams_url": "/teams",
    "trees_url": "/git/trees{/sha}",
}


def repository(repo: FakeRepo) -> dict[str, Any]:
    owner, name = repo.full_name.split("/", 1)
    url = f"{API}/repos/{repo.full_name}"
    out: dict[str, Any] = {
        "id": repo.id,
        "node_id": f"R_kgDO{repo.id}",
        "name": name,
        "full_name": repo.full_name,
        "owner": user(owner, 9000, "Organization"),
        "private": True,
        "html_url": f"https://github.com/{repo.full_name}",
        "description": f"The {repo.service} service",
        "fork": False,
        "url": url,
        "default_branch": repo.default_branch,
        "archived": False,
        "created_at": iso(repo.created_at or 1_500_000_000.0),
        "pushed_at": iso(repo.commits[-1].committed_at) if repo.commits else None,
    }
    out.update({k: url + v for k, v in _REPO_URLS.items()})
    return out


def workflow_run(repo: FakeRepo, run: FakeRun) -> dict[str, Any]:
    url = f"{API}/repos/{repo.full_name}/actions/runs/{run.id}"
    commit = next((c for c in repo.commits if c.sha == run.head_sha), None)
    when = iso(commit.committed_at if commit else run.created_at)
    workflow_id = 5000 + sum(map(ord, run.name))
    return {
        "id": run.id,
        "name": run.name,
        "node_id": f"WFR_kwLO{run.id}",
        "check_suite_id": run.id * 10,
        "check_suite_node_id": f"CS_kwDO{run.id}",
        "head_branch": run.branch,
        "head_sha": run.head_sha,
        "path": f".github/workflows/{run.name.lower()}.yml",
        "run_number": run.number,
        "run_attempt": run.attempt,
        "referenced_workflows": [
            {"path": path, "sha": run.head_sha, "ref": f"refs/tags/{path.rsplit('@', 1)[-1]}"}
            for path in run.referenced
        ],
        "display_title": f"{run.name} #{run.number}",
        "event": run.event,
        "status": run.status,
        "conclusion": run.conclusion,
        "workflow_id": workflow_id,
        "url": url,
        "html_url": f"https://github.com/{repo.full_name}/actions/runs/{run.id}",
        "pull_requests": [],
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "run_started_at": iso(run.started_at),
        "jobs_url": f"{url}/jobs",
        "logs_url": f"{url}/logs",
        "check_suite_url": f"{API}/repos/{repo.full_name}/check-suites/{run.id * 10}",
        "artifacts_url": f"{url}/artifacts",
        "cancel_url": f"{url}/cancel",
        "rerun_url": f"{url}/rerun",
        "workflow_url": f"{API}/repos/{repo.full_name}/actions/workflows/{workflow_id}",
        "head_commit": {
            "id": run.head_sha,
            "tree_id": run.head_sha[::-1],
            "message": "change",
            "timestamp": when,
            "author": {"name": "Dev", "email": "dev@example.com"},
            "committer": {"name": "Dev", "email": "dev@example.com"},
        },
        "repository": repository(repo),
        "head_repository": repository(repo),
    }


def deployment(repo: FakeRepo, dep: FakeDeployment) -> dict[str, Any]:
    url = f"{API}/repos/{repo.full_name}/deployments/{dep.id}"
    return {
        "url": url,
        "id": dep.id,
        "node_id": f"DE_kwDO{dep.id}",
        "sha": dep.sha,
        "ref": dep.ref,
        "task": "deploy",
        "payload": {},
        "original_environment": dep.environment,
        "environment": dep.environment,
        "description": None,
        "creator": user("deploy-bot", 4242, "Bot"),
        "created_at": iso(dep.created_at),
        "updated_at": iso(dep.updated_at),
        "statuses_url": f"{url}/statuses",
        "repository_url": f"{API}/repos/{repo.full_name}",
        "transient_environment": False,
        "production_environment": dep.environment == "production",
    }


def deployment_status(
    repo: FakeRepo, dep: FakeDeployment, status: tuple[int, str, float]
) -> dict[str, Any]:
    sid, state, at = status
    dep_url = f"{API}/repos/{repo.full_name}/deployments/{dep.id}"
    return {
        "url": f"{dep_url}/statuses/{sid}",
        "id": sid,
        "node_id": f"DES_kwDO{sid}",
        "state": state,
        "creator": user("deploy-bot", 4242, "Bot"),
        "description": "",
        "environment": dep.environment,
        "target_url": "",
        "created_at": iso(at),
        "updated_at": iso(at),
        "deployment_url": dep_url,
        "repository_url": f"{API}/repos/{repo.full_name}",
        "environment_url": "",
        "log_url": "",
    }


def commit(repo: FakeRepo, c: FakeCommit) -> dict[str, Any]:
    url = f"{API}/repos/{repo.full_name}/commits/{c.sha}"
    return {
        "url": url,
        "sha": c.sha,
        "node_id": f"C_kwDO{c.sha[:12]}",
        "html_url": f"https://github.com/{repo.full_name}/commit/{c.sha}",
        "comments_url": f"{url}/comments",
        "commit": {
            "url": f"{API}/repos/{repo.full_name}/git/commits/{c.sha}",
            "author": {"name": "Dev", "email": "dev@example.com", "date": iso(c.authored_at)},
            "committer": {"name": "Dev", "email": "dev@example.com", "date": iso(c.committed_at)},
            "message": c.message,
            "comment_count": 0,
            "tree": {"sha": c.sha[::-1], "url": f"{API}/repos/{repo.full_name}/git/trees/x"},
        },
        "author": user("dev", 77),
        "committer": user("dev", 77),
        "parents": [
            {"sha": p, "url": f"{API}/repos/{repo.full_name}/commits/{p}"} for p in c.parents
        ],
    }


def issue(repo: FakeRepo, inc: FakeIncident) -> dict[str, Any]:
    url = f"{API}/repos/{repo.full_name}/issues/{inc.number}"
    return {
        "id": repo.id * 1000 + inc.number,
        "node_id": f"I_kwDO{repo.id}{inc.number}",
        "url": url,
        "repository_url": f"{API}/repos/{repo.full_name}",
        "labels_url": f"{url}/labels{{/name}}",
        "comments_url": f"{url}/comments",
        "events_url": f"{url}/events",
        "html_url": f"https://github.com/{repo.full_name}/issues/{inc.number}",
        "number": inc.number,
        "state": "closed" if inc.closed_at else "open",
        "title": inc.title,
        "body": inc.body,
        "user": user("oncall", 55),
        "labels": [
            {
                "id": 700 + i,
                "node_id": f"LA_{i}",
                "url": f"{API}/repos/{repo.full_name}/labels/{name}",
                "name": name,
                "color": "d73a4a",
                "default": False,
                "description": None,
            }
            for i, name in enumerate(inc.labels)
        ],
        "assignee": None,
        "assignees": [],
        "milestone": None,
        "locked": False,
        "comments": 0,
        "closed_at": iso(inc.closed_at) if inc.closed_at else None,
        "created_at": iso(inc.created_at),
        "updated_at": iso(inc.updated_at),
        "author_association": "MEMBER",
    }


class GitHubFake:
    """The simulated API over a :class:`DeliveryScenario`; ``plan`` injects faults."""

    def __init__(
        self,
        scenario: DeliveryScenario,
        token: str = TOKEN,
        clock: Clock = system_clock,
        app_credentials: tuple[int, int] | None = None,
        prefix: str = "",
        rate_limit: int = RATE_LIMIT,
    ) -> None:
        self.scenario = scenario
        # Where the API is mounted, for absolute Link URLs ("/github" in the sandbox).
        self.prefix = prefix
        self.token = token
        self.clock = clock
        # Requests per token per hour (GitHub Enterprise Server may run with a higher one).
        self.rate_limit = rate_limit
        self.plan = FaultPlan()
        self.remaining: dict[str, int] = {}
        self.app_credentials = app_credentials  # (app_id, installation_id)
        self.installation_tokens: set[str] = set()
        self.app = self.plan.wrap(self._routes())

    # --- plumbing -----------------------------------------------------------------

    def _authorised(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("bearer", "token") and (
            value == self.token or value in self.installation_tokens
        ):
            return value
        return None

    def _rate_headers(self, token: str, cost: int) -> dict[str, str]:
        left = self.remaining.get(token, self.rate_limit) - cost
        self.remaining[token] = max(0, left)
        reset = int(self.clock()) // 3600 * 3600 + 3600
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, left)),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Used": str(self.rate_limit - max(0, left)),
            "X-RateLimit-Resource": "core",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
        }

    def _list(
        self,
        request: Request,
        token: str,
        items: list[Any],
        render: Callable[[Any], Any],
        version: object,
        wrap: Callable[[list[Any]], Any] | None = None,
    ) -> Response:
        """A paginated, ETag-ed list answer, like GitHub's."""
        per_page = int_arg(request, "per_page", 30, 100)
        page = int_arg(request, "page", 1)
        query = sorted((k, v[-1]) for k, v in request.query.items())
        etag = etag_of(request.path, query, version)
        if request.headers.get("if-none-match") == etag:
            # A conditional hit is free: no rate-limit cost.
            return Response(304, b"", {"ETag": etag, **self._rate_headers(token, 0)})
        chunk, more = page_slice(items, page, per_page)
        body = [render(i) for i in chunk]
        headers = {"ETag": etag, **self._rate_headers(token, 1)}
        links = []
        base_q = [(k, v) for k, v in query if k != "page"]

        host = request.headers.get("host", "api.github.com")
        origin = f"{'http' if ':' in host else 'https'}://{host}{self.prefix}"

        def link(p: int, rel: str) -> str:
            q = "&".join(f"{k}={quote(v, safe='')}" for k, v in [*base_q, ("page", str(p))])
            return f'<{origin}{request.path}?{q}>; rel="{rel}"'

        last = max(1, (len(items) + per_page - 1) // per_page)
        if more:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(page - 1, "prev"), link(1, "first")]
        if links:
            headers["Link"] = ", ".join(links)
        return Response.json(wrap(body) if wrap else body, 200, headers)

    def _repo(self, request: Request) -> FakeRepo | None:
        return self.scenario.github.get(f"{request.params['owner']}/{request.params['repo']}")

    # --- routes -------------------------------------------------------------------

    def _routes(self) -> App:
        app = App()
        for pattern, handler in (
            ("/rate_limit", self._rate_limit),
            ("/orgs/{org}/repos", self._org_repos),
            ("/repos/{owner}/{repo}/actions/runs", self._runs),
            ("/repos/{owner}/{repo}/deployments", self._deployments),
            ("/repos/{owner}/{repo}/deployments/{deployment_id}/statuses", self._statuses),
            ("/repos/{owner}/{repo}/commits", self._commits),
            ("/repos/{owner}/{repo}/compare/{basehead}", self._compare),
            ("/repos/{owner}/{repo}/issues", self._issues),
        ):
            for prefix in ("", "/api/v3"):
                app.route("GET", prefix + pattern)(self._guarded(handler))
        app.route("POST", "/api/v3/app/installations/{installation_id}/access_tokens")(
            self._access_token
        )
        app.route("POST", "/app/installations/{installation_id}/access_tokens")(self._access_token)
        return app

    def _guarded(
        self, handler: Callable[[Request, str], Response]
    ) -> Callable[[Request], Response]:
        """The handler behind the token check, holding the scenario's lock."""

        def inner(request: Request) -> Response:
            token = self._authorised(request)
            if token is None:
                return Response.json(
                    {
                        "message": "Bad credentials",
                        "documentation_url": "https://docs.github.com/rest",
                    },
                    401,
                )
            with self.scenario.lock:
                return handler(request, token)

        return inner

    def _rate_limit(self, request: Request, token: str) -> Response:
        left = self.remaining.get(token, self.rate_limit)
        reset = int(self.clock()) // 3600 * 3600 + 3600
        core = {
            "limit": self.rate_limit,
            "remaining": left,
            "reset": reset,
            "used": self.rate_limit - left,
        }
        return Response.json(
            {"resources": {"core": core, "search": core}, "rate": core},
            200,
            self._rate_headers(token, 0),
        )

    def _org_repos(self, request: Request, token: str) -> Response:
        org = request.params["org"]
        repos = sorted(
            (r for name, r in self.scenario.github.items() if name.split("/")[0] == org),
            key=lambda r: r.full_name,
        )
        if not repos:
            return _not_found()
        version = tuple(r.full_name for r in repos)
        return self._list(request, token, repos, repository, version)

    def _runs(self, request: Request, token: str) -> Response:
        repo = self._repo(request)
        if repo is None:
            return _not_found()
        items = sorted(repo.runs, key=lambda r: (-r.created_at, -r.id))
        created = request.arg("created")
        if created and created.startswith(">="):
            since = parse_iso(created[2:])
            items = [r for r in items if r.created_at >= since]
        status = request.arg("status")
        if status:
            items = [r for r in items if status in (r.status, r.conclusion)]
        total = len(items)
        return self._list(
            request,
            token,
            items,
            lambda r: workflow_run(repo, r),
            repo.version,
            wrap=lambda body: {"total_count": total, "workflow_runs": body},
        )

    def _deployments(self, request: Request, token: str) -> Response:
        repo = self._repo(request)
        if repo is None:
            return _not_found()
        items = sorted(repo.deployments, key=lambda d: (-d.created_at, -d.id))
        env = request.arg("environment")
        if env:
            items = [d for d in items if d.environment == env]
        return self._list(
            request, token, items, lambda d: deployment(repo, d), (repo.version, "deploy")
        )

    def _statuses(self, request: Request, token: str) -> Response:
        repo = self._repo(request)
        dep = None
        if repo is not None:
            dep = next(
                (d for d in repo.deployments if str(d.id) == request.params["deployment_id"]),
                None,
            )
        if repo is None or dep is None:
            return _not_found()
        items = sorted(dep.statuses, key=lambda s: (-s[2], -s[0]))
        return self._list(
            request,
            token,
            items,
            lambda s: deployment_status(repo, dep, s),
            (dep.id, len(dep.statuses)),
        )

    def _commits(self, request: Request, token: str) -> Response:
        repo = self._repo(request)
        if repo is None:
            return _not_found()
        items = sorted(
            (c for c in repo.commits if c.on_default_branch), key=lambda c: -c.committed_at
        )
        since = request.arg("since")
        if since:
            items = [c for c in items if c.committed_at >= parse_iso(since)]
        until = request.arg("until")
        if until:
            items = [c for c in items if c.committed_at <= parse_iso(until)]
        return self._list(
            request, token, items, lambda c: commit(repo, c), (repo.version, "commits")
        )

    def _compare(self, request: Request, token: str) -> Response:
        repo = self._repo(request)
        base, sep, head = request.params["basehead"].partition("...")
        by_sha = {c.sha: c for c in repo.commits} if repo else {}
        if repo is None or not sep or base not in by_sha or head not in by_sha:
            return _not_found()
        of_head, of_base = ancestors(by_sha, head), ancestors(by_sha, base)
        ahead = sorted((by_sha[s] for s in of_head - of_base), key=lambda c: c.committed_at)
        behind = of_base - of_head
        common = sorted((by_sha[s] for s in of_head & of_base), key=lambda c: c.committed_at)
        status = (
            "identical"
            if base == head
            else "ahead"
            if not behind
            else "behind"
            if not ahead
            else "diverged"
        )
        url = f"{API}/repos/{repo.full_name}/compare/{base}...{head}"
        body = {
            "url": url,
            "html_url": f"https://github.com/{repo.full_name}/compare/{base}...{head}",
            "permalink_url": f"https://github.com/{repo.full_name}/compare/{base}...{head}",
            "diff_url": f"https://github.com/{repo.full_name}/compare/{base}...{head}.diff",
            "patch_url": f"https://github.com/{repo.full_name}/compare/{base}...{head}.patch",
            "base_commit": commit(repo, by_sha[base]),
            "merge_base_commit": commit(repo, common[-1] if common else by_sha[base]),
            "status": status,
            "ahead_by": len(ahead),
            "behind_by": len(behind),
            "total_commits": len(ahead),
            "commits": [commit(repo, c) for c in ahead],
            "files": [],
        }
        return Response.json(body, 200, self._rate_headers(token, 1))

    def _issues(self, request: Request, token: str) -> Response:
        repo = self._repo(request)
        if repo is None:
            return _not_found()
        items = sorted(repo.incidents, key=lambda i: -i.updated_at)
        labels = [x for x in (request.arg("labels") or "").split(",") if x]
        items = [i for i in items if all(lb in i.labels for lb in labels)]
        state = request.arg("state", "open")
        if state != "all":
            items = [i for i in items if ("closed" if i.closed_at else "open") == state]
        since = request.arg("since")
        if since:
            items = [i for i in items if i.updated_at >= parse_iso(since)]
        return self._list(request, token, items, lambda i: issue(repo, i), (repo.version, "issues"))

    def _access_token(self, request: Request) -> Response:
        if self.app_credentials is None:
            return _not_found()
        app_id, installation_id = self.app_credentials
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not _jwt_issuer_ok(header[7:], app_id):
            return Response.json({"message": "A JSON web token could not be decoded"}, 401)
        if request.params["installation_id"] != str(installation_id):
            return _not_found()
        token = f"ghs_installation{len(self.installation_tokens):020d}"
        self.installation_tokens.add(token)
        return Response.json({"token": token, "expires_at": iso(self.clock() + 3600)}, 201)


def _not_found() -> Response:
    return Response.json(
        {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}, 404
    )


def _jwt_issuer_ok(token: str, app_id: int) -> bool:
    try:
        _, payload, _ = token.split(".")
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, json.JSONDecodeError):
        return False
    return str(data.get("iss")) == str(app_id)


# --- sandbox hooks ------------------------------------------------------------------


def apps(scenario: Scenario) -> dict[str, App]:
    from exporter.domains.delivery.sandbox.data import delivery_of

    fake = GitHubFake(delivery_of(scenario), clock=scenario.clock, prefix="/github")
    return {"/github": fake.app}


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Watch the simulated GitHub org; map its repos to the catalog's services."""
    from exporter.domains.delivery.sandbox.data import delivery_of, demo_delivery_rules

    delivery = delivery_of(scenario)
    config["sources"]["github"] = {
        "base_url": f"{base_url}/github",
        "token": TOKEN,
        "interval": "10s",
        # The first poll is a backfill: let it finish rather than stop at the interval.
        "poll_timeout": "60s",
        "orgs": [{"name": delivery.org}],
        "deploy_workflows": ["Deploy"],
    }
    config["delivery"] = demo_delivery_rules()
    for svc in config["services"]:
        for name, repo in delivery.github.items():
            if repo.service == svc["name"]:
                svc.setdefault("ci", []).append({"github": name})
