"""What a platform review holds: plain, frozen values that every format renders.

A :class:`Cell` is one number with its provenance: ``value`` None means no data
(shown as "no data", never 0), and ``stale`` says that a source it is computed
from was down or behind during the week, so the number may be incomplete. The
json format is these dataclasses as they are (:func:`as_json`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Cell:
    """One number of the review; None: no data. ``stale``: computed from stale or partial data."""

    value: float | None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Headline:
    """One of the five platform KPIs: this week, the week before, and 12 weeks of trend."""

    key: str
    title: str
    unit: str  # "ratio", "seconds" or "money"
    value: Cell
    previous: Cell
    change: float | None  # value - previous; None when either has no data
    trend: tuple[float | None, ...]  # the last 12 weeks, oldest first; this week last
    inputs: tuple[str, ...]  # the inputs (see inputs.py) it is computed from


@dataclass(frozen=True, slots=True)
class Dora:
    """The four DORA keys over the windows that end at the week's end, and the level."""

    deploys: Cell  # successful production deployments in the week
    per_day: Cell  # deployment frequency over the week, per day
    lead_time: Cell  # median lead time for changes over the week, seconds
    change_failure: Cell  # change failure ratio over 30 days
    restore: Cell  # median time to restore over 30 days, seconds
    level: str | None  # elite, high, medium, low; None without the four keys
    level_stale: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """One service's (or one team's) line of the review."""

    name: str
    team: str
    services: int
    uptime: Cell
    slo_objective: float | None  # the availability SLO's objective, if one is set
    budget_left: Cell  # share of the availability SLO's error budget left at the week's end
    p95_latency: Cell
    requests: Cell
    cost: Cell
    cost_per_transaction: Cell
    dora: Dora
    adopted: tuple[str, ...]  # capabilities adopted (by any service of a team)
    adoption: Cell  # adopted capabilities / capabilities with data
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class CostMover:
    service: str
    team: str
    cost: Cell
    previous: Cell
    change: float


@dataclass(frozen=True, slots=True)
class Onboarded:
    service: str
    team: str
    registered_at: float
    time_to_first_deploy: Cell  # None: not deployed to production yet


@dataclass(frozen=True, slots=True)
class SloBurn:
    service: str
    team: str
    slo: str
    objective: float
    window: str  # the SLO's period, e.g. "30d" or "month"
    budget_left: Cell
    previous: Cell


@dataclass(frozen=True, slots=True)
class IncidentLine:
    service: str
    team: str
    key: str
    opened_at: float
    resolved_at: float | None
    time_to_restore: Cell  # None while unresolved


@dataclass(frozen=True, slots=True)
class Freshness:
    """How fresh one source's stored data was for the review."""

    source: str
    input: str  # the input it feeds (see inputs.py)
    newest: float | None  # its newest stored data up to the review's end (cost: that day's end)
    up: bool | None  # the live health of its last poll (None: not known to the report)
    stale: bool
    reason: str  # why it is stale; "" when it is fresh


@dataclass(frozen=True, slots=True)
class Review:
    """The platform review of one ISO week."""

    week: str  # "2026-W53"
    start: float
    end: float  # the week's end, or the review's instant for a week still running
    previous_week: str
    generated_at: float
    complete: bool  # the week is over
    currency: str | None
    headlines: tuple[Headline, ...]
    teams: tuple[Row, ...]
    services: tuple[Row, ...]
    cost_movers: tuple[CostMover, ...]
    onboarded: tuple[Onboarded, ...]
    slo_burns: tuple[SloBurn, ...]
    incidents: tuple[IncidentLine, ...]
    freshness: tuple[Freshness, ...]
    stale_inputs: tuple[str, ...]
    capabilities: tuple[str, ...]
    trend_weeks: tuple[str, ...]


def as_dict(review: Review) -> dict[str, Any]:
    """The review as plain JSON values (lists, dicts, numbers, strings, null)."""
    data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(review)))
    return data


def as_json(review: Review) -> str:
    """The json format: the review's numbers as they are, unrounded."""
    return json.dumps(as_dict(review), indent=2, sort_keys=False, allow_nan=False) + "\n"
