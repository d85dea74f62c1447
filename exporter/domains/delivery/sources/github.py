"""GitHub (github.com or Enterprise Server): Actions runs, deployments, commits and incidents.

Per repo, these list endpoints are read newest-first with a constant URL, so
each carries an ``ETag`` from the previous poll and an unchanged list costs a
``304`` (free of rate limit) and nothing else:

* ``/repos/{r}/actions/runs``: finished runs become :class:`PipelineRun` (and
  :class:`TemplateUse` for their workflow file and referenced reusable workflows); pages
  are read until runs older than the cursor (the oldest unfinished run, or the
  newest seen) and than ``RERUN_LOOKBACK`` ago (a re-run keeps its run's
  ``created_at``; each ``run_attempt`` after the first is a run of its own); the
  first poll reads ``backfill_days`` of history;
* ``/repos/{r}/deployments`` and, for each deployment not yet known finished,
  its ``/statuses``, newest first and no more at once than the repo's share of the
  connection slots (so a failure stops the rest from being sent): the truth for
  production deploys where a repo uses them;
  a repo with no deployments at all takes runs of ``deploy_workflows`` on its
  default branch as its production deployments instead;
* ``/repos/{r}/commits``: the default branch's history with parents, so lead
  time can walk from one production deployment to the previous one; read only
  when the runs or the deployments changed (no new deployment, no new link);
* ``/repos/{r}/issues?labels=<incident_label>&state=all``: incidents, linked to
  a deployment by a root-cause commit in their body (``delivery.incident_root_cause``);
* ``/repos/{r}/compare/{previous}...{deployed}`` for a new production deployment
  of a commit that is not in the default branch's history (a hotfix branch).

Repos come from the catalog (``services[].ci[].github``) and from
``orgs`` (``/orgs/{org}/repos`` with include and exclude patterns, mapped to
services by the catalog's patterns). Auth is a token or a GitHub App
installation (short-lived tokens minted with an RS256 app JWT). Requests are
paced by the host's token bucket and slowed when ``X-RateLimit-Remaining``
nears ``rate_limit_reserve``; a ``401`` stops the source until restart.
"""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx

from exporter.core.clock import utc_datetime
from exporter.core.errors import AuthError, needs_extra
from exporter.core.redact import excerpt
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext
from exporter.domains.catalog.records import TemplateUse
from exporter.domains.delivery import store as store
from exporter.domains.delivery.records import Commit, Deployment, Incident, PipelineRun
from exporter.domains.delivery.settings import (
    DeliveryConfig,
    GitHubAppConfig,
    GitHubSourceConfig,
)
from exporter.domains.delivery.sources.common import (
    CicdSource,
    body_of,
    bounded_each,
    dump_state,
    load_state,
    malformed,
    off_branch_deployments,
    parse_time,
    parse_time_or_none,
    repo_mapper,
    with_repo,
)
from exporter.domains.delivery.webhooks.store import stored_deployments

API_VERSION = "2022-11-28"
PER_PAGE = 100
# Branches whose deploy-workflow runs count as production deployments.
DEPLOY_BRANCHES = ("main", "master")
# A pending deployment (or unfinished run) older than this no longer holds the cursor back.
PENDING_HORIZON = 86400.0
# A re-run keeps its run's id and created_at (only run_attempt grows), so whenever the runs
# list changes it is read back over the runs created this long ago, to find new attempts.
RERUN_LOOKBACK = 86400.0

_RUN_FIELDS = (
    "id",
    "name",
    "path",
    "status",
    "conclusion",
    "created_at",
    "updated_at",
    "run_started_at",
    "head_sha",
    "head_branch",
    "run_attempt",
)
# What the deployment records need of a deployment body (which also carries its creator).
_DEPLOYMENT_FIELDS = ("id", "sha", "environment", "created_at")
_CONCLUSIONS = {
    "success": "success",
    "failure": "failure",
    "timed_out": "failure",
    "startup_failure": "failure",
    "cancelled": "cancelled",
    "skipped": "skipped",
}


