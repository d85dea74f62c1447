"""A commit waits for another process's write lock in a worker thread, not on the event
loop: meanwhile the other sources poll, renders run, and ``/metrics`` answers; what it
serves advances only once the waiting commit has committed."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from exporter.config import Config
from exporter.core.source import PollContext
from exporter.daemon import Daemon
from exporter.domains.probe.records import ProbeResult
from tests.support.exposition import Exposition
from tests.support.fakes import ScriptedSource
from tests.support.net import http_get

CHECKS = "platform_probe_checks_total"


def checks(text: bytes) -> float | None:
    return Exposition.parse(text).value(CHECKS, service="a", probe="p", result="success")


class TestCommitOffTheEventLoop:
    def test_a_commit_waiting_for_a_lock_stalls_neither_the_loop_nor_other_sources(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "state.db"
        config = Config(
            server={"listen_address": "127.0.0.1", "port": 0},
            state={"path": str(path), "busy_timeout": "10s"},
            services=[{"name": "a", "team": "x"}],
        )

        async def writes(ctx: PollContext, n: int) -> None:
            await ctx.commit([ProbeResult("a", "p", 1000.0, 0.1, True, "")])

        async def reads(ctx: PollContext, n: int) -> None:
            assert ctx.cursor("anything") is None

        writer = ScriptedSource(config, name="writer", behaviour=writes)
        other = ScriptedSource(config, name="other", behaviour=reads)
        daemon = Daemon(config, sources=[writer, other])
        server = daemon.start_server()
        holder = sqlite3.connect(path, isolation_level=None)

        async def go() -> tuple[float, list[bool], int, float | None, bool]:
            holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
            waiting = asyncio.create_task(daemon.poll(writer))
            await asyncio.sleep(0.3)  # the writer's commit is now waiting for the lock
            started = time.monotonic()
            others = [await daemon.poll(other) for _ in range(3)]
            status, _, body = await asyncio.to_thread(http_get, f"{server.url}/metrics")
            took = time.monotonic() - started
            still_waiting = not waiting.done()
            served_while_locked = checks(body)
            holder.execute("ROLLBACK")
            assert await waiting is True
            return took, others, status, served_while_locked, still_waiting

        try:
            took, others, status, served_while_locked, still_waiting = asyncio.run(go())
            after = daemon.holder.current.text
        finally:
            holder.close()
            server.stop()
            daemon.store.close()
        assert still_waiting
        # Three polls of the other source, each with its render, and a scrape, all done
        # while the writer's commit waited (it would have waited up to 10 s).
        assert others == [True, True, True]
        assert status == 200
        assert took < 5.0
        # Served equals committed: nothing of the waiting commit before it committed.
        assert served_while_locked is None
        assert checks(after) == 1
        assert daemon.health["writer"].up is True
