"""Backstage answers that are valid JSON but hostile: the last good catalog stays.

The catalog's Entity schema (backstage/backstage ``plugins/catalog-backend/src/schema/
openapi.yaml``; https://backstage.io/docs/features/software-catalog/descriptor-format)
makes ``kind``, ``metadata.name``/``namespace`` and the ``spec`` refs strings, ``tags`` a
list of strings and ``annotations`` a map of strings. An entity breaking that fails the
poll as ``malformed`` (it used to be skipped silently, dropping a service); a cursor
chain that never ends stops at the per-poll bound on pages and items.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from exporter.config import Config
from exporter.core.sandbox.app import App, Request, Response
from exporter.daemon import Daemon
from exporter.domains.catalog.sandbox import TOKEN, FakeCatalog, backstage_app
from exporter.domains.catalog.sources import backstage as backstage_source
from tests.domains.catalog.test_backstage import BASE, entity
from tests.support.exposition import Exposition


def run_polls(tmp_path: Any, app: App, polls: int) -> tuple[Daemon, list[bool], list[bytes]]:
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
    return daemon, results, texts


def catalog_services(text: bytes) -> set[str]:
    return {
        labels["service"]
        for labels, _ in Exposition.parse(text).samples("platform_catalog_entity_info")
    }


WRONG_TYPES = [
    ("kind", ["Component"]),
    ("name", {"first": "c"}),
    ("owner", 42),
    ("tags", "golden-path"),
    ("annotations", {"github.com/project-slug": ["acme/c"]}),
]


class TestWrongTypedEntities:
    @pytest.mark.parametrize(("field", "value"), WRONG_TYPES, ids=[f for f, _ in WRONG_TYPES])
    def test_a_wrong_typed_entity_keeps_the_last_good_catalog_and_reports_malformed(
        self, tmp_path: Any, field: str, value: Any
    ) -> None:
        good = [entity(n) for n in ("a", "b", "c")]
        bad = [entity(n) for n in ("a", "b", "c")]
        where = {"kind": bad[2], "owner": bad[2]["spec"]}.get(field, bad[2]["metadata"])
        where[field] = value
        pages = [good, bad, good]
        inner = {"app": backstage_app(FakeCatalog(pages[0]))}
        app = App()
        calls = {"n": 0}

        @app.route("GET", "/api/catalog/entities/by-query")
        def by_query(request: Request) -> Response:
            # Each poll reads its own catalog version from the first page on.
            if request.arg("cursor") is None:
                inner["app"] = backstage_app(FakeCatalog(pages[calls["n"]]))
                calls["n"] += 1
            return inner["app"].handle(request)

        _, results, texts = run_polls(tmp_path, app, 3)
        assert results == [True, False, True]
        assert catalog_services(texts[0]) == {"a", "b", "c"}
        down = Exposition.parse(texts[1])
        errors = "platform_exporter_source_errors_total"
        assert down.value(errors, source="backstage", reason="malformed") == 1
        assert down.value(errors, source="backstage", reason="internal") == 0
        assert catalog_services(texts[1]) == {"a", "b", "c"}  # nothing dropped
        assert catalog_services(texts[2]) == {"a", "b", "c"}


class TestBounds:
    def endless(self) -> tuple[App, list[str]]:
        """A catalog whose every page holds one entity and a fresh nextCursor."""
        app = App()
        seen: list[str] = []

        @app.route("GET", "/api/catalog/entities/by-query")
        def by_query(request: Request) -> Response:
            seen.append(request.arg("cursor") or "")
            n = len(seen)
            return Response.json(
                {
                    "items": [entity(f"svc{n}")],
                    "totalItems": 10**9,
                    "pageInfo": {"nextCursor": f"c{n}"},
                }
            )

        return app, seen

    def test_an_endless_cursor_chain_stops_at_the_page_bound(
        self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(backstage_source, "MAX_PAGES", 30)
        app, seen = self.endless()
        daemon, results, _ = run_polls(tmp_path, app, 1)
        assert results == [False]
        assert len(seen) == 30
        health = daemon.health["backstage"]
        assert health.errors["malformed"] == 1
        assert "stopped after 30 pages and 30 items" in (health.last_error or "")

    def test_the_item_bound_stops_a_poll_too(
        self, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(backstage_source, "MAX_ITEMS", 12)
        app, seen = self.endless()
        daemon, results, _ = run_polls(tmp_path, app, 1)
        assert results == [False]
        assert len(seen) == 12
        assert "stopped after 12 pages and 12 items" in (
            daemon.health["backstage"].last_error or ""
        )


class TestLabelValues:
    def test_a_system_ref_that_cannot_be_a_label_value_is_dropped_not_exported(
        self, tmp_path: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A 10,000-character ``spec.system`` (or one with a newline) leaves the entity in
        the catalog with no system, and the log line names it escaped and capped."""
        long = entity("a", system="s" * 10_000)
        broken = entity("b", system="shop\nFAKE LOG LINE")
        app = backstage_app(FakeCatalog([long, broken, entity("c", system="shop")]))
        _, results, texts = run_polls(tmp_path, app, 1)
        assert results == [True]
        systems = {
            labels["service"]: labels["system"]
            for labels, _ in Exposition.parse(texts[0]).samples("platform_catalog_entity_info")
        }
        assert systems == {"a": "", "b": "", "c": "shop"}
        warnings = [r.getMessage() for r in caplog.records if "system ref" in r.getMessage()]
        assert len(warnings) == 2
        assert all(len(w) < 200 for w in warnings)
        assert all("\n" not in w for w in warnings)