def app_jwt(app_id: int, private_key_pem: str, now: float) -> str:
    """An RS256 JSON Web Token for a GitHub App (valid 9 minutes, issued 60 s back), signed
    by PyJWT with ``cryptography`` (the ``github-app`` extra)."""
    with needs_extra("github-app", "GitHub App auth"):
        import jwt
    claims = {"iat": int(now) - 60, "exp": int(now) + 540, "iss": str(app_id)}
    try:
        return jwt.encode(claims, private_key_pem, algorithm="RS256")
    except (jwt.PyJWTError, ValueError, TypeError):
        # The key itself is never quoted.
        raise AuthError("the GitHub App private key is not an RSA private key in PEM") from None


class GitHubAppAuth(httpx.Auth):
    """Adds an installation token, minting a new one when it is about to expire."""

    def __init__(self, app: GitHubAppConfig, base_url: str, clock: Callable[[], float]) -> None:
        self.app = app
        self.base_url = base_url.rstrip("/")
        self.clock = clock
        self.token: str | None = None
        self.expires_at = 0.0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.token is None or self.clock() > self.expires_at - 300:
            jwt = app_jwt(self.app.app_id, self.app.private_key.get_secret_value(), self.clock())
            response = yield httpx.Request(
                "POST",
                f"{self.base_url}/app/installations/{self.app.installation_id}/access_tokens",
                headers={
                    "Authorization": f"Bearer {jwt}",
                    "Accept": "application/vnd.github+json",
                    "X-GitHub-Api-Version": API_VERSION,
                },
            )
            if response.status_code != 201:
                response.read()
                raise AuthError(
                    f"GitHub App installation token refused ({response.status_code}): "
                    f"{excerpt(response.text)}"
                )
            response.read()
            data = response.json()
            self.token = str(data["token"])
            self.expires_at = parse_time(data["expires_at"])
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


