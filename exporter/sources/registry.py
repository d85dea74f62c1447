"""Which source class serves each block under ``sources:`` in the config."""

from __future__ import annotations

from exporter.config import Config
from exporter.sources.base import Source


def source_classes() -> dict[str, type[Source]]:
    from exporter.sources.probe import ProbeSource

    classes: list[type[Source]] = [ProbeSource]
    return {cls.kind: cls for cls in classes}


def build_sources(config: Config) -> list[Source]:
    """One source per enabled block that has something to do."""
    out: list[Source] = []
    classes = source_classes()
    for kind in type(config.sources).model_fields:
        settings = getattr(config.sources, kind)
        if settings is None or not settings.enabled or kind not in classes:
            continue
        source = classes[kind](config, settings)
        if getattr(source, "active", True):
            out.append(source)
    return out
