"""The incident half of the sandbox scenario: PagerDuty incidents and Opsgenie alerts.

Times are fixed offsets (hours) before the anchor, the scenario clock's instant at first
use, like the delivery scenario's, so the demo's values are known in advance. A fake
answers with each incident as it stands at the scenario's "now": triggered until its
acknowledgement, acknowledged until its resolution.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from exporter.core.sandbox.scenario import Scenario

H = 3600.0
TOKEN = "sandbox-pagerduty-token-0000000000"
ALERTMANAGER_TOKEN = "sandbox-alertmanager-token-000000"
API_KEY = "11111111-2222-3333-4444-555555555555"


def status_at(now: float, acknowledged: float | None, resolved: float | None) -> str:
    if resolved is not None and resolved <= now:
        return "resolved"
    if acknowledged is not None and acknowledged <= now:
        return "acknowledged"
    return "triggered"


@dataclass
class FakePdIncident:
    """A PagerDuty incident of one PagerDuty service."""

    id: str
    number: int
    service_id: str
    urgency: str
    created_at: float
    acknowledged_at: float | None = None
    resolved_at: float | None = None
    incident_key: str | None = None
    escalation_policy_id: str = "PESCAL1"
    # Its priority's name (P1 to P5 by default), None on an account without priorities.
    priority: str | None = None

    def status(self, now: float) -> str:
        return status_at(now, self.acknowledged_at, self.resolved_at)


@dataclass
class FakeOgAlert:
    """An Opsgenie alert."""

    id: str
    tiny_id: str
    priority: str
    tags: list[str]
    created_at: float
    acknowledged_at: float | None = None
    closed_at: float | None = None
    alias: str | None = None

    def closed(self, now: float) -> bool:
        return self.closed_at is not None and self.closed_at <= now


@dataclass
class FakeAlertGroup:
    """An Alertmanager alert group of one alert (grouped by ``alertname``)."""

    alertname: str
    labels: dict[str, str]
    starts_at: float
    ends_at: float | None = None
    summary: str = "Service degraded"

    @property
    def group_key(self) -> str:
        """Its group key as Alertmanager forms it: the route's matchers, then the group's
        labels (the root route here)."""
        return f'{{}}:{{alertname="{self.alertname}"}}'

    def resolved(self, now: float) -> bool:
        return self.ends_at is not None and self.ends_at <= now


@dataclass
class IncidentScenario:
    anchor: float
    pagerduty: list[FakePdIncident] = field(default_factory=list)
    opsgenie: list[FakeOgAlert] = field(default_factory=list)
    alert_groups: list[FakeAlertGroup] = field(default_factory=list)
    # The PagerDuty services and Opsgenie queries of the catalog's services.
    pd_services: dict[str, str] = field(default_factory=dict)
    og_queries: dict[str, str] = field(default_factory=dict)

    def at(self, hours_ago: float) -> float:
        return self.anchor - hours_ago * H


def alert_key(text: str) -> str:
    """A correlation key as Alertmanager's integrations send it (SHA-256 hex)."""
    return hashlib.sha256(text.encode()).hexdigest()


def build(anchor: float) -> IncidentScenario:
    """Accounts pages through both tools; payments-api has an Opsgenie alert open now."""
    s = IncidentScenario(anchor=anchor)
    s.pd_services = {"accounts": "PACCNTS"}
    s.og_queries = {
        "accounts": 'tag:"service:accounts"',
        "payments-api": 'tag:"service:payments-api"',
    }
    outage = alert_key('{}:{alertname="AccountsDown"}')
    # 1h after the accounts deploy 20h ago: a failed change, restored in 1.5h. Alertmanager
    # paged both tools: one incident, counted once (same key).
    s.pagerduty.append(
        FakePdIncident(
            "Q1ACC0001", 101, "PACCNTS", "high", s.at(19), s.at(18.75), s.at(17.5), outage
        )
    )
    s.opsgenie.append(
        FakeOgAlert(
            "6a1c0b34-acc1-4e0e-9f10-000000000001",
            "201",
            "P1",
            ["service:accounts"],
            s.at(19),
            s.at(18.9),
            s.at(17.5),
            outage,
        )
    )
    # Alertmanager posts the same group to the exporter: still one incident.
    critical = {"service": "accounts", "severity": "critical"}
    s.alert_groups.append(FakeAlertGroup("AccountsDown", critical, s.at(19), s.at(17.5)))
    # Known to Alertmanager only: 40h to 38h ago, no deploy in the 2h before it; restored in 2h.
    s.alert_groups.append(FakeAlertGroup("AccountsErrorRate", critical, s.at(40), s.at(38)))
    # Low urgency: stored and shown, not a DORA incident.
    s.pagerduty.append(FakePdIncident("Q1ACC0002", 102, "PACCNTS", "low", s.at(60), None, s.at(59)))
    # 10h after the 100h deploy (outside the 2h window): no failed change; restored in 0.5h.
    s.opsgenie.append(
        FakeOgAlert(
            "6a1c0b34-acc1-4e0e-9f10-000000000002",
            "202",
            "P2",
            ["service:accounts"],
            s.at(90),
            s.at(89.9),
            s.at(89.5),
        )
    )
    # Open now: in the open gauge, no time to restore yet.
    s.opsgenie.append(
        FakeOgAlert(
            "6a1c0b34-pay1-4e0e-9f10-000000000003",
            "203",
            "P1",
            ["service:payments-api"],
            s.at(0.5),
        )
    )
    return s


def incidents_of(scenario: Scenario) -> IncidentScenario:
    """The incident scenario attached to a sandbox :class:`Scenario` (built on first use)."""
    existing = getattr(scenario, "_incidents", None)
    if not isinstance(existing, IncidentScenario):
        existing = build(scenario.now())
        setattr(scenario, "_incidents", existing)  # noqa: B010
    return existing


#: The accounts service's DORA values with these incidents beside the delivery scenario
#: (``exporter.domains.delivery.sandbox.data``, demo rules: link window 2h), at any render
#: time within a few minutes after the anchor. Hours.
EXPECTED_ACCOUNTS: dict[str, object] = {
    # The incident paged through PagerDuty, Opsgenie and the Alertmanager webhook 1h after
    # the 20h deploy fails it (counted once); the Opsgenie one 10h after the 100h deploy and
    # the Alertmanager-only one (40h) link nothing.
    "change_failure": (1, 2),
    # restores 1.5h (all three resolved 17.5h ago), 0.5h and 2h (Alertmanager only):
    # median 1.5, p90 1.5 + 0.8 * 0.5.
    "restore": {"n": 3, "0.5": 1.5, "0.9": 1.9},
    # frequency 1/15 a day -> high; lead 20h -> high; CFR 1/2 -> low; restore 1.5h -> high.
    "level": "low",
    # acknowledged 0.1h after opening (Opsgenie first) and 0.1h; Alertmanager has no
    # acknowledgement: median 0.1h of 2.
    "acknowledge": {"n": 2, "0.5": 0.1},
    "distinct_30d": 3,
    # PagerDuty: one high, one low urgency; Opsgenie: a P1 and a P2; Alertmanager: two
    # critical groups.
    "totals": {
        ("pagerduty", "high"): 1,
        ("pagerduty", "low"): 1,
        ("opsgenie", "P1"): 1,
        ("opsgenie", "P2"): 1,
        ("alertmanager", "critical"): 2,
    },
}