class GitHubSource(CicdSource):
    """Reads the catalog's GitHub repos; see the module docstring."""

    kind = "github"
    settings_model = GitHubSourceConfig
    produces = (PipelineRun, Deployment, Commit, Incident, TemplateUse)
    tags = frozenset({"template:workflow"})

    def __init__(self, config: ConfigBase, settings: GitHubSourceConfig) -> None:
        super().__init__(config, settings, concurrency=settings.concurrency)
        self.gh = settings
        self._unmapped_logged: set[str] = set()

    @property
    def active(self) -> bool:
        return bool(self.explicit or self.gh.orgs)

    def client_options(self) -> dict[str, Any]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        options: dict[str, Any] = {
            "base_url": self.gh.base_url.rstrip("/"),
            "headers": headers,
            "rate": self.gh.requests_per_second,
            "reserve": self.gh.rate_limit_reserve,
            "max_connections": self.gh.concurrency,
        }
        if self.gh.token is not None:
            headers["Authorization"] = f"Bearer {self.gh.token.get_secret_value()}"
        elif self.gh.app is not None:
            options["auth"] = GitHubAppAuth(self.gh.app, self.gh.base_url, self.clock)
        return options

    # --- the poll -------------------------------------------------------------------

    async def _list(
        self,
        ctx: PollContext,
        url: str,
        params: dict[str, Any],
        cursor: str,
        take: Callable[[Any], bool | None],
    ) -> None:
        """Hand a list's pages, newest first, to ``take`` until it returns True (it has
        seen enough) or the pages end; nothing when the first page is unchanged (304).

        The first page's ETag is kept in ``self._etags[cursor]`` for the caller to
        commit. Only one page is held at a time, and it is let go before the next one
        is asked for: a page of workflow runs parses to megabytes, and dozens of repos
        page at once during a backfill.
        """
        state = load_state(ctx, cursor)
        response = await self.get_if_changed(ctx, url, state.get("etag"), params)
        if response.status_code == 304:
            return
        self._etags[cursor] = response.headers.get("ETag", "")
        bound = self.page_bound(f"GET {url}")
        while True:
            following = response.links.get("next", {}).get("url")
            body = body_of(response)
            if take(body) or not following:
                return
            bound.more(body)
            del response, body  # its body, before the next one arrives
            response = await self.get(ctx, following)

    async def units(self, ctx: PollContext) -> dict[str, str]:
        """Repo full name -> service, from the catalog and the orgs."""
        self._etags: dict[str, str] = {}
        repos = dict(self.explicit)
        service_of = repo_mapper(ctx, self.config, "github")
        for org in self.gh.orgs:
            cursor = f"org:{org.name}"
            state = load_state(ctx, cursor)
            listed: list[str] = []

            def take(page: Any, listed: list[str] = listed, org: Any = org) -> None:
                try:
                    listed.extend(
                        str(r["full_name"])
                        for r in page
                        if not r.get("archived") and org.selects(str(r["name"]))
                    )
                except (KeyError, TypeError, AttributeError) as exc:
                    raise malformed("org repos", exc) from None

            await self._list(
                ctx,
                f"/orgs/{org.name}/repos",
                {"per_page": PER_PAGE, "type": "all"},
                cursor,
                take,
            )
            names: list[str] | None = listed if cursor in self._etags else None
            if names is None:
                names = [str(n) for n in state.get("repos", [])]
            else:
                await ctx.commit(
                    [], {cursor: dump_state({"etag": self._etags[cursor], "repos": names})}
                )
            for name in names:
                service = service_of(name)
                if service is None:
                    if name not in self._unmapped_logged:
                        self._unmapped_logged.add(name)
                        ctx.log.info(
                            "github repo %s maps to no service of the catalog; skipped", name
                        )
                    continue
                repos.setdefault(name, service)
        return repos

    async def sync_unit(self, ctx: PollContext, repo: str, service: str) -> None:
        """Read one repo's four lists and commit them with their cursors, all at once."""
        now = ctx.now()
        backfill_start = now - self.rules.backfill_days * 86400.0
        parts: list[list[Any]] = [[], [], [], []]
        cursors: dict[str, str] = {}
        # The lists are independent: read them at once (the client's connection limit
        # still bounds the source's requests in flight).
        u = _Unit(ctx, repo, service, backfill_start, cursors)
        runs, uses_deployments, _ = await asyncio.gather(
            self._runs(u, parts[0]), self._deployments(u, parts[1]), self._incidents(u, parts[2])
        )
        # Commits only serve the lead time of deployments: while neither the runs nor the
        # deployments changed, there is no new deployment to link, and the commits list is
        # read later back to its own cursor, so nothing is missed.
        if f"{repo}:runs" in cursors or f"{repo}:deployments" in cursors:
            await self._commits(u, parts[3])
        records = [r for part in parts for r in part]
        if not uses_deployments and self.gh.deploy_workflows:
            records.extend(self._workflow_deployments(repo, service, runs))
        records.extend(await self._off_branch_commits(ctx, repo, service, records))
        await ctx.commit(with_repo(records, self.kind, repo), cursors)

    async def _off_branch_commits(
        self, ctx: PollContext, repo: str, service: str, records: list[Any]
    ) -> list[Commit]:
        """Commits of new production deployments made off the default branch (a hotfix),
        through ``compare <previous production sha>...<deployed sha>``."""
        known: set[str] = set()
        out: list[Commit] = []
        for dep, base in off_branch_deployments(ctx, service, records, known):
            body = await self.get_json_or_none(ctx, f"/repos/{repo}/compare/{base}...{dep.sha}")
            if body is None:
                continue
            try:
                for item in [body["base_commit"], *body["commits"]]:
                    if str(item["sha"]) in known:
                        continue
                    known.add(str(item["sha"]))
                    out.append(
                        Commit(
                            service=service,
                            sha=str(item["sha"]),
                            authored_at=parse_time(item["commit"]["author"]["date"]),
                            committed_at=parse_time(item["commit"]["committer"]["date"]),
                            parents=tuple(str(p["sha"]) for p in item["parents"]),
                        )
                    )
            except (KeyError, TypeError) as exc:
                raise malformed("compare", exc) from None
        return out

    async def _runs(self, u: _Unit, records: list[Any]) -> list[dict[str, Any]]:
        ctx, repo, service, cursors = u.ctx, u.repo, u.service, u.cursors
        cursor, state = u.load("runs")
        since = float(state.get("since", u.backfill_start))
        floor = min(since, ctx.now() - RERUN_LOOKBACK)
        seen: list[dict[str, Any]] = []

        def take(page: Any) -> bool:
            try:
                for run in page["workflow_runs"]:
                    if parse_time(run["created_at"]) < floor:
                        return True
                    # Keep only what is used: a run body carries two full repository objects.
                    seen.append(_slim_run(run))
            except (KeyError, TypeError) as exc:
                raise malformed("workflow runs", exc) from None
            return False

        await self._list(
            ctx,
            f"/repos/{repo}/actions/runs",
            {"per_page": PER_PAGE, "exclude_pull_requests": "true"},
            cursor,
            take,
        )
        if cursor not in self._etags:
            return []
        unfinished: list[float] = []
        newest = since
        try:
            for run in seen:
                created = parse_time(run["created_at"])
                newest = max(newest, created)
                if run["status"] != "completed":
                    if created > ctx.now() - PENDING_HORIZON:
                        unfinished.append(created)  # holds the cursor until it finishes
                    continue
                records.append(pipeline_run(repo, service, run))
                # The workflow file and the reusable workflows it called: platform template use.
                for path in _workflow_paths(run):
                    records.append(
                        TemplateUse(
                            self.kind, service, "workflow", path, parse_time(run["updated_at"])
                        )
                    )
        except (KeyError, TypeError) as exc:
            raise malformed("workflow run", exc) from None
        new_since = min(unfinished) if unfinished else newest
        cursors[cursor] = dump_state({"etag": self._etags[cursor], "since": new_since})
        return seen

    async def _deployments(self, u: _Unit, records: list[Any]) -> bool:
        """Read the deployments; True if the repo uses GitHub Deployments at all."""
        ctx, repo, service, cursors = u.ctx, u.repo, u.service, u.cursors
        cursor, state = u.load("deployments")
        since = float(state.get("since", u.backfill_start))
        uses_deployments = bool(state.get("any", False))
        seen: list[dict[str, Any]] = []

        def take(page: Any) -> bool:
            nonlocal uses_deployments
            try:
                for dep in page:
                    uses_deployments = True
                    if parse_time(dep["created_at"]) < since:
                        return True
                    seen.append({k: dep[k] for k in _DEPLOYMENT_FIELDS})
            except (KeyError, TypeError) as exc:
                raise malformed("deployments", exc) from None
            return False

        await self._list(ctx, f"/repos/{repo}/deployments", {"per_page": PER_PAGE}, cursor, take)
        if cursor in self._etags:
            # In a worker thread: on a shared database a read waits a round trip, and the
            # event loop has the other units' requests to serve meanwhile.
            finished = await asyncio.to_thread(
                store.finished_deployment_keys, ctx.store, self.kind, f"{self.kind}/{repo}/"
            )
            pending: list[float] = []
            newest = since
            todo: list[dict[str, Any]] = []
            told: list[str] = []  # finished before this poll read them: a webhook told of them
            try:
                for dep in seen:
                    newest = max(newest, parse_time(dep["created_at"]))
                    key = f"{self.kind}/{repo}/{dep['id']}"
                    if key in finished:
                        told.append(key)
                    else:
                        todo.append(dep)
                found = await bounded_each(
                    todo,
                    lambda dep: self._deployment(ctx, repo, service, dep),
                    self.slots_per_unit,
                )
            except (KeyError, TypeError) as exc:
                raise malformed("deployment", exc) from None
            # Their commits are still to be read like any new deployment's (a hotfix branch's
            # through compare): they take part in the commit reading below, counted already.
            records.extend(stored_deployments(ctx.store, told))
            for record in found:
                if record is None:
                    continue
                records.append(record)
                if record.status == "pending" and record.created_at > ctx.now() - PENDING_HORIZON:
                    pending.append(record.created_at)
            cursors[cursor] = dump_state(
                {
                    "etag": self._etags[cursor],
                    "since": min(pending) if pending else newest,
                    "any": uses_deployments,
                }
            )
        return uses_deployments

    async def _deployment(
        self, ctx: PollContext, repo: str, service: str, dep: dict[str, Any]
    ) -> Deployment | None:
        response = await self.get(
            ctx, f"/repos/{repo}/deployments/{dep['id']}/statuses", {"per_page": PER_PAGE}
        )
        try:
            return self._deployment_record(repo, service, dep, body_of(response))
        except (KeyError, TypeError, IndexError) as exc:
            raise malformed("deployment statuses", exc) from None

    def _deployment_record(
        self, repo: str, service: str, dep: dict[str, Any], statuses: list[Any]
    ) -> Deployment | None:
        return deployment_record(self.rules, repo, service, dep, statuses)

    def _workflow_deployments(
        self, repo: str, service: str, runs: list[dict[str, Any]]
    ) -> list[Deployment]:
        found = (workflow_deployment(repo, service, run, self.gh.deploy_workflows) for run in runs)
        return [dep for dep in found if dep is not None]

    async def _commits(self, u: _Unit, records: list[Any]) -> None:
        ctx, repo, service, cursors = u.ctx, u.repo, u.service, u.cursors
        cursor, state = u.load("commits")
        since = float(state.get("since", u.backfill_start))
        newest = since

        def take(page: Any) -> bool:
            nonlocal newest
            try:
                for item in page:
                    committed = parse_time(item["commit"]["committer"]["date"])
                    if committed < since:
                        return True
                    newest = max(newest, committed)
                    records.append(
                        Commit(
                            service=service,
                            sha=str(item["sha"]),
                            authored_at=parse_time(item["commit"]["author"]["date"]),
                            committed_at=committed,
                            parents=tuple(str(p["sha"]) for p in item["parents"]),
                        )
                    )
            except (KeyError, TypeError) as exc:
                raise malformed("commits", exc) from None
            return False

        await self._list(ctx, f"/repos/{repo}/commits", {"per_page": PER_PAGE}, cursor, take)
        if cursor in self._etags:
            # An hour of overlap absorbs clock skew between committers; re-reads dedupe.
            cursors[cursor] = dump_state(
                {"etag": self._etags[cursor], "since": max(since, newest - 3600.0)}
            )

    async def _incidents(self, u: _Unit, records: list[Any]) -> None:
        ctx, repo, service, cursors = u.ctx, u.repo, u.service, u.cursors
        cursor, state = u.load("incidents")
        # Fixed at the first poll, so the URL (and its ETag) stays the same.
        since = str(state.get("since") or _iso(u.backfill_start))
        params = {
            "labels": self.gh.incident_label,
            "state": "all",
            "since": since,
            "sort": "updated",
            "direction": "desc",
            "per_page": PER_PAGE,
        }

        def take(page: Any) -> None:
            try:
                for item in page:
                    if "pull_request" in item:
                        continue
                    closed = item.get("state") == "closed"
                    records.append(
                        Incident(
                            source=self.kind,
                            service=service,
                            incident_id=f"{repo}#{item['number']}",
                            opened_at=parse_time(item["created_at"]),
                            resolved_at=parse_time(item["closed_at"]) if closed else None,
                            deployment_sha=self.rules.root_cause_sha(item.get("body")),
                        )
                    )
            except (KeyError, TypeError) as exc:
                raise malformed("issues", exc) from None

        await self._list(ctx, f"/repos/{repo}/issues", params, cursor, take)
        if cursor in self._etags:
            cursors[cursor] = dump_state({"etag": self._etags[cursor], "since": since})


