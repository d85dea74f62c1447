"""A small platform for the attribution tests: Backstage (the documented fake) and an
NGINX access log, read by one daemon at a fixed instant.

The fake Backstage serves ``GET /api/catalog/entities/by-query`` as the catalog backend
documents it (https://backstage.io/docs/features/software-catalog/software-catalog-api,
https://backstage.io/docs/reference/catalog-client.queryentitiesresponse/: ``items``,
``totalItems``, ``pageInfo.nextCursor``); its entities follow the descriptor format
(https://backstage.io/docs/features/software-catalog/descriptor-format: ``spec.owner``
an entity ref whose kind defaults to Group, ``spec.lifecycle`` one of ``experimental``,
``production``, ``deprecated``). Each page takes ``LATENCY`` seconds, as over a network,
so the other sources' first polls really run while the catalog is being listed. While
``down`` is set it answers 503 with the backend's error body, as a catalog that is
restarting does.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from exporter.config import Config
from exporter.core.clock import FixedClock
from exporter.daemon import Daemon
from exporter.domains.catalog.sandbox import TOKEN, FakeCatalog, backstage_app
from tests.support.exposition import Exposition

BASE = "http://backstage.test/api/catalog"
ROUTES = "platform-kpi-exporter/gateway-routes"
LATENCY = 0.05


def component(
    name: str,
    owner: str | None,
    routes: str | None = None,
    lifecycle: str = "production",
) -> dict[str, Any]:
    """A Component entity as the catalog lists it; ``routes`` is its gateway annotation."""
    spec: dict[str, Any] = {"type": "service", "lifecycle": lifecycle}
    if owner is not None:
        spec["owner"] = owner
    annotations = {ROUTES: routes} if routes else {}
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-component-{name}",
            "annotations": annotations,
            "tags": [],
        },
        "spec": spec,
    }


def group(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Group",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-group-{name}"},
        "spec": {"type": "team", "children": []},
    }


def line(t: float, host: str, uri: str, status: int, seconds: float = 0.01) -> str:
    """One access-log line in the documented ``log_format`` (see traffic.accesslog)."""
    return json.dumps(
        {
            "msec": f"{t:.3f}",
            "host": host,
            "request_uri": uri,
            "status": str(status),
            "request_time": f"{seconds:.3f}",
        }
    )


class Platform:
    """Backstage, an access log and a daemon, all at the test's clock."""

    def __init__(
        self,
        tmp_path: Path,
        now: float,
        entities: list[dict[str, Any]],
        *,
        services: list[dict[str, Any]] | None = None,
        first_load_timeout: float = 30.0,
        catalog: dict[str, Any] | None = None,
        nginx: dict[str, Any] | None = None,
    ) -> None:
        self.clock = FixedClock(now)
        self.catalog = FakeCatalog(entities)
        self.down = False
        self.log = tmp_path / "access.log"
        self.log.touch()
        self.config = Config(
            state={"path": str(tmp_path / "state.db")},
            services=services or [],
            sources={
                "backstage": {"base_url": BASE, "token": TOKEN, "page_size": 2},
                "nginx": {"access_log": str(self.log), **(nginx or {})},
            },
            capabilities=[{"name": "api-gateway", "detect": {"rule": "gateway_traffic"}}],
            catalog={"first_load_timeout": first_load_timeout, **(catalog or {})},
        )
        self.daemon = Daemon(self.config, transport=self._transport(), clock=self.clock)

    def _transport(self) -> httpx.AsyncBaseTransport:
        inner = backstage_app(self.catalog).transport()

        async def handler(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(LATENCY)
            if self.down:
                body = {
                    "error": {"name": "ServiceUnavailableError", "message": "catalog restarting"},
                    "request": {"method": request.method, "url": str(request.url.path)},
                    "response": {"statusCode": 503},
                }
                return httpx.Response(503, json=body)
            return await inner.handle_async_request(request)

        return httpx.MockTransport(handler)

    def write(self, *lines: str) -> None:
        with self.log.open("a") as fh:
            for text in lines:
                fh.write(text + "\n")

    def set_routes(self, name: str, routes: str) -> None:
        """The component now claims ``routes`` (the whole listing is replaced, as upstream)."""
        entities = []
        for e in self.catalog.entities:
            if e["kind"] == "Component" and e["metadata"]["name"] == name:
                e = json.loads(json.dumps(e))
                e["metadata"]["annotations"][ROUTES] = routes
            entities.append(e)
        self.catalog.entities = entities

    def source(self, kind: str) -> Any:
        return next(s for s in self.daemon.sources if s.kind == kind)

    def poll_all(self) -> bool:
        return asyncio.run(self._closing(self.daemon.poll_all()))

    def poll(self, kind: str) -> bool:
        return asyncio.run(self._closing(self.daemon.poll(self.source(kind))))

    async def _closing(self, work: Any) -> bool:
        try:
            return bool(await work)
        finally:
            for client in self.daemon.clients.values():
                await client.aclose()
            self.daemon.clients.clear()

    def metrics(self) -> Exposition:
        return Exposition.parse(self.daemon.holder.current.text)

    def close(self) -> None:
        self.daemon.store.close()
