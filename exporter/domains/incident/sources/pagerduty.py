"""PagerDuty (REST API v2): the incidents of the PagerDuty services mapped to the catalog.

``GET /incidents`` with ``since``/``until`` (the poll's window, see
:mod:`~exporter.domains.incident.sources.common`), every status
(``statuses[]=triggered|acknowledged|resolved``), the mapped ``service_ids[]``, sorted by
creation, paged by ``limit`` (100) and ``offset`` until ``more`` is false; PagerDuty
serves at most 10,000 records per query, so a longer list continues at the next poll.
Headers: ``Authorization: Token token=…`` and ``Accept:
application/vnd.pagerduty+json;version=2``. A 429 pauses the source until
``ratelimit-reset`` (seconds) has passed.

An incident's acknowledgement and resolution come from
``GET /incidents/{id}/log_entries?is_overview=true``: the first ``acknowledge_log_entry``
and the last ``resolve_log_entry``. They are read once per change of state only (an
incident whose stored times already say what its status says is not read again).

Each incident is an :class:`OnCallIncident` of the service its PagerDuty service (or
escalation policy) maps to; its severity is its urgency, and it counts toward the DORA
keys when that urgency is one of ``incidents.pagerduty_urgencies`` and, if
``incidents.pagerduty_priorities`` names any, its priority is one of them. Its priority is
the ``summary`` (the priority's name, e.g. ``P1``) of its ``priority`` reference, null on
an account without priorities. Its ``incident_key`` is its correlation key across tools.
"""

from __future__ import annotations

import asyncio
from typing import Any

from exporter.core.clock import utc_datetime
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext
from exporter.domains.delivery.records import Incident
from exporter.domains.incident import store
from exporter.domains.incident.claims import pagerduty_claim
from exporter.domains.incident.records import OnCallIncident
from exporter.domains.incident.settings import PagerDutySourceConfig
from exporter.domains.incident.sources.common import (
    OVERLAP,
    OnCallSource,
    malformed,
    parse_time,
)
from exporter.domains.incident.sources.mapping import ServiceMap

PAGE = 100
MAX_RECORDS = 10_000  # PagerDuty's bound on offset + limit
STATUSES = ("triggered", "acknowledged", "resolved")


def iso(t: float) -> str:
    return utc_datetime(t).strftime("%Y-%m-%dT%H:%M:%SZ")


