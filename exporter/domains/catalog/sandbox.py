"""A Backstage-shaped software catalog for the sandbox, and the adoption part of the demo config.

Serves the catalog backend's ``GET /api/catalog/entities/by-query`` (filter
sets, ``fields``, ``orderField``, ``limit``, opaque ``cursor``; the response is
``{"items", "totalItems", "pageInfo": {"nextCursor", "prevCursor"}}``),
``GET /api/catalog/entities/by-uid/{uid}`` and ``DELETE`` of the same, behind a
bearer token; a wrong token gets Backstage's 401 error body. The entities are
the scenario's services (one with an owner that disagrees with the config),
two services that only Backstage knows, their systems, and the teams as
groups, one of which owns nothing. The demo declares capabilities whose
adoption is known in advance (:data:`EXPECTED_RATIOS`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from exporter.core.clock import utc_datetime
from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.scenario import Scenario

TOKEN = "sandbox-backstage-token"
PREFIX = "/backstage"
DEFAULT_LIMIT = 20

# Services only Backstage lists: (name, team, system, tags, registered days ago or None).
BACKSTAGE_ONLY: tuple[tuple[str, str, str, tuple[str, ...], int | None], ...] = (
    ("ledger", "payments", "payments-platform", ("golden-path", "java"), 200),
    ("notifications", "identity", "", ("python",), None),
)
# Tags of the scenario's services in Backstage.
TAGS: dict[str, tuple[str, ...]] = {
    "checkout": ("golden-path", "java"),
    "payments-api": ("golden-path",),
    "search": ("scala",),
    "accounts": ("python",),
    "recommendations": ("python",),
}
# Backstage says search-team owns search; the config says discovery, and the config wins.
OWNER_OVERRIDES = {"search": "search-team"}
SYSTEMS = {"checkout": "payments-platform", "payments-api": "payments-platform"}
# A team that is in the catalog but owns no service.
IDLE_TEAM = "growth"

# The demo's capabilities and their adoption ratios, known from the entities above and the
# probes every config service gets (exporter/domains/probe/sandbox.py): 7 services in the catalog.
CAPABILITIES: list[dict[str, Any]] = [
    {
        "name": "golden-path",
        "description": "Services built from the golden-path template (catalog tag).",
        "detect": {"rule": "catalog", "tag": "golden-path"},
    },
    {
        "name": "observability",
        "description": "Services with a synthetic probe configured.",
        "detect": {"rule": "probe"},
    },
    {
        # The platform's shared CI: checkout, payments-api and recommendations run its GitHub
        # workflow (exporter/domains/delivery/sandbox/data.py); search's GitLab pipeline includes its
        # GitLab template (exporter/domains/delivery/sandbox/gitlab.py INCLUDES); accounts builds on Jenkins,
        # ledger and notifications have no CI here.
        "name": "ci-template",
        "description": "Services whose pipelines ran the platform's CI template in 30 days.",
        "detect": {
            "rule": "pipeline_template",
            "workflow_paths": [".github/workflows/ci.yml", "acme/platform-templates/*"],
            "gitlab_includes": ["acme/platform-templates/*"],
        },
    },
    {
        # Kong routes checkout, payments-api, search and accounts; NGINX serves
        # recommendations (exporter/domains/traffic/sandbox.py); ledger and notifications get none.
        "name": "api-gateway",
        "description": "Services that served traffic through a gateway in 30 days.",
        "detect": {"rule": "gateway_traffic"},
        # The sandbox bill's untagged network cost stands in for the gateway's running cost.
        "cost_services": ["unallocated"],
    },
]
# Known from the scenario; 7 services in the catalog. ci-template needs the simulated
# GitHub and GitLab, api-gateway the simulated Kong and NGINX (after their second poll: the
# first reading of a counter is its baseline).
EXPECTED_RATIOS = {
    "golden-path": 3 / 7,
    "observability": 5 / 7,
    "ci-template": 4 / 7,
    "api-gateway": 5 / 7,
}


def _iso(t: float) -> str:
    return utc_datetime(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uid(kind: str, name: str) -> str:
    digest = hashlib.sha1(f"{kind}:{name}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _component(
    name: str, owner: str, system: str, tags: tuple[str, ...], registered: float | None
) -> dict[str, Any]:
    annotations = {
        "backstage.io/managed-by-location": f"url:https://github.com/acme/{name}/tree/main/catalog-info.yaml",
        "github.com/project-slug": f"acme/{name}",
    }
    if registered is not None:
        annotations["platform-kpi-exporter/registered-at"] = _iso(registered)
    spec: dict[str, Any] = {
        "type": "service",
        "lifecycle": "production",
        "owner": f"group:default/{owner}",
    }
    if system:
        spec["system"] = system
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Component",
        "metadata": {
            "namespace": "default",
            "name": name,
            "uid": _uid("component", name),
            "etag": hashlib.md5(name.encode()).hexdigest(),
            "annotations": annotations,
            "tags": list(tags),
        },
        "spec": spec,
        "relations": [{"type": "ownedBy", "targetRef": f"group:default/{owner}"}],
    }


def _group(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "Group",
        "metadata": {"namespace": "default", "name": name, "uid": _uid("group", name)},
        "spec": {"type": "team", "children": []},
    }


def _system(name: str, owner: str) -> dict[str, Any]:
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": "System",
        "metadata": {"namespace": "default", "name": name, "uid": _uid("system", name)},
        "spec": {"owner": f"group:default/{owner}"},
    }


class FakeCatalog:
    """The entities the fake Backstage serves; tests may add and remove entities."""

    def __init__(self, entities: list[dict[str, Any]], token: str | None = TOKEN) -> None:
        self.entities = list(entities)
        self.token = token
        self.requests = 0
        self.lock = threading.Lock()
        # Search keys per entity (by id; entities are never mutated in place).
        self.keys: dict[int, tuple[dict[str, Any], dict[str, list[str]]]] = {}
        # Query results by (filters, order), valid while ``entities`` is the same list object:
        # every change replaces the list.
        self._results: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}

    @classmethod
    def from_scenario(cls, scenario: Scenario, now: float | None = None) -> FakeCatalog:
        now = scenario.now() if now is None else now
        entities: list[dict[str, Any]] = []
        teams: set[str] = {IDLE_TEAM}
        for svc in scenario.services:
            owner = OWNER_OVERRIDES.get(svc.name, svc.team)
            teams.add(svc.team)
            entities.append(
                _component(
                    svc.name,
                    owner,
                    SYSTEMS.get(svc.name, ""),
                    TAGS.get(svc.name, ()),
                    now - svc.registered_days_ago * 86400.0,
                )
            )
        for name, team, system, tags, days in BACKSTAGE_ONLY:
            teams.add(team)
            entities.append(
                _component(name, team, system, tags, None if days is None else now - days * 86400.0)
            )
        entities.append(_system("payments-platform", "payments"))
        entities += [_group(t) for t in sorted(teams)]
        return cls(entities)

    def query(self, filters: list[str], order: list[str]) -> list[dict[str, Any]]:
        """The matching entities in order; kept until the catalog changes, as cursors page it."""
        key = json.dumps([filters, order])
        with self.lock:
            cached = self._results.get(key)
            if cached is not None and cached[0] is self.entities:
                return cached[1]
            entities = self.entities
            matched = [e for e in entities if _matches(e, filters, self.keys)]
        for spec in reversed(order):
            fieldname, _, direction = spec.partition(",")

            def sort_key(entity: dict[str, Any], path: str = fieldname) -> str:
                return str(_get(entity, path) or "")

            matched.sort(key=sort_key, reverse=direction.strip() == "desc")
        if not order:
            matched.sort(key=lambda e: str(e["metadata"].get("uid", "")))
        with self.lock:
            self._results[key] = (entities, matched)
        return matched

    def remove(self, name: str, kind: str = "Component") -> bool:
        with self.lock:
            before = len(self.entities)
            self.entities = [
                e
                for e in self.entities
                if not (e["kind"] == kind and e["metadata"]["name"] == name)
            ]
            return len(self.entities) != before


def _flatten(value: Any, prefix: str, out: dict[str, list[str]]) -> None:
    """Backstage's search keys: every simplified JSON path, lower-cased, with its values."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str | int | float | bool):
                out.setdefault(f"{prefix}.{item}".lower(), []).append("true")
                out.setdefault(prefix.lower(), []).append(str(item).lower())
            else:
                _flatten(item, prefix, out)
    elif value is not None:
        out.setdefault(prefix.lower(), []).append(str(value).lower())


