"""The records the on-call sources produce: incidents as PagerDuty and Opsgenie report
them, and Alertmanager's group notifications.

Times are Unix seconds (UTC). ``severity`` is the tool's own scale, bounded: PagerDuty's
urgency (``high``, ``low``), Opsgenie's priority (``P1`` to ``P5``), Alertmanager's
severity label (one of :data:`SEVERITIES`, else ``other``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Alertmanager severity label values kept as they are; any other is "other".
SEVERITIES = ("critical", "error", "warning", "info", "page", "high", "low")


def bounded_severity(value: str) -> str:
    """A severity label value as a bounded label: a known one, lower-cased, else "other"."""
    lowered = value.strip().lower()
    return lowered if lowered in SEVERITIES else "other"


@dataclass(frozen=True, slots=True)
class OnCallIncident:
    """One incident of one service in one on-call tool.

    ``counts`` says whether it passes the configured urgency/priority filters (and so
    counts toward change failure and time to restore). ``dedup_key`` is the tool's
    correlation key (PagerDuty's ``incident_key``, Opsgenie's ``alias``, a hash of
    Alertmanager's group key), by which the same incident is recognised across tools.
    """

    source: str
    service: str
    incident_id: str
    opened_at: float
    acknowledged_at: float | None
    resolved_at: float | None
    severity: str
    counts: bool
    dedup_key: str | None = None
    # The tool's priority, if it has one (PagerDuty's priority name, Opsgenie's priority).
    priority: str | None = None
    # What it was attributed to its service by, resolved again after a catalog change (see
    # exporter.domains.incident.claims); None: by nothing that can change (Alertmanager's
    # service label), or stored before claims were.
    claim: str | None = None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.incident_id}"


@dataclass(frozen=True, slots=True)
class AlertGroupNotice:
    """One Alertmanager webhook notification of an alert group that matched the matchers.

    ``starts_at`` is the earliest ``startsAt`` of its alerts; ``ends_at`` the latest
    ``endsAt`` when the group is resolved. ``dedup_key`` is the SHA-256 of the group key:
    the ``dedup_key`` Alertmanager's own PagerDuty integration and the ``alias`` its
    Opsgenie integration send for the same group.
    """

    dedup_key: str
    service: str
    firing: bool
    starts_at: float
    ends_at: float | None
    severity: str
    counts: bool = True
