"""Delivery KPIs (the four DORA keys, pipeline health, time to production) as pure functions.

Definitions (see docs/kpis.md, "Delivery"):

* deployment frequency over a window = successful production deployments that
  finished in (now - window, now], divided by the window in days;
* lead time for changes: each successful production deployment D of a service,
  taken in order of finish time, and P the service's previous successful
  production deployment: every commit reachable from D's commit and not from
  P's commit contributes ``D.finished_at - commit time``. The first one (no P)
  contributes every commit it ships only when its history is known whole down to
  a parentless root commit (a new service); otherwise it has no lower bound and
  contributes nothing. A commit we do not know, a redeploy of the same commit or a rollback
  (D's commit already reachable from P's) contribute nothing. A squash commit
  that replaced a merge request's commits contributes, when ``squashed`` says
  so, those original commits (each one that we know) instead of itself;
* change failure ratio over a window = (failed production deployments + successful
  ones linked to an incident) / all production deployments that finished in the
  window. An incident that names a root-cause commit (a full SHA, or a prefix of
  at least :data:`MIN_SHA_PREFIX` hex digits that matches exactly one commit or
  deployed SHA of the service) links to the first successful production
  deployment that shipped that commit; one that names none links to the
  service's latest successful production deployment that finished at most
  ``link_window`` before it opened. A named root cause that does not resolve
  (unknown, or an ambiguous prefix) links nothing: the incident's own statement
  is not overridden by the time rule;
* time to restore = incident resolved - opened, for incidents resolved in the window;
* time to production = first successful production deployment - the service's
  first commit (a root commit we know) or its catalog registration;
* DORA performance level: the lowest of the per-key levels, by the thresholds of
  the 2021 Accelerate State of DevOps report (:data:`DORA_2021`).

Windows are rolling, ``(now - window, now]`` for a window in seconds, or a
calendar :class:`~exporter.core.periods.Span` such as ``last_month`` (the previous
calendar month, whose frequency divides by its 28 to 31 days).

Inputs are plain records of one service; order of arrival never matters, only
timestamps and commit ancestry. Quantiles use :func:`exporter.core.stats.quantile`.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from exporter.core.catalog import CatalogService
from exporter.core.periods import Span, last_month, rolling
from exporter.core.stats import histogram, quantile

DAY = 86400.0
HOUR = 3600.0

FREQUENCY_WINDOWS: dict[str, float] = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY}
LEAD_TIME_WINDOWS: dict[str, float] = {"7d": 7 * DAY, "30d": 30 * DAY}
CHANGE_FAILURE_WINDOWS: dict[str, float] = {"30d": 30 * DAY}
RESTORE_WINDOWS: dict[str, float] = {"30d": 30 * DAY}
#: Calendar windows every windowed delivery KPI is also reported over.
CALENDAR_WINDOWS = ("last_month",)

#: A window: rolling seconds ending now, or a calendar span.
Window = float | Span
QUANTILES = (0.5, 0.9)

LEAD_TIME_BUCKETS = (
    900.0,
    HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    4 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
    90 * DAY,
)
RESTORE_BUCKETS = (300.0, 900.0, 1800.0, HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR, DAY, 2 * DAY, 7 * DAY)
PIPELINE_DURATION_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0)
QUEUE_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
TIME_TO_PRODUCTION_BUCKETS = (
    DAY,
    3 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
    60 * DAY,
    90 * DAY,
    180 * DAY,
)

LEVELS = ("elite", "high", "medium", "low")

#: The shortest SHA prefix an incident may name its root cause with (git's default
#: abbreviation); a shorter one only matches a SHA spelled out in full.
MIN_SHA_PREFIX = 7


@dataclass(frozen=True, slots=True)
class ProdDeploy:
    """A finished production deployment of one service."""

    key: str
    sha: str
    success: bool
    finished_at: float


@dataclass(frozen=True, slots=True)
class CommitNode:
    """A commit: the time lead time counts from, and its parents."""

    sha: str
    at: float
    parents: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IncidentSpan:
    """An incident; ``deployment_sha`` is the root-cause commit it names, if any
    (a full SHA or a prefix, as written upstream)."""

    key: str
    opened_at: float
    resolved_at: float | None
    deployment_sha: str | None = None


@dataclass(frozen=True, slots=True)
class LeadTime:
    """One commit's lead time, attributed to the deployment that shipped it."""

    deploy_key: str
    sha: str
    deployed_at: float
    seconds: float


