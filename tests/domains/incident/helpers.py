"""Helpers for the incident tests: a source polled against a simulated on-call API on a
clock the test moves, the stored incidents, configs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from exporter.config import Config
from exporter.core.clock import Clock
from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client
from exporter.core.sandbox.app import App
from exporter.core.source import PollContext, Source
from exporter.core.store import Store
from exporter.core.upstream import poll_scope
from exporter.domains import open_store

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC: a mid-month instant
H = 3600.0


class MovableClock:
    """A clock a test sets: the fakes and the source read the same instant."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def config(services: list[dict[str, Any]], sources: dict[str, Any], **extra: Any) -> Config:
    return Config(
        services=services,
        sources={"probe": {"enabled": False}, **sources},
        state={"path": ":memory:"},
        delivery={"incident_link_window": "2h"},
        **extra,
    )


@dataclass
class Poller:
    """One source polled against ``app`` into ``store``; each poll's error ("" if none)."""

    source: Source
    app: App
    store: Store
    clock: Clock

    def poll(self, times: int = 1, between: Callable[[], None] | None = None) -> list[str]:
        async def main() -> list[str]:
            health = SourceHealth(self.source.name, self.source.kind, self.source.settings.interval)
            client = build_client(
                health,
                timeout=5.0,
                transport=self.app.transport(),
                clock=self.clock,
                max_pause=self.source.settings.max_pause,
                **self.source.client_options(),
            )
            ctx = PollContext(store=self.store, health=health, client=client, now=self.clock)
            errors: list[str] = []
            try:
                for n in range(times):
                    if n and between is not None:
                        between()
                    try:
                        with poll_scope():
                            await self.source.poll(ctx)
                        errors.append("")
                    except Exception as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                await client.aclose()
            return errors

        return asyncio.run(main())


@contextmanager
def poller(source: Source, app: App, clock: Clock) -> Iterator[Poller]:
    source.clock = clock
    source.backoff = 0.01  # type: ignore[attr-defined]
    store = open_store(":memory:", clock)
    try:
        yield Poller(source, app, store, clock)
    finally:
        store.close()


def stored(store: Store) -> dict[str, tuple[Any, ...]]:
    """key -> (service, opened, acknowledged, resolved, severity, counts) of every on-call row."""
    rows = store.query(
        "SELECT key, service, opened_at, acknowledged_at, resolved_at, severity, counts "
        "FROM oncall_incidents"
    )
    return {str(r[0]): tuple(r)[1:] for r in rows}


def dora_incidents(store: Store) -> dict[str, tuple[Any, ...]]:
    """key -> (service, opened, resolved) of the delivery incidents derived from them."""
    rows = store.query(
        "SELECT key, service, opened_at, resolved_at FROM incidents WHERE source = 'oncall'"
    )
    return {str(r[0]): tuple(r)[1:] for r in rows}