# --- what a repo's JSON becomes: shared with the webhook intake, so that an event and
# the poll of the same object yield the same record (the same key) ---------------------


def pipeline_run(repo: str, service: str, run: dict[str, Any]) -> PipelineRun:
    """The run (attempt) of a completed workflow run body (a list item or a webhook's)."""
    rerun = _attempt(run) > 1
    return PipelineRun(
        source=GitHubSource.kind,
        service=service,
        pipeline=str(run.get("name") or run.get("path") or "workflow")[:100],
        run_id=f"{repo}/{run['id']}{_attempt_suffix(run)}",
        result=_CONCLUSIONS.get(str(run.get("conclusion")), "other"),
        # A re-run's queue time is unknown (no created_at of its own).
        created_at=_started_if_rerun(run),
        started_at=None if rerun else parse_time_or_none(run.get("run_started_at")),
        finished_at=parse_time(run["updated_at"]),
    )


def workflow_deployment(
    repo: str, service: str, run: dict[str, Any], deploy_workflows: list[str]
) -> Deployment | None:
    """The production deployment a completed run of a deploy workflow on the default
    branch is (for a repo without GitHub Deployments), or None."""
    name = str(run.get("name") or "")
    if run.get("status") != "completed" or run.get("head_branch") not in DEPLOY_BRANCHES:
        return None
    if not any(fnmatch.fnmatchcase(name, p) for p in deploy_workflows):
        return None
    result = _CONCLUSIONS.get(str(run.get("conclusion")), "other")
    if result not in ("success", "failure"):
        return None
    return Deployment(
        source=GitHubSource.kind,
        service=service,
        environment="production",
        production=True,
        deploy_id=f"{repo}/run/{run['id']}{_attempt_suffix(run)}",
        sha=str(run["head_sha"]),
        status=result,
        created_at=_started_if_rerun(run),
        finished_at=parse_time(run["updated_at"]),
    )


