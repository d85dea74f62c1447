"""The cached exposition: rendered once per refresh, served as bytes.

A :class:`Snapshot` holds the Prometheus text exposition and the OpenMetrics
one, each with its gzip copy, all rendered up front in the refresh (a worker
thread), never on the scrape path: Prometheus asks for OpenMetrics first, so
rendering that form lazily would make the first scrape after every refresh pay
for a full render. The families themselves are not kept. :class:`SnapshotHolder`
swaps a whole new snapshot in with one assignment, so a scrape sees the whole
old snapshot or the whole new one, and its cost does not depend on how big the
upstreams are.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric

from exporter.core import exposition

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_OM_EOF = b"# EOF\n"
# A gzip member header: deflate, no name, mtime 0 (deterministic bytes), OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# The deflate block that ends a stream: final, fixed codes, empty.
_DEFLATE_END = b"\x03\x00"


def deflate(data: bytes) -> bytes:
    """``data`` as raw deflate blocks that end on a byte boundary and refer to nothing
    before them: such pieces, deflated apart, concatenate into one valid stream."""
    # Level 6 is zlib's default trade-off.
    comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)


def gzip_pieces(pieces: Sequence[tuple[bytes, bytes]]) -> bytes:
    """One gzip member from (data, ``deflate(data)``) pieces, in order: each piece is
    compressed once, when it is rendered, and reused while it does not change. A single
    member (not one per piece) so that every client decodes it whole."""
    crc = 0
    size = 0
    for data, _ in pieces:
        crc = zlib.crc32(data, crc)
        size += len(data)
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return b"".join([_GZIP_HEADER, *(z for _, z in pieces), _DEFLATE_END, trailer])


@dataclass(frozen=True)
class Part:
    """Some families rendered in both formats (OpenMetrics without its ``# EOF``), each
    with its deflated copy.

    Both formats are a plain sequence of families, so parts rendered separately
    concatenate into the exposition a single render would give, and their deflated
    copies into its gzip copy.
    """

    text: bytes
    openmetrics: bytes
    text_deflate: bytes = field(repr=False)
    openmetrics_deflate: bytes = field(repr=False)

    @classmethod
    def of(cls, text: bytes, openmetrics: bytes) -> Part:
        return cls(text, openmetrics, deflate(text), deflate(openmetrics))


def render_part(families: Iterable[Metric], help_suffix: str = "") -> Part:
    """Render families one by one as they come, so a provider that yields them
    lazily never has all of its families alive at once. ``help_suffix`` is added to
    every family's HELP text."""
    return Part.of(*exposition.write(families, help_suffix))


_EOF_PART = (_OM_EOF, deflate(_OM_EOF))


@dataclass(frozen=True)
class Snapshot:
    """One immutable rendering of every metric family, in both exposition formats."""

    text: bytes
    text_gzip: bytes
    openmetrics_text: bytes = field(repr=False)
    openmetrics_gzip: bytes = field(repr=False)
    # The instant (the daemon's clock) whose state it renders; 0.0 before any render.
    created_at: float

    @classmethod
    def render(cls, families: Sequence[Metric], now: float = 0.0) -> Snapshot:
        return cls.assemble([render_part(families)], now)

    @classmethod
    def assemble(cls, parts: Sequence[Part], now: float = 0.0) -> Snapshot:
        """Join parts rendered separately (one per provider) into one snapshot."""
        text = [(p.text, p.text_deflate) for p in parts]
        om = [(p.openmetrics, p.openmetrics_deflate) for p in parts]
        om.append(_EOF_PART)
        return cls(
            text=b"".join(t for t, _ in text),
            text_gzip=gzip_pieces(text),
            openmetrics_text=b"".join(o for o, _ in om),
            openmetrics_gzip=gzip_pieces(om),
            created_at=now,
        )

    def openmetrics(self) -> tuple[bytes, bytes]:
        """(body, gzip body) in the OpenMetrics format."""
        return self.openmetrics_text, self.openmetrics_gzip


class SnapshotHolder:
    """Holds the current snapshot; ``set`` is a single reference assignment."""

    def __init__(self, initial: Snapshot | None = None) -> None:
        self._current = initial or Snapshot.render([])

    @property
    def current(self) -> Snapshot:
        return self._current

    def set(self, snapshot: Snapshot) -> None:
        self._current = snapshot
