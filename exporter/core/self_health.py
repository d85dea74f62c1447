"""The exporter's own health: build info and per-source up, freshness and API use.

Sample::

    platform_exporter_build_info{version="0.1.0",python="3.11.7"} 1
    platform_exporter_source_up{source="probe",kind="probe"} 1
    platform_exporter_source_last_success_timestamp_seconds{source="probe",kind="probe"} 1.7e9
    platform_exporter_source_poll_duration_seconds{source="probe",kind="probe"} 0.21
    platform_exporter_source_errors_total{source="probe",kind="probe",reason="timeout"} 0
    platform_exporter_source_upstream_requests_total{source="probe",kind="probe",code="200"} 42
    platform_exporter_rate_limit_remaining{source="github",kind="github",resource="core"} 4990
    platform_exporter_source_poll_in_flight_seconds{source="github",kind="github"} 12.5
    platform_exporter_source_rate_limit_paused_seconds_total{source="github",kind="github"} 60
    platform_exporter_source_rate_limit_paused_requests_total{source="github",kind="github"} 8
    platform_exporter_source_without_catalog{source="nginx",kind="nginx"} 0

With several replicas (``state.url`` on PostgreSQL), every family above also has a
``replica`` label; for a source this replica does not hold the lease of, ``up``, the last
success, the poll duration and the API budget are absent (the holder's are the source's:
a peer's old verdict or budget would read as down, stale or exhausted). A replica whose
lease of a source ran out while the state was unreachable (an outage of the database) goes
on reporting the source, ``up`` 0, as its last holder, until a renewal round tells it who
holds it: so during an outage every source is reported down once, not absent. And::

    platform_exporter_source_leased{source="probe",kind="probe",replica="kpi-0"} 1
    platform_exporter_leases_held{replica="kpi-0"} 3
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter import __version__
from exporter.core.health import SourceHealth
from exporter.core.provider import RenderContext


def collect(ctx: RenderContext) -> Iterator[Metric]:
    replica = _replica(ctx)
    build = GaugeMetricFamily(
        "platform_exporter_build_info",
        "Build information of platform-kpi-exporter; always 1.",
        labels=["version", "python", *(["replica"] if replica else [])],
    )
    build.add_metric([__version__, platform.python_version(), *([replica] if replica else [])], 1)
    yield build

    labels = ["source", "kind", *(["replica"] if replica else [])]
    up = GaugeMetricFamily(
        "platform_exporter_source_up",
        "1 if the source's last poll succeeded, 0 if it failed (or, with several replicas, "
        "if its lease ran out with the state unreachable). Absent before the first poll.",
        labels=labels,
    )
    last = GaugeMetricFamily(
        "platform_exporter_source_last_success_timestamp_seconds",
        "Unix time at which the source last polled successfully; the freshness of its values.",
        labels=labels,
    )
    duration = GaugeMetricFamily(
        "platform_exporter_source_poll_duration_seconds",
        "How long the source's last poll took.",
        labels=labels,
    )
    interval = GaugeMetricFamily(
        "platform_exporter_source_interval_seconds",
        "The configured polling interval of the source.",
        labels=labels,
    )
    errors = CounterMetricFamily(
        "platform_exporter_source_errors",
        "Failed polls by bounded reason, since the exporter started.",
        labels=[*labels, "reason"],
    )
    skipped = CounterMetricFamily(
        "platform_exporter_source_polls_skipped",
        "Polls skipped because the previous poll of the source was still running.",
        labels=labels,
    )
    requests = CounterMetricFamily(
        "platform_exporter_source_upstream_requests",
        "Requests sent to the upstream by HTTP status code ('error' when no answer came).",
        labels=[*labels, "code"],
    )
    budget = GaugeMetricFamily(
        "platform_exporter_rate_limit_remaining",
        "Remaining upstream API budget as the upstream last reported it.",
        labels=[*labels, "resource"],
    )
    for h in ctx.health:
        key = _key(h, replica)
        interval.add_metric(key, h.interval)
        for reason, n in sorted(h.errors.items()):
            errors.add_metric([*key, reason], n)
        skipped.add_metric(key, h.skipped)
        for code, n in sorted(h.requests.items()):
            requests.add_metric([*key, code], n)
        if h.leased is False and not h.lapsed:
            continue  # a peer polls it: its verdict, freshness and budget are the source's
        if h.lapsed:
            up.add_metric(key, 0.0)  # no replica is known to poll it
        elif h.up is not None:
            up.add_metric(key, 1.0 if h.up else 0.0)
        if h.last_success is not None:
            last.add_metric(key, h.last_success)
        if h.last_duration is not None:
            duration.add_metric(key, h.last_duration)
        for resource, remaining in sorted(h.rate_limit_remaining.items()):
            budget.add_metric([*key, resource], remaining)
    yield from (up, last, duration, interval, errors, skipped, requests, budget)
    yield from _poll_activity(ctx)
    if replica:
        yield from _leases(ctx, replica)


def _replica(ctx: RenderContext) -> str | None:
    """This replica's name when several share the state (its health is labelled with it)."""
    return next((h.replica for h in ctx.health if h.replica), None)


def _key(h: SourceHealth, replica: str | None) -> list[str]:
    return [h.source, h.kind, *([replica] if replica else [])]


def _leases(ctx: RenderContext, replica: str) -> Iterator[Metric]:
    """Which sources this replica polls (holds the lease of), with several replicas."""
    leased = GaugeMetricFamily(
        "platform_exporter_source_leased",
        "1 if this replica holds the source's lease (it alone polls the source), else 0.",
        labels=["source", "kind", "replica"],
    )
    held = GaugeMetricFamily(
        "platform_exporter_leases_held",
        "How many source leases this replica holds.",
        labels=["replica"],
    )
    for h in ctx.health:
        if h.leased is not None:
            leased.add_metric([h.source, h.kind, replica], 1.0 if h.leased else 0.0)
    held.add_metric([replica], next((h.leases_held for h in ctx.health if h.replica), 0))
    yield from (leased, held)


def _poll_activity(ctx: RenderContext) -> Iterator[Metric]:
    """What a running poll is doing: how long it has run, and how long rate limits held it."""
    replica = _replica(ctx)
    labels = ["source", "kind", *(["replica"] if replica else [])]
    in_flight = GaugeMetricFamily(
        "platform_exporter_source_poll_in_flight_seconds",
        "How long the source's running poll has been going; 0 between polls.",
        labels=labels,
    )
    paused = CounterMetricFamily(
        "platform_exporter_source_rate_limit_paused_seconds",
        "Seconds the upstream's rate limits held every request of the source (each pause once).",
        labels=labels,
    )
    held = CounterMetricFamily(
        "platform_exporter_source_rate_limit_paused_requests",
        "Requests that waited for a rate-limit pause of the upstream to end.",
        labels=labels,
    )
    without_catalog = GaugeMetricFamily(
        "platform_exporter_source_without_catalog",
        "1 while the source attributes records with the config's services only, because the "
        "catalog had not loaded within catalog.first_load_timeout of the start; 0 once it "
        "has. Absent for sources that attribute nothing to services, or without a catalog source.",
        labels=labels,
    )
    for h in ctx.health:
        key = _key(h, replica)
        in_flight.add_metric(key, h.in_flight(ctx.now))
        paused.add_metric(key, h.paused_seconds)
        held.add_metric(key, h.paused_requests)
        if h.without_catalog is not None:
            without_catalog.add_metric(key, 1.0 if h.without_catalog else 0.0)
    yield from (in_flight, paused, held, without_catalog)