def _in_window(t: float, now: float, window: Window) -> bool:
    if isinstance(window, Span):
        return t in window
    return now - window < t <= now


def window_days(window: Window) -> float:
    """The length of a window in days (a calendar month: 28 to 31)."""
    seconds = window.seconds if isinstance(window, Span) else window
    return seconds / DAY


def _ordered_successes(deploys: Iterable[ProdDeploy]) -> list[ProdDeploy]:
    return sorted((d for d in deploys if d.success), key=lambda d: (d.finished_at, d.key))


def _reachable(start: str, commits: Mapping[str, CommitNode], stop: set[str]) -> list[str]:
    """Known commits reachable from ``start`` through parents, not entering ``stop``."""
    seen: set[str] = set()
    order: list[str] = []
    stack = [start]
    while stack:
        sha = stack.pop()
        if sha in seen or sha in stop or sha not in commits:
            continue
        seen.add(sha)
        order.append(sha)
        stack.extend(commits[sha].parents)
    return order


def lead_times(
    deploys: Sequence[ProdDeploy],
    commits: Mapping[str, CommitNode],
    squashed: Mapping[str, Sequence[str]] | None = None,
) -> list[LeadTime]:
    """Every commit's lead time, for one service's production deployments (see module doc).

    ``squashed`` maps a squash commit to the original commits of the merge request
    it replaced; those count in its place.
    """
    successes = _ordered_successes(deploys)
    out: list[LeadTime] = []
    for prev, cur in itertools.pairwise([None, *successes]):
        assert cur is not None
        out.extend(lead_times_of(cur, prev, commits, squashed))
    return out


def lead_times_of(
    cur: ProdDeploy,
    prev: ProdDeploy | None,
    commits: Mapping[str, CommitNode],
    squashed: Mapping[str, Sequence[str]] | None = None,
) -> list[LeadTime]:
    """The lead times of what successful deployment ``cur`` shipped, ``prev`` being the
    successful one before it (None: ``cur`` is the service's first)."""
    originals_of: Mapping[str, Sequence[str]] = squashed or {}
    if prev is None:
        return list(_shipped(cur, _history_from_root(cur.sha, commits), commits, originals_of))
    if cur.sha not in commits or prev.sha not in commits or cur.sha == prev.sha:
        return []
    shipped_before = set(_reachable(prev.sha, commits, set()))
    if cur.sha in shipped_before:
        return []  # a rollback to (or redeploy of) something already in production
    shipped = _reachable(cur.sha, commits, shipped_before)
    return list(_shipped(cur, shipped, commits, originals_of))


def _history_from_root(sha: str, commits: Mapping[str, CommitNode]) -> list[str]:
    """Every commit reachable from ``sha``, if that history is known whole down to a
    parentless root commit (a new service's first deployment ships all of it); else
    nothing, as there is no lower bound."""
    if sha not in commits:
        return []
    history = _reachable(sha, commits, set())
    whole = all(p in commits for c in history for p in commits[c].parents)
    has_root = any(not commits[c].parents for c in history)
    return history if whole and has_root else []


def _shipped(
    dep: ProdDeploy,
    shas: Iterable[str],
    commits: Mapping[str, CommitNode],
    originals_of: Mapping[str, Sequence[str]],
) -> Iterator[LeadTime]:
    """The lead time of each commit ``dep`` shipped (a squash commit's originals in its place)."""
    for shipped in shas:
        originals = [o for o in originals_of.get(shipped, ()) if o in commits]
        for sha in originals or [shipped]:
            seconds = max(0.0, dep.finished_at - commits[sha].at)
            yield LeadTime(dep.key, sha, dep.finished_at, seconds)


