"""Metric families, built from the store and the sources' health once per refresh.

Each module here is a provider (:mod:`exporter.core.provider`): ``collect(ctx)``
yields prometheus_client metric families.
"""

from __future__ import annotations

from pathlib import Path

from exporter.core import self_health
from exporter.core.provider import Provider

# The domain packages, found by path (the interim scan below is to be replaced by a registry).
_DOMAINS = str(Path(__file__).resolve().parents[1] / "domains")


def providers() -> dict[str, Provider]:
    """Every provider, by name: the exporter's own health first, then each domain's ``metrics``
    module (one with a ``collect``) in name order."""
    import importlib
    import pkgutil

    found: dict[str, Provider] = {"self_health": self_health.collect}
    names = (i.name for i in pkgutil.walk_packages([_DOMAINS], "exporter.domains."))
    for module_name in sorted(n for n in names if n.endswith(".metrics")):
        name = module_name.split(".")[2]
        module = importlib.import_module(module_name)
        collect = getattr(module, "collect", None)
        if callable(collect):
            found[name] = collect
    return found
