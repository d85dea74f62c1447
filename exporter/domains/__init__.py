"""The domains, and what the daemon, the report and the tests ask of all of them at once.

Everything here is imported inside the functions: importing any domain module runs
this package's ``__init__`` first, so a module-level import of the domains here
would re-enter half-initialised modules. A config is typed ``Any`` here: this package
is below the config (the config is built from the domains), so it cannot name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exporter.core.catalog import Catalog
    from exporter.core.health import SourceHealth
    from exporter.core.provider import RenderContext, SourceInfo
    from exporter.core.source import Source
    from exporter.core.store import Store


@cache
def source_classes() -> dict[str, type[Source]]:
    """Every source class by its kind, in the config's order (the order of ``sources:``)."""
    from exporter.domains.catalog.sources.backstage import BackstageSource
    from exporter.domains.cost.sources.aws_cost import AwsCostSource
    from exporter.domains.cost.sources.azure_cost import AzureCostSource
    from exporter.domains.cost.sources.focus import FocusSource
    from exporter.domains.cost.sources.request_totals import RequestTotalsSource
    from exporter.domains.delivery.sources.github import GitHubSource
    from exporter.domains.delivery.sources.gitlab import GitLabSource
    from exporter.domains.delivery.sources.jenkins import JenkinsSource
    from exporter.domains.probe.sources.probe import ProbeSource
    from exporter.domains.traffic.sources.cloudwatch import CloudWatchSource
    from exporter.domains.traffic.sources.kong import KongSource
    from exporter.domains.traffic.sources.nginx import NginxSource
    from exporter.domains.traffic.sources.prometheus import PrometheusSource

    classes: tuple[type[Source], ...] = (
        ProbeSource,
        FocusSource,
        AwsCostSource,
        AzureCostSource,
        RequestTotalsSource,
        BackstageSource,
        KongSource,
        NginxSource,
        CloudWatchSource,
        PrometheusSource,
        GitHubSource,
        GitLabSource,
        JenkinsSource,
    )
    return {cls.kind: cls for cls in classes}


def source_infos(config: Any) -> tuple[SourceInfo, ...]:
    """What providers may know of every source kind under this config, in the config's order."""
    from exporter.core.provider import SourceInfo

    out = []
    for kind, cls in source_classes().items():
        settings = getattr(config.sources, kind, None)
        enabled = settings is not None and bool(settings.enabled)
        out.append(SourceInfo(kind, frozenset(cls.produces), frozenset(cls.tags), enabled))
    return tuple(out)


def render_context(
    config: Any,
    store: Store,
    now: float,
    health: Sequence[SourceHealth] = (),
    infos: Sequence[SourceInfo] | None = None,
) -> RenderContext:
    """What the providers read for one rendering: committed state at ``now``."""
    from exporter.core.provider import RenderContext

    sources = source_infos(config) if infos is None else infos
    return RenderContext(
        config=config,
        store=store,
        health=health,
        now=now,
        sources=sources,
        catalog_loader=lambda: load_catalog(config, store),
    )


def load_catalog(config: Any, store: Store) -> Catalog:
    """The merged service catalog: the config's services and the enabled catalog sources'."""
    from exporter.domains.catalog import store as catalog_store

    return catalog_store.load_catalog(config, store)