def lead_time_quantiles(
    samples: Sequence[LeadTime], now: float, window: Window, qs: Sequence[float] = QUANTILES
) -> tuple[int, dict[float, float]]:
    """(sample count, {q: seconds}) over lead times of deployments finished in the window."""
    values = [s.seconds for s in samples if _in_window(s.deployed_at, now, window)]
    result = {q: v for q in qs if (v := quantile(values, q)) is not None}
    return len(values), result


def successful_deployments(deploys: Iterable[ProdDeploy], now: float, window: Window) -> int:
    return sum(1 for d in deploys if d.success and _in_window(d.finished_at, now, window))


def deployment_frequency(deploys: Sequence[ProdDeploy], now: float, window: Window) -> float | None:
    """Successful production deployments per day over the window.

    None when the service has no production deployment at all: no data is not 0.
    """
    if not deploys:
        return None
    return successful_deployments(deploys, now, window) / window_days(window)


@dataclass(frozen=True, slots=True)
class ChangeFailure:
    failed: int
    total: int

    @property
    def ratio(self) -> float | None:
        return self.failed / self.total if self.total else None


def resolve_sha(
    ref: str, deploys: Sequence[ProdDeploy], commits: Mapping[str, CommitNode]
) -> str | None:
    """The full SHA that ``ref`` names among the service's deployed and known commits.

    An exact match wins; otherwise a prefix of at least :data:`MIN_SHA_PREFIX` hex
    digits must match exactly one SHA (an ambiguous prefix names nothing, as in git).
    """
    ref = ref.strip().lower()
    known = {d.sha.lower(): d.sha for d in deploys}
    known.update((sha.lower(), sha) for sha in commits)
    if ref in known:
        return known[ref]
    if len(ref) < MIN_SHA_PREFIX:
        return None
    matches = {full for low, full in known.items() if low.startswith(ref)}
    return matches.pop() if len(matches) == 1 else None


def shipping_deployment(
    sha: str, successes: Sequence[ProdDeploy], commits: Mapping[str, CommitNode]
) -> ProdDeploy | None:
    """The first successful deployment (in finish order) whose commit is or contains ``sha``."""
    shipped: set[str] = set()
    for dep in successes:
        if dep.sha == sha:
            return dep
        new = _reachable(dep.sha, commits, shipped)
        if sha in new:
            return dep
        shipped.update(new)
    return None


def root_cause_links(
    deploys: Sequence[ProdDeploy],
    incidents: Iterable[IncidentSpan],
    commits: Mapping[str, CommitNode] | None = None,
    squashed: Mapping[str, Sequence[str]] | None = None,
) -> set[str]:
    """Keys of the deployments that incidents naming a root-cause commit link to: the
    first successful one that shipped it (a commit a squash replaced: where the squash
    commit shipped). An unknown or ambiguous root cause links nothing."""
    graph: Mapping[str, CommitNode] = commits or {}
    squash_of = {o: s for s, originals in (squashed or {}).items() for o in originals}
    successes = _ordered_successes(deploys)
    linked: set[str] = set()
    for inc in incidents:
        if inc.deployment_sha is None:
            continue
        sha = resolve_sha(inc.deployment_sha, deploys, graph)
        sha = squash_of.get(sha, sha) if sha is not None else None
        dep = None if sha is None else shipping_deployment(sha, successes, graph)
        if dep is not None:
            linked.add(dep.key)
    return linked


def time_links(
    deploys: Iterable[ProdDeploy], opened: Iterable[float], link_window: float
) -> set[str]:
    """Keys of the deployments that incidents naming no root cause (opened at ``opened``)
    link to: the latest successful one finished at most ``link_window`` before each."""
    successes = _ordered_successes(deploys)
    finished = [d.finished_at for d in successes]
    linked: set[str] = set()
    for at in opened:
        i = bisect.bisect_right(finished, at)
        if i and at - successes[i - 1].finished_at <= link_window:
            linked.add(successes[i - 1].key)
    return linked