def _matches(
    entity: dict[str, Any],
    filters: list[str],
    cache: dict[int, tuple[dict[str, Any], dict[str, list[str]]]],
) -> bool:
    """At least one filter set matches; within a set every condition matches."""
    if not filters:
        return True
    cached = cache.get(id(entity))
    # The cache holds the entity itself, so its id cannot be reused while cached.
    if cached is not None and cached[0] is entity:
        keys = cached[1]
    else:
        keys = {}
        _flatten(entity, "", keys)
        cache[id(entity)] = (entity, keys)
    for filter_set in filters:
        ok = True
        for condition in filter_set.split(","):
            key, _, value = condition.partition("=")
            values = keys.get(key.strip().lower())
            if values is None or (value and value.strip().lower() not in values):
                ok = False
                break
        if ok:
            return True
    return False


def _get(entity: dict[str, Any], path: str) -> Any:
    value: Any = entity
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _prune(entity: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    if not fields:
        return entity
    out: dict[str, Any] = {}
    for path in fields:
        parts = path.split(".")
        src: Any = entity
        for part in parts:
            if not isinstance(src, dict) or part not in src:
                src = None
                break
            src = src[part]
        if src is None:
            continue
        dst = out
        for part in parts[:-1]:
            dst = dst.setdefault(part, {})
        dst[parts[-1]] = src
    return out


def _error(status: int, name: str, message: str, request: Request) -> Response:
    return Response.json(
        {
            "error": {"name": name, "message": message},
            "request": {"method": request.method, "url": request.path},
            "response": {"statusCode": status},
        },
        status,
    )


def _encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")


def _decode(cursor: str) -> dict[str, Any]:
    padded = cursor + "=" * (-len(cursor) % 4)
    state = json.loads(base64.urlsafe_b64decode(padded))
    if not isinstance(state, dict):
        raise ValueError("cursor")
    return state


def backstage_app(catalog: FakeCatalog) -> App:
    app = App()

    def authorized(request: Request) -> bool:
        if catalog.token is None:
            return True
        return request.headers.get("authorization") == f"Bearer {catalog.token}"

    @app.route("GET", "/api/catalog/entities/by-query")
    def by_query(request: Request) -> Response:
        catalog.requests += 1
        if not authorized(request):
            return _error(401, "AuthenticationError", "Missing or invalid credentials", request)
        limit_text = request.arg("limit", str(DEFAULT_LIMIT)) or str(DEFAULT_LIMIT)
        if not limit_text.isdigit():
            return _error(400, "InputError", "Invalid limit, not an integer", request)
        limit = int(limit_text)
        fields = [f for v in request.query.get("fields", []) for f in v.split(",") if f]
        cursor = request.arg("cursor")
        if cursor:
            try:
                state = _decode(cursor)
                filters, order, offset = state["filter"], state["order"], int(state["offset"])
            except (ValueError, KeyError, TypeError):
                return _error(400, "InputError", "Malformed cursor", request)
        else:
            filters = request.query.get("filter", [])
            order = request.query.get("orderField", [])
            offset = 0
        matched = catalog.query(filters, order)
        page = matched[offset : offset + limit]
        page_info: dict[str, str] = {}
        if offset + limit < len(matched):
            page_info["nextCursor"] = _encode(
                {"filter": filters, "order": order, "offset": offset + limit}
            )
        if offset > 0:
            page_info["prevCursor"] = _encode(
                {"filter": filters, "order": order, "offset": max(0, offset - limit)}
            )
        return Response.json(
            {
                "items": [_prune(e, fields) for e in page],
                "totalItems": len(matched),
                "pageInfo": page_info,
            }
        )

    @app.route("GET", "/api/catalog/entities/by-uid/{uid}")
    def by_uid(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "AuthenticationError", "Missing or invalid credentials", request)
        with catalog.lock:
            for e in catalog.entities:
                if e["metadata"].get("uid") == request.params["uid"]:
                    return Response.json(e)
        return _error(404, "NotFoundError", f"No entity with uid {request.params['uid']}", request)

    @app.route("DELETE", "/api/catalog/entities/by-uid/{uid}")
    def delete(request: Request) -> Response:
        if not authorized(request):
            return _error(401, "AuthenticationError", "Missing or invalid credentials", request)
        with catalog.lock:
            before = len(catalog.entities)
            catalog.entities = [
                e for e in catalog.entities if e["metadata"].get("uid") != request.params["uid"]
            ]
            if len(catalog.entities) == before:
                return _error(
                    404, "NotFoundError", f"No entity with uid {request.params['uid']}", request
                )
        return Response(204)

    return app


def apps(scenario: Scenario) -> dict[str, App]:
    return {PREFIX: backstage_app(FakeCatalog.from_scenario(scenario))}


def configure(config: dict[str, Any], base_url: str, scenario: Scenario, state_dir: Path) -> None:
    """Read the fake Backstage, give config services their registration time, declare capabilities."""
    now = scenario.now()
    for service in config["services"]:
        sim = scenario.service(service["name"])
        if sim is not None:
            service["registered_at"] = _iso(now - sim.registered_days_ago * 86400.0)
    config["sources"]["backstage"] = {
        "base_url": f"{base_url}{PREFIX}/api/catalog",
        "token": TOKEN,
        "interval": "30s",
        "page_size": 3,
    }
    config.setdefault("capabilities", []).extend(CAPABILITIES)
