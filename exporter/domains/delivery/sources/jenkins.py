"""Jenkins: builds of the catalog's jobs (and of jobs found in configured folders).

Each job is read through its JSON API with a ``tree=`` that names only the
fields used, newest builds first in ranges of 100
(``builds[number,result,building,timestamp,duration,actions[...],changeSets[...]]{0,100}``),
never the whole tree. Per job a cursor keeps the lowest build number not yet
finished, so a poll reads back only to it.

* Every finished build is a :class:`PipelineRun` (``SUCCESS`` success;
  ``FAILURE``, ``UNSTABLE`` failure; ``ABORTED`` cancelled; ``NOT_BUILT``
  skipped): ``timestamp`` is when it started, ``duration`` how long it ran, and
  the metrics plugin's ``TimeInQueueAction.queuingDurationMillis`` how long it
  queued before.
* Builds of jobs matching ``deploy_jobs`` are deployments to
  ``deploy_environment``: ``SUCCESS`` succeeded, ``FAILURE``/``UNSTABLE``
  failed; the deployed commit is the git plugin's ``lastBuiltRevision.SHA1``.
* ``changeSets`` items become commits, chained in order, the first one's parent
  being the previous build's revision, so lead time walks them like any history.

Auth is HTTP basic with a user and an API token.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from exporter.core.errors import MalformedResponse
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext
from exporter.domains.delivery.records import Commit, Deployment, PipelineRun
from exporter.domains.delivery.settings import DeliverySection, JenkinsSourceConfig
from exporter.domains.delivery.sources.common import (
    CicdSource,
    body_of,
    dump_state,
    load_state,
    malformed,
    with_repo,
)

RANGE = 100
# The parent of the first commit of a build whose predecessor we have not seen.
UNKNOWN_PARENT = "unknown"
TREE = (
    "builds[number,result,building,timestamp,duration,"
    "actions[lastBuiltRevision[SHA1],queuingDurationMillis],"
    "changeSets[items[commitId,timestamp]]]"
)
_RESULTS = {
    "SUCCESS": "success",
    "FAILURE": "failure",
    "UNSTABLE": "failure",
    "ABORTED": "cancelled",
    "NOT_BUILT": "skipped",
}


def job_url(full_name: str) -> str:
    return "".join(f"/job/{part}" for part in full_name.split("/"))


class JenkinsSource(CicdSource):
    """Reads the catalog's Jenkins jobs; see the module docstring."""

    kind = "jenkins"
    settings_model = JenkinsSourceConfig
    produces = (PipelineRun, Deployment, Commit)

    def __init__(self, config: ConfigBase, settings: JenkinsSourceConfig) -> None:
        super().__init__(config, settings, concurrency=settings.concurrency)
        self.jk = settings

    @property
    def active(self) -> bool:
        return bool(self.explicit or self.jk.folders)

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "base_url": self.jk.base_url.rstrip("/"),
            "rate": self.jk.requests_per_second,
            "max_connections": self.jk.concurrency,
        }
        if self.jk.username is not None and self.jk.api_token is not None:
            options["auth"] = (self.jk.username, self.jk.api_token.get_secret_value())
        return options

    async def _tree(self, ctx: PollContext, url: str, tree: str) -> Any:
        """The JSON of ``url`` with only the ``tree=`` fields: never the whole tree."""
        return body_of(await self.get(ctx, url, {"tree": tree}))

    async def units(self, ctx: PollContext) -> dict[str, str]:
        """Job full name -> service: the catalog's jobs and those found in the folders."""
        jobs = dict(self.explicit)
        for folder in self.jk.folders:
            await self._walk(ctx, folder, jobs, depth=0)
        return jobs

    async def _walk(self, ctx: PollContext, folder: str, jobs: dict[str, str], depth: int) -> None:
        body = await self._tree(ctx, f"{job_url(folder)}/api/json", "jobs[name,_class]")
        try:
            children = [(str(j["name"]), str(j.get("_class", ""))) for j in body["jobs"]]
        except (KeyError, TypeError) as exc:
            raise malformed("folder", exc) from None
        for name, cls in children:
            full = f"{folder}/{name}"
            if cls.endswith("Folder") and depth < 3:
                await self._walk(ctx, full, jobs, depth + 1)
                continue
            service = DeliverySection.of(self.config).service_of_repo("jenkins", full)
            if service is not None:
                jobs.setdefault(full, service)

    async def sync_unit(self, ctx: PollContext, job: str, service: str) -> None:
        cursor = f"{job}:builds"
        state = load_state(ctx, cursor)
        next_number = int(state.get("next", 0))
        backfill_start = ctx.now() - self.rules.backfill_days * 86400.0
        builds: list[dict[str, Any]] = []
        start = 0
        bound = self.page_bound(f"job {job} builds")
        while True:
            body = await self._tree(
                ctx, f"{job_url(job)}/api/json", f"{TREE}{{{start},{start + RANGE}}}"
            )
            try:
                page = list(body["builds"])
            except (KeyError, TypeError) as exc:
                raise malformed("job", exc) from None
            builds.extend(page)
            oldest = page[-1] if page else None
            if (
                len(page) < RANGE
                or oldest is None
                or int(oldest["number"]) <= next_number
                or float(oldest["timestamp"]) / 1000 < backfill_start
            ):
                break
            bound.more(page)
            start += RANGE
        records: list[Any] = []
        deploy = any(fnmatch.fnmatchcase(job, p) for p in self.jk.deploy_jobs)
        env = self.jk.deploy_environment
        running: list[int] = []
        newest = next_number - 1
        try:
            ordered = sorted(builds, key=lambda b: int(b["number"]))
            previous_sha: str | None = None
            for build in ordered:
                number = int(build["number"])
                sha = _revision(build)
                if number < next_number or float(build["timestamp"]) / 1000 < backfill_start:
                    previous_sha = sha or previous_sha
                    continue
                newest = max(newest, number)
                if build.get("building") or build.get("result") is None:
                    running.append(number)
                    continue
                records.extend(self._commits(service, build, previous_sha))
                previous_sha = sha or previous_sha
                result = _RESULTS.get(str(build["result"]), "other")
                started = float(build["timestamp"]) / 1000
                queued = _queued(build)
                records.append(
                    PipelineRun(
                        source=self.kind,
                        service=service,
                        pipeline=job.rsplit("/", 1)[-1][:100],
                        run_id=f"{job}/{number}",
                        result=result,
                        created_at=started - queued if queued is not None else started,
                        started_at=started,
                        finished_at=started + float(build["duration"]) / 1000,
                    )
                )
                if deploy and result in ("success", "failure") and sha:
                    records.append(
                        Deployment(
                            source=self.kind,
                            service=service,
                            environment=self.rules.environment_label(env),
                            production=self.rules.is_production(env),
                            deploy_id=f"{job}/{number}",
                            sha=sha,
                            status=result,
                            created_at=started,
                            finished_at=started + float(build["duration"]) / 1000,
                        )
                    )
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed("build", exc) from None
        state["next"] = min(running) if running else newest + 1
        await ctx.commit(with_repo(records, self.kind, job), {cursor: dump_state(state)})

    def _commits(
        self, service: str, build: dict[str, Any], previous_sha: str | None
    ) -> list[Commit]:
        out: list[Commit] = []
        parent = previous_sha or UNKNOWN_PARENT
        for change_set in build.get("changeSets") or []:
            for item in change_set.get("items") or []:
                sha = str(item["commitId"])
                t = float(item["timestamp"]) / 1000
                out.append(Commit(service, sha, t, t, (parent,)))
                parent = sha
        return out


def _revision(build: dict[str, Any]) -> str | None:
    for action in build.get("actions") or []:
        if isinstance(action, dict) and isinstance(action.get("lastBuiltRevision"), dict):
            sha = action["lastBuiltRevision"].get("SHA1")
            if sha:
                return str(sha)
    return None


def _queued(build: dict[str, Any]) -> float | None:
    for action in build.get("actions") or []:
        if isinstance(action, dict) and "queuingDurationMillis" in action:
            try:
                return float(action["queuingDurationMillis"]) / 1000
            except (TypeError, ValueError):
                raise MalformedResponse("queuingDurationMillis is not a number") from None
    return None