def failed_changes(
    deploys: Sequence[ProdDeploy],
    incidents: Sequence[IncidentSpan],
    link_window: float,
    commits: Mapping[str, CommitNode] | None = None,
    squashed: Mapping[str, Sequence[str]] | None = None,
) -> set[str]:
    """Keys of deployments that are failed changes: failed ones, and those an incident links to.

    A root cause naming a commit that a squash replaced links where the squash commit shipped.
    """
    failed = {d.key for d in deploys if not d.success}
    failed |= root_cause_links(deploys, incidents, commits, squashed)
    timed = (i.opened_at for i in incidents if i.deployment_sha is None)
    return failed | time_links(deploys, timed, link_window)


def change_failure(
    deploys: Sequence[ProdDeploy],
    incidents: Sequence[IncidentSpan],
    now: float,
    window: Window,
    link_window: float,
    commits: Mapping[str, CommitNode] | None = None,
    squashed: Mapping[str, Sequence[str]] | None = None,
) -> ChangeFailure:
    """Failed changes and all production deployments that finished in the window."""
    failed = failed_changes(deploys, incidents, link_window, commits, squashed)
    in_window = [d for d in deploys if _in_window(d.finished_at, now, window)]
    return ChangeFailure(sum(1 for d in in_window if d.key in failed), len(in_window))


def restore_times(incidents: Iterable[IncidentSpan], now: float, window: Window) -> list[float]:
    """Resolved - opened, for incidents resolved in the window (all of them if window is inf)."""
    return [
        max(0.0, i.resolved_at - i.opened_at)
        for i in incidents
        if i.resolved_at is not None and _in_window(i.resolved_at, now, window)
    ]


def first_production_at(
    start: float | None, deploys: Iterable[ProdDeploy], now: float | None = None
) -> float | None:
    """When the first successful production deployment at or after ``start`` (and by
    ``now``, if given) finished."""
    if start is None:
        return None
    firsts = [
        d.finished_at
        for d in deploys
        if d.success and d.finished_at >= start and (now is None or d.finished_at <= now)
    ]
    return min(firsts) if firsts else None


def time_to_production(
    start: float | None, deploys: Iterable[ProdDeploy], now: float | None = None
) -> float | None:
    """From ``start`` to the first successful production deployment at or after it."""
    first = first_production_at(start, deploys, now)
    return None if first is None or start is None else first - start


def first_commit_time(commits: Mapping[str, CommitNode]) -> float | None:
    """The time of the service's root commit (one with no parents), if we know it."""
    roots = [c.at for c in commits.values() if not c.parents]
    return min(roots) if roots else None


# --- DORA performance levels --------------------------------------------------------

#: Thresholds of the 2021 Accelerate State of DevOps report (DORA / Google Cloud), the
#: last edition with four clusters whose bands do not overlap. A value gets the best level
#: whose bound it meets. Frequency in deployments per day: elite "on demand" (>= 1 a day),
#: high >= 1 a month, medium >= 1 in six months; lead time (< 1 h, < 1 week, < 6 months)
#: and time to restore (< 1 h, < 1 day, < 1 week) as medians in seconds; change failure as
#: a ratio (elite 0-15 %, high and medium 16-30 %, low above).
DORA_2021: dict[str, tuple[float, float, float]] = {
    # key: (elite bound, high bound, medium bound)
    "deployment_frequency": (1.0, 1.0 / 30.0, 1.0 / 182.0),
    "lead_time": (HOUR, 7 * DAY, 182 * DAY),
    "change_failure": (0.15, 0.30, 0.30),
    "time_to_restore": (HOUR, DAY, 7 * DAY),
}


