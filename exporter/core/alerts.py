"""Alerts on the exporter's own health.

* ``PlatformExporterSourceDown``: a source's polls fail and it has not succeeded
  for more than two of its intervals (``platform_exporter_source_up``,
  ``..._last_success_timestamp_seconds``, ``..._interval_seconds``), or it never
  succeeded and more than two polls failed (``..._errors_total``);
* ``PlatformExporterDataStale``: a source reports up, but its last success is
  older than five intervals (polls hang or are skipped), so its KPIs are stale;
* ``PlatformExporterRateLimitLow``: an upstream's remaining API budget is nearly
  spent (``platform_exporter_rate_limit_remaining``);

Each domain may add its own (:attr:`exporter.core.domain.Domain.alerts`); the rule
file is one group with these first, then the domains' in the config's order.
"""

from __future__ import annotations

from typing import Any

DOWN_INTERVALS = 2
STALE_INTERVALS = 5
RATE_LIMIT_FLOOR = 100

UP = "platform_exporter_source_up"
LAST = "platform_exporter_source_last_success_timestamp_seconds"
INTERVAL = "platform_exporter_source_interval_seconds"
RATE_LIMIT = "platform_exporter_rate_limit_remaining"
ERRORS = "platform_exporter_source_errors_total"
ON = "job, instance, source, kind"


def rules() -> list[dict[str, Any]]:
    """The alerts on the exporter's own sources."""
    return [
        {
            "alert": "PlatformExporterSourceDown",
            # Down for more than two intervals: the last success is older than that, or, for a
            # source that never succeeded, more than two polls have failed.
            "expr": (
                f"{UP} == 0\n"
                f"and on ({ON})\n"
                "(\n"
                f"  (time() - {LAST}) > {DOWN_INTERVALS} * {INTERVAL}\n"
                f"  or on ({ON})\n"
                "  (\n"
                f"    sum by ({ON}) ({ERRORS}) > {DOWN_INTERVALS}\n"
                f"    unless on ({ON}) {LAST}\n"
                "  )\n"
                ")\n"
            ),
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "Exporter source {{ $labels.source }} is down.",
                "description": "Polls of source {{ $labels.source }} ({{ $labels.kind }}) fail and "
                f"it has not succeeded for more than {DOWN_INTERVALS} polling intervals; its KPIs "
                "keep their last values (see platform_exporter_source_errors_total for why).",
            },
        },
        {
            "alert": "PlatformExporterDataStale",
            "expr": (f"(time() - {LAST}) > {STALE_INTERVALS} * {INTERVAL}\nunless\n{UP} == 0\n"),
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "Data from exporter source {{ $labels.source }} is stale.",
                "description": "Source {{ $labels.source }} last polled successfully "
                "{{ $value | humanizeDuration }} ago, more than "
                f"{STALE_INTERVALS} intervals, although it is not reported down: its polls hang "
                "or are skipped (platform_exporter_source_polls_skipped_total).",
            },
        },
        {
            "alert": "PlatformExporterRateLimitLow",
            "expr": f"{RATE_LIMIT} < {RATE_LIMIT_FLOOR}\n",
            "for": "1m",
            "labels": {"severity": "ticket"},
            "annotations": {
                "summary": "Upstream API budget of {{ $labels.source }} is nearly exhausted.",
                "description": "Only {{ $value }} requests remain for resource "
                "{{ $labels.resource }} of source {{ $labels.source }}; polls will slow down or "
                "fail until the budget resets.",
            },
        },
    ]
