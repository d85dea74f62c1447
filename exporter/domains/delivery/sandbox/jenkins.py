"""A simulated Jenkins JSON API serving the delivery scenario's jobs.

Jobs live under folders (``/job/identity/job/accounts-deploy/``); ``api/json``
honours the ``tree=`` parameter the way Jenkins does, including the ``{M,N}``
range on ``builds`` (newest first), and answers 400 without it on a job, so a
client that would download the whole tree is caught. Builds carry ``number``,
``result`` (``SUCCESS``, ``FAILURE``, ``UNSTABLE``, ``ABORTED``, or ``null``
while ``building``), ``timestamp`` and ``duration`` in milliseconds, the git
plugin's ``BuildData`` action (``lastBuiltRevision.SHA1``), the metrics
plugin's ``TimeInQueueAction`` (``queuingDurationMillis``) and ``changeSets``.
Auth is HTTP basic (user and API token); a bad one is ``401``.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.fakes import FaultPlan
from exporter.core.sandbox.scenario import Scenario
from exporter.domains.delivery.sandbox.data import DeliveryScenario, FakeRepo, FakeRun

USER = "exporter"
API_TOKEN = "11sandboxjenkinstoken00000000000"


def parse_tree(tree: str) -> dict[str, Any]:
    """``a,b[c,d{0,5}]{0,10}`` -> {"a": {}, "b": {"c": {}, ...}}; ranges under "__range__"."""
    pos = 0

    def parse() -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tree):
            m = re.match(r"[\w$*]+", tree[pos:])
            if not m:
                break
            name = m.group(0)
            pos += len(name)
            sub: dict[str, Any] = {}
            if pos < len(tree) and tree[pos] == "[":
                pos += 1
                sub = parse()
                pos += 1  # ]
            rng = re.match(r"\{(\d*),?(\d*)\}", tree[pos:])
            if rng:
                pos += len(rng.group(0))
                sub["__range__"] = (
                    int(rng.group(1) or 0),
                    int(rng.group(2)) if rng.group(2) else None,
                )
            out[name] = sub
            if pos < len(tree) and tree[pos] == ",":
                pos += 1
            elif pos < len(tree) and tree[pos] == "]":
                break
        return out

    return parse()


def prune(value: Any, tree: dict[str, Any]) -> Any:
    """Keep only what ``tree`` names (what Jenkins' ``tree=`` does)."""
    if isinstance(value, list):
        rng = tree.get("__range__")
        items = value[rng[0] : rng[1]] if rng else value
        return [prune(v, tree) for v in items]
    if isinstance(value, dict):
        if not any(k != "__range__" for k in tree):
            return value
        out = {k: prune(v, tree[k]) for k, v in value.items() if k in tree}
        if "_class" in value:
            out["_class"] = value["_class"]
        return out
    return value


def build_json(job: FakeRepo, run: FakeRun, previous_sha: str | None, base: str) -> dict[str, Any]:
    building = run.conclusion is None
    changes = []
    if previous_sha != run.head_sha:
        shas = [c.sha for c in job.commits]
        end = shas.index(run.head_sha) + 1 if run.head_sha in shas else 0
        start = shas.index(previous_sha) + 1 if previous_sha in shas else 0
        changes = job.commits[start:end]
    return {
        "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
        "number": run.number,
        "url": f"{base}{run.number}/",
        "building": building,
        "result": None if building else run.conclusion,
        # Jenkins' build timestamp is when the build left the queue and started.
        "timestamp": int(run.started_at * 1000),
        "duration": 0 if building else int((run.updated_at - run.started_at) * 1000),
        "estimatedDuration": 200_000,
        "queueId": run.id,
        "actions": [
            {"_class": "hudson.model.CauseAction", "causes": [{"shortDescription": "push"}]},
            {
                "_class": "hudson.plugins.git.util.BuildData",
                "lastBuiltRevision": {
                    "SHA1": run.head_sha,
                    "branch": [{"SHA1": run.head_sha, "name": "origin/main"}],
                },
                "remoteUrls": [f"https://git.example.com/{job.full_name}.git"],
            },
            {
                "_class": "jenkins.metrics.impl.TimeInQueueAction",
                "queuingDurationMillis": int((run.started_at - run.created_at) * 1000),
                "buildingDurationMillis": int((run.updated_at - run.started_at) * 1000),
            },
        ],
        "changeSets": [
            {
                "_class": "hudson.plugins.git.GitChangeSetList",
                "kind": "git",
                "items": [
                    {
                        "_class": "hudson.plugins.git.GitChangeSet",
                        "commitId": c.sha,
                        "timestamp": int(c.committed_at * 1000),
                        "msg": c.message,
                        "authorEmail": "dev@example.com",
                    }
                    for c in changes
                ],
            }
        ]
        if changes
        else [],
    }


class JenkinsFake:
    def __init__(
        self,
        scenario: DeliveryScenario,
        user: str = USER,
        token: str = API_TOKEN,
        prefix: str = "",
    ) -> None:
        self.scenario = scenario
        self.credentials = base64.b64encode(f"{user}:{token}".encode()).decode()
        self.prefix = prefix
        self.plan = FaultPlan()
        self.app = self.plan.wrap(self._routes())

    def _routes(self) -> App:
        app = App()

        def job_path(raw: str) -> str:
            # "/job/a/job/b" -> "a/b"
            parts = [p for p in raw.split("/") if p]
            return "/".join(p for i, p in enumerate(parts) if i % 2 == 1)

        def handler(request: Request) -> Response:
            if request.headers.get("authorization") != f"Basic {self.credentials}":
                return Response.text(
                    "Unauthorized", 401, {"WWW-Authenticate": 'Basic realm="Jenkins"'}
                )
            raw = request.params["path"].rstrip("/")
            name = job_path(raw)
            tree_arg = request.arg("tree")
            host = request.headers.get("host", "jenkins.example.com")
            base = f"http://{host}{self.prefix}/{raw.strip('/')}/"
            with self.scenario.lock:
                job = self.scenario.jenkins.get(name)
                if job is not None:
                    if not tree_arg:
                        return Response.text("use tree= on jobs", 400)
                    runs = sorted(job.runs, key=lambda r: -r.number)
                    builds = []
                    for i, run in enumerate(runs):
                        prev = next((r for r in runs[i + 1 :] if r.conclusion is not None), None)
                        builds.append(build_json(job, run, prev.head_sha if prev else None, base))
                    body: dict[str, Any] = {
                        "_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob",
                        "name": name.rsplit("/", 1)[-1],
                        "fullName": name,
                        "url": base,
                        "builds": builds,
                    }
                else:
                    children = sorted(
                        {
                            n[len(name) + 1 :].split("/")[0]
                            for n in self.scenario.jenkins
                            if n.startswith(name + "/")
                        }
                    )
                    if not children:
                        return Response.text("Not Found", 404)
                    body = {
                        "_class": "com.cloudbees.hudson.plugins.folder.Folder",
                        "name": name.rsplit("/", 1)[-1],
                        "fullName": name,
                        "jobs": [
                            {
                                "_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob"
                                if f"{name}/{c}" in self.scenario.jenkins
                                else "com.cloudbees.hudson.plugins.folder.Folder",
                                "name": c,
                                "url": f"{base}job/{c}/",
                            }
                            for c in children
                        ],
                    }
            if tree_arg:
                body = prune(body, parse_tree(tree_arg))
            return Response.json(body, 200, {"X-Jenkins": "2.462.3"})

        app.route("GET", "/{path:path}/api/json")(handler)
        return app


def apps(scenario: Scenario) -> dict[str, App]:
    from exporter.domains.delivery.sandbox.data import delivery_of

    return {"/jenkins": JenkinsFake(delivery_of(scenario), prefix="/jenkins").app}


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Watch the simulated Jenkins folder; map its jobs to the catalog's services."""
    from exporter.domains.delivery.sandbox.data import delivery_of

    delivery = delivery_of(scenario)
    config["sources"]["jenkins"] = {
        "base_url": f"{base_url}/jenkins",
        "username": USER,
        "api_token": API_TOKEN,
        "interval": "10s",
        # The first poll is a backfill: let it finish rather than stop at the interval.
        "poll_timeout": "60s",
        "deploy_jobs": ["*-deploy"],
    }
    for svc in config["services"]:
        for name, job in delivery.jenkins.items():
            if job.service == svc["name"]:
                svc.setdefault("ci", []).append({"jenkins": name})
