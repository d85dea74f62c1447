"""The records the synthetic probes produce and the probe store keeps.

Each record has a ``key``: its upstream identity, so that a re-poll or a restart
upserts instead of double-counting. Times are Unix seconds (UTC), durations are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One synthetic check (HTTP, TCP or DNS) of one service's endpoint."""

    service: str
    probe: str
    started_at: float
    duration_seconds: float
    success: bool
    # "" on success; otherwise one of exporter.domains.probe.kpis.FAILURE_REASONS.
    reason: str
    status_code: int | None = None
    # Seconds per phase ("resolve", "connect", "tls", "processing", "transfer"), as measured.
    phases: tuple[tuple[str, float], ...] = ()
    # "1.1" for HTTP/1.1; None when no answer came (or the check is not HTTP).
    http_version: str | None = None
    # "TLSv1.3" etc.; None without TLS.
    tls_version: str | None = None
    # The earliest notAfter of the certificate chain the server sent, Unix seconds.
    cert_not_after: float | None = None
    # Redirects followed (HTTP).
    redirects: int = 0

    @property
    def key(self) -> str:
        # A probe never starts twice at the same instant, so this is unique.
        return f"{self.service}/{self.probe}/{self.started_at:.6f}"


@dataclass(frozen=True, slots=True)
class ProbeSkipped:
    """Slots of one check that passed without a probe (it could not start on time)."""

    service: str
    probe: str
    slots: int

    @property
    def key(self) -> str:
        return f"{self.service}/{self.probe}/skipped"
