"""NGINX: status codes and latency from a JSON access log, connections from ``stub_status``.

The log is tailed incrementally. The cursor ``file`` holds the device, inode and byte
offset after the last complete line read, and is committed with the counts of the
lines before it, so a restart neither re-counts nor skips a line. Rotation by rename
(``mv access.log access.log.1`` then a reopen signal) is seen as a new inode at the
path: the rest of the old file is read first (through the handle kept open, or from
``<path>.1`` after a restart), then the new file from its start. A file shorter than
the offset was truncated (``copytruncate``): reading restarts at 0. A malformed line is
counted in ``platform_exporter_access_log_malformed_lines_total`` and skipped.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from exporter.core.errors import MalformedResponse, SourceError
from exporter.core.httpclient import send
from exporter.core.redact import excerpt
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.domains.catalog.store import load_catalog
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.accesslog import Aggregator
from exporter.domains.traffic.records import ConsumerSeen, TrafficDelta
from exporter.domains.traffic.routes import RouteMap
from exporter.domains.traffic.settings import NginxSourceConfig

CHUNK_BYTES = 4 * 1024 * 1024
# Each commit covers at most this many bytes of log, so a backlog is read in steps.
COMMIT_BYTES = 32 * 1024 * 1024

_STUB = re.compile(
    r"Active connections:\s*(\d+)\s*server accepts handled requests\s*(\d+)\s+(\d+)\s+(\d+)"
    r"\s*Reading:\s*(\d+)\s*Writing:\s*(\d+)\s*Waiting:\s*(\d+)",
    re.S,
)


class LogUnavailable(SourceError):
    """The access log cannot be read."""

    reason = "config"


@dataclass(frozen=True)
class FileCursor:
    dev: int
    inode: int
    offset: int

    def dump(self) -> str:
        return json.dumps({"dev": self.dev, "inode": self.inode, "offset": self.offset})

    @classmethod
    def load(cls, text: str | None) -> FileCursor | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(int(data["dev"]), int(data["inode"]), int(data["offset"]))


def parse_stub_status(text: str) -> dict[str, int]:
    """The numbers of an ``ngx_http_stub_status_module`` page."""
    m = _STUB.search(text)
    if m is None:
        raise MalformedResponse(f"not a stub_status page: {text[:100]!r}")
    keys = ("active", "accepts", "handled", "requests", "reading", "writing", "waiting")
    return {k: int(v) for k, v in zip(keys, m.groups(), strict=True)}


class NginxSource(Source):
    """Tails the access log; see the module docstring."""

    attributes_to_services = True

    kind = "nginx"
    settings_model = NginxSourceConfig
    produces = (TrafficDelta, ConsumerSeen)

    def __init__(self, config: ConfigBase, settings: NginxSourceConfig) -> None:
        super().__init__(config, settings)
        self.nginx = settings
        self.path = Path(settings.access_log)
        self.aggregator = Aggregator(
            RouteMap(config, depth=settings.attribution_depth), settings.consumer_field, self.kind
        )
        # Routes deeper than the attribution depth, as of the last poll (None: not polled).
        self._deep: set[str] | None = None
        # The file we read last, kept open so that the rest of a renamed file is not lost.
        self._fh: BinaryIO | None = None
        self._fh_id: tuple[int, int] | None = None

    async def poll(self, ctx: PollContext) -> None:
        # The merged catalog may have gained (or lost) Backstage services and routes.
        self.aggregator.routes = RouteMap(
            self.config, load_catalog(self.config, ctx.store), depth=self.nginx.attribution_depth
        )
        self._warn_deep_claims(ctx)
        if self.nginx.stub_status_url:
            response = await send(
                ctx.client, "GET", self.nginx.stub_status_url, health=ctx.health, clock=ctx.now
            )
            stub = parse_stub_status(response.text)
            stub["at"] = int(ctx.now())
            await ctx.write(traffic_store.record_stub_status, ctx.store, ctx.source, stub)
        # To its end even if the poll is cancelled: the next poll's tail must not overlap it.
        await ctx.write(self.tail, ctx)

    def _warn_deep_claims(self, ctx: PollContext) -> None:
        """Name a route newly claimed deeper than ``attribution_depth``: the traffic stored
        before it is kept at that depth, so it stays where it was (docs/kpis.md)."""
        depth = self.nginx.attribution_depth
        deep = self.aggregator.routes.deeper_than(depth)
        for route in sorted(deep - self._deep) if self._deep is not None else ():
            ctx.log.warning(
                "route %r is deeper than attribution_depth (%d): it takes the traffic read "
                "from now on; what was stored before stays with its service",
                excerpt(route, 120),
                depth,
            )
        self._deep = deep

    # --- tailing (runs in a worker thread) ---------------------------------------------

    def tail(self, ctx: PollContext) -> int:
        """Read every complete new line; commit in steps. Returns the lines read.

        The aggregator holds only lines read after the last committed cursor. When a
        commit fails (the state disk is full, the database is locked) those lines are
        dropped with it and read again, from that cursor, by the next poll: counted once.
        """
        self.aggregator.reset()
        try:
            return self._tail(ctx)
        except BaseException:
            self.aggregator.reset()
            raise

    def _tail(self, ctx: PollContext) -> int:
        cursor = FileCursor.load(ctx.cursor("file"))
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise LogUnavailable(f"cannot stat access log {self.path}: {exc.strerror}") from None
        budget = self.nginx.max_bytes_per_poll
        lines = 0
        if cursor is not None and (
            st is None or (st.st_dev, st.st_ino) != (cursor.dev, cursor.inode)
        ):
            # Rotated (or deleted): finish the old file first, if we can still find it.
            old = self._open_old(cursor)
            if old is None:
                ctx.log.warning(
                    "access log %s was replaced and its previous file is gone: lines written "
                    "to it after offset %d are lost",
                    self.path,
                    cursor.offset,
                )
            else:
                n, cursor, budget = self._drain(ctx, old, cursor, budget, final=True)
                lines += n
                if budget <= 0:
                    return lines
            if st is None:
                if old is None:
                    raise LogUnavailable(f"access log {self.path} disappeared")
                # Renamed, and nginx has not reopened its log yet: the new file comes later.
                ctx.log.info("access log %s was rotated; waiting for the new file", self.path)
                return lines
            # The new file is followed from its start; the switch is committed at once, so
            # it is counted once even if nothing is written to the new file for a while.
            cursor = FileCursor(st.st_dev, st.st_ino, 0)
            traffic_store.record_reopen(ctx.store, ctx.source, "rotated", cursor.dump())
        if st is None:
            self._close()
            ctx.log.info("access log %s does not exist (yet)", self.path)
            return lines
        fh = self._open_current(st)
        if cursor is None:
            cursor = FileCursor(st.st_dev, st.st_ino, 0)
        elif st.st_size < cursor.offset:
            ctx.log.warning(
                "access log %s shrank below offset %d: truncated; reading from its start",
                self.path,
                cursor.offset,
            )
            cursor = FileCursor(cursor.dev, cursor.inode, 0)
            traffic_store.record_reopen(ctx.store, ctx.source, "truncated", cursor.dump())
        n, cursor, budget = self._drain(ctx, fh, cursor, budget, final=False)
        lines += n
        self._maybe_prune(ctx)
        return lines

    def _open_current(self, st: os.stat_result) -> BinaryIO:
        ident = (st.st_dev, st.st_ino)
        if self._fh is None or self._fh_id != ident:
            self._close()
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open across polls
            except OSError as exc:
                raise LogUnavailable(
                    f"cannot open access log {self.path}: {exc.strerror}"
                ) from None
            real = os.fstat(self._fh.fileno())
            self._fh_id = (real.st_dev, real.st_ino)
        return self._fh

    def _open_old(self, cursor: FileCursor) -> BinaryIO | None:
        if self._fh is not None and self._fh_id == (cursor.dev, cursor.inode):
            fh = self._fh
            self._fh, self._fh_id = None, None
            return fh
        # After a restart the handle is gone: the usual rotated name still has the inode.
        candidate = Path(f"{self.path}.1")
        try:
            st = os.stat(candidate)
            if (st.st_dev, st.st_ino) == (cursor.dev, cursor.inode):
                return open(candidate, "rb")
        except OSError:
            pass
        return None

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh, self._fh_id = None, None

    def _drain(
        self, ctx: PollContext, fh: BinaryIO, cursor: FileCursor, budget: int, *, final: bool
    ) -> tuple[int, FileCursor, int]:
        """Read complete lines from ``cursor.offset``; commit every COMMIT_BYTES."""
        agg = self.aggregator
        fh.seek(cursor.offset)
        offset = cursor.offset
        pending = b""
        since_commit = 0
        lines = 0
        while budget > 0:
            block = fh.read(min(CHUNK_BYTES, budget))
            if not block:
                break
            budget -= len(block)
            data = pending + block
            end = data.rfind(b"\n")
            if end < 0:
                pending = data
                continue
            pending = data[end + 1 :]
            agg.add_lines(data[:end].decode("utf-8", "replace").split("\n"))
            offset += end + 1
            since_commit += end + 1
            if since_commit >= COMMIT_BYTES:
                lines += self._commit(ctx, cursor, offset)
                since_commit = 0
        # An unfinished last line (``pending``) is still being written: read it next time.
        lines += self._commit(ctx, cursor, offset)
        if final:
            fh.close()
        return lines, FileCursor(cursor.dev, cursor.inode, offset), budget

    def _commit(self, ctx: PollContext, cursor: FileCursor, offset: int) -> int:
        agg = self.aggregator
        lines = agg.lines
        if offset == cursor.offset and not lines:
            return 0
        batch = f"{cursor.dev}:{cursor.inode}:{offset}"
        traffic_store.commit_counted(
            ctx.store,
            [*agg.deltas(batch), *agg.consumers_seen()],
            traffic_store.MALFORMED_TOTAL,
            {"source": ctx.source},
            agg.malformed,
            {(ctx.source, "file"): FileCursor(cursor.dev, cursor.inode, offset).dump()},
        )
        if agg.malformed:
            ctx.log.warning("skipped %d malformed access-log line(s)", agg.malformed)
        agg.reset()
        return lines

    def _maybe_prune(self, ctx: PollContext) -> None:
        traffic_store.prune_if_due(ctx.store, ctx.now(), self.config.state.retention)

    async def aclose(self) -> None:
        self._close()
