"""The state store under faults: what ``/metrics`` serves is what has been committed.

A poll whose transaction fails (the state disk is full, another process holds the
write lock) changes nothing, on disk or in memory: its source goes down with reason
``state``, the counters served stay those a fresh connection reads from the file, and
the poll after recovery counts every access-log line exactly once.

The state directory is a small tmpfs (the test needs root to mount it and is skipped
otherwise); the access log the NGINX source tails lives outside it, so only the
database runs out of space.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.config import Config
from exporter.core.clock import FixedClock
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.traffic import store as traffic_store
from tests.support.exposition import Exposition
from tests.support.instants import at
from tests.support.tmpfs import tmpfs

NOW = at("mid-month")
REQUESTS = "platform_service_requests_total"
ERRORS = "platform_exporter_source_errors_total"
UP = "platform_exporter_source_up"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test, unmounted after it."""
    with tmpfs(tmp_path / "state", "2m") as mount:
        yield mount


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no byte left; return it (delete it to free)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (65536, 4096, 1):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return filler


class AccessLog:
    """An NGINX JSON access log the test writes to; counts what it wrote."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        path.touch()

    def write(self, n: int) -> None:
        # Spread over the last hour, so a poll writes many minute rows.
        with self.path.open("a", encoding="utf-8") as fh:
            for i in range(n):
                msec = NOW - 3600 + ((self.written + i) * 7) % 3540
                line = {
                    "msec": f"{msec:.3f}",
                    "host": "shop.test",
                    "request_uri": f"/checkout/{i}",
                    "status": "200",
                    "request_time": "0.012",
                }
                fh.write(json.dumps(line) + "\n")
        self.written += n


def make_config(state: Path, log: AccessLog) -> Config:
    return Config(
        state={"path": str(state / "state.db")},
        services=[{"name": "checkout", "team": "payments", "routes": ["shop.test/checkout"]}],
        sources={"nginx": {"access_log": str(log.path)}},
    )


def poll(daemon: Daemon) -> bool:
    (src,) = daemon.sources

    async def once() -> bool:
        try:
            return await daemon.poll(src)
        finally:
            for client in daemon.clients.values():
                await client.aclose()
            daemon.clients.clear()

    return asyncio.run(once())


def stored_requests(db: Path) -> float:
    """The request counter as a separate connection reads it from the file."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT labels, value FROM counters WHERE metric = ?", (REQUESTS,)
        ).fetchall()
    finally:
        conn.close()
    return sum(float(v) for labels, v in rows if json.loads(labels)["service"] == "checkout")


def served(daemon: Daemon) -> Exposition:
    return Exposition.parse(daemon.holder.current.text)


def served_requests(daemon: Daemon) -> float:
    return sum(v for _, v in served(daemon).samples(REQUESTS, service="checkout"))


@pytest.fixture(autouse=True)
def prune_each_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    # Retention runs at most hourly process-wide; here every poll tries it, so its
    # failures on a full or locked database are exercised too.
    monkeypatch.setattr(traffic_store, "_last_prune", [float("-inf")])
    monkeypatch.setattr(traffic_store, "_PRUNE_EVERY", 0.0)


