"""A simulated PagerDuty REST API v2: ``GET /incidents`` and ``GET /incidents/{id}/log_entries``.

As PagerDuty documents them (developer.pagerduty.com, "List incidents", "List log entries
for an incident", "Pagination", "Rate Limits", "Authentication"):

* auth is ``Authorization: Token token=<key>``: a missing or wrong one is ``401`` with
  ``{"error": {"message": ..., "code": 2006}}``; the request must accept
  ``application/vnd.pagerduty+json;version=2``;
* ``since``/``until`` bound ``created_at``; ``statuses[]`` and ``service_ids[]`` filter;
  ``sort_by=created_at:asc``; classic pagination with ``limit`` (default 25, at most 100),
  ``offset`` and ``more``, and ``offset + limit`` over 10,000 is ``400``;
* every answer carries ``ratelimit-limit``, ``ratelimit-remaining`` and
  ``ratelimit-reset`` (seconds left); a test makes it ``429`` through a
  :class:`~exporter.core.sandbox.fakes.FaultPlan`;
* an incident's ``priority`` is a ``priority_reference`` whose ``summary`` is the
  priority's name, or null on an account without priorities (the "List incidents"
  response example; support.pagerduty.com, "Incident Priority");
* ``log_entries`` holds the ``trigger_log_entry``, ``acknowledge_log_entry`` and
  ``resolve_log_entry`` that have happened by "now".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.fakes import FaultPlan, iso, parse_iso
from exporter.core.sandbox.scenario import Scenario
from exporter.domains.incident.sandbox.data import TOKEN, FakePdIncident, IncidentScenario

ACCEPT = "application/vnd.pagerduty+json;version=2"
RATE_HEADERS = {"ratelimit-limit": "960", "ratelimit-remaining": "959", "ratelimit-reset": "30"}


def _error(status: int, message: str, code: int) -> Response:
    return Response.json({"error": {"message": message, "code": code}}, status, RATE_HEADERS)


class PagerDutyFake:
    """The simulated API over an :class:`IncidentScenario`, read at ``scenario.clock``."""

    def __init__(self, incidents: IncidentScenario, scenario: Scenario, token: str = TOKEN) -> None:
        self.incidents = incidents
        self.scenario = scenario
        self.token = token
        self.faults = FaultPlan()
        app = App()
        app.route("GET", "/incidents")(self._list)
        app.route("GET", "/incidents/{id}/log_entries")(self._log_entries)
        self.app = self.faults.wrap(app)

    def _refusal(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Token token={self.token}":
            return _error(401, "Authentication Failed", 2006)
        if ACCEPT not in request.headers.get("accept", ""):
            return _error(400, "Invalid Input Provided: Accept header", 2001)
        return None

    def _page(self, request: Request) -> tuple[int, int] | Response:
        try:
            limit = min(100, max(1, int(request.arg("limit") or 25)))
            offset = max(0, int(request.arg("offset") or 0))
        except ValueError:
            return _error(400, "Invalid Input Provided: limit/offset", 2001)
        if offset + limit > 10_000:
            return _error(400, "Offset must be less than 10000", 2001)
        return limit, offset

    def _list(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        paging = self._page(request)
        if isinstance(paging, Response):
            return paging
        limit, offset = paging
        now = self.scenario.now()
        since = parse_iso(request.arg("since") or iso(now - 30 * 86400))
        until = parse_iso(request.arg("until") or iso(now))
        statuses = set(request.query.get("statuses[]", []))
        services = set(request.query.get("service_ids[]", []))
        found = [
            i
            for i in self.incidents.pagerduty
            if since <= i.created_at < until
            and i.created_at <= now
            and (not statuses or i.status(now) in statuses)
            and (not services or i.service_id in services)
        ]
        descending = request.arg("sort_by", "") == "created_at:desc"
        found.sort(key=lambda i: i.created_at, reverse=descending)
        page = found[offset : offset + limit]
        body = {
            "incidents": [_incident(i, now) for i in page],
            "limit": limit,
            "offset": offset,
            "more": offset + limit < len(found),
            "total": len(found) if request.arg("total") == "true" else None,
        }
        return Response.json(body, 200, RATE_HEADERS)

    def _log_entries(self, request: Request) -> Response:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        incident = next((i for i in self.incidents.pagerduty if i.id == request.params["id"]), None)
        if incident is None:
            return _error(404, "Not Found", 2100)
        paging = self._page(request)
        if isinstance(paging, Response):
            return paging
        limit, offset = paging
        now = self.scenario.now()
        entries = [
            (kind, t)
            for kind, t in (
                ("trigger_log_entry", incident.created_at),
                ("acknowledge_log_entry", incident.acknowledged_at),
                ("resolve_log_entry", incident.resolved_at),
            )
            if t is not None and t <= now
        ]
        page = entries[offset : offset + limit]
        body = {
            "log_entries": [
                {
                    "id": f"R{incident.id}{n}",
                    "type": kind,
                    "summary": kind.replace("_log_entry", "d").capitalize(),
                    "created_at": iso(t),
                    "incident": {"id": incident.id, "type": "incident_reference"},
                }
                for n, (kind, t) in enumerate(page, start=offset)
            ],
            "limit": limit,
            "offset": offset,
            "more": offset + limit < len(entries),
            "total": None,
        }
        return Response.json(body, 200, RATE_HEADERS)


def _priority(name: str | None) -> dict[str, Any] | None:
    """A ``priority_reference`` as "List incidents" shows it (its response example:
    ``{"id": "P53ZZH5", "type": "priority_reference", "summary": "P2", "self":
    "https://api.pagerduty.com/priorities/P53ZZH5"}``); null where the account has no
    priorities (support.pagerduty.com, "Incident Priority")."""
    if name is None:
        return None
    pid = "PPRI" + name.upper().replace(" ", "")[:3]
    return {
        "id": pid,
        "type": "priority_reference",
        "summary": name,
        "self": f"https://api.pagerduty.com/priorities/{pid}",
    }


def _incident(i: FakePdIncident, now: float) -> dict[str, Any]:
    status = i.status(now)
    changed = {
        "triggered": i.created_at,
        "acknowledged": i.acknowledged_at,
        "resolved": i.resolved_at,
    }[status]
    return {
        "id": i.id,
        "type": "incident",
        "summary": f"[#{i.number}] Service degraded",
        "self": f"https://api.pagerduty.com/incidents/{i.id}",
        "html_url": f"https://acme.pagerduty.com/incidents/{i.id}",
        "incident_number": i.number,
        "title": "Service degraded",
        "created_at": iso(i.created_at),
        "updated_at": iso(changed or i.created_at),
        "last_status_change_at": iso(changed or i.created_at),
        "resolved_at": iso(i.resolved_at) if status == "resolved" and i.resolved_at else None,
        "status": status,
        "incident_key": i.incident_key,
        "urgency": i.urgency,
        "priority": _priority(i.priority),
        "service": {"id": i.service_id, "type": "service_reference", "summary": i.service_id},
        "escalation_policy": {
            "id": i.escalation_policy_id,
            "type": "escalation_policy_reference",
        },
        "assignments": [],
        "teams": [],
    }


def apps(scenario: Scenario) -> dict[str, App]:
    from exporter.domains.incident.sandbox.data import incidents_of

    return {"/pagerduty": PagerDutyFake(incidents_of(scenario), scenario).app}


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Poll the simulated PagerDuty; map its services to the catalog's."""
    from exporter.domains.incident.sandbox.data import incidents_of

    data = incidents_of(scenario)
    config["sources"]["pagerduty"] = {
        "base_url": f"{base_url}/pagerduty",
        "token": TOKEN,
        "interval": "30s",
        "backfill_days": 7,
    }
    for svc in config["services"]:
        if svc["name"] in data.pd_services:
            svc["pagerduty_services"] = [data.pd_services[svc["name"]]]
