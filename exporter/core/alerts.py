"""Alerts on the exporter's own health, one replica or several.

* ``PlatformExporterSourceDown``: a source's polls fail and nobody has polled it
  successfully for more than two of its intervals (``platform_exporter_source_up``,
  ``..._last_success_timestamp_seconds``, ``..._interval_seconds``), or none did within a
  day and more than two polls have failed (``..._errors_total``);
* ``PlatformExporterDataStale``: a source is not reported down, but its last success is
  older than five intervals (polls hang or are skipped), so its KPIs are stale;
* ``PlatformExporterRateLimitLow``: an upstream's remaining API budget is nearly spent
  (``platform_exporter_rate_limit_remaining``);
* ``PlatformExporterSourceUnleased``: with several replicas, a source that no live replica
  holds the lease of (``platform_exporter_source_leased``) for longer than ``lease_ttl``
  and the time a taker needs to show: nobody polls it;
* ``PlatformExporterAbsent``: no replica of the exporter has been scraped for 5 minutes
  (``platform_exporter_build_info``): nothing polls, nothing serves the KPIs.

With several replicas only the lease holder of a source reports its ``up``, last success,
poll duration and API budget (:mod:`exporter.core.self_health`), so each alert is about a
source (``job``, ``source``, ``kind``), never about a replica: the label sets drop
``instance``, ``pod`` and ``replica``, and an alert keeps its identity when the lease moves
(a rolling restart, a failover). The last success is the newest any replica reported in the
last day, so the new holder of a failing source inherits its predecessor's; and a down alert
keeps firing (``keep_firing_for``) while its lease moves: the new holder reports its
predecessor's verdict once it holds the lease, and polls when the predecessor's next poll was
due (:mod:`exporter.core.lease`), so even a source polled hourly has a verdict throughout. In
a database outage the last holder of a source reports it down (``up`` 0) once its lease has
run out, and the peers nothing of it: one down alert per source, and the unleased one.

Each domain may add its own (:attr:`exporter.core.domain.Domain.alerts`); the rule
file is one group with these first, then the domains' in the config's order.
"""

from __future__ import annotations

import math
from typing import Any

from exporter.core.settings import ConfigBase

DOWN_INTERVALS = 2
STALE_INTERVALS = 5
RATE_LIMIT_FLOOR = 100
# How far back the last success of a source is looked for (across replicas and lease moves).
LOOKBACK = "1d"
# Beyond lease_ttl, how long a new holder may take to show in Prometheus: the lease round,
# the replica's next refresh (metrics.min_refresh, added), a scrape and a rule evaluation.
UNLEASED_SLACK = 120.0
ABSENT_FOR = "5m"

UP = "platform_exporter_source_up"
LAST = "platform_exporter_source_last_success_timestamp_seconds"
INTERVAL = "platform_exporter_source_interval_seconds"
RATE_LIMIT = "platform_exporter_rate_limit_remaining"
ERRORS = "platform_exporter_source_errors_total"
LEASED = "platform_exporter_source_leased"
LEASES_HELD = "platform_exporter_leases_held"
BUILD_INFO = "platform_exporter_build_info"
ON = "job, source, kind"


def _by(expr: str) -> str:
    return f"max by ({ON}) ({expr})"


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


# Per source, across replicas: the newest success anyone reported, and the interval.
LAST_ANY = _by(f"max_over_time({LAST}[{LOOKBACK}])")
INTERVAL_ANY = _by(INTERVAL)
# Who polls each source: the replica holding its lease, or a replica without leases (SQLite:
# one replica), which polls every source it has. Every live replica lists every source.
HOLDERS = f"{LEASED} == 1\nor\n{INTERVAL} unless on (job, instance) {LEASES_HELD}"
UNLEASED = f"{INTERVAL_ANY}\nunless on ({ON})\n(\n{_indent(HOLDERS)}\n)\n"


def rules(config: ConfigBase) -> list[dict[str, Any]]:
    """The alerts on the exporter's own sources and replicas."""
    return [_down(config), _stale(), _rate_limit(), _unleased(config), _absent()]


