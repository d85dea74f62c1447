"""What the polled on-call sources (PagerDuty, Opsgenie) share: the window a poll reads,
the service mapping, GETs under the shared retry policy, time parsing.

A poll reads the incidents created since the last poll (with an overlap, as an incident
may become visible upstream a little after it was created), and back to the oldest one
still open in the store, up to ``incidents.open_lookback``: an incident open across
polls is read again until it resolves. The first poll reads ``backfill_days``, and so
does a poll under a claim the previous ones did not read under (a PagerDuty service or an
Opsgenie query newly mapped to a service: its past incidents are read too). One poll
commits once: a failure part-way commits nothing, and the next poll reads it all again.
"""

from __future__ import annotations

import json
from typing import Any

from exporter.core.errors import MalformedResponse
from exporter.core.httpclient import send
from exporter.core.payload import body_of as body_of
from exporter.core.payload import parse_time as parse_time
from exporter.core.settings import ConfigBase, SourceConfig
from exporter.core.source import PollContext, Source
from exporter.core.store import Store
from exporter.domains.incident import store
from exporter.domains.incident.claims import claimed, claims_text
from exporter.domains.incident.settings import IncidentSection
from exporter.domains.incident.sources.mapping import ServiceMap, service_map

DAY = 86400.0
#: Each poll reads back this far before the previous poll's instant.
OVERLAP = 600.0


def malformed(where: str, exc: Exception) -> MalformedResponse:
    return MalformedResponse(f"unexpected {where}: {type(exc).__name__}: {exc}")


class OnCallSource(Source):
    """A polled on-call tool; subclasses read their API (see the module doc)."""

    attributes_to_services = True
    # The shared retry policy's knobs; tests make them fast.
    attempts = 4
    backoff = 0.5

    def __init__(self, config: ConfigBase, settings: SourceConfig) -> None:
        super().__init__(config, settings)
        self.rules = IncidentSection.of(config).incidents
        # What the last poll read under (see mapping); None: no poll yet.
        self._read_under: frozenset[str] | None = None

    def mapping(self, ctx: PollContext) -> ServiceMap:
        """The service mapping now: the config's, then the merged catalog's annotations.
        What it claims is what this poll reads under (see :meth:`stale_after`)."""
        mapping = self._mapping(ctx.store)
        self._read_under = frozenset(claimed(mapping, self.kind))
        return mapping

    def _mapping(self, store: Store) -> ServiceMap:
        from exporter.domains.catalog.store import load_catalog

        return service_map(self.config, load_catalog(self.config, store))

    def stale_after(self, store: Store, produced: frozenset[type]) -> bool:
        """A catalog listing that claims a PagerDuty service, an escalation policy or an
        Opsgenie query this source did not read under: read again at once, from the
        backfill (:meth:`window_start`), so the claimed service's past incidents are read."""
        from exporter.domains.catalog.records import CatalogListing

        if CatalogListing not in produced or self._read_under is None:
            return False  # not read yet: its first poll reads under the catalog as it is
        return not self._read_under.issuperset(claimed(self._mapping(store), self.kind))

    def claims_cursor(self) -> dict[str, str]:
        """The cursor recording what this poll read under (committed with its records)."""
        return {"claims": claims_text(self._read_under or ())}

    def window_start(self, ctx: PollContext, backfill_days: int) -> float:
        """Where this poll's list starts (see the module doc). A claim the previous polls
        did not read under (a newly claimed PagerDuty service, say) reads the backfill."""
        now = ctx.now()
        backfill = now - backfill_days * DAY
        raw = ctx.cursor("since")
        start = float(raw) if raw else backfill
        before = ctx.cursor("claims")
        if before is not None and not set(json.loads(before)).issuperset(self._read_under or ()):
            start = backfill
        oldest = store.oldest_open(
            ctx.store, self.kind, max(backfill, now - self.rules.open_lookback)
        )
        if oldest is not None:
            start = min(start, oldest)
        return max(start, backfill)

    async def get(self, ctx: PollContext, url: str, params: Any = None) -> Any:
        """The JSON body of a GET under the shared retry policy."""
        response = await send(
            ctx.client,
            "GET",
            url,
            params=params,
            attempts=self.attempts,
            backoff=self.backoff,
            max_retry_after=self.settings.max_pause,
            health=ctx.health,
            clock=ctx.now,
        )
        return body_of(response)
