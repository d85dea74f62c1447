"""The server under load: 50 scrapers for 30 s, no error, p99 under 100 ms (plain and
gzip), while 200 idle connections are open and are closed at the idle timeout.

The server runs in its own process with its default timeouts; the scrapers are
``wrk`` connections (25 plain, 25 gzip, at the same time), each scraping back to back
on one keep-alive connection. ``benchmarks/server_load.py`` prints the same run as a
table (``docs/benchmarks.md``).
"""

from __future__ import annotations

import pytest

from tests.support.load import ServerProcess, scrape_load, wrk_available

SCRAPERS = 50
DURATION = 30.0
IDLE = 200
IDLE_TIMEOUT = 30.0  # the default of server.idle_timeout


def test_fifty_scrapers_for_thirty_seconds_beside_two_hundred_idle_connections() -> None:
    if not wrk_available():
        pytest.fail("wrk is not installed: scripts/test installs the Debian package")
    server = ServerProcess(series=2000, idle_timeout=IDLE_TIMEOUT)
    try:
        result = scrape_load(server.port, SCRAPERS, DURATION, IDLE, IDLE_TIMEOUT + 5)
    finally:
        server.stop()
    for kind, run in result.runs.items():
        assert run.requests > 1000, f"{kind}: only {run.requests} scrapes\n{run.output}"
        assert set(run.errors.values()) == {0}, f"{kind}: {run.errors}\n{run.output}"
        assert run.percentiles[99] < 0.100, f"{kind}: p99 {run.percentiles[99]:.3f}s"
    closed = result.idle_closed_after
    assert None not in closed, f"{closed.count(None)} idle connections left open"
    assert all(IDLE_TIMEOUT - 0.5 <= c <= IDLE_TIMEOUT + 3 for c in closed if c is not None)
