"""Metric families, built from the store and the sources' health once per refresh.

Each module here is a provider (:mod:`exporter.core.provider`): ``collect(ctx)``
yields prometheus_client metric families.
"""

from __future__ import annotations

from exporter.core import self_health
from exporter.core.provider import Provider


def providers() -> dict[str, Provider]:
    """Every provider, by name: the exporter's own health first, then each provider module
    of this package (one with a ``collect``) in name order."""
    import importlib
    import pkgutil

    found: dict[str, Provider] = {"self_health": self_health.collect}
    for name in sorted(info.name for info in pkgutil.iter_modules(__path__)):
        module = importlib.import_module(f"{__name__}.{name}")
        collect = getattr(module, "collect", None)
        if callable(collect):
            found[name] = collect
    return found
