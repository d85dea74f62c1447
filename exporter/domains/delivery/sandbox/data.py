"""The delivery half of the sandbox scenario: repos, commits, CI runs, deployments, incidents.

Every event is placed at a fixed number of hours before the scenario's
``anchor`` (its start), so the KPI values the exporter must report are known in
advance: :data:`EXPECTED` lists them, worked out by hand in the comments next to
each timeline. The simulated GitHub, GitLab and Jenkins APIs serve these
objects; tests and the benchmark can also build large synthetic orgs with
:func:`synthetic_org`.

Which upstream serves which service:

* checkout: GitHub ``acme/checkout``, Deployments API (production and staging);
* payments-api: GitHub ``acme/payments-api``, no deployments: its "Deploy" workflow is;
* recommendations: GitHub ``acme/recommendations``, new (root commit 12 days ago);
* search: GitLab ``discovery/search``, deployments per environment, merge requests (one
  squash-merged);
* accounts: Jenkins ``identity/accounts-deploy`` (deploys) and ``identity/accounts-ci``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

from exporter.core.sandbox.scenario import Scenario

H = 3600.0
D = 86400.0


def sha_of(*parts: object) -> str:
    return hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()


@dataclass
class FakeCommit:
    sha: str
    authored_at: float
    committed_at: float
    parents: list[str]
    message: str = "change"
    # Commits off the default branch (a hotfix branch) are not in its history listing.
    on_default_branch: bool = True


def ancestors(by_sha: dict[str, FakeCommit], sha: str) -> set[str]:
    """``sha`` and every commit of ``by_sha`` reachable from it through parents."""
    seen: set[str] = set()
    stack = [sha]
    while stack:
        s = stack.pop()
        if s in seen or s not in by_sha:
            continue
        seen.add(s)
        stack.extend(by_sha[s].parents)
    return seen


@dataclass
class FakeRun:
    """A CI run: a GitHub workflow run, a GitLab pipeline or a Jenkins build."""

    id: int
    name: str  # workflow / pipeline / job name
    head_sha: str
    branch: str
    status: str  # "completed" or "in_progress"
    conclusion: str | None  # success, failure, cancelled... (None while running)
    created_at: float
    started_at: float
    updated_at: float
    number: int = 1
    event: str = "push"
    # A re-run keeps the run's id and created_at; its attempt number grows.
    attempt: int = 1
    # Reusable workflows the run called (``owner/repo/path@ref``), GitHub only.
    referenced: tuple[str, ...] = ()


@dataclass
class FakeDeployment:
    id: int
    sha: str
    environment: str
    created_at: float
    # (status id, state, created_at), oldest first: queued/in_progress/success/failure/...
    statuses: list[tuple[int, str, float]] = field(default_factory=list)
    ref: str = "main"

    @property
    def updated_at(self) -> float:
        return max([self.created_at] + [s[2] for s in self.statuses])


@dataclass
class FakeIncident:
    number: int
    title: str
    created_at: float
    closed_at: float | None
    labels: list[str] = field(default_factory=lambda: ["incident"])
    # The issue body (GitHub) or description (GitLab); may name a root-cause commit.
    body: str | None = None

    @property
    def updated_at(self) -> float:
        return self.closed_at or self.created_at


@dataclass
class FakeMergeRequest:
    """A merged GitLab merge request: squashed into ``squash_commit_sha``, or its
    ``commits`` (oldest first) landed on the branch as they are."""

    iid: int
    source_branch: str
    created_at: float
    merged_at: float
    commits: list[FakeCommit]
    squash_commit_sha: str | None = None
    merge_commit_sha: str | None = None  # None: fast-forwarded (or squashed without one)

    @property
    def updated_at(self) -> float:
        return self.merged_at


@dataclass
class FakeRepo:
    """One repo (GitHub), project (GitLab) or job pair (Jenkins) of a service."""

    full_name: str
    id: int
    service: str
    commits: list[FakeCommit] = field(default_factory=list)  # oldest first
    runs: list[FakeRun] = field(default_factory=list)
    deployments: list[FakeDeployment] = field(default_factory=list)
    incidents: list[FakeIncident] = field(default_factory=list)
    merge_requests: list[FakeMergeRequest] = field(default_factory=list)
    default_branch: str = "main"
    created_at: float = 0.0
    # Bumped on every change: the fakes derive their ETags from it.
    version: int = 1

    def touch(self) -> None:
        self.version += 1


@dataclass
class DeliveryScenario:
    """Everything the simulated CI/CD upstreams serve."""

    anchor: float
    github: dict[str, FakeRepo] = field(default_factory=dict)
    gitlab: dict[str, FakeRepo] = field(default_factory=dict)
    jenkins: dict[str, FakeRepo] = field(default_factory=dict)
    org: str = "acme"
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def at(self, hours_before: float) -> float:
        return self.anchor - hours_before * H


class _Builder:
    """Helpers that lay out one repo's timeline in hours before the anchor."""

    def __init__(self, scenario: DeliveryScenario, repo: FakeRepo) -> None:
        self.s = scenario
        self.repo = repo
        self.shas: dict[str, str] = {}
        self._ids = repo.id * 1000

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def commits(self, *specs: tuple[str, float], root: bool = False) -> None:
        """A linear history; the first commit's parent is unknown unless ``root``."""
        parent = [] if root else [sha_of(self.repo.full_name, "before-history")]
        for name, hours in specs:
            sha = sha_of(self.repo.full_name, name)
            self.shas[name] = sha
            t = self.s.at(hours)
            self.repo.commits.append(FakeCommit(sha, t - 600, t, parent, f"{name}: change"))
            parent = [sha]

    def merged(self, *names: str) -> None:
        """A merge request whose commits ``names`` (of the history) landed as they are."""
        commits = [c for c in self.repo.commits if c.sha in {self.shas[n] for n in names}]
        self._merge_request(commits, commits[-1].committed_at)

    def squash_merged(self, squash: str, *originals: tuple[str, float]) -> None:
        """A merge request squashed into ``squash`` (of the history): its own commits
        ``originals`` (name, hours) branched from the squash commit's parent and left
        the branch with it."""
        squash_commit = next(c for c in self.repo.commits if c.sha == self.shas[squash])
        parent = list(squash_commit.parents)
        commits = []
        for name, hours in originals:
            sha = sha_of(self.repo.full_name, name)
            self.shas[name] = sha
            t = self.s.at(hours)
            commits.append(FakeCommit(sha, t - 600, t, parent, f"{name}: work", False))
            parent = [sha]
        self._merge_request(commits, squash_commit.committed_at, squash_commit.sha)

    def _merge_request(
        self, commits: list[FakeCommit], merged_at: float, squash_sha: str | None = None
    ) -> None:
        iid = len(self.repo.merge_requests) + 1
        self.repo.merge_requests.append(
            FakeMergeRequest(
                iid, f"feature-{iid}", commits[0].authored_at, merged_at, commits, squash_sha
            )
        )

    def deploy(
        self, name: str, state: str, finished_hours: float, environment: str = "production"
    ) -> None:
        finished = self.s.at(finished_hours)
        created = finished - 600
        dep = FakeDeployment(self.next_id(), self.shas[name], environment, created)
        dep.statuses.append((self.next_id(), "in_progress", created + 60))
        if state != "in_progress":
            dep.statuses.append((self.next_id(), state, finished))
        self.repo.deployments.append(dep)

    def run(
        self,
        workflow: str,
        name: str,
        conclusion: str | None,
        finished_hours: float,
        duration: float = 300.0,
        queue: float = 20.0,
    ) -> None:
        finished = self.s.at(finished_hours)
        started = finished - duration
        created = started - queue
        rid = self.next_id()
        self.repo.runs.append(
            FakeRun(
                id=rid,
                name=workflow,
                head_sha=self.shas[name],
                branch="main",
                status="completed" if conclusion else "in_progress",
                conclusion=conclusion,
                created_at=created,
                started_at=started,
                updated_at=finished if conclusion else started,
                number=len(self.repo.runs) + 1,
            )
        )

    def incident(
        self,
        opened_hours: float,
        resolved_hours: float | None,
        root_cause: tuple[str, int] | None = None,
    ) -> None:
        """An incident; ``root_cause`` (commit name, digits) writes "root cause: <sha
        prefix>" in its body, the way an on-call engineer names the change at fault."""
        body = None
        if root_cause is not None:
            name, digits = root_cause
            body = f"Errors after a release.\n\nroot cause: {self.shas[name][:digits]}\n"
        self.repo.incidents.append(
            FakeIncident(
                number=len(self.repo.incidents) + 1,
                title="Elevated errors",
                created_at=self.s.at(opened_hours),
                closed_at=None if resolved_hours is None else self.s.at(resolved_hours),
                body=body,
            )
        )


