"""Which catalog service a gateway's traffic belongs to.

Each service lists its gateway identities in ``services[].routes``. A Kong service or
route name, an API Gateway API, or a Prometheus label value is matched exactly; an
identity equal to a catalog service's name maps to that service without being listed.
An NGINX request is matched by host and path: the longest matching ``host/prefix`` or
``/prefix`` (any host) wins, a host-specific one first at equal length; then ``host``
alone. Traffic that matches nothing is
``unmapped``: counted, never dropped.

Given the merged catalog, services that only an external catalog lists (Backstage)
and their annotated gateway routes are matched too; an identity the config already
maps keeps the config's service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.core.settings import ConfigBase
from exporter.domains.traffic.kpis import UNMAPPED
from exporter.domains.traffic.settings import TrafficServiceFields

if TYPE_CHECKING:
    from exporter.core.catalog import Catalog

_CACHE_LIMIT = 50_000


class RouteMap:
    """Resolves gateway identities to catalog services."""

    def __init__(self, config: ConfigBase, catalog: Catalog | None = None) -> None:
        self.names: dict[str, str] = {s.name: s.name for s in config.services}
        self.hosts: dict[str, str] = {}
        # (host or "", prefix) -> service; sorted longest prefix first.
        self.prefixes: list[tuple[str, str, str]] = []
        routes: list[tuple[str, str]] = [
            (r, s.name) for s in config.services for r in TrafficServiceFields.of(s).routes
        ]
        if catalog is not None:
            extra = [s for s in catalog.services.values() if s.name not in self.names]
            for svc in extra:
                self.names[svc.name] = svc.name
            known = {r for r, _ in routes}
            routes += [(r, s.name) for s in extra for r in s.routes if r not in known]
        for route, service in routes:
            self.names.setdefault(route, service)
            if "/" in route:
                host, _, path = route.partition("/")
                self.prefixes.append((host.lower(), "/" + path, service))
            else:
                self.hosts.setdefault(route.lower(), service)
        self.prefixes.sort(key=lambda p: (-len(p[1]), p[0] == ""))
        self._cache: dict[tuple[str, str], str] = {}

    def by_name(self, *identities: str | None) -> str:
        """The service of the first identity that is known (e.g. route, then service)."""
        for identity in identities:
            if identity and identity in self.names:
                return self.names[identity]
        return UNMAPPED

    def by_request(self, host: str, uri: str) -> str:
        """The service of an HTTP request, from its Host and request URI."""
        path = uri.split("?", 1)[0]
        key = (host, path)
        found = self._cache.get(key)
        if found is not None:
            return found
        found = self._match(host.lower().split(":", 1)[0], path)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found

    def _match(self, host: str, path: str) -> str:
        for p_host, prefix, service in self.prefixes:
            if p_host and p_host != host:
                continue
            if path == prefix or path.startswith(prefix.rstrip("/") + "/") or prefix == "/":
                return service
        return self.hosts.get(host) or self.names.get(host) or UNMAPPED
