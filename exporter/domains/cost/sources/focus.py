"""FOCUS billing exports: every file under the configured paths and URLs.

Each file is one origin: its rows are allocated and summed per UTC day (see
:mod:`exporter.domains.cost.sources.focus_reader`) and replace what the file said before. A
file is read again only when it changed: local files by size and modification
time, URLs by conditional GET (``ETag`` / ``Last-Modified``; a 304 reads
nothing). Cost is stored under the lines' attribution keys (the values of the tag keys
the rules use, the account, the resource patterns matched), resolved to services when
the KPIs are computed: a catalog change that claims a tag value, renames or removes a
service re-reads nothing. A change of what a key is made of (a tag key no rule used
before, a new resource pattern) re-reads every file once, at once after the catalog poll
that brought it (:meth:`FocusSource.stale_after`). Parsing
runs in a worker thread so the scheduler keeps running. A file that is not
FOCUS at all is reported and makes the poll fail after the other files are
committed; a malformed row only skips that row.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import json
import os
import tempfile
from pathlib import Path

import httpx

from exporter.core.errors import (
    AuthError,
    MalformedResponse,
    SourceError,
    UpstreamStatusError,
    classify,
)
from exporter.core.redact import excerpt
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.core.store import Store
from exporter.domains.catalog.records import CatalogListing
from exporter.domains.cost import store as cost_store
from exporter.domains.cost.allocation import allocator_for, current_allocator
from exporter.domains.cost.records import CostContribution
from exporter.domains.cost.settings import FocusSourceConfig
from exporter.domains.cost.sources.focus_reader import (
    FocusFormatError,
    iter_export_files,
    read_file,
)
from exporter.domains.cost.sources.focus_s3 import S3Exports, plan


class MissingPath(SourceError):
    """A configured export path does not exist (yet): a deployment problem."""

    reason = "config"


class FocusSource(Source):
    """Reads FOCUS export files; see the module docstring."""

    attributes_to_services = True

    kind = "focus"
    settings_model = FocusSourceConfig
    produces = (CostContribution,)

    def __init__(self, config: ConfigBase, settings: FocusSourceConfig) -> None:
        super().__init__(config, settings)
        self.focus: FocusSourceConfig = settings
        self.allocator = allocator_for(config)
        # The key space of the last poll's reads (None: no poll yet); see stale_after.
        self._read_under: str | None = None
        self._url_error: SourceError | None = None
        self.s3 = [S3Exports(entry, settings.timeout) for entry in settings.s3]

    def files(self) -> list[Path]:
        """Every export file the configured paths name, each once."""
        found: dict[str, Path] = {}
        for entry in self.focus.paths:
            path = Path(entry)
            if any(ch in entry for ch in "*?["):
                candidates = [Path(p) for p in sorted(glob.glob(entry, recursive=True))]
            elif path.is_dir():
                candidates = list(iter_export_files(path))
            else:
                candidates = [path]
            for c in candidates:
                if c.is_file():
                    found.setdefault(str(c.resolve()), c)
        return [found[k] for k in sorted(found)]

    def _signature(self, content: str) -> str:
        pinned = "" if self.focus.focus_version == "auto" else f"|focus={self.focus.focus_version}"
        return (
            f"{content}|keys={self.allocator.key_fingerprint}|provider={self.focus.provider or ''}"
            f"{pinned}"
        )

    def stale_after(self, store: Store, produced: frozenset[type]) -> bool:
        """A catalog listing that changed what a key is made of (a tag key no rule used,
        a new resource pattern): stored keys cannot tell the new claims, so every file is
        read again, now rather than at the next interval."""
        if CatalogListing not in produced or self._read_under is None:
            return False  # not read yet: its first poll reads under the catalog as it is
        return current_allocator(self.config, store).key_fingerprint != self._read_under

    async def poll(self, ctx: PollContext) -> None:
        # Rules can come from an external catalog too, which changes between polls.
        self.allocator = current_allocator(self.config, ctx.store)
        self._read_under = self.allocator.key_fingerprint
        known = cost_store.origins(ctx.store, self.name)
        bad: list[str] = []
        # The first URL failure that is not about file contents decides the error reason.
        self._url_error = None
        for path in self.files():
            st = path.stat()
            signature = self._signature(f"{st.st_size}:{st.st_mtime_ns}")
            origin = str(path.resolve())
            if known.get(origin, ("", False))[0] == signature:
                continue
            problem = await self._ingest(ctx, path, origin, signature)
            if problem:
                bad.append(problem)
        for url in self.focus.urls:
            problem = await self._fetch(ctx, url, known)
            if problem:
                bad.append(problem)
        for exports in self.s3:
            bad.extend(await self._poll_s3(ctx, exports, known))
        missing = [
            p for p in self.focus.paths if not any(ch in p for ch in "*?[") and not Path(p).exists()
        ]
        if bad:
            message = "; ".join(bad + [f"path not found: {p}" for p in missing])
            if self._url_error is not None:
                self._url_error.args = (message,)
                raise self._url_error
            raise MalformedResponse(message)
        if missing:
            raise MissingPath(f"path(s) not found: {', '.join(missing)}")

    async def _ingest(
        self, ctx: PollContext, path: Path, origin: str, signature: str
    ) -> str | None:
        try:
            result = await asyncio.to_thread(
                read_file,
                path,
                self.allocator,
                self.focus.provider,
                origin,
                self.focus.focus_version,
            )
        except FocusFormatError as exc:
            ctx.log.error("%s", exc)
            return str(exc)
        except OSError as exc:
            ctx.log.error("cannot read %s: %s", path, exc)
            return f"cannot read {path}: {exc.strerror}"
        await ctx.commit(
            [
                CostContribution(
                    source=self.name,
                    origin=origin,
                    signature=signature,
                    days=tuple(result.days),
                    final=False,
                    rows_read=result.rows_read,
                    rows_rejected=result.rows_rejected,
                    covered_days=tuple(result.arrived),
                )
            ]
        )
        ctx.log.info(
            "read %s: %d rows, %d rejected, %d day/service sums",
            origin,
            result.rows_read,
            result.rows_rejected,
            len(result.days),
        )
        return None

    async def _poll_s3(
        self, ctx: PollContext, exports: S3Exports, known: dict[str, tuple[str, bool]]
    ) -> list[str]:
        """One S3 prefix: list it, read the changed objects of complete periods, and drop
        what objects no longer there (or no longer listed by their manifest) said."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = exports.settings.url
        exports.on_answer = ctx.health.count_request
        exports.renew(ctx.now())
        try:
            objects = await asyncio.to_thread(lambda: list(exports.objects()))
            todo = plan(
                exports.bucket, objects, await asyncio.to_thread(exports.manifests, objects)
            )
        except (BotoCoreError, ClientError) as exc:
            return [self._s3_problem(where, exc)]
        for period in todo.waiting:
            ctx.log.info(
                "%s: %s is still being written (no complete manifest); not read", where, period
            )
        bad: list[str] = []
        for obj in todo.read:
            origin = f"s3://{exports.bucket}/{obj.key}"
            signature = self._signature(f"etag={obj.etag}:{obj.size}")
            if known.get(origin, ("", False))[0] == signature:
                continue
            problem = await self._read_s3(ctx, exports, obj.key, origin, signature)
            if problem:
                bad.append(problem)
        kept = {f"s3://{exports.bucket}/{o.key}" for o in (*todo.read, *todo.held)}
        under = f"s3://{exports.bucket}/{exports.prefix}"
        gone = [
            o
            for o, (sig, _) in known.items()
            if o.startswith(under) and o not in kept and sig != "gone"
        ]
        if gone:
            await ctx.commit([CostContribution(self.name, o, "gone", ()) for o in gone])
        return bad

    async def _read_s3(
        self, ctx: PollContext, exports: S3Exports, key: str, origin: str, signature: str
    ) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        tmp = tempfile.NamedTemporaryFile(prefix="focus-", delete=False)  # noqa: SIM115
        tmp.close()
        try:
            await asyncio.to_thread(exports.download, key, Path(tmp.name))
            return await self._ingest(ctx, Path(tmp.name), origin, signature)
        except (BotoCoreError, ClientError) as exc:
            return self._s3_problem(origin, exc)
        finally:
            os.unlink(tmp.name)

    def _s3_problem(self, where: str, exc: Exception) -> str:
        """The message of a failed S3 call; the first decides the poll's error reason."""
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", type(exc).__name__))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 503)
        problem = f"{where}: S3 {code}: {exc}"
        if self._url_error is None:
            self._url_error = (
                AuthError(problem)
                if status in (401, 403) or code in ("AccessDenied", "InvalidAccessKeyId")
                else UpstreamStatusError(problem, status)
            )
        return problem

    async def _fetch(
        self, ctx: PollContext, url: str, known: dict[str, tuple[str, bool]]
    ) -> str | None:
        cursor = ctx.cursor(f"url:{url}")
        validators = json.loads(cursor) if cursor else {}
        headers: dict[str, str] = {}
        stored = known.get(url, ("", False))[0]
        # Validators only count if the stored contribution was made under today's rules.
        if stored.endswith(self._signature("")) and validators:
            if validators.get("etag"):
                headers["If-None-Match"] = validators["etag"]
            if validators.get("last_modified"):
                headers["If-Modified-Since"] = validators["last_modified"]
        tmp = tempfile.NamedTemporaryFile(prefix="focus-", delete=False)  # noqa: SIM115
        try:
            digest = hashlib.sha256()
            async with ctx.client.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    return None
                if response.status_code != 200:
                    body = excerpt((await response.aread())[:4096].decode(errors="replace"))
                    problem = f"GET {url}: HTTP {response.status_code}: {body}"
                    if self._url_error is None:
                        self._url_error = (
                            AuthError(problem)
                            if response.status_code in (401, 403)
                            else UpstreamStatusError(problem, response.status_code)
                        )
                    return problem
                async for chunk in response.aiter_bytes(1 << 20):
                    tmp.write(chunk)
                    digest.update(chunk)
                etag = response.headers.get("ETag", "")
                modified = response.headers.get("Last-Modified", "")
            tmp.close()
            signature = self._signature(f"sha256:{digest.hexdigest()}")
            if stored == signature:
                return None
            failed = await self._ingest(ctx, Path(tmp.name), url, signature)
            if failed is None:
                await ctx.commit(
                    [], {f"url:{url}": json.dumps({"etag": etag, "last_modified": modified})}
                )
            return failed
        except httpx.HTTPError as exc:
            problem = f"GET {url}: {exc.__class__.__name__}: {exc}"
            if self._url_error is None:
                err = UpstreamStatusError(problem, 503)
                err.reason = classify(exc)
                self._url_error = err
            return problem
        finally:
            tmp.close()
            os.unlink(tmp.name)