def build(anchor: float) -> DeliveryScenario:
    """The seeded delivery scenario (times are fixed offsets from ``anchor``)."""
    s = DeliveryScenario(anchor=anchor)
    _checkout(s)
    _payments_api(s)
    _recommendations(s)
    _search(s)
    _accounts(s)
    return s


def _checkout(s: DeliveryScenario) -> None:
    """Checkout (GitHub, Deployments API)."""
    repo = s.github["acme/checkout"] = FakeRepo("acme/checkout", 101, "checkout")
    b = _Builder(s, repo)
    b.commits(("c1", 200), ("c2", 100), ("c3", 60), ("c4", 50), ("c5", 30), ("c6", 10))
    b.deploy("c1", "success", 190)  # first known: no lower bound, no lead time
    b.deploy("c3", "success", 48)  # ships c2 (52h), c3 (12h)
    b.deploy("c4", "failure", 40)  # failed
    b.deploy("c5", "success", 26)  # ships c4 (24h), c5 (4h)
    b.deploy("c5", "success", 20)  # redeploy of the same commit: ships nothing
    b.deploy("c6", "success", 4)  # ships c6 (6h)
    b.deploy("c6", "success", 5, environment="staging")
    b.deploy("c6", "in_progress", 1, environment="staging")  # not finished: not counted
    b.incident(25, 23)  # 1h after the c5 deploy at 26h: a failed change; restored in 2h
    b.incident(100, 99.5)  # no deploy within 2h before it: links nothing; 0.5h
    # 18h after the 48h deploy (outside the 2h window), but its body names c2 by a 7-digit
    # prefix: c2 shipped with the 48h deploy of c3, which becomes a failed change; 1h.
    b.incident(30, 29, root_cause=("c2", 7))
    for i, (concl, hours) in enumerate(
        [("success", 70), ("failure", 55), ("success", 45), ("success", 8)]
    ):
        b.run("CI", ("c3", "c4", "c5", "c6")[i], concl, hours, duration=300.0 + 60 * i)
    b.run("CI", "c6", None, 0.2)  # still running: not counted


