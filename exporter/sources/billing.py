"""What the billing sources share: the allocator built from the service catalog,
and UTC day arithmetic for "closed" days."""

from __future__ import annotations

from datetime import date, timedelta

from exporter.config import Config
from exporter.kpis.cost import Allocator, ServiceRule, utc_today


def allocator_for(config: Config) -> Allocator:
    """The allocation rules of every service that declares a ``cost`` block."""
    rules = [
        ServiceRule(
            service=s.name,
            team=s.team,
            tags=dict(s.cost.tags),
            resources=tuple(s.cost.resources),
            accounts=tuple(s.cost.accounts),
            shared=s.cost.shared,
        )
        for s in config.services
        if s.cost is not None
    ]
    return Allocator(rules)


def closed_days(now: float, lookback_days: int) -> list[date]:
    """The last ``lookback_days`` closed UTC days, oldest first (today is never closed)."""
    today = utc_today(now)
    return [today - timedelta(days=n) for n in range(lookback_days, 0, -1)]
