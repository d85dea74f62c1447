"""A scriptable in-process source, for testing the daemon without any upstream.

``ScriptedSource(config, name=..., interval=..., behaviour=...)`` counts its
polls and how many ran at once; ``behaviour`` is an async function of the
:class:`~exporter.core.source.PollContext` (and the poll number, from 1) that
may sleep, commit records or raise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from exporter.config import Config
from exporter.core.settings import SourceConfig
from exporter.core.source import PollContext, Source

Behaviour = Callable[[PollContext, int], Awaitable[None]]


async def _nothing(ctx: PollContext, n: int) -> None:
    return None


class ScriptedSource(Source):
    kind = "scripted"

    def __init__(
        self,
        config: Config,
        name: str = "scripted",
        interval: float = 60.0,
        behaviour: Behaviour = _nothing,
        **settings: Any,
    ) -> None:
        super().__init__(config, SourceConfig(interval=interval, **settings))
        self._name = name
        self.behaviour = behaviour
        self.polls = 0
        self.running = 0
        self.max_running = 0
        self.finished = 0
        self.cancelled = 0

    @property
    def name(self) -> str:
        return self._name

    async def poll(self, ctx: PollContext) -> None:
        self.polls += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self.behaviour(ctx, self.polls)
            self.finished += 1
        except BaseException as exc:
            import asyncio

            if isinstance(exc, asyncio.CancelledError):
                self.cancelled += 1
            raise
        finally:
            self.running -= 1