class TestDiskFull:
    def test_a_full_disk_serves_only_what_was_committed_and_recovery_counts_once(
        self, tmp_path: Path, small_disk: Path
    ) -> None:
        """While the disk is full, the source is down with reason ``state`` and the counters
        served equal the stored ones; once space is freed, they equal the log exactly."""
        log = AccessLog(tmp_path / "access.log")
        config = make_config(small_disk, log)
        db = small_disk / "state.db"
        daemon = Daemon(config, clock=FixedClock(NOW))
        log.write(200)
        assert poll(daemon)
        assert served_requests(daemon) == stored_requests(db) == 200

        filler = fill(small_disk)
        log.write(4000)
        for attempt in (1, 2, 3):
            assert not poll(daemon)
            exp = served(daemon)
            assert exp.value(UP, source="nginx") == 0
            assert exp.value(ERRORS, source="nginx", reason="state") == attempt
            assert exp.value(ERRORS, source="nginx", reason="internal") == 0
            assert served_requests(daemon) == stored_requests(db) == 200

        filler.unlink()
        assert poll(daemon), daemon.health["nginx"].last_error
        assert served(daemon).value(UP, source="nginx") == 1
        assert served_requests(daemon) == stored_requests(db) == log.written == 4200
        log.write(300)
        assert poll(daemon)
        assert served_requests(daemon) == stored_requests(db) == 4500
        daemon.store.close()

    def test_sigterm_while_the_disk_is_full_exits_cleanly(
        self, tmp_path: Path, small_disk: Path, daemon_process: object
    ) -> None:
        """SIGTERM with a full state disk exits 0 (the WAL keeps what was committed), and
        the log holds no traceback; the next start serves the committed counts."""
        log = AccessLog(tmp_path / "access.log")
        log.write(100)
        config = {
            "state": {"path": str(small_disk / "state.db")},
            "services": [
                {"name": "checkout", "team": "payments", "routes": ["shop.test/checkout"]}
            ],
            "sources": {"nginx": {"access_log": str(log.path), "interval": 1}},
        }
        proc = daemon_process(config).start()  # type: ignore[operator]
        wait_for(lambda: served_text_requests(proc.metrics()) == 100)
        filler = fill(small_disk)
        log.write(2000)
        wait_for(lambda: "(state)" in proc.log())
        code, _ = proc.terminate()
        assert code == 0, proc.log()
        assert "Traceback" not in proc.log()
        filler.unlink()
        proc.start()
        wait_for(lambda: served_text_requests(proc.metrics()) == 2100)
        assert "Traceback" not in proc.log()


def served_text_requests(body: bytes) -> float:
    return sum(v for _, v in Exposition.parse(body).samples(REQUESTS, service="checkout"))


def wait_for(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        time.sleep(0.1)


class TestLocked:
    def test_a_write_lock_held_elsewhere_marks_the_source_down_then_it_recovers(
        self, tmp_path: Path
    ) -> None:
        """Another process holding the write lock past the busy timeout: the poll fails
        with reason ``state``, ``/metrics`` is refreshed with the source down, the event
        loop keeps running meanwhile; after the lock is released the counts are the truth."""
        log = AccessLog(tmp_path / "access.log")
        config = make_config(tmp_path, log)
        db = tmp_path / "state.db"
        clock = FixedClock(NOW)
        daemon = Daemon(config, clock=clock, store=open_store(str(db), clock, busy_timeout=0.3))
        log.write(100)
        assert poll(daemon)

        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO cursors VALUES ('other', 'x', '1', 0)")
        log.write(500)
        (src,) = daemon.sources

        async def poll_while_ticking() -> tuple[bool, int]:
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            ticker = asyncio.create_task(tick())
            try:
                ok = await daemon.poll(src)
            finally:
                ticker.cancel()
                for client in daemon.clients.values():
                    await client.aclose()
                daemon.clients.clear()
            return ok, ticks

        before = daemon.holder.current
        ok, ticks = asyncio.run(poll_while_ticking())
        assert not ok
        # The poll waited 0.3 s for the lock (twice: its commit and the retention step);
        # the loop went on ticking all the while.
        assert ticks >= 20
        assert daemon.holder.current is not before
        exp = served(daemon)
        assert exp.value(UP, source="nginx") == 0
        assert exp.value(ERRORS, source="nginx", reason="state") == 1
        assert served_requests(daemon) == 100

        other.execute("ROLLBACK")
        other.close()
        assert poll(daemon), daemon.health["nginx"].last_error
        assert served(daemon).value(UP, source="nginx") == 1
        assert served_requests(daemon) == stored_requests(db) == 600
        daemon.store.close()