def _payments_api(s: DeliveryScenario) -> None:
    """Payments-api (GitHub, no deployments: the "Deploy" workflow on main is production)."""
    repo = s.github["acme/payments-api"] = FakeRepo("acme/payments-api", 102, "payments-api")
    b = _Builder(s, repo)
    b.commits(("q1", 300), ("q2", 80), ("q3", 70), ("q4", 10))
    b.run("Deploy", "q1", "success", 250)  # first known deploy
    b.run("Deploy", "q3", "success", 60)  # ships q2 (20h), q3 (10h)
    b.run("Deploy", "q4", "failure", 8)  # failed
    b.run("Deploy", "q4", "success", 6)  # ships q4 (4h)
    b.run("CI", "q4", "success", 9, duration=120.0, queue=5.0)


def _recommendations(s: DeliveryScenario) -> None:
    """Recommendations (GitHub, new: its root commit is 12 days old)."""
    repo = s.github["acme/recommendations"] = FakeRepo(
        "acme/recommendations", 103, "recommendations"
    )
    repo.created_at = s.at(288)
    b = _Builder(s, repo)
    b.commits(("r1", 288), ("r2", 200), ("r3", 150), root=True)
    b.deploy("r2", "failure", 180)
    # First success: time to production 288h - 120h = 168h; it ships r1, r2 and r3 (the
    # history is whole down to the root r1), so each has a lead time.
    b.deploy("r3", "success", 120)
    b.run("CI", "r3", "success", 121, duration=600.0, queue=30.0)


def _search(s: DeliveryScenario) -> None:
    """Search (GitLab project discovery/search)."""
    repo = s.gitlab["discovery/search"] = FakeRepo("discovery/search", 201, "search")
    b = _Builder(s, repo)
    b.commits(("s1", 400), ("s2", 90), ("s3", 40), ("s4", 12))
    b.merged("s2", "s3")  # a merge request fast-forwarded: its commits are the history's
    # A merge request squashed into s4: its own commits f1 (30h) and f2 (20h) left the
    # branch; lead time counts from them, not from s4 (made when it was merged).
    b.squash_merged("s4", ("f1", 30), ("f2", 20))
    b.deploy("s1", "success", 300)  # first known
    b.deploy("s3", "success", 36)  # ships s2 (54h), s3 (4h)
    b.deploy("s4", "success", 3)  # ships s4 (9h)
    b.deploy("s4", "success", 2, environment="staging")
    # 2.5h after the 3h deploy of s4 (outside the 2h window), but its description names s4
    # (GitLab's 8-digit short id): that deploy is a failed change; restored in 15 min.
    b.incident(0.5, 0.25, root_cause=("s4", 8))
    b.run("build", "s3", "success", 37, duration=240.0, queue=12.0)
    b.run("build", "s4", "failed", 4, duration=180.0, queue=8.0)