def _level_at_least(value: float, bounds: tuple[float, float, float]) -> str:
    for level, bound in zip(LEVELS, bounds, strict=False):
        if value >= bound:
            return level
    return "low"


def _level_at_most(value: float, bounds: tuple[float, float, float], strict: bool) -> str:
    for level, bound in zip(LEVELS, bounds, strict=False):
        if (value < bound) if strict else (value <= bound):
            return level
    return "low"


def key_levels(
    frequency_per_day: float | None,
    lead_time_median: float | None,
    change_failure_ratio: float | None,
    restore_median: float | None,
) -> dict[str, str]:
    """The level of each key that has a value."""
    levels: dict[str, str] = {}
    if frequency_per_day is not None:
        levels["deployment_frequency"] = _level_at_least(
            frequency_per_day, DORA_2021["deployment_frequency"]
        )
    if lead_time_median is not None:
        levels["lead_time"] = _level_at_most(lead_time_median, DORA_2021["lead_time"], True)
    if change_failure_ratio is not None:
        levels["change_failure"] = _level_at_most(
            change_failure_ratio, DORA_2021["change_failure"], False
        )
    if restore_median is not None:
        levels["time_to_restore"] = _level_at_most(
            restore_median, DORA_2021["time_to_restore"], True
        )
    return levels


def performance_level(
    frequency_per_day: float | None,
    lead_time_median: float | None,
    change_failure_ratio: float | None,
    restore_median: float | None,
) -> str | None:
    """The service's DORA level: its worst key; None without a deployment frequency."""
    if frequency_per_day is None:
        return None
    levels = key_levels(frequency_per_day, lead_time_median, change_failure_ratio, restore_median)
    return max(levels.values(), key=LEVELS.index)


# --- One service's delivery KPIs, as the metrics show them ---------------------------

#: A histogram: cumulative counts per bound, the sum and the count of the values.
Histogram = tuple[list[int], float, int]
#: Samples behind a quantile pair, and the quantiles that have a value.
Quantiles = tuple[int, dict[float, float]]


@dataclass
class ServiceDelivery:
    """Everything the delivery KPIs of one service are computed from.

    ``squashed`` maps a squash commit to the original commits of the merge request
    it replaced.
    """

    deploys: list[ProdDeploy] = field(default_factory=list)
    commits: dict[str, CommitNode] = field(default_factory=dict)
    incidents: list[IncidentSpan] = field(default_factory=list)
    squashed: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryRules:
    """The configured rules the delivery KPIs apply (see the ``delivery`` settings)."""

    squash_lead_time: str = "original_commits"
    incident_link_window: float = DAY
    backfill_days: int = 90


@dataclass(frozen=True, slots=True)
class ServiceKpis:
    """One service's delivery KPIs at ``now``, per window name (rolling and ``last_month``).

    ``frequency`` holds (successful deployments, per day or None); ``lead`` and
    ``restore`` the quantiles per window; ``lead_histogram`` covers every lead time of
    a deployment finished by now, ``restore_histogram`` every resolved incident;
    ``ttp_known`` says whether the start of time to production is known.
    """

    frequency: dict[str, tuple[int, float | None]]
    lead_histogram: Histogram
    lead: dict[str, Quantiles]
    change_failure: dict[str, ChangeFailure]
    restore_histogram: Histogram
    restore: dict[str, Quantiles]
    ttp_known: bool
    time_to_production: float | None
    level: str | None


def with_calendar(windows: Mapping[str, float], now: float) -> dict[str, Window]:
    """The rolling windows plus the closed previous calendar month, ``last_month``."""
    return {**windows, "last_month": last_month(now)}


def _restore_quantiles(incidents: Sequence[IncidentSpan], now: float, window: Window) -> Quantiles:
    values = restore_times(incidents, now, window)
    return len(values), {q: v for q in QUANTILES if (v := quantile(values, q)) is not None}