def deployment_record(
    rules: DeliveryConfig, repo: str, service: str, dep: dict[str, Any], statuses: list[Any]
) -> Deployment | None:
    """A deployment body and its statuses (newest first) as a record: finished by its
    newest success, failure or error; None when it was superseded (``inactive``) before
    it finished, so it is not a deployment that happened."""
    status, finished_at = "pending", None
    latest = str(statuses[0]["state"]) if statuses else "pending"
    for st in statuses:  # newest first
        state = str(st["state"])
        if state in ("success", "failure", "error"):
            status = "success" if state == "success" else "failure"
            finished_at = parse_time(st["created_at"])
            break
    if status == "pending" and latest == "inactive":
        return None
    env = str(dep["environment"])
    return Deployment(
        source=GitHubSource.kind,
        service=service,
        environment=rules.environment_label(env),
        production=rules.is_production(env),
        deploy_id=f"{repo}/{dep['id']}",
        sha=str(dep["sha"]),
        status=status,
        created_at=parse_time(dep["created_at"]),
        finished_at=finished_at,
    )


@dataclass(frozen=True)
class _Unit:
    """One repo's poll: what each of its list readers shares."""

    ctx: PollContext
    repo: str
    service: str
    backfill_start: float
    cursors: dict[str, str]  # what the poll commits, filled by the readers

    def load(self, name: str) -> tuple[str, dict[str, Any]]:
        """The cursor of one of the repo's lists and its stored state."""
        cursor = f"{self.repo}:{name}"
        return cursor, load_state(self.ctx, cursor)


