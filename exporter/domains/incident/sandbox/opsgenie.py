"""A simulated Opsgenie Alert API: ``GET /v2/alerts``.

As Opsgenie documents it (docs.opsgenie.com, "Alert API" / "List Alerts", "Pagination",
"Search Query Help", "API Rate Limiting", "Authentication"):

* auth is ``Authorization: GenieKey <key>``; a wrong one is ``401`` with a
  ``message``, ``took`` and ``requestId``;
* ``query`` is a search query: ``tag:"value"`` / ``tag:value``, ``status:open|closed``,
  ``createdAt >= <epoch ms>`` (also ``>``, ``<``, ``<=``), joined by ``AND``, in
  parentheses or not; an unknown term is ``422``;
* ``offset`` and ``limit`` (default 20, at most 100; ``offset + limit`` at most 20,000),
  ``sort=createdAt`` and ``order=asc|desc``; the body's ``paging.next`` (and the
  ``X-Paging-Next`` header) is there only when more alerts follow;
* each alert has ``id``, ``tinyId``, ``alias``, ``status``, ``acknowledged``, ``tags``,
  ``priority``, ``createdAt``, ``updatedAt`` and, once it happened, ``report.ackTime`` /
  ``report.closeTime`` in milliseconds after ``createdAt``;
* a test makes an answer ``429`` (``X-RateLimit-State: THROTTLED``) through a
  :class:`~exporter.core.sandbox.fakes.FaultPlan`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.fakes import FaultPlan, iso_ms
from exporter.core.sandbox.scenario import Scenario
from exporter.domains.incident.sandbox.data import API_KEY, FakeOgAlert, IncidentScenario

_TERM_TAG = re.compile(r'^tag\s*:\s*(?:"([^"]*)"|(\S+))$')
_TERM_STATUS = re.compile(r"^status\s*:\s*(open|closed)$")
_TERM_CREATED = re.compile(r"^createdAt\s*(>=|<=|>|<)\s*(\d+)$")


def _error(status: int, message: str) -> Response:
    return Response.json(
        {"message": message, "took": 0.001, "requestId": str(uuid.uuid4())}, status
    )


def _terms(query: str) -> list[str]:
    """The ``AND``-joined terms of a query, parentheses taken off."""
    flat = query.replace("(", " ").replace(")", " ")
    return [t.strip() for t in re.split(r"\s+AND\s+", flat.strip()) if t.strip()]


Match = Callable[[FakeOgAlert, float], bool]


def _matcher(term: str) -> Match | None:
    if m := _TERM_TAG.match(term):
        tag = m.group(1) if m.group(1) is not None else m.group(2)
        return lambda a, now: tag in a.tags
    if m := _TERM_STATUS.match(term):
        want_closed = m.group(1) == "closed"
        return lambda a, now: a.closed(now) == want_closed
    if m := _TERM_CREATED.match(term):
        op, ms = m.group(1), int(m.group(2)) / 1000.0
        compare: dict[str, Callable[[float], bool]] = {
            ">=": lambda t: t >= ms,
            ">": lambda t: t > ms,
            "<=": lambda t: t <= ms,
            "<": lambda t: t < ms,
        }
        return lambda a, now: compare[op](a.created_at)
    return None


class OpsgenieFake:
    """The simulated Alert API over an :class:`IncidentScenario`, read at ``scenario.clock``."""

    def __init__(
        self, incidents: IncidentScenario, scenario: Scenario, api_key: str = API_KEY
    ) -> None:
        self.incidents = incidents
        self.scenario = scenario
        self.api_key = api_key
        self.faults = FaultPlan()
        app = App()
        app.route("GET", "/v2/alerts")(self._list)
        self.app = self.faults.wrap(app)

    def _list(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"GenieKey {self.api_key}":
            return _error(401, "Could not authenticate")
        matchers: list[Match] = []
        for term in _terms(request.arg("query") or ""):
            matcher = _matcher(term)
            if matcher is None:
                return _error(422, f"Invalid query: {term}")
            matchers.append(matcher)
        try:
            limit = min(100, max(1, int(request.arg("limit") or 20)))
            offset = max(0, int(request.arg("offset") or 0))
        except ValueError:
            return _error(422, "offset and limit must be numbers")
        if offset + limit > 20_000:
            return _error(422, "offset + limit must be at most 20000")
        now = self.scenario.now()
        found = [
            a
            for a in self.incidents.opsgenie
            if a.created_at <= now and all(m(a, now) for m in matchers)
        ]
        found.sort(key=lambda a: a.created_at, reverse=request.arg("order", "desc") == "desc")
        page = found[offset : offset + limit]
        body: dict[str, Any] = {
            "data": [_alert(a, now) for a in page],
            "took": 0.012,
            "requestId": str(uuid.uuid4()),
        }
        headers: dict[str, str] = {}
        if offset + limit < len(found):
            query = {k: v[-1] for k, v in request.query.items()}
            nxt = "https://api.opsgenie.com/v2/alerts?" + urlencode(
                {**query, "offset": offset + limit}
            )
            body["paging"] = {"next": nxt}
            headers["X-Paging-Next"] = nxt
        elif offset:
            body["paging"] = {}
        return Response.json(body, 200, headers)


def _alert(a: FakeOgAlert, now: float) -> dict[str, Any]:
    acked = a.acknowledged_at is not None and a.acknowledged_at <= now
    closed = a.closed(now)
    report: dict[str, Any] = {}
    if acked and a.acknowledged_at is not None:
        report["ackTime"] = round((a.acknowledged_at - a.created_at) * 1000)
        report["acknowledgedBy"] = "oncall@acme.example"
    if closed and a.closed_at is not None:
        report["closeTime"] = round((a.closed_at - a.created_at) * 1000)
        report["closedBy"] = "oncall@acme.example"
    updated = max(
        t for t in (a.created_at, a.acknowledged_at, a.closed_at) if t is not None and t <= now
    )
    return {
        "id": a.id,
        "tinyId": a.tiny_id,
        "alias": a.alias or a.id,
        "message": "Service degraded",
        "status": "closed" if closed else "open",
        "acknowledged": acked,
        "isSeen": acked,
        "tags": list(a.tags),
        "snoozed": False,
        "count": 1,
        "lastOccurredAt": iso_ms(a.created_at),
        "createdAt": iso_ms(a.created_at),
        "updatedAt": iso_ms(updated),
        "source": "Alertmanager",
        "owner": "",
        "priority": a.priority,
        "responders": [],
        "integration": {
            "id": "4513b7ea-3b91-438f-b7e4-e3e54af9147c",
            "name": "Alertmanager",
            "type": "Prometheus",
        },
        "report": report,
    }


def apps(scenario: Scenario) -> dict[str, App]:
    from exporter.domains.incident.sandbox.data import incidents_of

    return {"/opsgenie": OpsgenieFake(incidents_of(scenario), scenario).app}


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Poll the simulated Opsgenie; give each service of the scenario its query."""
    from exporter.domains.incident.sandbox.data import incidents_of

    data = incidents_of(scenario)
    config["sources"]["opsgenie"] = {
        "base_url": f"{base_url}/opsgenie",
        "api_key": API_KEY,
        "interval": "30s",
        "backfill_days": 7,
    }
    for svc in config["services"]:
        if svc["name"] in data.og_queries:
            svc["opsgenie_query"] = data.og_queries[svc["name"]]
