"""Which source class serves each block under ``sources:`` in the config."""

from __future__ import annotations

from exporter.config import Config
from exporter.core.clock import Clock, system_clock
from exporter.core.source import Source
from exporter.domains import source_classes


def build_sources(config: Config, clock: Clock = system_clock) -> list[Source]:
    """One source per enabled block that has something to do, each on ``clock``."""
    out: list[Source] = []
    for kind, cls in source_classes().items():
        settings = getattr(config.sources, kind)
        if settings is None or not settings.enabled:
            continue
        source = cls(config, settings)
        source.clock = clock
        if getattr(source, "active", True):
            out.append(source)
    return out
