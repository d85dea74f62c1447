"""Which service stored delivery records belong to, under the catalog as it is now.

CI/CD sources store each run, deployment, commit and merge request with the repo (GitLab
project, Jenkins job) it was read from, and the service that repo mapped to then.
:func:`refresh` runs at start and after every catalog poll: it maps every stored repo
again, with the same rule the sources use (the config's ``ci`` refs first, then the
merged catalog's repo annotations), and gives the records of a repo whose service
changed (a service renamed, a repo claimed by another component) to its new service,
rebuilding both services' rollups in the same transaction. The windowed delivery KPIs
then follow the catalog from the next refresh on. A repo no service claims any more
keeps its records where they are (its service is no longer reported).
"""

from __future__ import annotations

import logging

from exporter.core.catalog import repo_index
from exporter.core.redact import excerpt
from exporter.core.settings import ConfigBase
from exporter.core.store import Store
from exporter.domains.catalog.store import load_catalog
from exporter.domains.delivery import rollup
from exporter.domains.delivery import store as delivery_store
from exporter.domains.delivery.settings import DeliverySection

log = logging.getLogger("exporter.delivery")
# How many moved repos a log line names; the rest are counted.
_NAMED = 5


def refresh(config: ConfigBase, store: Store, now: float) -> None:
    """Give every stored repo's records to the service that claims it now; then build the
    rollups of a database from before them, if any (see :func:`rollup.catch_up`)."""
    _reattribute(config, store)
    rollup.catch_up(config, store, now)


def service_of(config: ConfigBase, index: dict[str, str], repo: str) -> str | None:
    """The service that claims ``repo`` (``kind:name``) now, as the CI/CD sources map it."""
    kind, _, name = repo.partition(":")
    service = DeliverySection.of(config).service_of_repo(kind, name)
    return service if service is not None else index.get(repo.lower())


def _reattribute(config: ConfigBase, store: Store) -> None:
    stored = delivery_store.repos(store)
    if not stored:
        return
    index = repo_index(load_catalog(config, store))
    moved: list[tuple[str, set[str], str]] = []
    with store.transaction() as tx:
        for repo in stored:
            service = service_of(config, index, repo)
            if service is not None and (left := delivery_store.move_repo(tx, repo, service)):
                moved.append((repo, left, service))
    if not moved:
        return
    named = ", ".join(
        f"{excerpt(repo, 120)!r}: {', '.join(sorted(left))} -> {service}"
        for repo, left, service in moved[:_NAMED]
    )
    more = f" and {len(moved) - _NAMED} more" if len(moved) > _NAMED else ""
    log.info("delivery records re-attributed after a catalog change: %s%s", named, more)
