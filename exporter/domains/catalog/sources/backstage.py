"""Backstage software catalog: components (services), systems and groups (teams).

Reads ``GET {base_url}/entities/by-query`` with a bearer token, asking only for
the fields it needs and following ``pageInfo.nextCursor`` until the last page
(the response is ``{"items": [...], "totalItems": n, "pageInfo": {"nextCursor": ...}}``).
Each poll reads the whole catalog and commits it as one
:class:`~exporter.domains.catalog.records.CatalogListing`, so entities that left the catalog
leave the store in the same transaction, and a poll that fails on any page
commits nothing. A component's team is the name part of its ``spec.owner``
ref (or of its system's owner), and the ref's kind says whether it is a team (see
``catalog.owner_kinds``); annotations give its repos, gateway routes,
cost tags and registration time (keys configurable). Entity names that cannot
be label values are skipped and logged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from exporter.core.catalog import CatalogEntity
from exporter.core.errors import MalformedResponse
from exporter.core.httpclient import send
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.core.store import Store
from exporter.domains.catalog import store as catalog_store
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.catalog.settings import BackstageSourceConfig, CatalogSection

KINDS = ("component", "system", "group")
FIELDS = (
    "kind",
    "metadata.name",
    "metadata.namespace",
    "metadata.tags",
    "metadata.annotations",
    "spec.owner",
    "spec.system",
    "spec.type",
    "spec.lifecycle",
)
# A runaway cursor chain (an upstream bug) must not keep a poll going forever: one
# poll reads at most this many pages and items, then fails as malformed.
MAX_PAGES = 1_000
MAX_ITEMS = 200_000
# The entity fields the source reads, and the JSON type each must have when present
# (the catalog's Entity schema: strings, a list of strings, a map of strings).
_STRINGS_META = ("name", "namespace")
_STRINGS_SPEC = ("owner", "system", "type", "lifecycle")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def ref_name(ref: Any) -> str:
    """The name part of an entity ref ``[kind:][namespace/]name``, lower-cased; "" if none."""
    if not isinstance(ref, str) or not ref.strip():
        return ""
    name = ref.strip().split(":", 1)[-1].rsplit("/", 1)[-1]
    return name.lower()


def ref_kind(ref: Any) -> str:
    """The kind part of an owner's entity ref, lower-cased: ``group`` when the ref names
    none (an owner ref's default kind, per the descriptor format's ``spec.owner``)."""
    if not isinstance(ref, str) or ":" not in ref:
        return "group"
    return ref.strip().split(":", 1)[0].lower() or "group"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _first(annotations: Mapping[str, str], keys: list[str]) -> list[str]:
    out: list[str] = []
    for key in keys:
        value = annotations.get(key)
        if isinstance(value, str):
            out.extend(p for p in _split(value) if p not in out)
    return out


# (kind, namespace, name, metadata, spec) of one usable catalog item.
_Raw = tuple[str, str, str, dict[str, Any], dict[str, Any]]


def _annotations(meta: dict[str, Any]) -> dict[str, str]:
    """An item's annotations as strings; none when they are not an object."""
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        return {}
    return {str(k): str(v) for k, v in annotations.items()}


def _check_types(index: int, item: dict[str, Any], meta: dict[str, Any], spec: Any) -> None:
    """Raise MalformedResponse when a field the source reads has the wrong JSON type.

    Skipping such an entity would silently drop it from the catalog (and its service
    from every join); failing the poll keeps the last good catalog instead.
    """
    wrong: list[str] = []
    if not isinstance(item.get("kind"), str):
        wrong.append("kind")
    wrong += [f"metadata.{k}" for k in _STRINGS_META if not _opt_str(meta.get(k))]
    wrong += [f"spec.{k}" for k in _STRINGS_SPEC if not _opt_str(spec.get(k))]
    tags = meta.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        wrong.append("metadata.tags")
    notes = meta.get("annotations")
    if notes is not None and not (
        isinstance(notes, dict) and all(isinstance(v, str) for v in notes.values())
    ):
        wrong.append("metadata.annotations")
    if wrong:
        raise MalformedResponse(
            f"entities/by-query: item {index} ({ascii(meta.get('name'))[:80]}) has wrong-typed "
            f"{', '.join(wrong)}; the last good catalog is kept"
        )


