"""The Backstage catalog source against the sandbox's Backstage-shaped catalog.

The fake follows the catalog backend's documented response shape:

* https://backstage.io/docs/features/software-catalog/software-catalog-api
  (``GET /entities/by-query``: ``filter``, ``fields``, ``orderField``, ``limit``, ``cursor``;
  a bearer token in ``Authorization``);
* https://backstage.io/docs/reference/catalog-client.queryentitiesresponse/
  (``items``, ``totalItems``, ``pageInfo.nextCursor`` / ``prevCursor``);
* the backend's OpenAPI spec, ``plugins/catalog-backend/src/schema/openapi.yaml`` in
  backstage/backstage (``EntitiesQueryResponse``, ``Entity``, ``EntityMeta``, ``Error``),
  from which :data:`SCHEMA` is transcribed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import jsonschema
import pytest

from exporter.config import Config
from exporter.core.catalog import CatalogEntity
from exporter.core.errors import AuthError, MalformedResponse
from exporter.core.health import SourceHealth
from exporter.core.httpclient import build_client
from exporter.core.sandbox.app import App, Request, Response
from exporter.core.sandbox.scenario import Scenario
from exporter.core.source import PollContext
from exporter.daemon import Daemon
from exporter.domains import open_store
from exporter.domains.catalog import store as catalog_store
from exporter.domains.catalog.sandbox import TOKEN, FakeCatalog, backstage_app
from exporter.domains.catalog.settings import BackstageSourceConfig
from exporter.domains.catalog.sources.backstage import BackstageSource, parse_time, ref_name
from tests.support.exposition import Exposition

BASE = "http://backstage.test/api/catalog"
NOW = 1_790_000_000.0

_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "uid": {"type": "string"},
        "etag": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "links": {"type": "array", "items": {"type": "object", "required": ["url"]}},
    },
}
_ENTITY = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": _META,
        "spec": {"type": "object"},
        "relations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "targetRef"],
                "properties": {"type": {"type": "string"}, "targetRef": {"type": "string"}},
                "additionalProperties": False,
            },
        },
    },
}
SCHEMA = {
    "type": "object",
    "required": ["items", "totalItems", "pageInfo"],
    "additionalProperties": False,
    "properties": {
        "items": {"type": "array", "items": _ENTITY},
        "totalItems": {"type": "number"},
        "pageInfo": {
            "type": "object",
            "properties": {"nextCursor": {"type": "string"}, "prevCursor": {"type": "string"}},
            "additionalProperties": False,
        },
    },
}
# With ``fields``, items are partial entities (the spec's RecursivePartialEntity): no key is required.
PARTIAL_SCHEMA = {
    **SCHEMA,
    "properties": {
        **SCHEMA["properties"],
        "items": {
            "type": "array",
            "items": {
                **{k: v for k, v in _ENTITY.items() if k != "required"},
                "properties": {
                    **_ENTITY["properties"],
                    "metadata": {k: v for k, v in _META.items() if k != "required"},
                },
            },
        },
    },
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "response"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["name", "message"],
            "properties": {"name": {"type": "string"}, "message": {"type": "string"}},
        },
        "request": {"type": "object", "required": ["method", "url"]},
        "response": {
            "type": "object",
            "required": ["statusCode"],
            "properties": {"statusCode": {"type": "number"}},
        },
    },
}


def entity(
    name: str,
    kind: str = "Component",
    owner: str | None = "group:default/payments",
    annotations: dict[str, str] | None = None,
    tags: list[str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    full_spec: dict[str, Any] = dict(spec)
    if owner is not None:
        full_spec["owner"] = owner
    return {
        "apiVersion": "backstage.io/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{kind}-{name}",
            "annotations": annotations or {},
            "tags": tags or [],
        },
        "spec": full_spec,
    }


def settings(**overrides: Any) -> BackstageSourceConfig:
    return BackstageSourceConfig(base_url=BASE, token=TOKEN, **overrides)


class Recorder:
    """Wraps an app and remembers each request's query, to check what the source asked."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.queries: list[dict[str, list[str]]] = []
        self.bodies: list[Any] = []

    def transport(self) -> httpx.MockTransport:
        inner = self.app.transport()

        async def handler(request: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(request)
            await response.aread()
            self.queries.append(
                {k: request.url.params.get_list(k) for k in request.url.params.keys()}  # noqa: SIM118
            )
            self.bodies.append(response.json() if response.content else None)
            return response

        return httpx.MockTransport(handler)


async def poll_once(
    source: BackstageSource, transport: httpx.AsyncBaseTransport, store: Any
) -> SourceHealth:
    health = SourceHealth("backstage", "backstage", 300)
    client = build_client(health, timeout=5, transport=transport, **source.client_options())
    ctx = PollContext(store=store, health=health, client=client, now=lambda: NOW)
    try:
        await source.poll(ctx)
    finally:
        await client.aclose()
    return health


def make_source(**overrides: Any) -> BackstageSource:
    return BackstageSource(Config(), settings(**overrides))


class TestFakeFollowsTheDocumentedShape:
    def test_every_page_validates_against_the_openapi_response_schema(self) -> None:
        """Full entities page by page: items, totalItems and pageInfo, and nothing else."""
        import json

        app = backstage_app(FakeCatalog.from_scenario(Scenario(), now=NOW))
        headers = {"authorization": f"Bearer {TOKEN}"}
        query: dict[str, list[str]] = {"limit": ["4"]}
        pages = 0
        while True:
            response = app.handle(Request("GET", "/api/catalog/entities/by-query", query, headers))
            body = json.loads(response.body)
            jsonschema.validate(body, SCHEMA)
            pages += 1
            if "nextCursor" not in body["pageInfo"]:
                break
            query = {"cursor": [body["pageInfo"]["nextCursor"]], "limit": ["4"]}
        assert pages == 3  # 12 entities, 4 per page

    def test_the_bodies_the_source_reads_validate_as_partial_entities(self) -> None:
        """With fields=..., items are partial entities; the envelope is unchanged."""
        fake = FakeCatalog.from_scenario(Scenario(), now=NOW)
        recorder = Recorder(backstage_app(fake))
        store = open_store(":memory:")
        asyncio.run(poll_once(make_source(page_size=4), recorder.transport(), store))
        assert len(recorder.bodies) == 3
        for body in recorder.bodies:
            jsonschema.validate(body, PARTIAL_SCHEMA)

    def test_an_unauthenticated_request_gets_the_documented_error_body(self) -> None:
        app = backstage_app(FakeCatalog([entity("a")]))
        response = app.handle(Request("GET", "/api/catalog/entities/by-query", {}, {}))
        assert response.status == 401
        import json

        body = json.loads(response.body)
        jsonschema.validate(body, ERROR_SCHEMA)
        assert body["error"]["name"] == "AuthenticationError"

    def test_the_cursor_pages_with_next_and_prev_and_fixes_the_filter(self) -> None:
        fake = FakeCatalog([entity(n) for n in "abcde"] + [entity("g", kind="Group", owner=None)])
        fake.token = None
        app = backstage_app(fake)

        def get(query: dict[str, list[str]]) -> dict[str, Any]:
            import json

            return dict(
                json.loads(
                    app.handle(Request("GET", "/api/catalog/entities/by-query", query, {})).body
                )
            )

        first = get(
            {"filter": ["kind=component"], "limit": ["2"], "orderField": ["metadata.name,desc"]}
        )
        assert [e["metadata"]["name"] for e in first["items"]] == ["e", "d"]
        assert first["totalItems"] == 5 and "prevCursor" not in first["pageInfo"]
        # The cursor carries the filter and order: a different filter alongside is ignored.
        second = get(
            {"cursor": [first["pageInfo"]["nextCursor"]], "filter": ["kind=group"], "limit": ["2"]}
        )
        assert [e["metadata"]["name"] for e in second["items"]] == ["c", "b"]
        assert "prevCursor" in second["pageInfo"]
        last = get({"cursor": [second["pageInfo"]["nextCursor"]], "limit": ["2"]})
        assert [e["metadata"]["name"] for e in last["items"]] == ["a"]
        assert "nextCursor" not in last["pageInfo"]


class TestPagination:
    def test_follows_next_cursor_until_the_last_page(self) -> None:
        """12 entities at 5 per page: 3 requests; later ones carry only the cursor."""
        items = [entity(f"svc-{i:02d}") for i in range(10)]
        items += [entity("payments", kind="Group", owner=None), entity("plat", kind="System")]
        recorder = Recorder(backstage_app(FakeCatalog(items)))
        store = open_store(":memory:")
        asyncio.run(poll_once(make_source(page_size=5), recorder.transport(), store))
        assert len(recorder.queries) == 3
        first = recorder.queries[0]
        assert first["filter"] == ["kind=component", "kind=system", "kind=group"]
        assert first["limit"] == ["5"] and first["orderField"] == ["metadata.name,asc"]
        assert "spec.owner" in first["fields"][0].split(",")
        for later in recorder.queries[1:]:
            assert "filter" not in later and later["cursor"] and later["limit"] == ["5"]
        names = {(e.kind, e.name) for e in catalog_store.entities(store)}
        assert names == {("component", f"svc-{i:02d}") for i in range(10)} | {
            ("group", "payments"),
            ("system", "plat"),
        }

    def test_a_page_that_fails_midway_commits_nothing(self) -> None:
        fake = FakeCatalog([entity(f"s{i}") for i in range(6)], token=None)
        inner = backstage_app(fake)
        calls = {"n": 0}
        app = App()

        @app.route("GET", "/api/catalog/entities/by-query")
        def flaky(request: Request) -> Response:
            calls["n"] += 1
            if calls["n"] >= 2:
                return Response.text('{"items": [', 200)
            return inner.handle(request)

        store = open_store(":memory:")
        with pytest.raises(ValueError):
            asyncio.run(poll_once(make_source(page_size=2), app.transport(), store))
        assert catalog_store.entities(store) == []

    def test_a_cursor_that_repeats_is_malformed_not_an_endless_loop(self) -> None:
        app = App()

        @app.route("GET", "/api/catalog/entities/by-query")
        def loop(request: Request) -> Response:
            return Response.json({"items": [], "totalItems": 9, "pageInfo": {"nextCursor": "same"}})

        with pytest.raises(MalformedResponse):
            asyncio.run(poll_once(make_source(), app.transport(), open_store(":memory:")))


class TestAuth:
    def test_a_bad_token_fails_at_once_with_an_auth_error(self) -> None:
        """401 is not retried (a bad token must not hammer Backstage) and nothing is stored."""
        fake = FakeCatalog([entity("a")], token="the-real-token")
        recorder = Recorder(backstage_app(fake))
        store = open_store(":memory:")
        with pytest.raises(AuthError):
            asyncio.run(poll_once(make_source(), recorder.transport(), store))
        assert fake.requests == 1
        assert catalog_store.entities(store) == []

    def test_the_daemon_marks_the_source_down_and_keeps_last_values(self, tmp_path: Any) -> None:
        fake = FakeCatalog([entity("ledger")], token=TOKEN)
        config = Config(
            state={"path": str(tmp_path / "s.db")},
            sources={"backstage": {"base_url": BASE, "token": TOKEN}},
        )
        daemon = Daemon(config, transport=backstage_app(fake).transport())

        async def run() -> tuple[bool, bool]:
            first = await daemon.poll(daemon.sources[0])
            fake.token = "rotated"
            second = await daemon.poll(daemon.sources[0])
            await daemon.shutdown()
            return first, second

        assert asyncio.run(run()) == (True, False)
        exp = Exposition.parse(daemon.holder.current.text)
        assert exp.value("platform_exporter_source_up", source="backstage") == 0
        assert (
            exp.value("platform_exporter_source_errors_total", source="backstage", reason="auth")
            == 1
        )
        assert exp.value("platform_catalog_entity_info", service="ledger") == 1


class TestEntities:
    def poll(self, items: list[dict[str, Any]], **overrides: Any) -> list[CatalogEntity]:
        store = open_store(":memory:")
        asyncio.run(
            poll_once(
                make_source(**overrides), backstage_app(FakeCatalog(items)).transport(), store
            )
        )
        return catalog_store.entities(store)

    def test_owner_ref_gives_the_team_and_system_owner_is_the_fallback(self) -> None:
        got = self.poll(
            [
                entity("a", owner="group:default/Payments", system="pay"),
                entity("b", owner=None, system="pay"),
                entity("pay", kind="System", owner="identity"),
                entity("c", owner=None),
            ]
        )
        teams = {e.name: (e.team, e.system) for e in got}
        assert teams == {
            "a": ("payments", "pay"),
            "b": ("identity", "pay"),
            "c": ("", ""),
            "pay": ("identity", ""),
        }

    def test_annotations_give_repos_routes_cost_tags_and_registration(self) -> None:
        [got] = self.poll(
            [
                entity(
                    "a",
                    annotations={
                        "github.com/project-slug": "acme/a",
                        "gitlab.com/project-slug": "grp/sub/a",
                        "platform-kpi-exporter/gateway-routes": "a-route, a-admin",
                        "platform-kpi-exporter/cost-tags": "app=a",
                        "platform-kpi-exporter/registered-at": "2026-01-31T12:00:00Z",
                    },
                    tags=["Golden-Path"],
                )
            ]
        )
        assert got.repos == ("github:acme/a", "gitlab:grp/sub/a")
        assert got.routes == ("a-route", "a-admin")
        assert got.cost_tags == ("app=a",)
        assert got.registered_at == 1769860800.0
        assert got.tags == ("golden-path",)

    def test_custom_annotation_keys_are_read(self) -> None:
        [got] = self.poll(
            [entity("a", annotations={"acme.io/routes": "r1", "acme.io/repo": "acme/a2"})],
            annotations={"gateway_routes": ["acme.io/routes"], "github_repos": ["acme.io/repo"]},
        )
        assert got.routes == ("r1",) and got.repos == ("github:acme/a2",)

    def test_component_types_and_unusable_names_are_filtered(self, caplog: Any) -> None:
        with caplog.at_level(logging.WARNING):
            got = self.poll(
                [
                    entity("svc", type="service"),
                    entity("lib", type="library"),
                    entity("Bad Name!", type="service"),
                ],
                component_types=["service"],
            )
        assert [e.name for e in got] == ["svc"]
        assert "Bad Name!" in caplog.text

    def test_refs_and_times_parse_strictly(self) -> None:
        assert ref_name("group:default/team-a") == "team-a"
        assert ref_name("team-b") == "team-b"
        assert ref_name("user:jdoe") == "jdoe"
        assert ref_name(None) == ""
        assert parse_time("2026-01-31") == 1769817600.0
        assert parse_time("2026-01-31T00:00:00+01:00") == 1769814000.0
        assert parse_time("2026-01-31T00:00:00") is None  # no zone: ambiguous
        assert parse_time("yesterday") is None


class TestRemoval:
    def test_an_entity_removed_from_backstage_leaves_metrics_on_the_next_refresh(
        self, tmp_path: Any
    ) -> None:
        fake = FakeCatalog.from_scenario(Scenario(), now=NOW)
        config = Config(
            state={"path": str(tmp_path / "s.db")},
            services=[{"name": "checkout", "team": "payments"}],
            sources={"backstage": {"base_url": BASE, "token": TOKEN, "page_size": 3}},
            capabilities=[
                {"name": "golden-path", "detect": {"rule": "catalog", "tag": "golden-path"}}
            ],
        )
        daemon = Daemon(config, transport=backstage_app(fake).transport())
        texts: list[bytes] = []

        async def run() -> None:
            assert await daemon.poll(daemon.sources[0])
            texts.append(daemon.holder.current.text)
            assert fake.remove("ledger")
            assert await daemon.poll(daemon.sources[0])
            texts.append(daemon.holder.current.text)
            await daemon.shutdown()

        asyncio.run(run())
        before = Exposition.parse(texts[0])
        assert before.value("platform_catalog_entity_info", service="ledger") == 1
        assert (
            before.value(
                "platform_service_capability_adopted", service="ledger", capability="golden-path"
            )
            == 1
        )
        assert before.value("platform_capability_adopting_services", capability="golden-path") == 3

        text = texts[1].decode()
        assert 'service="ledger"' not in text
        after = Exposition.parse(text)
        assert after.value("platform_capability_adopting_services", capability="golden-path") == 2
        assert (
            after.value("platform_catalog_services", team="payments")
            == before.value("platform_catalog_services", team="payments") - 1
        )


class TestFaults:
    def run_polls(self, tmp_path: Any, app: App, polls: int) -> tuple[list[bool], list[bytes]]:
        config = Config(
            state={"path": str(tmp_path / "s.db")},
            sources={"backstage": {"base_url": BASE, "token": TOKEN, "page_size": 2}},
        )
        daemon = Daemon(config, transport=app.transport())
        results: list[bool] = []
        texts: list[bytes] = []

        async def run() -> None:
            for _ in range(polls):
                results.append(await daemon.poll(daemon.sources[0]))
                texts.append(daemon.holder.current.text)
            await daemon.shutdown()

        asyncio.run(run())
        return results, texts

    def test_a_truncated_page_marks_the_source_down_keeps_the_catalog_and_recovers(
        self, tmp_path: Any
    ) -> None:
        inner = backstage_app(FakeCatalog([entity(n) for n in ("a", "b", "c")]))
        state = {"calls": 0}
        app = App()

        @app.route("GET", "/api/catalog/entities/by-query")
        def flaky(request: Request) -> Response:
            state["calls"] += 1
            if state["calls"] == 3:  # the second poll's first page
                return Response.text('{"items": [{"kind": "Comp', 200)
            return inner.handle(request)

        results, texts = self.run_polls(tmp_path, app, 3)
        assert results == [True, False, True]
        down = Exposition.parse(texts[1])
        assert down.value("platform_exporter_source_up", source="backstage") == 0
        assert (
            down.value(
                "platform_exporter_source_errors_total", source="backstage", reason="malformed"
            )
            == 1
        )
        assert down.value("platform_catalog_entity_info", service="c") == 1
        assert (
            Exposition.parse(texts[2]).value("platform_exporter_source_up", source="backstage") == 1
        )

    def test_a_5xx_is_retried_within_the_poll(self, tmp_path: Any) -> None:
        inner = backstage_app(FakeCatalog([entity("a")]))
        state = {"calls": 0}
        app = App()

        @app.route("GET", "/api/catalog/entities/by-query")
        def busy(request: Request) -> Response:
            state["calls"] += 1
            if state["calls"] == 1:
                return _error_response(503)
            return inner.handle(request)

        results, texts = self.run_polls(tmp_path, app, 1)
        assert results == [True]
        exp = Exposition.parse(texts[0])
        assert (
            exp.value(
                "platform_exporter_source_upstream_requests_total", source="backstage", code="503"
            )
            == 1
        )
        assert exp.value("platform_catalog_entity_info", service="a") == 1


def _error_response(status: int) -> Response:
    return Response.json(
        {
            "error": {"name": "ServiceUnavailableError", "message": "catalog is starting"},
            "request": {"method": "GET", "url": "/api/catalog/entities/by-query"},
            "response": {"statusCode": status},
        },
        status,
    )
