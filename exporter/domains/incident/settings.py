"""Settings of the incident domain: which on-call incidents are a service's, which of them
count toward the DORA keys, the PagerDuty and Opsgenie sources, and the Alertmanager
webhook receiver."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from exporter.core.settings import (
    Duration,
    HttpUrl,
    Secret,
    Section,
    ServiceFields,
    SourceConfig,
    StrictModel,
)
from exporter.core.webhooks import WebhookSettings

#: Backstage annotations that name a service's PagerDuty service and its Opsgenie query.
PAGERDUTY_ANNOTATION = "pagerduty.com/service-id"
OPSGENIE_ANNOTATION = "opsgenie.com/component-selector"

Urgency = Literal["high", "low"]
Priority = Literal["P1", "P2", "P3", "P4", "P5"]

_MATCHER = re.compile(
    r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(\S*))\s*$'
)


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager label matcher (``name=value``, ``!=``, ``=~``, ``!~``; a regex is
    anchored, as in Alertmanager). A missing label matches as the empty string."""

    name: str
    op: str
    value: str

    def matches(self, labels: dict[str, str]) -> bool:
        got = labels.get(self.name, "")
        if self.op in ("=", "!="):
            return (got == self.value) == (self.op == "=")
        found = re.fullmatch(self.value, got) is not None
        return found == (self.op == "=~")


def parse_matcher(text: str) -> Matcher:
    """A matcher from its text; ValueError naming what is wrong."""
    m = _MATCHER.match(text)
    if m is None:
        raise ValueError(f"invalid matcher {text!r}: use name=value, !=, =~ or !~")
    name, op = m.group(1), m.group(2)
    value = m.group(3) if m.group(3) is not None else (m.group(4) or "")
    value = re.sub(r"\\(.)", r"\1", value)
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression in matcher {text!r}: {exc}") from None
    return Matcher(name, op, value)


class AlertmanagerWebhookConfig(WebhookSettings):
    """The ``/webhooks/alertmanager`` receiver: Alertmanager's ``webhook_configs`` posts here.

    A notification (webhook version 4) of a group whose common labels match every one of
    ``matchers`` opens an incident of the service named by its ``service_label``; the
    group's ``resolved`` notification closes it. Give Alertmanager ``send_resolved: true``.
    """

    matchers: list[str] = Field(default_factory=list)
    service_label: str = Field(default="service", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The label whose value is the incident's severity (a bounded label: see docs/metrics.md).
    severity_label: str = Field(default="severity", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("matchers")
    @classmethod
    def _valid_matchers(cls, value: list[str]) -> list[str]:
        for text in value:
            parse_matcher(text)
        return value

    def parsed_matchers(self) -> list[Matcher]:
        return [parse_matcher(t) for t in self.matchers]


class IncidentsConfig(StrictModel):
    """Which on-call incidents count toward change failure and time to restore.

    Every incident is stored and shown in ``platform_incidents_*``; only those passing
    these filters become DORA incidents. The link to a deployment (``delivery.
    incident_link_window``) and the duplicate rule then apply to them.
    """

    # PagerDuty urgencies that count (PagerDuty's own: high, low).
    pagerduty_urgencies: list[Urgency] = Field(default_factory=lambda: list[Urgency](["high"]))
    # PagerDuty priorities that count, by name (the account's own, e.g. P1, P2); an incident
    # must pass both filters. Empty: priorities do not filter (an incident may have none).
    pagerduty_priorities: list[str] = Field(default_factory=list)
    # Opsgenie priorities that count.
    opsgenie_priorities: list[Priority] = Field(
        default_factory=lambda: list[Priority](["P1", "P2", "P3"])
    )
    # Incidents of one service from two tools opened within this of each other (and
    # overlapping in time) are one incident, counted once.
    duplicate_window: Duration = 900.0
    # Incidents still open are re-read this far back at every poll, until they resolve.
    open_lookback: Duration = 14 * 86400.0
    alertmanager: AlertmanagerWebhookConfig | None = None


class PagerDutySourceConfig(SourceConfig):
    """PagerDuty REST API v2: incidents of the services mapped to the catalog."""

    interval: Duration = 300.0
    # The EU service region: https://api.eu.pagerduty.com
    base_url: HttpUrl = "https://api.pagerduty.com"
    token: Secret
    # How far back the first poll reads (PagerDuty answers at most 6 months per query).
    backfill_days: int = Field(default=30, ge=1, le=180)
    concurrency: int = Field(default=4, ge=1, le=16)
    # PagerDuty allows 960 requests a minute per key.
    requests_per_second: float = Field(default=10.0, gt=0)


class OpsgenieSourceConfig(SourceConfig):
    """Opsgenie Alert API (``/v2/alerts``): each service's alerts, by its query."""

    interval: Duration = 300.0
    region: Literal["us", "eu"] = "us"
    # Overrides the region's URL (a proxy, a test).
    base_url: HttpUrl | None = None
    api_key: Secret
    backfill_days: int = Field(default=30, ge=1, le=365)
    requests_per_second: float = Field(default=5.0, gt=0)

    @property
    def url(self) -> str:
        if self.base_url is not None:
            return self.base_url
        return "https://api.eu.opsgenie.com" if self.region == "eu" else "https://api.opsgenie.com"


class IncidentServiceFields(ServiceFields):
    """Where a service's incidents are found in the on-call tools (or the Backstage
    annotations ``pagerduty.com/service-id`` and ``opsgenie.com/component-selector``)."""

    pagerduty_services: list[str] = Field(default_factory=list)
    pagerduty_escalation_policies: list[str] = Field(default_factory=list)
    # An Opsgenie search query selecting the service's alerts, e.g. tag:"service:checkout".
    opsgenie_query: str | None = None


class IncidentSection(Section):
    """The ``incidents:`` section."""

    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)