def _iso(t: float) -> str:
    return utc_datetime(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _attempt(run: dict[str, Any]) -> int:
    attempt = run.get("run_attempt")
    return attempt if isinstance(attempt, int) and attempt > 0 else 1


def _attempt_suffix(run: dict[str, Any]) -> str:
    """The identity suffix of a re-run: each attempt after the first is its own run (and,
    for a deploy workflow, its own deployment); the first keeps the run's plain id."""
    attempt = _attempt(run)
    return f"/attempt/{attempt}" if attempt > 1 else ""


def _started_if_rerun(run: dict[str, Any]) -> float:
    """When a run (attempt) began: ``created_at`` is its first attempt's on a re-run."""
    if _attempt(run) > 1:
        return parse_time_or_none(run.get("run_started_at")) or parse_time(run["created_at"])
    return parse_time(run["created_at"])


def _slim_run(run: dict[str, Any]) -> dict[str, Any]:
    """The fields of a run body that are used, with its reusable workflows' paths only."""
    slim = {k: run.get(k) for k in _RUN_FIELDS}
    slim["referenced_workflows"] = [
        {"path": ref["path"]}
        for ref in run.get("referenced_workflows") or []
        if isinstance(ref, dict) and isinstance(ref.get("path"), str)
    ]
    return slim


def _workflow_paths(run: dict[str, Any]) -> list[str]:
    """A run's workflow file and each reusable workflow it referenced (``owner/repo/path@ref``)."""
    paths = [run["path"]] if isinstance(run.get("path"), str) and run["path"] else []
    for ref in run.get("referenced_workflows") or []:
        if isinstance(ref, dict) and isinstance(ref.get("path"), str) and ref["path"]:
            paths.append(ref["path"])
    return paths
