"""The daemon as a real process: kill -9 during a poll, restart, SIGTERM.

The probe target is the test's slow upstream: a fast check and a 0.6 s check,
both every 100 ms, so a slow probe is in flight most of the time and the test
can kill the process in the middle of one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.exposition import Exposition
from tests.support.net import http_get, wait_until
from tests.support.slow import SlowUpstream

pytestmark = pytest.mark.integration

SLOW = 0.6


def config(upstream: SlowUpstream, slow_path: str = f"/sleep/{SLOW}") -> dict[str, Any]:
    return {
        "server": {"startup_grace": "1h"},
        "services": [
            {
                "name": "svc",
                "team": "t",
                "probes": [
                    {"name": "fast", "url": f"{upstream.url}/status/200", "interval": "100ms"},
                    {
                        "name": "slow",
                        "url": f"{upstream.url}{slow_path}",
                        "interval": "100ms",
                        "timeout": "30s",
                    },
                ],
            }
        ],
        "sources": {"probe": {"interval": "200ms"}},
    }


class State:
    """Reads the daemon's SQLite file from outside, as a second process would."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path, timeout=5)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def rows(self) -> dict[str, int]:
        return dict(self.query("SELECT probe, COUNT(*) FROM probe_results GROUP BY probe"))  # type: ignore[arg-type]

    def counted(self) -> dict[str, float]:
        """platform_probe_checks_total per probe, from the persisted counters."""
        import json

        out: dict[str, float] = {}
        for labels, value in self.query(
            "SELECT labels, value FROM counters WHERE metric = 'platform_probe_checks_total'"
        ):
            probe = json.loads(labels)["probe"]
            out[probe] = out.get(probe, 0.0) + value
        return out

    def observed(self) -> dict[str, int]:
        import json

        return {
            json.loads(labels)["probe"]: int(n)
            for labels, n in self.query(
                "SELECT labels, count FROM histograms "
                "WHERE metric = 'platform_probe_duration_seconds'"
            )
        }

    def cursors(self) -> dict[str, float]:
        return {
            name: float(value)
            for name, value in self.query("SELECT name, value FROM cursors WHERE source = 'probe'")
        }

    def latest(self) -> dict[str, float]:
        rows = self.query("SELECT service, probe, MAX(started_at) FROM probe_results GROUP BY 1, 2")
        return {f"{s}/{p}": float(t) for s, p, t in rows}

    def rollups(self) -> dict[tuple[int, float, str], tuple[int, int]]:
        """(checks, successes) per minute and hour bucket of each probe, as rolled up."""
        rows = self.query("SELECT size, bucket, probe, checks, successes FROM probe_rollup")
        return {(int(z), float(b), str(p)): (int(c), int(s)) for z, b, p, c, s in rows}

    def rolled_from_raw(self) -> dict[tuple[int, float, str], tuple[int, int]]:
        """The same, computed from the raw rows (the daemon's clock is this machine's, so
        every recent result is in its minute bucket)."""
        out: dict[tuple[int, float, str], tuple[int, int]] = {}
        for probe, started, success in self.query(
            "SELECT probe, started_at, success FROM probe_results"
        ):
            for size in (60, 3600):
                key = (size, float(int(started // size) * size), str(probe))
                c, s = out.get(key, (0, 0))
                out[key] = (c + 1, s + int(success))
        return out

    def assert_consistent(self) -> None:
        """Counters, histograms, rollups and cursors agree exactly with the stored rows."""
        assert self.rollups() == self.rolled_from_raw()
        rows = self.rows()
        assert self.counted() == {p: float(n) for p, n in rows.items()}
        assert self.observed() == rows  # every check succeeded
        # Each check's cursor is the start of its latest stored result, whatever the other's.
        assert self.cursors() == self.latest()


class TestKillAndRestart:
    def test_kill_9_mid_poll_then_restart_counts_nothing_twice(
        self, daemon_process: Callable[..., DaemonProcess], slow_upstream: SlowUpstream
    ) -> None:
        proc = daemon_process(config(slow_upstream)).start()
        state = State(proc.state_path)

        def slow_requests() -> int:
            return sum(1 for p in slow_upstream.requests if p.startswith("/sleep/"))

        wait_until(lambda: state.rows().get("slow", 0) >= 2, timeout=20, what="two polls")
        # Wait for the next poll to be in flight (its slow request has arrived), then kill.
        committed = state.rows()["slow"]
        wait_until(lambda: slow_requests() > committed, timeout=10, what="a poll in flight")
        proc.kill()
        assert state.rows()["slow"] == committed, "the killed poll committed nothing"
        state.assert_consistent()
        before = state.rows()
        cursors_before = state.cursors()

        proc.start()
        wait_until(
            lambda: state.rows().get("slow", 0) >= before["slow"] + 2, timeout=20, what="two more"
        )
        body = proc.metrics()
        code, _ = proc.terminate()
        assert code == 0
        state.assert_consistent()
        # Old results are all still there, and the restarted daemon only added new ones.
        after_cursors = state.cursors()
        assert all(after_cursors[k] > v for k, v in cursors_before.items())
        # The exposition agrees with the store: each result counted exactly once.
        exp = Exposition.parse(body)
        served = sum(v for _, v in exp.samples("platform_probe_checks_total"))
        assert served <= sum(state.rows().values())
        assert served >= sum(before.values()) + 2


class TestSignals:
    def test_sigterm_stops_within_5s_with_exit_0_cancelling_the_poll(
        self, daemon_process: Callable[..., DaemonProcess], slow_upstream: SlowUpstream
    ) -> None:
        """The slow check hangs until released; SIGTERM must not wait for it."""
        proc = daemon_process(config(slow_upstream, "/hold/60")).start()
        wait_until(
            lambda: any(p.startswith("/hold/") for p in slow_upstream.requests),
            timeout=10,
            what="the hanging check",
        )
        assert http_get(f"{proc.url}/healthz")[0] == 200
        code, seconds = proc.terminate()
        assert code == 0
        assert seconds < 5
        log = proc.log()
        assert "cancelling in-flight polls" in log and "stopped; state committed" in log
        assert "Traceback" not in log
        # The cancelled probe left nothing behind (the fast check commits on its own grid).
        assert "slow" not in State(proc.state_path).rows()

    def test_sigint_stops_too(
        self, daemon_process: Callable[..., DaemonProcess], slow_upstream: SlowUpstream
    ) -> None:
        import signal

        proc = daemon_process(config(slow_upstream)).start()
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGINT)
        assert proc.proc.wait(timeout=5) == 0
