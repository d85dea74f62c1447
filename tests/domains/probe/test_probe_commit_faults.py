"""Probe results whose commit fails wait in memory and go with the next commit: once the
store recovers, each check is counted exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.core.errors import StateError
from exporter.core.health import SourceHealth
from exporter.core.source import PollContext
from exporter.domains import open_store
from exporter.domains.probe.records import ProbeResult
from exporter.domains.probe.sources.probe import ProbeSource


def result(at: float) -> ProbeResult:
    return ProbeResult("svc", "p0", at, 0.01, True, "", 200)


class TestAFailedCommit:
    def test_hands_its_results_to_the_next_commit(self, tmp_path: Path) -> None:
        config = Config(
            state={"path": str(tmp_path / "s.db")},
            services=[{"name": "svc", "team": "t", "probes": [{"name": "p0", "url": "http://x/"}]}],
        )
        store = open_store(str(tmp_path / "s.db"), busy_timeout=0.05)
        src = ProbeSource(config, config.sources.probe)
        ctx = PollContext(store=store, health=SourceHealth("probe", "probe", 5), client=None)  # type: ignore[arg-type]
        lock = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        with pytest.raises(StateError):
            asyncio.run(src._commit(ctx, [result(100.0)], {("svc", "p0"): 2}))
        lock.execute("ROLLBACK")
        lock.close()
        # The next poll has one new result and one more skipped slot.
        asyncio.run(src._commit(ctx, [result(130.0)], {("svc", "p0"): 1}))
        asyncio.run(src._commit(ctx, [], {}))  # nothing handed back twice
        rows = store.query("SELECT started_at FROM probe_results ORDER BY started_at")
        assert [float(r[0]) for r in rows] == [100.0, 130.0]
        skipped = store.counters("platform_probe_skipped_total")
        assert [v for _, v in skipped] == [3.0]
        assert store.cursors("probe") == {"svc/p0": "130.0"}
        store.close()