def _down(config: ConfigBase) -> dict[str, Any]:
    return {
        "alert": "PlatformExporterSourceDown",
        # The poller says its last poll failed (no replica says it succeeded), and the last
        # success is older than two intervals, or, for a source that has none in the lookback,
        # more than two polls have failed.
        "expr": (
            f"{_by(UP)} == 0\n"
            f"and on ({ON})\n"
            "(\n"
            f"  time() - {LAST_ANY} > {DOWN_INTERVALS} * {INTERVAL_ANY}\n"
            f"  or on ({ON})\n"
            "  (\n"
            f"    sum by ({ON}) ({ERRORS}) > {DOWN_INTERVALS}\n"
            f"    unless on ({ON}) {LAST_ANY}\n"
            "  )\n"
            ")\n"
        ),
        # A failing source's lease moving (its holder died, a rolling restart) leaves no
        # verdict until the new holder's first poll: the alert stays up across that gap.
        "keep_firing_for": unleased_for(config),
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "Exporter source {{ $labels.source }} is down.",
            "description": "Polls of source {{ $labels.source }} ({{ $labels.kind }}) fail and "
            f"it has not succeeded for more than {DOWN_INTERVALS} polling intervals; its KPIs "
            "keep their last values (see platform_exporter_source_errors_total for why).",
        },
    }


def _stale() -> dict[str, Any]:
    return {
        "alert": "PlatformExporterDataStale",
        "expr": (
            f"time() - {LAST_ANY} > {STALE_INTERVALS} * {INTERVAL_ANY}\n"
            f"unless on ({ON})\n"
            f"{_by(UP)} == 0\n"
        ),
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "Data from exporter source {{ $labels.source }} is stale.",
            "description": "Source {{ $labels.source }} last polled successfully "
            "{{ $value | humanizeDuration }} ago, more than "
            f"{STALE_INTERVALS} intervals, although it is not reported down: its polls hang "
            "or are skipped (platform_exporter_source_polls_skipped_total).",
        },
    }


def _rate_limit() -> dict[str, Any]:
    return {
        "alert": "PlatformExporterRateLimitLow",
        "expr": f"min by ({ON}, resource) ({RATE_LIMIT}) < {RATE_LIMIT_FLOOR}\n",
        "for": "1m",
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "Upstream API budget of {{ $labels.source }} is nearly exhausted.",
            "description": "Only {{ $value }} requests remain for resource "
            "{{ $labels.resource }} of source {{ $labels.source }}; polls will slow down or "
            "fail until the budget resets.",
        },
    }


def unleased_for(config: ConfigBase) -> str:
    """How long a source may go without a holder before it alerts (and a down source's
    alert outlasts its lease's move): ``lease_ttl`` (a dead holder's leases are taken over
    within it), the replica's ``min_refresh`` and the slack."""
    seconds = config.state.lease_ttl + config.metrics.min_refresh + UNLEASED_SLACK
    return f"{math.ceil(seconds)}s"


def _unleased(config: ConfigBase) -> dict[str, Any]:
    return {
        "alert": "PlatformExporterSourceUnleased",
        "expr": UNLEASED,
        "for": unleased_for(config),
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "No replica polls exporter source {{ $labels.source }}.",
            "description": "No live replica has held the lease of source {{ $labels.source }} "
            "({{ $labels.kind }}) for longer than state.lease_ttl allows: nobody polls it and "
            "its KPIs keep their last values. Usually the replicas cannot reach the state "
            'database (platform_exporter_source_errors_total{reason="state"}).',
        },
    }


def _absent() -> dict[str, Any]:
    return {
        "alert": "PlatformExporterAbsent",
        # A job whose replicas were scraped in the last day and none is now; or none ever was.
        "expr": (
            f"count by (job) (max_over_time({BUILD_INFO}[{LOOKBACK}]))\n"
            f"unless on (job)\n"
            f"count by (job) ({BUILD_INFO})\n"
            f"or\nabsent({BUILD_INFO})\n"
        ),
        "for": ABSENT_FOR,
        "labels": {"severity": "ticket"},
        "annotations": {
            "summary": "No replica of the exporter is scraped.",
            "description": f"No replica of the exporter has been scraped for {ABSENT_FOR}: "
            "no source is polled and no KPI is served (SLO alerts turn to SLODataAbsent). "
            "Check the pods and Prometheus' targets.",
        },
    }
