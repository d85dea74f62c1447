"""Which source class serves each block under ``sources:`` in the config."""

from __future__ import annotations

from exporter.config import Config
from exporter.core.clock import Clock, system_clock
from exporter.core.source import Source


def source_classes() -> dict[str, type[Source]]:
    """Every concrete Source subclass in a domain's ``sources`` package, by its ``kind``."""
    import importlib
    import inspect
    import pkgutil

    import exporter.domains as package

    found: dict[str, type[Source]] = {}
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        if ".sources." not in info.name:
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Source)
                and not inspect.isabstract(obj)
                and obj.__module__ == module.__name__
            ):
                found[obj.kind] = obj
    return found


def build_sources(config: Config, clock: Clock = system_clock) -> list[Source]:
    """One source per enabled block that has something to do, each on ``clock``."""
    out: list[Source] = []
    classes = source_classes()
    for kind in type(config.sources).model_fields:
        settings = getattr(config.sources, kind)
        if settings is None or not settings.enabled or kind not in classes:
            continue
        source = classes[kind](config, settings)
        source.clock = clock
        if getattr(source, "active", True):
            out.append(source)
    return out
