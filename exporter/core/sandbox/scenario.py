"""The seeded scenario behind the sandbox: who the teams and services are, and how they behave.

Behaviour is a pure function of (seed, service, time), so a run is
reproducible and its KPI values can be computed in advance. Outages can also be
switched on by hand through the control API, for alerting tests.

The scenario carries the sandbox's one clock: every fake upstream reads "now"
from ``scenario.clock``, so a test (or ``demo --as-of``) that gives the scenario
and the daemon the same clock sees the platform as it stands at that instant.
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field

from exporter.core.clock import Clock, system_clock


@dataclass(frozen=True)
class SimService:
    """A simulated service with a health endpoint."""

    name: str
    team: str
    # Median latency of its health endpoint, in seconds.
    median_latency: float
    # Scheduled outages: down for `outage_seconds` out of every `outage_every` seconds.
    outage_every: float = 0.0
    outage_seconds: float = 0.0
    outage_offset: float = 0.0
    # When the service entered the catalog, in days before "now": the new service is young.
    registered_days_ago: int = 400

    @property
    def scheduled_uptime(self) -> float:
        """The share of time the service is up on its schedule."""
        if not self.outage_every:
            return 1.0
        return 1.0 - self.outage_seconds / self.outage_every


SERVICES: tuple[SimService, ...] = (
    SimService(
        "checkout", "payments", 0.040, outage_every=600, outage_seconds=30, outage_offset=120
    ),
    SimService("payments-api", "payments", 0.025),
    SimService(
        "search", "discovery", 0.090, outage_every=900, outage_seconds=90, outage_offset=400
    ),
    SimService("accounts", "identity", 0.015),
    # A new service, onboarded recently: time-to-production and adoption follow it.
    SimService("recommendations", "discovery", 0.060, registered_days_ago=12),
)


def _unit(seed: int, *parts: object) -> float:
    """A deterministic number in (0, 1) from the seed and parts."""
    digest = hashlib.blake2b(f"{seed}:{':'.join(map(str, parts))}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


@dataclass
class Scenario:
    """The scenario state the fake upstreams read."""

    seed: int = 42
    services: tuple[SimService, ...] = SERVICES
    clock: Clock = system_clock
    forced_outages: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def now(self) -> float:
        """The scenario's current instant (UTC epoch seconds)."""
        return self.clock()

    def service(self, name: str) -> SimService | None:
        return next((s for s in self.services if s.name == name), None)

    def is_down(self, name: str, t: float) -> bool:
        svc = self.service(name)
        if svc is None:
            return True
        with self.lock:
            if name in self.forced_outages:
                return True
        if not svc.outage_every:
            return False
        return (t + svc.outage_offset) % svc.outage_every < svc.outage_seconds

    def latency(self, name: str, t: float) -> float:
        """Log-normal latency around the service's median (sigma 0.4), fixed per 100 ms slot."""
        svc = self.service(name)
        if svc is None:
            return 0.0
        u1 = _unit(self.seed, name, int(t * 10), "a")
        u2 = _unit(self.seed, name, int(t * 10), "b")
        normal = math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)
        return min(svc.median_latency * math.exp(0.4 * normal), 2.0)

    def set_outage(self, name: str, down: bool) -> None:
        with self.lock:
            if down:
                self.forced_outages.add(name)
            else:
                self.forced_outages.discard(name)