def _accounts(s: DeliveryScenario) -> None:
    """Accounts (Jenkins: a deploy job and a CI job)."""
    repo = s.jenkins["identity/accounts-deploy"] = FakeRepo(
        "identity/accounts-deploy", 301, "accounts"
    )
    b = _Builder(s, repo)
    b.commits(("a1", 110), ("a2", 50), ("a3", 30))
    b.run("accounts-deploy", "a1", "SUCCESS", 100, duration=200.0, queue=10.0)
    b.run("accounts-deploy", "a3", "SUCCESS", 20, duration=200.0, queue=10.0)  # a2 30h, a3 10h
    b.run("accounts-deploy", "a3", None, 0.1)  # building: not counted
    ci = s.jenkins["identity/accounts-ci"] = FakeRepo("identity/accounts-ci", 302, "accounts")
    b2 = _Builder(s, ci)
    b2.shas = b.shas
    b2.run("accounts-ci", "a3", "FAILURE", 29, duration=100.0, queue=2.0)
    b2.run("accounts-ci", "a3", "SUCCESS", 28, duration=110.0, queue=3.0)


#: The KPI values the exporter must report for :func:`build` with the demo's delivery
#: rules (production environments "production", link window 2h, committed time), at any
#: render time within a few minutes after the anchor. Hours unless the name says otherwise.
EXPECTED: dict[str, dict[str, Any]] = {
    "checkout": {
        # successes finished at 190, 48, 26, 20, 4 hours ago; a failure at 40.
        "frequency": {"1d": 2.0, "7d": 4 / 7, "30d": 5 / 30},
        # lead times 52, 12, 24, 4, 6 h -> sorted 4 6 12 24 52: median 12, p90 24+0.6*28.
        "lead_time": {"n": 5, "0.5": 12.0, "0.9": 40.8},
        # the failed deploy (40h), the 26h deploy linked by time to the incident opened 1h
        # later, and the 48h deploy named (through c2, which it shipped) by the incident
        # opened at 30h: 3 of the 6 production deployments.
        "change_failure": (3, 6),
        # restores 2h, 0.5h and 1h -> sorted 0.5 1 2: median 1, p90 1 + 0.8 * (2 - 1).
        "restore": {"n": 3, "0.5": 1.0, "0.9": 1.8},
        "time_to_production": None,
        # frequency 1/6 a day -> high; lead 12h -> high; CFR 1/2 -> low; restore 1h (not
        # under 1h) -> high.
        "level": "low",
        "deployments": {
            ("production", "success"): 5,
            ("production", "failure"): 1,
            ("staging", "success"): 1,
        },
        "runs": {("CI", "success"): 3, ("CI", "failure"): 1},
    },
    "payments-api": {
        "frequency": {"1d": 1.0, "7d": 2 / 7, "30d": 3 / 30},
        # lead times 20, 10, 4 -> median 10, p90 10 + 0.8 * 10.
        "lead_time": {"n": 3, "0.5": 10.0, "0.9": 18.0},
        "change_failure": (1, 4),
        "restore": {"n": 0},
        "time_to_production": None,
        "level": "high",
        "deployments": {("production", "success"): 3, ("production", "failure"): 1},
        "runs": {("Deploy", "success"): 3, ("Deploy", "failure"): 1, ("CI", "success"): 1},
    },
    "recommendations": {
        "frequency": {"1d": 0.0, "7d": 1 / 7, "30d": 1 / 30},
        # a new service: its first success (r3, 120h ago) ships every commit from its root,
        # r1 (288h), r2 (200h) and r3 (150h): 168, 80 and 30h. Median 80, p90 at rank 1.8:
        # 80 + 0.8 * (168 - 80) = 150.4.
        "lead_time": {"n": 3, "0.5": 80.0, "0.9": 150.4},
        "change_failure": (1, 2),
        "restore": {"n": 0},
        "time_to_production": 168.0,
        "level": "low",
        "deployments": {("production", "success"): 1, ("production", "failure"): 1},
        "runs": {("CI", "success"): 1},
    },
    "search": {
        "frequency": {"1d": 1.0, "7d": 2 / 7, "30d": 3 / 30},
        # the 36h deploy ships s2 (54h) and s3 (4h); the 3h deploy ships s4, which stands for
        # f1 (30h - 3h = 27h) and f2 (17h). Sorted 4 17 27 54: median (17 + 27) / 2 = 22,
        # p90 at rank 0.9 * 3 = 2.7: 27 + 0.7 * (54 - 27) = 45.9. (From s4 itself: 9h.)
        "lead_time": {"n": 4, "0.5": 22.0, "0.9": 45.9},
        # the 3h deploy, named by the incident's root cause: 1 of 3.
        "change_failure": (1, 3),
        "restore": {"n": 1, "0.5": 0.25, "0.9": 0.25},
        "time_to_production": None,
        # frequency 0.1 -> high; lead 22h -> high; CFR 1/3 -> low; restore 15 min -> elite.
        "level": "low",
        "deployments": {("production", "success"): 3, ("staging", "success"): 1},
        "runs": {("build", "success"): 1, ("build", "failure"): 1},
    },
    "accounts": {
        "frequency": {"1d": 1.0, "7d": 2 / 7, "30d": 2 / 30},
        # lead times 30, 10 -> median 20, p90 10 + 0.9 * 20.
        "lead_time": {"n": 2, "0.5": 20.0, "0.9": 28.0},
        "change_failure": (0, 2),
        "restore": {"n": 0},
        "time_to_production": None,
        "level": "high",
        "deployments": {("production", "success"): 2},
        "runs": {
            ("accounts-deploy", "success"): 2,
            ("accounts-ci", "success"): 1,
            ("accounts-ci", "failure"): 1,
        },
    },
}


