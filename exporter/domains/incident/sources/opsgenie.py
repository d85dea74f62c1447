"""Opsgenie (Alert API, ``/v2/alerts``): each service's alerts, selected by its query.

The Alert API rather than the Incident API: it is in every Opsgenie plan, and each alert
reports when it was acknowledged and closed (``report.ackTime`` and
``report.closeTime``, milliseconds after ``createdAt``), where an Opsgenie incident
records neither. A service's query is its ``opsgenie_query`` or its Backstage annotation
``opsgenie.com/component-selector`` (e.g. ``tag:"service:checkout"``); the poll asks for
``(<query>) AND createdAt >= <ms>`` (the poll's window, see
:mod:`~exporter.domains.incident.sources.common`), sorted by ``createdAt`` ascending,
paged by ``offset`` and ``limit`` (100) while the answer's ``paging.next`` says there is
more (at most 20,000 alerts per query). ``Authorization: GenieKey …``; the region picks
``api.opsgenie.com`` or ``api.eu.opsgenie.com``. A 429 (``X-RateLimit-State:
THROTTLED``) pauses the source for ``X-RateLimit-Period-In-Sec`` or ``Retry-After``.

Each alert is an :class:`OnCallIncident`: opened at ``createdAt``, resolved when its
status is ``closed`` (at ``createdAt + closeTime``, else ``updatedAt``); its severity is
its priority, and it counts when that is one of ``incidents.opsgenie_priorities``. Its
``alias`` is its correlation key across tools. An alert two queries select belongs to
the first service in name order.
"""

from __future__ import annotations

from typing import Any

from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext
from exporter.domains.delivery.records import Incident
from exporter.domains.incident.claims import opsgenie_claim
from exporter.domains.incident.records import OnCallIncident
from exporter.domains.incident.settings import OpsgenieSourceConfig
from exporter.domains.incident.sources.common import (
    OVERLAP,
    OnCallSource,
    malformed,
    parse_time,
)

PAGE = 100
MAX_RECORDS = 20_000  # Opsgenie's bound on offset + limit for a list
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")


class OpsgenieSource(OnCallSource):
    """Reads each service's Opsgenie alerts; see the module docstring."""

    kind = "opsgenie"
    settings_model = OpsgenieSourceConfig
    # The DORA incidents it derives are the delivery domain's.
    produces = (OnCallIncident, Incident)
    page_size = PAGE  # tests make it small

    def __init__(self, config: ConfigBase, settings: OpsgenieSourceConfig) -> None:
        super().__init__(config, settings)
        self.og = settings

    def client_options(self) -> dict[str, Any]:
        return {
            "base_url": self.og.url,
            "headers": {"Authorization": f"GenieKey {self.og.api_key.get_secret_value()}"},
            "rate": self.og.requests_per_second,
            "max_connections": 2,
        }

    async def poll(self, ctx: PollContext) -> None:
        queries = self.mapping(ctx).opsgenie_queries
        if not queries:
            ctx.log.debug("no service has an Opsgenie query: nothing to read")
            return
        now = ctx.now()
        start = self.window_start(ctx, self.og.backfill_days)
        records: dict[str, OnCallIncident] = {}
        for service, query in sorted(queries.items()):
            for alert in await self._alerts(ctx, query, start):
                incident = self._incident(alert, service, query)
                records.setdefault(incident.key, incident)
        cursors = {"since": repr(now - OVERLAP), **self.claims_cursor()}
        await ctx.commit(list(records.values()), cursors)

    async def _alerts(self, ctx: PollContext, query: str, start: float) -> list[dict[str, Any]]:
        """Every alert the query selects created at or after ``start``."""
        params = {
            "query": f"({query}) AND createdAt >= {int(start * 1000)}",
            "sort": "createdAt",
            "order": "asc",
            "limit": self.page_size,
        }
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            body = await self.get(ctx, "/v2/alerts", {**params, "offset": offset})
            try:
                page = list(body["data"])
                more = bool((body.get("paging") or {}).get("next"))
            except (KeyError, TypeError) as exc:
                raise malformed("alerts page", exc) from None
            out.extend(page)
            offset += len(page)
            if not more or not page:
                return out
            if offset + self.page_size > MAX_RECORDS:
                ctx.log.warning("Opsgenie lists at most %d alerts per query", MAX_RECORDS)
                return out

    def _incident(self, alert: dict[str, Any], service: str, query: str) -> OnCallIncident:
        try:
            opened = parse_time(alert["createdAt"])
            report = alert.get("report") or {}
            acked = _after(opened, report.get("ackTime"))
            resolved: float | None = None
            if str(alert["status"]) == "closed":
                resolved = _after(opened, report.get("closeTime"))
                if resolved is None:
                    resolved = parse_time(alert["updatedAt"])
            priority = str(alert.get("priority") or "P3")
            return OnCallIncident(
                source=self.kind,
                service=service,
                incident_id=str(alert["id"]),
                opened_at=opened,
                acknowledged_at=acked,
                resolved_at=resolved,
                severity=priority if priority in PRIORITIES else "other",
                counts=priority in self.rules.opsgenie_priorities,
                dedup_key=str(alert["alias"]) if alert.get("alias") else None,
                priority=priority[:64],
                claim=opsgenie_claim(query),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise malformed("alert", exc) from None


def _after(opened: float, millis: Any) -> float | None:
    """``opened`` plus a duration in milliseconds, if one is given."""
    if millis is None:
        return None
    if isinstance(millis, bool) or not isinstance(millis, int | float):
        raise ValueError(f"expected milliseconds, got {millis!r}")
    return opened + float(millis) / 1000.0
