"""Incident KPIs as pure functions: one service's on-call incidents merged across tools,
time to acknowledge, and the incidents still open.

**Duplicates across tools.** One outage often pages through two tools (Alertmanager
notifies PagerDuty *and* Opsgenie; a team moving from one to the other runs both). An
incident joins an earlier one of the same service (a *group*) when the group has no
incident of its tool yet, their spans overlap (an open incident spans to infinity), and

1. they share a correlation key (PagerDuty ``incident_key``, Opsgenie ``alias``,
   Alertmanager's group key hash, which Alertmanager's own integrations send as those
   keys), or else
2. it opened within ``window`` of the group's first incident.

Two incidents of one tool are never merged: each tool already deduplicates its own.
GitHub and GitLab issue incidents take part as tools of their own (they carry no key,
so they merge by time; see :func:`exporter.domains.incident.store.derive`).
A group opens at its earliest opening, is acknowledged at its earliest
acknowledgement, and is resolved when its last incident resolves (open while any is).
Each group is one incident for change failure and time to restore (see
:mod:`exporter.domains.delivery.kpis`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from exporter.core.stats import quantile

INF = float("inf")
ACK_WINDOWS: dict[str, float] = {"30d": 30 * 86400.0}
QUANTILES = (0.5, 0.9)


@dataclass(frozen=True, slots=True)
class Span:
    """One on-call incident as the KPIs see it."""

    key: str
    source: str
    opened_at: float
    acknowledged_at: float | None
    resolved_at: float | None
    dedup_key: str | None = None

    @property
    def end(self) -> float:
        return INF if self.resolved_at is None else self.resolved_at


@dataclass
class Group:
    """Incidents of one service that are one incident, the earliest first."""

    members: list[Span] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The key of its first incident: the group's identity."""
        return self.members[0].key

    @property
    def opened_at(self) -> float:
        return self.members[0].opened_at

    @property
    def acknowledged_at(self) -> float | None:
        acks = [m.acknowledged_at for m in self.members if m.acknowledged_at is not None]
        return min(acks) if acks else None

    @property
    def resolved_at(self) -> float | None:
        if any(m.resolved_at is None for m in self.members):
            return None
        return max(m.end for m in self.members)

    def takes(self, span: Span, window: float) -> int:
        """How well ``span`` joins: 2 by a shared key, 1 by time, 0 not at all."""
        if any(m.source == span.source for m in self.members):
            return 0
        overlapping = [
            m for m in self.members if m.opened_at <= span.end and span.opened_at <= m.end
        ]
        if not overlapping:
            return 0
        if span.dedup_key and any(m.dedup_key == span.dedup_key for m in overlapping):
            return 2
        return 1 if abs(span.opened_at - self.opened_at) <= window else 0


def merge_duplicates(spans: Iterable[Span], window: float) -> list[Group]:
    """One service's incidents grouped into distinct incidents (see the module doc), in
    order of opening. The result does not depend on the order of ``spans``.

    Incidents are taken in order of opening, so only a group with a member still open at
    an incident's opening can take it: the others are set aside as the sweep passes them.
    """
    groups: list[Group] = []
    active: list[tuple[float, Group]] = []  # (latest end of its members, group)
    for span in sorted(spans, key=lambda s: (s.opened_at, s.key)):
        active = [(end, g) for end, g in active if end >= span.opened_at]
        best: tuple[int, int] | None = None
        for i, (_, group) in enumerate(active):
            score = group.takes(span, window)
            if score and (best is None or score > best[0]):
                best = (score, i)
        if best is None:
            group = Group([span])
            groups.append(group)
            active.append((span.end, group))
        else:
            end, group = active[best[1]]
            group.members.append(span)
            active[best[1]] = (max(end, span.end), group)
    return groups


def earliest_needed(now: float) -> float:
    """The start of the longest window: incidents that ended before it show nowhere."""
    return now - max(ACK_WINDOWS.values())


def acknowledge_times(groups: Sequence[Group], now: float, window: float) -> list[float]:
    """Acknowledged - opened, for incidents acknowledged in ``(now - window, now]``."""
    return [
        max(0.0, g.acknowledged_at - g.opened_at)
        for g in groups
        if g.acknowledged_at is not None and now - window < g.acknowledged_at <= now
    ]


def acknowledge_quantiles(
    groups: Sequence[Group], now: float, window: float
) -> tuple[int, dict[float, float]]:
    """(samples, {q: seconds}) of time to acknowledge over the window."""
    values = acknowledge_times(groups, now, window)
    return len(values), {q: v for q in QUANTILES if (v := quantile(values, q)) is not None}


def opened_in(groups: Sequence[Group], now: float, window: float) -> int:
    """Distinct incidents (duplicates merged) opened in ``(now - window, now]``."""
    return sum(1 for g in groups if now - window < g.opened_at <= now)