def _opt_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def parse_time(value: str) -> float | None:
    """Unix seconds from an ISO 8601 time with a zone, or a date alone (UTC midnight)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if len(text) != 10:
            return None  # a time without a zone is ambiguous
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class BackstageSource(Source):
    """Lists the Backstage catalog; see the module docstring."""

    kind = "backstage"
    settings_model = BackstageSourceConfig
    produces = (CatalogListing,)
    is_catalog = True

    def __init__(self, config: ConfigBase, settings: BackstageSourceConfig) -> None:
        super().__init__(config, settings)
        self.backstage = settings

    def catalog_wait(self) -> float:
        return CatalogSection.of(self.config).catalog.first_load_timeout

    def catalog_stored(self, store: Store) -> bool:
        return self.name in catalog_store.listings(store)

    def client_options(self) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self.backstage.token is not None:
            headers["Authorization"] = f"Bearer {self.backstage.token.get_secret_value()}"
        return {"base_url": self.backstage.base_url, "headers": headers}

    async def poll(self, ctx: PollContext) -> None:
        items: list[Any] = []
        params: list[tuple[str, str | int]] = [("filter", f"kind={k}") for k in KINDS]
        params += [("orderField", "metadata.name,asc")]
        seen: set[str] = set()
        total: Any = None
        for _ in range(MAX_PAGES):
            if len(items) >= MAX_ITEMS:
                break
            page_params = [*params, ("limit", self.backstage.page_size)]
            page_params += [("fields", ",".join(FIELDS))]
            response = await send(
                ctx.client,
                "GET",
                f"{self.backstage.base_url}/entities/by-query",
                params=page_params,
                health=ctx.health,
                clock=ctx.now,
            )
            body = response.json()
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise MalformedResponse("entities/by-query: expected an object with an items list")
            items.extend(body["items"])
            total = body.get("totalItems", total)
            page_info = body.get("pageInfo")
            cursor = page_info.get("nextCursor") if isinstance(page_info, dict) else None
            if not cursor:
                break
            if not isinstance(cursor, str) or cursor in seen:
                raise MalformedResponse(
                    "entities/by-query: pageInfo.nextCursor repeats or is invalid"
                )
            seen.add(cursor)
            # filter and orderField are fixed by the cursor; sending them again is ignored upstream.
            params = [("cursor", cursor)]
        else:
            raise MalformedResponse(
                f"entities/by-query: stopped after {MAX_PAGES} pages and {len(items)} items "
                f"(bounds {MAX_PAGES} pages, {MAX_ITEMS} items per poll); nothing committed"
            )
        if len(items) >= MAX_ITEMS and cursor:
            raise MalformedResponse(
                f"entities/by-query: stopped after {len(seen)} pages and {len(items)} items "
                f"(bounds {MAX_PAGES} pages, {MAX_ITEMS} items per poll); nothing committed"
            )
        if isinstance(total, int) and total != len(items):
            ctx.log.info(
                "backstage: totalItems %d but %d entities listed (catalog changed while paging)",
                total,
                len(items),
            )
        entities = self.parse(items, ctx)
        await ctx.commit([CatalogListing(self.name, ctx.now(), tuple(entities))])
        ctx.log.debug("backstage: %d entities from %d items", len(entities), len(items))

    def parse(self, items: list[Any], ctx: PollContext) -> list[CatalogEntity]:
        """Turn raw entities into records; skip (and log) what cannot be used."""
        raw, systems = self._usable(items, ctx)
        out: list[CatalogEntity] = []
        for item in raw:
            entity = self._entity(item, systems, ctx)
            if entity is not None:
                out.append(entity)
        return out

    def _usable(
        self, items: list[Any], ctx: PollContext
    ) -> tuple[list[_Raw], dict[tuple[str, str], str]]:
        """The items of a kept kind, namespace and name, and each system's owner ref by
        (namespace, name); names that cannot be label values are logged once."""
        systems: dict[tuple[str, str], str] = {}
        raw: list[_Raw] = []
        skipped: list[str] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise MalformedResponse("entities/by-query: an item is not an object")
            meta = item.get("metadata")
            spec = item.get("spec") or {}
            if not isinstance(meta, dict) or not isinstance(spec, dict):
                raise MalformedResponse("entities/by-query: an item has no metadata object")
            _check_types(index, item, meta, spec)
            kind = str(item.get("kind", "")).lower()
            name = str(meta.get("name", "")).lower()
            namespace = str(meta.get("namespace") or "default").lower()
            if kind not in KINDS:
                continue
            if not _NAME.match(name):
                skipped.append(f"{kind}:{namespace}/{meta.get('name')}")
                continue
            if self.backstage.namespaces and namespace not in self.backstage.namespaces:
                continue
            if kind == "system":
                owner = spec.get("owner")
                systems[(namespace, name)] = owner if isinstance(owner, str) else ""
            raw.append((kind, namespace, name, meta, spec))
        if skipped:
            ctx.log.warning(
                "backstage: skipped %d entities whose names cannot be label values: %s",
                len(skipped),
                ", ".join(sorted(skipped)[:10]),
            )
        return raw, systems

    def _entity(
        self, item: _Raw, systems: dict[tuple[str, str], str], ctx: PollContext
    ) -> CatalogEntity | None:
        """One usable item as a record; None for a component of a type not kept."""
        kind, namespace, name, meta, spec = item
        if kind == "component":
            ctype = str(spec.get("type", "")).lower()
            if self.backstage.component_types and ctype not in self.backstage.component_types:
                return None
        keys = self.backstage.annotations
        annotations = _annotations(meta)
        tags = meta.get("tags") or []
        tags = [str(t).lower() for t in tags] if isinstance(tags, list) else []
        system = ref_name(spec.get("system")) if kind == "component" else ""
        if system and not _NAME.match(system):
            # It becomes a label value: an upstream string is capped and validated first.
            ctx.log.warning(
                "backstage: %s:%s/%s has a system ref that cannot be a label value: %r",
                kind,
                namespace,
                name,
                system[:64],
            )
            system = ""
        owner = spec.get("owner") if kind != "group" else f"group:{name}"
        if not ref_name(owner) and system:
            owner = systems.get((namespace, system), "")
        team = ref_name(owner)
        if team and not _NAME.match(team):
            team = ""
        repos = [f"github:{r}" for r in _first(annotations, keys.github_repos)]
        repos += [f"gitlab:{r}" for r in _first(annotations, keys.gitlab_projects)]
        registered: float | None = None
        for value in _first(annotations, keys.registered_at)[:1]:
            registered = parse_time(value)
            if registered is None:
                ctx.log.warning(
                    "backstage: %s:%s/%s has an unreadable registration time %r",
                    kind,
                    namespace,
                    name,
                    value,
                )
        return CatalogEntity(
            source=self.name,
            kind=kind,
            namespace=namespace,
            name=name,
            team=team,
            owner_kind=ref_kind(owner) if team else "",
            system=system,
            type=str(spec.get("type", "")).lower() if kind != "group" else "",
            lifecycle=str(spec.get("lifecycle", "")).lower(),
            tags=tuple(tags),
            annotations=tuple(sorted(annotations.items())),
            repos=tuple(repos),
            routes=tuple(_first(annotations, keys.gateway_routes)),
            cost_tags=tuple(_first(annotations, keys.cost_tags)),
            registered_at=registered,
        )