def production_start(
    d: ServiceDelivery, registered_at: float | None, now: float, backfill_days: int
) -> float | None:
    """Where time to production starts (see :func:`production_start_at`)."""
    return production_start_at(first_commit_time(d.commits), registered_at, now, backfill_days)


def production_start_at(
    first_commit: float | None, registered_at: float | None, now: float, backfill_days: int
) -> float | None:
    """Where time to production starts: the first commit, else the catalog registration
    when it lies within the history read (an older one may predate deployments never
    seen, so the start is unknown)."""
    start = first_commit
    if start is None and registered_at is not None:
        history_start = now - backfill_days * DAY
        start = registered_at if registered_at >= history_start else None
    return start


def window_start(now: float) -> float:
    """Where the earliest window of the delivery KPIs at ``now`` starts (the rolling
    30 days or the previous calendar month): no event before it is in any window."""
    longest = max(
        (*FREQUENCY_WINDOWS.values(), *LEAD_TIME_WINDOWS.values(), *RESTORE_WINDOWS.values())
    )
    return min(now - longest, last_month(now).start)


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """What one service's delivery KPIs at ``now`` are computed from: the events that can
    fall in a window (at or after ``since``, :func:`window_start`), and what covers all
    time. The store keeps these at write time (see ``delivery.rollup``), so a render
    reads index ranges and totals; :func:`view_of` derives the same from raw records.

    ``deploys``: finished production deployments; ``leads``: lead times of deployments;
    ``linked``: deployments an incident's root cause links to; ``timed_incidents``: when
    the incidents naming no root cause opened; ``restores``: (resolved_at, seconds) of
    resolved incidents; all of those at or after ``since``. ``lead_histogram`` covers
    every lead time of a deployment finished by now, ``restore_histogram`` every
    incident resolved by now; ``first_production`` is the first successful production
    deployment in ``[production_start, now]``.
    """

    has_deploys: bool
    deploys: Sequence[ProdDeploy]
    leads: Sequence[tuple[float, float]]  # (deployed_at, seconds)
    linked: frozenset[str]
    timed_incidents: Sequence[float]
    restores: Sequence[tuple[float, float]]
    lead_histogram: Histogram
    restore_histogram: Histogram
    production_start: float | None
    first_production: float | None


def view_of(
    d: ServiceDelivery, rules: DeliveryRules, registered_at: float | None, now: float
) -> DeliveryView:
    """The view of one service's raw records at ``now`` (the reference the stored
    rollups must equal)."""
    since = window_start(now)
    squashed = d.squashed if rules.squash_lead_time == "original_commits" else None
    leads = lead_times(d.deploys, d.commits, squashed)
    start = production_start(d, registered_at, now, rules.backfill_days)
    recent = [x for x in d.deploys if x.finished_at >= since]
    keys = {x.key for x in recent}
    restores = restore_times(d.incidents, now, float("inf"))
    return DeliveryView(
        has_deploys=bool(d.deploys),
        deploys=recent,
        leads=[(s.deployed_at, s.seconds) for s in leads if s.deployed_at >= since],
        linked=frozenset(root_cause_links(d.deploys, d.incidents, d.commits, d.squashed) & keys),
        timed_incidents=[
            i.opened_at for i in d.incidents if i.deployment_sha is None and i.opened_at >= since
        ],
        restores=[
            (i.resolved_at, max(0.0, i.resolved_at - i.opened_at))
            for i in d.incidents
            if i.resolved_at is not None and i.resolved_at >= since
        ],
        lead_histogram=histogram(
            (s.seconds for s in leads if s.deployed_at <= now), LEAD_TIME_BUCKETS
        ),
        restore_histogram=histogram(restores, RESTORE_BUCKETS),
        production_start=start,
        first_production=first_production_at(start, d.deploys, now),
    )


def as_span(window: Window, now: float) -> Span:
    """A window as the span ``start <= t < end`` it covers at ``now`` (a rolling window
    ``(now - w, now]`` is exactly the span between the floats next above each end)."""
    return window if isinstance(window, Span) else rolling(now, window)


