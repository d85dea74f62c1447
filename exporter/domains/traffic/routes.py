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

Traffic is stored under its gateway identity, not only its service (see
:mod:`exporter.domains.traffic.attribution`): :meth:`RouteMap.name_key` and
:meth:`RouteMap.request_key` build that identity, :meth:`RouteMap.resolve` maps it to
a service under the catalog as it is now.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from exporter.core.settings import ConfigBase
from exporter.domains.traffic.kpis import UNMAPPED
from exporter.domains.traffic.settings import TrafficServiceFields

if TYPE_CHECKING:
    from exporter.core.catalog import Catalog

_CACHE_LIMIT = 50_000
# The prefixes of stored identities: pinned to a service, gateway names, HTTP requests.
PINNED = "service:"
NAMES = "name:"
REQUEST = "req:"
_SEP = "\t"  # never in a route, host, path or gateway name (all refuse whitespace)
MAX_IDENT = 300


def pinned(service: str) -> str:
    """The identity of traffic a source attributed itself (a configured service)."""
    return PINNED + service


_ID = re.compile(r"\d+|[0-9a-fA-F-]{16,}|[^/]*\d[^/]*\d[^/]*\d[^/]*")


def path_key(path: str, depth: int) -> str:
    """The first ``depth`` segments of a request path, ids made ``*``: ``/a/b/c`` at depth 2
    is ``/a/b``, ``/orders/123/items`` is ``/orders/*``. A segment is an id when it is all
    digits, 16 or more hex digits and dashes (a UUID, a hash), or holds three digits or more:
    so one route's requests stay one identity whatever ids their paths carry."""
    parts = path.split("/")[1 : depth + 1]
    return "/" + "/".join("*" if _ID.fullmatch(p) else p for p in parts) if parts else "/"


class RouteMap:
    """Resolves gateway identities to catalog services."""

    def __init__(
        self, config: ConfigBase, catalog: Catalog | None = None, *, depth: int = 2
    ) -> None:
        self.depth = depth
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
        self._keys: dict[tuple[str, str], tuple[str, str]] = {}
        self._resolved: dict[str, str] = {}

    def deeper_than(self, depth: int) -> set[str]:
        """The ``host/prefix`` routes with more than ``depth`` path segments."""
        return {
            f"{host}{prefix}"
            for host, prefix, _ in self.prefixes
            if len([p for p in prefix.split("/") if p]) > depth
        }

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
        return self._match_prefix(host, path)[0]

    def _match_prefix(self, host: str, path: str) -> tuple[str, str]:
        """The service of a request and the part of its path the matching prefix covers."""
        for p_host, prefix, service in self.prefixes:
            if p_host and p_host != host:
                continue
            if path == prefix or prefix == "/":
                return service, prefix
            if path.startswith(prefix.rstrip("/") + "/"):
                return service, path[: len(prefix.rstrip("/")) + 1]
        return self.hosts.get(host) or self.names.get(host) or UNMAPPED, ""

    # --- stored identities ---------------------------------------------------------------

    def name_key(self, *identities: str | None) -> tuple[str, str]:
        """(identity, service) of traffic named by gateway identities, tried in order."""
        ident = (NAMES + _SEP.join(i or "" for i in identities))[:MAX_IDENT]
        return ident, self.by_name(*identities)

    def request_key(self, host: str, uri: str) -> tuple[str, str]:
        """(identity, service) of an HTTP request: its host and the first ``depth`` segments
        of its path, or the longer prefix of a route that matches it now."""
        cache_key = (host, uri)
        found = self._keys.get(cache_key)
        if found is not None:
            return found
        path = uri.split("?", 1)[0]
        bare = host.lower().split(":", 1)[0]
        service, covered = self._match_prefix(bare, path)
        short = path_key(path, self.depth)
        key_path = covered if len(covered) > len(short) else short
        found = ((REQUEST + bare + _SEP + key_path)[:MAX_IDENT], service)
        if len(self._keys) >= _CACHE_LIMIT:
            self._keys.clear()
        self._keys[cache_key] = found
        return found

    def resolve(self, ident: str) -> str:
        """The service of a stored identity under this map (the catalog as it is now)."""
        found = self._resolved.get(ident)
        if found is not None:
            return found
        if ident.startswith(PINNED):
            found = ident[len(PINNED) :] or UNMAPPED
        elif ident.startswith(NAMES):
            found = self.by_name(*ident[len(NAMES) :].split(_SEP))
        elif ident.startswith(REQUEST):
            host, _, path = ident[len(REQUEST) :].partition(_SEP)
            found = self._match(host, path or "/")
        else:
            found = UNMAPPED
        self._resolved[ident] = found
        return found
