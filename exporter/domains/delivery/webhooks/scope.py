"""Which repo (project) a webhook event is about, in the poller's own terms.

An event counts only for what the matching source polls: a repo the config's ``ci``
refs name exactly, or one of the source's ``orgs`` (``groups``) that its include and
exclude patterns select and the config's patterns or the merged catalog map to a
service. The name returned is the one the poll keys its records by (the config's own
spelling of an exact ref; GitHub's full name otherwise), so the event and the poll
write the same key.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from exporter.core.store import Store
from exporter.domains.delivery.settings import DeliverySection, DeliveryServiceFields


class StoreScope:
    """:class:`~exporter.domains.delivery.webhooks.events.Scope` over a config and a store."""

    def __init__(self, config: Any, store: Store) -> None:
        self.config = config
        self.store = store
        self.rules = DeliverySection.of(config).delivery
        # Exact refs per kind, by lowercased name -> (the config's spelling, service).
        self._exact: dict[str, dict[str, tuple[str, str]]] = {}
        for svc in config.services:
            for ref in DeliveryServiceFields.of(svc).ci:
                if not ref.is_pattern:
                    by_name = self._exact.setdefault(ref.kind, {})
                    by_name.setdefault(ref.pattern.lower(), (ref.pattern, svc.name))
        self._lock = threading.Lock()
        self._catalog: tuple[tuple[int, int], dict[str, str]] | None = None

    def _settings(self, kind: str) -> Any:
        return getattr(self.config.sources, kind, None)

    def unit(self, kind: str, name: str) -> tuple[str, str] | None:
        """``(the poll's name of the repo, its service)``, or None when the ``kind`` source
        does not read it."""
        exact = self._exact.get(kind, {}).get(name.lower())
        if exact is not None:
            return exact
        settings = self._settings(kind)
        selectors = getattr(settings, "orgs", None) or getattr(settings, "groups", None) or []
        owner, _, _ = name.rpartition("/")
        leaf = name.rsplit("/", 1)[-1]
        if not any(_within(owner, s.name) and s.selects(leaf) for s in selectors):
            return None
        service = self.config.service_of_repo(kind, name) or self._catalog_index().get(
            f"{kind}:{name}".lower()
        )
        return None if service is None else (name, service)

    def deploy_workflows(self, kind: str) -> list[str]:
        return list(getattr(self._settings(kind), "deploy_workflows", None) or [])

    def uses_deployments(self, kind: str, name: str) -> bool | None:
        raw = self.store.get_cursor(kind, f"{name}:deployments")
        if not raw:
            return None
        try:
            state = json.loads(raw)
        except ValueError:
            return None
        return bool(state.get("any", False)) if isinstance(state, dict) else None

    def _catalog_index(self) -> dict[str, str]:
        """The merged catalog's repos, read again only after the catalog changed."""
        from exporter.core.catalog import repo_index
        from exporter.domains.catalog.store import load_catalog

        versions = self.store.versions()
        stamp = (versions.get("catalog", 0), versions.get("*", 0))
        with self._lock:
            if self._catalog is None or self._catalog[0] != stamp:
                self._catalog = (stamp, repo_index(load_catalog(self.config, self.store)))
            return self._catalog[1]


def _within(owner: str, org: str) -> bool:
    """Whether a repo's owner path is the org (group) or, for GitLab, one of its subgroups."""
    owner, org = owner.lower(), org.lower()
    return owner == org or owner.startswith(org + "/")