class _Timeline:
    """Values sorted by their time, so a window's values are one slice."""

    def __init__(self, items: Iterable[tuple[float, float]]) -> None:
        ordered = sorted(items)
        self.times = [t for t, _ in ordered]
        self.values = [v for _, v in ordered]

    def within(self, span: Span) -> list[float]:
        lo = bisect.bisect_left(self.times, span.start)
        return self.values[lo : bisect.bisect_left(self.times, span.end, lo)]


def _quantiles(values: Sequence[float]) -> Quantiles:
    return len(values), {q: v for q in QUANTILES if (v := quantile(values, q)) is not None}


def view_kpis(view: DeliveryView, rules: DeliveryRules, now: float) -> ServiceKpis:
    """Every delivery KPI of one service at ``now``, from its view (see the module doc):
    each window a slice of the view's events, sorted by time once."""
    failed = {d.key for d in view.deploys if not d.success} | view.linked
    failed |= time_links(view.deploys, view.timed_incidents, rules.incident_link_window)
    # Per deployment: (is a success, is a failed change), by finish time.
    deploys = _Timeline(
        (d.finished_at, float(d.success) + 2.0 * (d.key in failed)) for d in view.deploys
    )
    leads = _Timeline(view.leads)
    restores = _Timeline(view.restores)
    frequency: dict[str, tuple[int, float | None]] = {}
    for w, window in with_calendar(FREQUENCY_WINDOWS, now).items():
        n = sum(1 for v in deploys.within(as_span(window, now)) if v % 2)
        frequency[w] = (n, n / window_days(window) if view.has_deploys else None)
    lead = {
        w: _quantiles(leads.within(as_span(window, now)))
        for w, window in with_calendar(LEAD_TIME_WINDOWS, now).items()
    }
    failure = {}
    for w, window in with_calendar(CHANGE_FAILURE_WINDOWS, now).items():
        flags = deploys.within(as_span(window, now))
        failure[w] = ChangeFailure(sum(1 for v in flags if v >= 2), len(flags))
    restore = {
        w: _quantiles(restores.within(as_span(window, now)))
        for w, window in with_calendar(RESTORE_WINDOWS, now).items()
    }
    start = view.production_start
    return ServiceKpis(
        frequency=frequency,
        lead_histogram=view.lead_histogram,
        lead=lead,
        change_failure=failure,
        restore_histogram=view.restore_histogram,
        restore=restore,
        ttp_known=start is not None,
        time_to_production=None
        if start is None or view.first_production is None
        else view.first_production - start,
        level=performance_level(
            frequency["30d"][1],
            lead["30d"][1].get(0.5),
            failure["30d"].ratio,
            restore["30d"][1].get(0.5),
        ),
    )


def service_kpis(
    d: ServiceDelivery, rules: DeliveryRules, registered_at: float | None, now: float
) -> ServiceKpis:
    """Every delivery KPI of one service at ``now``, from its raw records."""
    return view_kpis(view_of(d, rules, registered_at, now), rules, now)


def first_production_histogram(kpis: Iterable[ServiceKpis]) -> Histogram:
    """Time to production across services, one sample for each service that has one."""
    values = [k.time_to_production for k in kpis if k.time_to_production is not None]
    return histogram(values, TIME_TO_PRODUCTION_BUCKETS)


def delivery_services(
    services: Mapping[str, CatalogService], with_ci: Iterable[str], ci_kinds: Iterable[str]
) -> list[CatalogService]:
    """The services whose delivery KPIs are shown, in name order: those of ``with_ci``
    (config services with ``ci`` refs), and catalog services whose repos name a
    repo of one of ``ci_kinds`` (``kind:...``; a service only an external catalog
    lists included)."""
    named = set(with_ci)
    prefixes = tuple(f"{k}:" for k in ci_kinds)
    return [
        svc
        for name, svc in sorted(services.items())
        if name in named or any(r.startswith(prefixes) for r in svc.repos)
    ]
