"""The exporter's own health, per source: what the self-metrics are built from.

The scheduler updates a :class:`SourceHealth` around every poll, and the HTTP
client's hooks count upstream requests by status code. Counters here live in
memory and restart at zero with the process, as Prometheus counters may.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from exporter.core.errors import ERROR_REASONS
from exporter.core.lease import Polled


@dataclass
class SourceHealth:
    """Mutable health of one source; read under its lock by the snapshot renderer."""

    source: str
    kind: str
    interval: float
    up: bool | None = None  # None until the first poll ends
    last_success: float | None = None
    last_poll_started: float | None = None
    last_duration: float | None = None
    last_error: str | None = None
    polls: int = 0
    skipped: int = 0
    # Runs skipped while the current poll is still going; reset when a poll starts.
    skipped_in_a_row: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_REASONS, 0))
    requests: dict[str, int] = field(default_factory=dict)
    # Remaining upstream API budget, by resource (e.g. "core", "search" for GitHub).
    rate_limit_remaining: dict[str, float] = field(default_factory=dict)
    # Seconds the upstream asked us to hold every request (each pause counted once), and
    # requests that had to wait for such a pause to end.
    paused_seconds: float = 0.0
    paused_requests: int = 0
    # While a poll runs, when it started (by the daemon's clock); None between polls.
    running_since: float | None = None
    # True while the source polls without the catalog it waited for (the first-load
    # bound passed); False once the catalog loaded; None when it never waited.
    without_catalog: bool | None = None
    # With several replicas (leases on PostgreSQL): this replica's name, and whether it
    # holds the source's lease (None: no leases, a single replica).
    replica: str | None = None
    leased: bool | None = None
    # How many leases the replica holds (the same on each source's health).
    leases_held: int = 0
    # True while the lease this replica held ran out with the state unreachable: no
    # replica is known to poll the source, so this one, its last holder, still reports it
    # (``up`` 0), until a renewal round reaches the state again.
    lapsed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_request(self, code: int | str) -> None:
        with self.lock:
            key = str(code)
            self.requests[key] = self.requests.get(key, 0) + 1

    def set_rate_limit_remaining(self, resource: str, remaining: float) -> None:
        with self.lock:
            self.rate_limit_remaining[resource] = remaining

    def count_pause(self, seconds: float) -> None:
        with self.lock:
            self.paused_seconds += seconds

    def count_paused_request(self) -> None:
        with self.lock:
            self.paused_requests += 1

    def in_flight(self, now: float) -> float:
        """Seconds the running poll has been going at ``now``; 0 between polls."""
        with self.lock:
            return 0.0 if self.running_since is None else max(0.0, now - self.running_since)

    def poll_started(self, now: float) -> None:
        with self.lock:
            self.last_poll_started = now
            self.running_since = now
            self.skipped_in_a_row = 0

    def poll_succeeded(self, now: float, duration: float) -> None:
        with self.lock:
            self.up = True
            self.running_since = None
            self.last_success = now
            self.last_duration = duration
            self.last_error = None
            self.polls += 1

    def poll_failed(self, reason: str, message: str, duration: float) -> None:
        with self.lock:
            self.up = False
            self.running_since = None
            self.last_duration = duration
            self.last_error = message
            self.polls += 1
            self.errors[reason] = self.errors.get(reason, 0) + 1

    def set_without_catalog(self, value: bool) -> None:
        with self.lock:
            self.without_catalog = value

    def poll_ended(self) -> None:
        """The poll ended without a verdict (cancelled at shutdown)."""
        with self.lock:
            self.running_since = None

    def poll_skipped(self) -> int:
        """Count a skipped run; return how many runs this poll has now overrun."""
        with self.lock:
            self.skipped += 1
            self.skipped_in_a_row += 1
            return self.skipped_in_a_row

    def copy(self) -> SourceHealth:
        """A consistent copy for rendering."""
        with self.lock:
            return SourceHealth(
                source=self.source,
                kind=self.kind,
                interval=self.interval,
                up=self.up,
                last_success=self.last_success,
                last_poll_started=self.last_poll_started,
                last_duration=self.last_duration,
                last_error=self.last_error,
                polls=self.polls,
                skipped=self.skipped,
                errors=dict(self.errors),
                requests=dict(self.requests),
                rate_limit_remaining=dict(self.rate_limit_remaining),
                paused_seconds=self.paused_seconds,
                paused_requests=self.paused_requests,
                running_since=self.running_since,
                without_catalog=self.without_catalog,
                replica=self.replica,
                leased=self.leased,
                leases_held=self.leases_held,
                lapsed=self.lapsed,
            )

    def set_leased(self, leased: bool, held: int, *, reached: bool = True) -> None:
        """The lease moved to or from this replica (which holds ``held`` leases now), as
        the last renewal round knows it (``reached``: it reached the state).

        A source a peer holds has no ``up`` and no last success here (the peer's are the
        ones that count: the alert rules read them), until this replica polls it again. A
        lease that ran out unrenewed (the state unreachable) is :attr:`lapsed`: nobody is
        known to hold it, and this replica keeps reporting the source until it knows."""
        with self.lock:
            if leased:
                self.lapsed = False
            elif self.leased or self.lapsed:
                if reached:
                    self.up = None
                    self.last_success = None
                    self.last_poll_started = None
                    self.lapsed = False
                else:
                    self.lapsed = True
            self.leased = leased
            self.leases_held = held

    def inherit(self, last: Polled | None) -> None:
        """This replica took the lease over: until its own first poll, the previous
        holder's last poll (its start, its verdict) stands for the source's."""
        with self.lock:
            if last is not None:
                self.last_poll_started = last.at
                if self.up is None:
                    self.up = last.up

    def last_poll(self) -> Polled | None:
        """When this replica last started a poll of the source, and the last verdict."""
        with self.lock:
            if self.last_poll_started is None:
                return None
            return Polled(self.last_poll_started, self.up)
