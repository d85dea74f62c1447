"""GitLab (gitlab.com or self-managed): pipelines, deployments, commits and incidents.

Per project (resolved once from its path to its numeric id):

* ``/projects/:id/pipelines?updated_after=<cursor>&order_by=updated_at&sort=asc``:
  each newly finished pipeline is read once more (``/pipelines/:id``) for its
  ``started_at``, ``duration`` and ``queued_duration``, and becomes a
  :class:`PipelineRun`; a pipeline still running will be updated later, so the
  ``updated_at`` cursor brings it back;
* ``/projects/:id/deployments?updated_after=<cursor>&order_by=updated_at&sort=asc``:
  deployments per environment (``success`` / ``failed`` finish them);
* ``/projects/:id/repository/commits?ref_name=<default branch>&since=<cursor>``
  with ``parent_ids``, for lead time;
* ``/projects/:id/merge_requests?state=merged&target_branch=<default branch>&
  updated_after=<cursor>&order_by=updated_at``, and for each merge request first
  seen merged, once, ``/merge_requests/:iid/commits``: the commits a squash
  replaced (lead time counts from them) and those the ``since``-bounded history
  missed (a branch committed before the cursor);
* ``/projects/:id/repository/compare?from=<previous>&to=<deployed>`` for a new
  production deployment of a commit the default branch's history does not hold
  (a hotfix branch);
* ``/projects/:id/issues?issue_type=incident`` and ``?labels=<incident_label>``:
  incidents, linked to a deployment by a root-cause commit in their description
  (``delivery.incident_root_cause``).

Offset pages follow ``X-Next-Page``; the group project list uses keyset
pagination (``pagination=keyset&order_by=id``, ``Link rel="next"``). Each
request sends ``If-None-Match`` with the ETag of the same URL's last answer;
the ``RateLimit-*`` headers feed the host's token bucket and the budget metric.
Auth is the ``PRIVATE-TOKEN`` header; a ``401`` stops the source until restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from exporter.core.clock import utc_datetime
from exporter.core.errors import MalformedResponse
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext
from exporter.domains.catalog.records import TemplateUse
from exporter.domains.delivery import store as store
from exporter.domains.delivery.records import (
    Commit,
    Deployment,
    Incident,
    MergeRequest,
    PipelineRun,
)
from exporter.domains.delivery.settings import DeliveryConfig, GitLabSourceConfig
from exporter.domains.delivery.sources.common import (
    CicdSource,
    body_of,
    dump_state,
    load_state,
    malformed,
    off_branch_deployments,
    parse_time,
    parse_time_or_none,
    repo_mapper,
    with_repo,
)

PER_PAGE = 100
PIPELINE_FINISHED = {
    "success": "success",
    "failed": "failure",
    "canceled": "cancelled",
    "skipped": "skipped",
}
DEPLOY_FINISHED = {"success": "success", "failed": "failure"}
# Deployments that never ran: neither the poll nor a webhook records them.
DEPLOY_SKIPPED = ("canceled", "skipped", "blocked")


def _iso(t: float) -> str:
    return utc_datetime(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _updated_since(since: str, **extra: Any) -> dict[str, Any]:
    """List parameters for what changed since the cursor, oldest change first."""
    return {
        "updated_after": since,
        "order_by": "updated_at",
        "sort": "asc",
        "per_page": PER_PAGE,
        **extra,
    }


class GitLabSource(CicdSource):
    """Reads the catalog's GitLab projects; see the module docstring."""

    kind = "gitlab"
    settings_model = GitLabSourceConfig
    produces = (PipelineRun, Deployment, Commit, MergeRequest, Incident, TemplateUse)
    tags = frozenset({"template:include"})

    def __init__(self, config: ConfigBase, settings: GitLabSourceConfig) -> None:
        super().__init__(config, settings, concurrency=settings.concurrency)
        self.gl = settings

    @property
    def active(self) -> bool:
        return bool(self.explicit or self.gl.groups)

    def client_options(self) -> dict[str, Any]:
        headers: dict[str, str] = {}
        if self.gl.token is not None:
            headers["PRIVATE-TOKEN"] = self.gl.token.get_secret_value()
        return {
            "base_url": self.gl.base_url.rstrip("/") + "/api/v4",
            "headers": headers,
            "rate": self.gl.requests_per_second,
            "reserve": self.gl.rate_limit_reserve,
            "max_connections": self.gl.concurrency,
        }

    async def _pages(
        self, ctx: PollContext, url: str, params: dict[str, Any], etag: str | None
    ) -> tuple[list[Any], str | None]:
        """Every item of an offset-paginated list (following ``X-Next-Page``), and the
        first page's ETag; ([], etag) when the first page is unchanged."""
        response = await self.get_if_changed(ctx, url, etag, params)
        if response.status_code == 304:
            return [], etag
        first_etag = response.headers.get("ETag")
        items: list[Any] = []
        bound = self.page_bound(f"GET {url}")
        while True:
            body = body_of(response)
            if not isinstance(body, list):
                raise MalformedResponse(f"expected a JSON list from {url}")
            items.extend(body)
            next_page = response.headers.get("X-Next-Page", "").strip()
            if not next_page:
                return items, first_etag
            bound.more(body)
            response = await self.get(ctx, url, {**params, "page": next_page})

    async def units(self, ctx: PollContext) -> dict[str, str]:
        projects = dict(self.explicit)
        service_of = repo_mapper(ctx, self.config, "gitlab")
        for group in self.gl.groups:
            url: str | None = f"/groups/{quote(group.name, safe='')}/projects"
            params: dict[str, Any] | None = {
                "include_subgroups": "true",
                "archived": "false",
                "pagination": "keyset",
                "order_by": "id",
                "sort": "asc",
                "per_page": PER_PAGE,
            }
            bound = self.page_bound(f"GET /groups/{group.name}/projects")
            while url:
                response = await self.get(ctx, url, params)
                body = body_of(response)
                try:
                    for item in body:
                        path = str(item["path_with_namespace"])
                        if item.get("archived") or not group.selects(str(item["path"])):
                            continue
                        service = service_of(path)
                        if service is not None:
                            projects.setdefault(path, service)
                except (KeyError, TypeError) as exc:
                    raise malformed("group projects", exc) from None
                url, params = response.links.get("next", {}).get("url"), None
                if url:
                    bound.more(body)
        return projects

    async def _template_uses(
        self,
        ctx: PollContext,
        path: str,
        pid: int,
        service: str,
        state: dict[str, Any],
        head: str | None,
        records: list[Any],
    ) -> list[TemplateUse]:
        """The CI includes of the default branch's configuration, used by the project's latest
        pipeline: a :class:`TemplateUse` per include, at that pipeline's finish.

        ``GET /projects/:id/ci/lint`` (at the default branch's head) is called only when the head
        moved since the includes were last read, or they never were; the includes and the head
        they were read at are kept in the project's state, so a restart reads nothing again.
        403 (no access to the CI configuration) and 404 (an empty repository) leave them unknown.
        """
        fresh = "includes_head" not in state or (
            head is not None and head != state["includes_head"]
        )
        if fresh:
            response = await self.get(
                ctx,
                f"/projects/{pid}/ci/lint",
                # The head the includes are kept for. A GitLab that predates the parameter
                # (it only knew `sha`) ignores it and lints the default branch's head, the
                # same one unless the branch moved in between.
                {"content_ref": head} if head else None,
                ok=(200, 403, 404),
            )
            if response.status_code == 200:
                state["includes"] = include_refs(body_of(response))
            else:
                ctx.log.info(
                    "gitlab project %s: CI lint answered %s; its includes stay unknown",
                    path,
                    response.status_code,
                )
            state["includes_head"] = head or state.get("includes_head") or ""
        includes = [str(i) for i in state.get("includes") or []]
        finished = [r.finished_at for r in records if isinstance(r, PipelineRun)]
        if fresh:
            # Includes read for the first time (or anew) also hold for the last pipeline stored.
            last = store.last_run_finished(ctx.store, f"{self.kind}/{path}/")
            if last is not None:
                finished.append(last)
        if not includes or not finished:
            return []
        at = max(finished)
        return [TemplateUse(self.kind, service, "include", ref, at) for ref in includes]

    async def _merge_requests(
        self,
        ctx: PollContext,
        path: str,
        service: str,
        state: dict[str, Any],
        etags: dict[str, str],
        start_iso: str,
        records: list[Any],
    ) -> None:
        """Merge requests merged into the default branch, by ``updated_at`` cursor; the
        commits of each one are read once, when it is first seen merged."""
        pid = state["id"]
        since = str(state.get("merge_requests_after") or start_iso)
        params = _updated_since(since, state="merged", target_branch=state.get("branch", "main"))
        items, etag = await self._pages(
            ctx, f"/projects/{pid}/merge_requests", params, etags.get("merge_requests")
        )
        known = store.known_merge_requests(ctx.store, self.kind, f"{path}!")
        newest = since
        try:
            for item in items:
                newest = max(newest, str(item["updated_at"]), key=parse_time)
                mr_id = f"{path}!{int(item['iid'])}"
                merged_at = parse_time_or_none(item.get("merged_at"))
                if merged_at is None or f"{self.kind}/{mr_id}" in known:
                    continue
                commits, _ = await self._pages(
                    ctx,
                    f"/projects/{pid}/merge_requests/{int(item['iid'])}/commits",
                    {"per_page": PER_PAGE},
                    None,
                )
                for c in commits:
                    records.append(
                        Commit(
                            service=service,
                            sha=str(c["id"]),
                            authored_at=parse_time(c["authored_date"]),
                            committed_at=parse_time(c["committed_date"]),
                            parents=tuple(str(p) for p in c.get("parent_ids") or ()),
                        )
                    )
                records.append(
                    MergeRequest(
                        source=self.kind,
                        service=service,
                        mr_id=mr_id,
                        merged_at=merged_at,
                        sha=str(item["sha"]),
                        merge_commit_sha=item.get("merge_commit_sha") or None,
                        squash_commit_sha=item.get("squash_commit_sha") or None,
                        squash=bool(item.get("squash")),
                        commits=tuple(str(c["id"]) for c in commits),
                    )
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed("merge requests", exc) from None
        if etag:
            etags["merge_requests"] = etag
        state["merge_requests_after"] = newest

    async def _off_branch_commits(
        self, ctx: PollContext, path: str, pid: int, service: str, records: list[Any]
    ) -> list[Commit]:
        """Commits of new production deployments made off the default branch (a hotfix),
        through ``compare?from=<previous production sha>&to=<deployed sha>`` (merge-base
        semantics, as ``from...to``). A compare that timed out is not trusted: its
        deployment keeps no lead time rather than a partial one."""
        known: set[str] = set()
        out: list[Commit] = []
        for dep, base in off_branch_deployments(ctx, service, records, known):
            url = f"/projects/{pid}/repository/compare"
            body = await self.get_json_or_none(ctx, url, {"from": base, "to": dep.sha})
            if body is None:
                continue
            try:
                if body.get("compare_timeout"):
                    ctx.log.info(
                        "gitlab project %s: compare %s...%s timed out; deployment %s gets no "
                        "lead time",
                        path,
                        base[:12],
                        dep.sha[:12],
                        dep.deploy_id,
                    )
                    continue
                for item in body["commits"]:
                    sha = str(item["id"])
                    if sha in known:
                        continue
                    known.add(sha)
                    out.append(
                        Commit(
                            service=service,
                            sha=sha,
                            authored_at=parse_time(item["authored_date"]),
                            committed_at=parse_time(item["committed_date"]),
                            parents=tuple(str(p) for p in item["parent_ids"]),
                        )
                    )
            except (KeyError, TypeError, AttributeError) as exc:
                raise malformed("compare", exc) from None
        return out

    async def sync_unit(self, ctx: PollContext, path: str, service: str) -> None:
        backfill_start = ctx.now() - self.rules.backfill_days * 86400.0
        cursor = f"{path}:state"
        state = load_state(ctx, cursor)
        await self._project(ctx, path, state)
        u = _Unit(ctx, path, service, state["id"], state, dict(state.get("etags", {})))
        u.start_iso = _iso(backfill_start)
        await self._pipelines(u)
        await self._deployments(u)
        head = await self._commits(u)
        u.records.extend(
            await self._template_uses(ctx, path, u.pid, service, state, head, u.records)
        )
        await self._merge_requests(ctx, path, service, state, u.etags, u.start_iso, u.records)
        await self._incidents(u)
        state["etags"] = u.etags
        u.records.extend(await self._off_branch_commits(ctx, path, u.pid, service, u.records))
        await ctx.commit(with_repo(u.records, self.kind, path), {cursor: dump_state(state)})

    async def _project(self, ctx: PollContext, path: str, state: dict[str, Any]) -> None:
        """The project's id and default branch, read once and kept in the unit's state."""
        if "id" in state:
            return
        response = await self.get(ctx, f"/projects/{quote(path, safe='')}")
        try:
            info = body_of(response)
            state["id"] = int(info["id"])
            state["branch"] = str(info.get("default_branch") or "main")
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed("project", exc) from None

    async def _listing(self, u: _Unit, what: str, params: dict[str, Any]) -> list[Any]:
        """All pages of ``/projects/:id/<what>`` (conditional on the stored ETag), keeping
        the new ETag under ``what``'s last path segment."""
        key = what.rsplit("/", 1)[-1]
        items, etag = await self._pages(
            u.ctx, f"/projects/{u.pid}/{what}", params, u.etags.get(key)
        )
        if etag:
            u.etags[key] = etag
        return items

    async def _pipelines(self, u: _Unit) -> None:
        """Finished pipelines updated since the last poll, each read in detail once."""
        since = str(u.state.get("pipelines_after") or u.start_iso)
        items = await self._listing(u, "pipelines", _updated_since(since))
        newest = since
        known = store.run_keys(u.ctx.store, f"{self.kind}/{u.path}/")
        try:
            for item in items:
                newest = max(newest, str(item["updated_at"]), key=parse_time)
                result = PIPELINE_FINISHED.get(str(item["status"]))
                if result is None or f"{self.kind}/{u.path}/{item['id']}" in known:
                    continue
                detail = body_of(await self.get(u.ctx, f"/projects/{u.pid}/pipelines/{item['id']}"))
                u.records.append(self._run(u, item["id"], detail, result))
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed("pipelines", exc) from None
        u.state["pipelines_after"] = newest

    def _run(self, u: _Unit, run_id: Any, detail: dict[str, Any], result: str) -> PipelineRun:
        return pipeline_run(u.path, u.service, run_id, detail, result)

    async def _deployments(self, u: _Unit) -> None:
        """Deployments updated since the last poll (canceled, skipped and blocked ones skipped)."""
        since = str(u.state.get("deployments_after") or u.start_iso)
        items = await self._listing(u, "deployments", _updated_since(since))
        newest = since
        try:
            for item in items:
                newest = max(newest, str(item["updated_at"]), key=parse_time)
                status = str(item["status"])
                if status not in DEPLOY_SKIPPED:
                    u.records.append(self._deployment(u, item, status))
        except (KeyError, TypeError) as exc:
            raise malformed("deployments", exc) from None
        u.state["deployments_after"] = newest

    def _deployment(self, u: _Unit, item: dict[str, Any], status: str) -> Deployment:
        done_at: float | None = None
        if status in DEPLOY_FINISHED:
            deployable = item.get("deployable") or {}
            done_at = (
                parse_time_or_none(item.get("finished_at"))
                or parse_time_or_none(deployable.get("finished_at"))
                or parse_time(item["updated_at"])
            )
        return deployment_record(
            self.rules,
            u.path,
            u.service,
            deployment_id=item["id"],
            environment=str(item["environment"]["name"]),
            sha=str(item["sha"]),
            status=status,
            created_at=parse_time(item["created_at"]),
            finished_at=done_at,
        )

    async def _commits(self, u: _Unit) -> str | None:
        """Commits of the default branch since the last poll; the newest one's SHA, if any."""
        since = str(u.state.get("commits_since") or u.start_iso)
        params = {"ref_name": u.state.get("branch", "main"), "since": since, "per_page": PER_PAGE}
        items = await self._listing(u, "repository/commits", params)
        newest_t = parse_time(since)
        head: tuple[float, str] | None = None
        try:
            for item in items:
                committed = parse_time(item["committed_date"])
                newest_t = max(newest_t, committed)
                head = max(head or (committed, ""), (committed, str(item["id"])))
                u.records.append(
                    Commit(
                        service=u.service,
                        sha=str(item["id"]),
                        authored_at=parse_time(item["authored_date"]),
                        committed_at=committed,
                        parents=tuple(str(p) for p in item["parent_ids"]),
                    )
                )
        except (KeyError, TypeError) as exc:
            raise malformed("commits", exc) from None
        # An hour of overlap absorbs clock skew between committers; re-reads dedupe.
        u.state["commits_since"] = _iso(max(parse_time(since), newest_t - 3600.0))
        return head and head[1]

    async def _incidents(self, u: _Unit) -> None:
        """Incidents: issues of type incident, and issues with the incident label."""
        since = str(u.state.get("incidents_after") or u.start_iso)
        seen: dict[int, Any] = {}
        newest = since
        for key, extra in (
            ("incidents", {"issue_type": "incident"}),
            ("incident_label", {"labels": self.gl.incident_label}),
        ):
            params = {
                "updated_after": since,
                "order_by": "updated_at",
                "sort": "asc",
                "scope": "all",
                "per_page": PER_PAGE,
                **extra,
            }
            items, etag = await self._pages(
                u.ctx, f"/projects/{u.pid}/issues", params, u.etags.get(key)
            )
            if etag:
                u.etags[key] = etag
            for item in items:
                try:
                    seen[int(item["iid"])] = item
                    newest = max(newest, str(item["updated_at"]), key=parse_time)
                except (KeyError, TypeError, ValueError) as exc:
                    raise malformed("issues", exc) from None
        try:
            for iid, item in sorted(seen.items()):
                closed = item.get("state") == "closed"
                u.records.append(
                    Incident(
                        source=self.kind,
                        service=u.service,
                        incident_id=f"{u.path}#{iid}",
                        opened_at=parse_time(item["created_at"]),
                        resolved_at=parse_time(item["closed_at"]) if closed else None,
                        deployment_sha=self.rules.root_cause_sha(item.get("description")),
                    )
                )
        except (KeyError, TypeError) as exc:
            raise malformed("issues", exc) from None
        u.state["incidents_after"] = newest


# --- what a project's JSON becomes: shared with the webhook intake, so that an event and
# the poll of the same object yield the same record (the same key) ---------------------


def pipeline_run(
    path: str, service: str, run_id: Any, detail: dict[str, Any], result: str
) -> PipelineRun:
    """A finished pipeline (``GET /pipelines/:id``, or a webhook's ``object_attributes``
    with its times in ISO 8601) as a run: started at ``started_at``, else after its
    ``queued_duration``; finished at ``finished_at``, else at its last update."""
    started = parse_time_or_none(detail.get("started_at"))
    finished = parse_time_or_none(detail.get("finished_at")) or parse_time(detail["updated_at"])
    created = parse_time(detail["created_at"])
    queued = detail.get("queued_duration")
    if started is None and queued is not None:
        started = created + float(queued)
    return PipelineRun(
        source=GitLabSource.kind,
        service=service,
        pipeline=str(detail.get("name") or "pipeline")[:100],
        run_id=f"{path}/{run_id}",
        result=result,
        created_at=created,
        started_at=started,
        finished_at=finished,
    )


def deployment_record(
    rules: DeliveryConfig,
    path: str,
    service: str,
    *,
    deployment_id: Any,
    environment: str,
    sha: str,
    status: str,
    created_at: float,
    finished_at: float | None,
) -> Deployment:
    """A deployment of ``status`` (GitLab's: ``success`` and ``failed`` finish it, the
    others keep it pending) as a record keyed by the project path and deployment id."""
    result = DEPLOY_FINISHED.get(status, "pending")
    return Deployment(
        source=GitLabSource.kind,
        service=service,
        environment=rules.environment_label(environment),
        production=rules.is_production(environment),
        deploy_id=f"{path}/{deployment_id}",
        sha=sha,
        status=result,
        created_at=created_at,
        finished_at=finished_at if result != "pending" else None,
    )


@dataclass
class _Unit:
    """One project's poll: what every reader of it shares."""

    ctx: PollContext
    path: str
    service: str
    pid: int
    state: dict[str, Any]
    etags: dict[str, str]
    records: list[Any] = field(default_factory=list)
    start_iso: str = ""


def include_refs(body: Any) -> list[str]:
    """What each include of a CI lint answer names, sorted: ``project/path`` for a file of
    another project (``type: file``, ``extra.project``), the ``location`` otherwise (a template
    name, a component ``host/path@version``, a remote URL, a local path)."""
    out: set[str] = set()
    try:
        for item in body.get("includes") or []:
            location = str(item.get("location") or "").lstrip("/")
            if not location:
                continue
            project = (
                (item.get("extra") or {}).get("project") if item.get("type") == "file" else None
            )
            out.add(f"{project}/{location}" if project else location)
    except (AttributeError, TypeError) as exc:
        raise malformed("CI lint", exc) from None
    return sorted(out)