def synthetic_org(
    anchor: float, repos: int, days: int, runs_per_repo: int, deploys_per_repo: int
) -> DeliveryScenario:
    """A large GitHub org for the benchmark: ``repos`` repos with ``days`` of history."""
    s = DeliveryScenario(anchor=anchor, org="bench")
    span = days * D
    for r in range(repos):
        name = f"bench/svc-{r:04d}"
        repo = FakeRepo(name, 10_000 + r, f"svc-{r:04d}")
        n_commits = max(2, deploys_per_repo * 2)
        parent: list[str] = [sha_of(name, "before-history")]
        for c in range(n_commits):
            t = anchor - span + span * (c + 0.5) / n_commits
            sha = sha_of(name, "c", c)
            repo.commits.append(FakeCommit(sha, t - 300, t, parent))
            parent = [sha]
        for i in range(runs_per_repo):
            created = anchor - span + span * (i + 0.5) / runs_per_repo
            sha = repo.commits[min(n_commits - 1, i * n_commits // runs_per_repo)].sha
            repo.runs.append(
                FakeRun(
                    id=repo.id * 100_000 + i,
                    name="CI" if i % 4 else "Lint",
                    head_sha=sha,
                    branch="main",
                    status="completed",
                    conclusion="failure" if i % 9 == 0 else "success",
                    created_at=created,
                    started_at=created + 15,
                    updated_at=created + 315,
                    number=i + 1,
                )
            )
        for i in range(deploys_per_repo):
            created = anchor - span + span * (i + 0.75) / deploys_per_repo
            dep = FakeDeployment(
                repo.id * 100_000 + i,
                repo.commits[min(n_commits - 1, 2 * i + 1)].sha,
                "production",
                created,
            )
            dep.statuses.append((dep.id * 10 + 1, "in_progress", created + 30))
            dep.statuses.append(
                (dep.id * 10 + 2, "failure" if i % 10 == 0 else "success", created + 300)
            )
            repo.deployments.append(dep)
        s.github[name] = repo
    return s


def delivery_of(scenario: Scenario) -> DeliveryScenario:
    """The delivery scenario attached to a sandbox :class:`Scenario` (built on first use).

    Its anchor is the scenario clock's instant at that first use.
    """
    existing = getattr(scenario, "_delivery", None)
    if not isinstance(existing, DeliveryScenario):
        existing = build(scenario.now())
        setattr(scenario, "_delivery", existing)  # noqa: B010
    return existing


def demo_delivery_rules() -> dict[str, Any]:
    """The delivery rules :data:`EXPECTED` assumes."""
    return {
        "production_environments": ["production"],
        "environments": ["staging"],
        "commit_time": "committed",
        "incident_link_window": "2h",
    }
