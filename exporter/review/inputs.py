"""The review's inputs, which sources feed them, and how fresh each source's data was.

An *input* is one kind of stored data: probe checks, gateway traffic, billing
lines, deliveries (runs, deployments, incidents) and catalog listings. The
sources that feed it are found by the records they produce, never by naming
kinds. A source is stale for a review when its last poll failed (the daemon's
live health), when it has no data at all, or when its newest data ends before
the review does by more than it should: twice its poll interval plus two minutes
for data that arrives continuously (probes, traffic, listings), the last closed
day of the week for billing (it arrives by day). Delivery data comes as events
that may pause for days, so only a failed poll makes it stale. Every number the
review shows names its inputs; a stale input marks exactly the numbers it feeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from exporter.core.periods import DAY, day_start, utc_date
from exporter.core.provider import RenderContext
from exporter.core.store import Store
from exporter.domains.catalog import store as catalog_store
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.cost import store as cost_store
from exporter.domains.cost.records import CostContribution
from exporter.domains.delivery.records import Deployment
from exporter.domains.probe.records import ProbeResult
from exporter.domains.traffic.records import TrafficDelta
from exporter.review.model import Freshness

PROBE = "probe"
TRAFFIC = "traffic"
COST = "cost"
DELIVERY = "delivery"
CATALOG = "catalog"

#: Which input each adoption rule reads (the probe rule reads the catalog's probes).
RULE_INPUTS: Mapping[str, str] = {
    "gateway_traffic": TRAFFIC,
    "pipeline_template": DELIVERY,
    "catalog": CATALOG,
    "probe": CATALOG,
}
# Continuous data may lag its poll interval twice, plus this, before it is stale.
SLACK = 120.0

# The newest data before a review's end per source name ("*": whichever feeds it), from
# the store, for the enabled sources of that input.
Newest = Callable[[Store, float, Sequence[str]], dict[str, float]]


def _probe_newest(store: Store, end: float, sources: Sequence[str]) -> dict[str, float]:
    row = store.query_one("SELECT MAX(started_at) FROM probe_results WHERE started_at < ?", (end,))
    return {} if row is None or row[0] is None else {"*": float(row[0])}


def _newest_per_source(
    store: Store, table: str, column: str, end: float, sources: Sequence[str]
) -> dict[str, float]:
    """The newest ``column`` before ``end`` of each of ``sources`` in ``table``: one
    backward walk of the column's index per source, which stops at its newest row."""
    out = {}
    for source in sources:
        row = store.query_one(
            f"SELECT {column} FROM {table} WHERE {column} < ? AND source = ? "
            f"ORDER BY {column} DESC LIMIT 1",
            (end, source),
        )
        if row is not None:
            out[source] = float(row[0])
    return out


def _traffic_newest(store: Store, end: float, sources: Sequence[str]) -> dict[str, float]:
    # A minute row covers the minute it starts: its data runs to the minute's end.
    newest = _newest_per_source(store, "traffic_minutes", "minute", end, sources)
    return {source: minute + 60.0 for source, minute in newest.items()}


def _cost_newest(store: Store, end: float, sources: Sequence[str]) -> dict[str, float]:
    before = (utc_date(end - 1e-6) + timedelta(days=1)).isoformat()
    days = cost_store.newest_days(store, before, sources)
    return {s: day_start(date.fromisoformat(d) + timedelta(days=1)) for s, d in days.items()}


def _delivery_newest(store: Store, end: float, sources: Sequence[str]) -> dict[str, float]:
    # The newest finished pipeline run: every CI/CD source reads runs.
    return _newest_per_source(store, "pipeline_runs", "finished_at", end, sources)


def _catalog_newest(store: Store, end: float, sources: Sequence[str]) -> dict[str, float]:
    return {s: at for s, (at, _) in catalog_store.listings(store).items() if at < end}


@dataclass(frozen=True)
class Input:
    name: str
    record: type  # what its sources produce
    newest: Newest
    continuous: bool  # data arrives all the time, so its age tells staleness
    daily: bool = False  # data arrives by UTC day (billing)


INPUTS: tuple[Input, ...] = (
    Input(PROBE, ProbeResult, _probe_newest, continuous=True),
    Input(TRAFFIC, TrafficDelta, _traffic_newest, continuous=True),
    Input(COST, CostContribution, _cost_newest, continuous=False, daily=True),
    Input(DELIVERY, Deployment, _delivery_newest, continuous=False),
    Input(CATALOG, CatalogListing, _catalog_newest, continuous=True),
)


def _interval(ctx: RenderContext, kind: str) -> float | None:
    live = ctx.interval_of(kind)
    if live is not None:
        return live
    settings = getattr(ctx.config.sources, kind, None)
    interval = getattr(settings, "interval", None)
    return float(interval) if isinstance(interval, int | float) else None


def _judge(ctx: RenderContext, inp: Input, kind: str, newest: float | None, end: float) -> str:
    """Why the source is stale for a review ending at ``end``; "" when it is not."""
    for h in ctx.health:
        if h.kind == kind and h.up is False:
            return f"last poll failed: {h.last_error or 'error'}"
    if newest is None:
        return "" if not inp.continuous and not inp.daily else "no data"
    if inp.daily:
        # Every day that had closed by the review's end must be there: their data must
        # reach the start of the UTC day holding the end.
        closed_until = math.floor(end / DAY) * DAY
        return "" if newest >= closed_until else "billing days missing"
    interval = _interval(ctx, kind)
    if inp.continuous and interval is not None and end - newest > 2 * interval + SLACK:
        return "data ends before the review's end"
    return ""


def freshness(ctx: RenderContext, end: float) -> list[Freshness]:
    """Each enabled source's freshness for a review whose data ends at ``end``."""
    out: list[Freshness] = []
    for inp in INPUTS:
        kinds = ctx.kinds(producing=inp.record)
        if not kinds:
            continue
        newest = inp.newest(ctx.store, end, kinds)
        for kind in kinds:
            at = newest.get(kind, newest.get("*"))
            up = next((h.up for h in ctx.health if h.kind == kind), None)
            reason = _judge(ctx, inp, kind, at, end)
            out.append(Freshness(kind, inp.name, at, up, bool(reason), reason))
    return out


def stale_inputs(fresh: list[Freshness]) -> frozenset[str]:
    return frozenset(f.input for f in fresh if f.stale)