class PagerDutySource(OnCallSource):
    """Reads the mapped PagerDuty services' incidents; see the module docstring."""

    kind = "pagerduty"
    settings_model = PagerDutySourceConfig
    # The DORA incidents it derives are the delivery domain's.
    produces = (OnCallIncident, Incident)
    page_size = PAGE  # tests make it small

    def __init__(self, config: ConfigBase, settings: PagerDutySourceConfig) -> None:
        super().__init__(config, settings)
        self.pd = settings

    def client_options(self) -> dict[str, Any]:
        return {
            "base_url": self.pd.base_url,
            "headers": {
                "Authorization": f"Token token={self.pd.token.get_secret_value()}",
                "Accept": "application/vnd.pagerduty+json;version=2",
            },
            "rate": self.pd.requests_per_second,
            "max_connections": self.pd.concurrency,
        }

    async def poll(self, ctx: PollContext) -> None:
        mapping = self.mapping(ctx)
        if not mapping.pagerduty_services and not mapping.escalation_policies:
            ctx.log.debug("no service maps to a PagerDuty service: nothing to read")
            return
        now = ctx.now()
        start = self.window_start(ctx, self.pd.backfill_days)
        listed, complete = await self._list(ctx, start, now, mapping)
        stored = store.stored_times(ctx.store, self.kind, start)
        slots = asyncio.Semaphore(self.pd.concurrency)
        records = await asyncio.gather(
            *(self._record(ctx, item, service, stored, slots) for item, service in listed)
        )
        if complete:
            since = now - OVERLAP
        else:  # PagerDuty's 10,000 records: the next poll goes on from the last one read
            since = max(parse_time(item["created_at"]) for item, _ in listed)
        await ctx.commit(list(records), {"since": repr(since), **self.claims_cursor()})

    async def _list(
        self, ctx: PollContext, start: float, now: float, mapping: ServiceMap
    ) -> tuple[list[tuple[dict[str, Any], str]], bool]:
        """(incident, service) of every mapped incident created in the window, and
        whether the list was read to its end."""
        params: dict[str, Any] = {
            "since": iso(start),
            "until": iso(now),
            "statuses[]": list(STATUSES),
            "time_zone": "UTC",
            "sort_by": "created_at:asc",
            "limit": self.page_size,
        }
        if not mapping.escalation_policies:
            params["service_ids[]"] = sorted(mapping.pagerduty_services)
        out: list[tuple[dict[str, Any], str]] = []
        offset = 0
        while True:
            body = await self.get(ctx, "/incidents", {**params, "offset": offset})
            try:
                page = list(body["incidents"])
                more = bool(body["more"])
                for item in page:
                    service = mapping.pagerduty(
                        str(item["service"]["id"]),
                        (item.get("escalation_policy") or {}).get("id"),
                    )
                    if service is not None:
                        out.append((item, service))
            except (KeyError, TypeError) as exc:
                raise malformed("incidents page", exc) from None
            offset += len(page)
            if not more or not page:
                return out, True
            if offset + self.page_size > MAX_RECORDS:
                ctx.log.warning(
                    "PagerDuty lists at most %d incidents per query: the next poll goes on",
                    MAX_RECORDS,
                )
                return out, False

    async def _record(
        self,
        ctx: PollContext,
        item: dict[str, Any],
        service: str,
        stored: dict[str, tuple[float | None, float | None]],
        slots: asyncio.Semaphore,
    ) -> OnCallIncident:
        try:
            incident_id = str(item["id"])
            status = str(item["status"])
            opened = parse_time(item["created_at"])
            urgency = str(item.get("urgency") or "high")
            priority = _priority(item.get("priority"))
        except (KeyError, TypeError) as exc:
            raise malformed("incident", exc) from None
        acked, resolved = stored.get(incident_id, (None, None))
        needs_ack = status in ("acknowledged", "resolved") and acked is None
        needs_resolve = status == "resolved" and resolved is None
        if (needs_ack and status == "acknowledged") or needs_resolve:
            async with slots:
                log_ack, log_resolve = await self._log_times(ctx, incident_id)
            acked = acked if acked is not None else log_ack
            if status == "resolved":
                resolved = log_resolve or _resolved_fallback(item)
        if status != "resolved":
            resolved = None  # (PagerDuty does not reopen an incident; a stale row would)
        return OnCallIncident(
            source=self.kind,
            service=service,
            incident_id=incident_id,
            opened_at=opened,
            acknowledged_at=acked,
            resolved_at=resolved,
            severity=urgency if urgency in ("high", "low") else "other",
            counts=urgency in self.rules.pagerduty_urgencies
            and (
                not self.rules.pagerduty_priorities or priority in self.rules.pagerduty_priorities
            ),
            dedup_key=str(item["incident_key"]) if item.get("incident_key") else None,
            priority=priority,
            claim=pagerduty_claim(
                str(item["service"]["id"]), (item.get("escalation_policy") or {}).get("id")
            ),
        )

    async def _log_times(
        self, ctx: PollContext, incident_id: str
    ) -> tuple[float | None, float | None]:
        """(first acknowledgement, last resolution) from the incident's log entries."""
        acks: list[float] = []
        resolves: list[float] = []
        offset = 0
        while True:
            body = await self.get(
                ctx,
                f"/incidents/{incident_id}/log_entries",
                {
                    "is_overview": "true",
                    "time_zone": "UTC",
                    "limit": self.page_size,
                    "offset": offset,
                },
            )
            try:
                entries = list(body["log_entries"])
                for entry in entries:
                    kind = str(entry["type"])
                    if kind == "acknowledge_log_entry":
                        acks.append(parse_time(entry["created_at"]))
                    elif kind == "resolve_log_entry":
                        resolves.append(parse_time(entry["created_at"]))
                more = bool(body.get("more"))
            except (KeyError, TypeError) as exc:
                raise malformed("log entries page", exc) from None
            offset += len(entries)
            if not more or not entries or offset + self.page_size > MAX_RECORDS:
                return (min(acks) if acks else None, max(resolves) if resolves else None)


def _resolved_fallback(item: dict[str, Any]) -> float | None:
    """A resolved incident whose log names no resolution: its own timestamps."""
    for field in ("resolved_at", "last_status_change_at"):
        if item.get(field):
            return parse_time(item[field])
    return None


def _priority(ref: Any) -> str | None:
    """The name of an incident's priority (its ``priority_reference``'s ``summary``)."""
    if ref is None:
        return None
    if not isinstance(ref, dict) or not isinstance(ref.get("summary"), str):
        raise TypeError("priority is not a priority reference")
    return str(ref["summary"])[:64]
