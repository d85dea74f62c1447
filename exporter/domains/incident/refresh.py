"""The incident domain's derived state: the duplicate window and the merged incidents."""

from __future__ import annotations

from typing import Any

from exporter.core.store import Store
from exporter.domains.incident import claims, store
from exporter.domains.incident.settings import IncidentSection


def refresh(config: Any, db: Store, now: float) -> None:
    """At start: the configured duplicate window, which the writers apply. At start and
    after a poll that wrote incidents: issue incidents merged with on-call ones. At start
    and after a catalog poll: on-call incidents attributed again by their claims."""
    store.set_duplicate_window(db, IncidentSection.of(config).incidents.duplicate_window)
    claims.reattribute(config, db)
    store.merge_issue_incidents(db)
