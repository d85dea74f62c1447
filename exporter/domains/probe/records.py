"""The records the synthetic probes produce and the probe store keeps.

Each record has a ``key``: its upstream identity, so that a re-poll or a restart
upserts instead of double-counting. Times are Unix seconds (UTC), durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One synthetic HTTP check of one service's endpoint."""

    service: str
    probe: str
    started_at: float
    duration_seconds: float
    success: bool
    # "" on success; otherwise one of exporter.domains.probe.kpis.FAILURE_REASONS.
    reason: str
    status_code: int | None = None

    @property
    def key(self) -> str:
        # A probe never starts twice at the same instant, so this is unique.
        return f"{self.service}/{self.probe}/{self.started_at:.6f}"
