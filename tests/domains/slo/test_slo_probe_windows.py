"""Probe SLO events per window, read from the probe rollups plus exact raw edges."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from exporter.core.clock import FixedClock
from exporter.core.store import write_records
from exporter.domains import open_store
from exporter.domains.probe.records import ProbeResult
from exporter.domains.slo.kpis import EventCounts
from exporter.domains.slo.store import (
    ProbeWindows,
    probe_availability_events,
    probe_latency_events,
)

NOW = datetime(2028, 2, 29, 12, 0, tzinfo=UTC).timestamp()


def result(t: float, duration: float, ok: bool = True) -> ProbeResult:
    return ProbeResult("checkout", "health", t, duration, ok, "" if ok else "timeout")


class TestProbeWindows:
    def test_events_count_exactly_to_the_check_at_each_window_edge(self, tmp_path: Path) -> None:
        """(now - 1h, now]: the check at exactly now - 1h is out, the one 0.5 s later and
        the one at now are in; the 1d window also holds yesterday's failure at 12:00:01.
        A check of exactly the 250 ms threshold is fast, one a microsecond over is slow."""
        store = open_store(str(tmp_path / "s.db"), FixedClock(NOW))
        with store.transaction() as tx:
            write_records(
                tx,
                [
                    result(NOW - 86400 + 1, 1.0, ok=False),
                    result(NOW - 3600, 0.1),
                    result(NOW - 3599.5, 0.25),
                    *(result(NOW - 3000 + 60 * i, 0.1) for i in range(40)),
                    result(NOW - 30, 0.250001),
                    result(NOW, 0.3, ok=False),
                ],
            )
        probes = ProbeWindows(store, NOW)
        windows = {"1h": 3600.0, "1d": 86400.0, "5m": 300.0}
        assert probe_availability_events(probes, "checkout", windows) == {
            "1h": EventCounts(43, 1),
            "1d": EventCounts(45, 2),
            "5m": EventCounts(2, 1),
        }
        assert probe_latency_events(probes, "checkout", windows, 0.25) == {
            "1h": EventCounts(42, 1),
            "1d": EventCounts(43, 1),
            "5m": EventCounts(1, 1),
        }
        assert probe_availability_events(probes, "search", windows)["1h"] == EventCounts(0, 0)
