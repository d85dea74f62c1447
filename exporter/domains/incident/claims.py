"""What attributes an on-call incident to its service, and its re-attribution after a
catalog change.

A PagerDuty incident is claimed by its PagerDuty service id, else by its escalation
policy (claim ``pagerduty:<service id>/<policy id>``); an Opsgenie alert by the query
that selected it (``opsgenie:<query>``). The claim is stored with the incident. After
every catalog poll, each stored claim is resolved again under the mapping as it is now
(:func:`reattribute`):

* an incident whose claim now maps to another service moves to it;
* one that nobody claims any more is dropped (its source reads it again if it is claimed
  again);
* both services' DORA incidents are derived again.

Alertmanager incidents are attributed by their service label, which a catalog change
does not move; incidents stored before claims were keep their service.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from exporter.core.redact import excerpt
from exporter.core.settings import ConfigBase
from exporter.core.store import Store
from exporter.domains.incident import store as incident_store
from exporter.domains.incident.sources.mapping import ServiceMap, service_map

log = logging.getLogger("exporter.incident")

PAGERDUTY = "pagerduty:"
OPSGENIE = "opsgenie:"
# How many moved claims a log line names; the rest are counted.
_NAMED = 5


def pagerduty_claim(service_id: str, policy_id: str | None) -> str:
    """The claim of a PagerDuty incident: its service's and escalation policy's ids."""
    return f"{PAGERDUTY}{service_id}/{policy_id or ''}"


def opsgenie_claim(query: str) -> str:
    """The claim of an Opsgenie alert: the query that selected it."""
    return OPSGENIE + query


def resolve(claim: str, mapping: ServiceMap) -> str | None:
    """The service ``claim`` belongs to under ``mapping``; None: nobody claims it.

    As the sources attribute: a PagerDuty service id before an escalation policy; of
    several services with the same Opsgenie query, the first in name order."""
    if claim.startswith(PAGERDUTY):
        service_id, _, policy_id = claim[len(PAGERDUTY) :].partition("/")
        return mapping.pagerduty(service_id, policy_id or None)
    if claim.startswith(OPSGENIE):
        query = claim[len(OPSGENIE) :]
        return min((s for s, q in mapping.opsgenie_queries.items() if q == query), default=None)
    return None


def claimed(mapping: ServiceMap, kind: str) -> list[str]:
    """What ``kind``'s source reads under ``mapping`` (PagerDuty service and escalation
    policy ids, Opsgenie queries), sorted: a change tells the source to read again."""
    if kind == "opsgenie":
        return sorted(set(mapping.opsgenie_queries.values()))
    return sorted(
        [f"service:{s}" for s in mapping.pagerduty_services]
        + [f"policy:{p}" for p in mapping.escalation_policies]
    )


def claims_text(items: Iterable[str]) -> str:
    """``claimed`` as stored in a source's cursor."""
    return json.dumps(sorted(items), separators=(",", ":"))


def reattribute(config: ConfigBase, store: Store) -> None:
    """Resolve every stored claim again; move or drop the incidents whose service changed."""
    from exporter.domains.catalog.store import load_catalog

    stored = incident_store.claims(store)
    if not stored:
        return
    mapping = service_map(config, load_catalog(config, store))
    resolved = [
        (source, claim, service, resolve(claim, mapping)) for source, claim, service in stored
    ]
    moves = [m for m in resolved if m[3] != m[2]]
    if not moves:
        return
    incident_store.move_claims(store, moves)
    named = ", ".join(
        f"{excerpt(claim, 120)}: {old} -> {new or '(unclaimed: dropped)'}"
        for _, claim, old, new in moves[:_NAMED]
    )
    more = f" and {len(moves) - _NAMED} more" if len(moves) > _NAMED else ""
    log.info("incidents re-attributed after a catalog change: %s%s", named, more)
