"""The cached exposition: rendered once per refresh, served as bytes.

A :class:`Snapshot` holds the Prometheus text exposition and the OpenMetrics
one, each kept only as its parts' deflated pieces, all rendered up front in the
refresh (a worker thread), never on the scrape path: Prometheus asks for
OpenMetrics first, so rendering that form lazily would make the first scrape
after every refresh pay for a full render. A gzip scrape (Prometheus's) is
served the pieces as they are, framed as one gzip member; a scrape without gzip
has them inflated when its answer is written. The families themselves are not kept,
nor any uncompressed copy. :class:`SnapshotHolder` swaps a whole new snapshot in
with one assignment, so a scrape sees the whole old snapshot or the whole new
one, and its cost does not depend on how big the upstreams are.
"""

from __future__ import annotations

import logging
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.core import exposition
from exporter.core.changes import ANY
from exporter.core.errors import state_failure
from exporter.core.provider import ProviderSpec, RenderContext

log = logging.getLogger("exporter.snapshot")

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
    deflater = Deflater()
    deflater.write(data)
    return deflater.done().data


def gzip_pieces(pieces: Sequence[tuple[bytes, bytes]]) -> bytes:
    """One gzip member from (data, ``deflate(data)``) pieces, in order: each piece is
    compressed once, when it is rendered, and reused while it does not change. A single
    member (not one per piece) so that every client decodes it whole."""
    deflated = [Deflated(z, zlib.crc32(data), len(data)) for data, z in pieces]
    return b"".join(Body.of(deflated).gzip)


# CRC-32's reflected polynomial, and x^(2^n) modulo it for n = 0..31 (zlib's crc32.c).
_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC polynomial, both reflected (zlib's multmodp)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> tuple[int, ...]:
    p = 1 << 30  # x^1
    table = [p]
    for _ in range(31):
        p = _multmodp(p, p)
        table.append(p)
    return tuple(table)


_X2N = _powers()


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of A + B from A's CRC ``crc1``, B's ``crc2`` and B's length: the
    parts' checksums give the whole exposition's without its bytes (zlib's algorithm:
    crc1 times x^(8 * len2), plus crc2)."""
    p = 1 << 31  # x^0
    n, k = len2, 3  # x^(2^3) is one byte of shift
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


@dataclass(frozen=True)
class Deflated:
    """Bytes kept only as raw deflate (see :func:`deflate`), with the CRC-32 and length of
    what they inflate to: what a gzip member of several such pieces needs."""

    data: bytes = field(repr=False)
    crc: int
    size: int

    @classmethod
    def of(cls, raw: bytes) -> Deflated:
        deflater = Deflater()
        deflater.write(raw)
        return deflater.done()

    def inflate(self) -> bytes:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(self.data)


class Deflater:
    """A :class:`Deflated` fed as it is made: the raw bytes pass through and are dropped,
    so a render never holds a whole exposition uncompressed."""

    def __init__(self) -> None:
        # Level 1: four times faster than zlib's default 6 on an exposition, for a
        # copy about a fifth larger (a 2,000-service render spent 0.2 s at level 6).
        self._comp = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._out: list[bytes] = []
        self._crc = 0
        self._size = 0

    def write(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        out = self._comp.compress(data)
        if out:
            self._out.append(out)

    def done(self) -> Deflated:
        self._out.append(self._comp.flush(zlib.Z_SYNC_FLUSH))
        return Deflated(b"".join(self._out), self._crc, self._size)


@dataclass(frozen=True)
class Part:
    """Some families rendered in both formats (OpenMetrics without its ``# EOF``), kept
    only deflated.

    Both formats are a plain sequence of families, so parts rendered separately
    concatenate into the exposition a single render would give, and their deflated
    copies into its gzip copy.
    """

    text_deflated: Deflated
    openmetrics_deflated: Deflated

    @classmethod
    def of(cls, text: bytes, openmetrics: bytes) -> Part:
        return cls(Deflated.of(text), Deflated.of(openmetrics))

    @property
    def text(self) -> bytes:
        return self.text_deflated.inflate()

    @property
    def openmetrics(self) -> bytes:
        return self.openmetrics_deflated.inflate()


def render_part(families: Iterable[Metric], help_suffix: str = "") -> Part:
    """Render families one by one as they come, each deflated as soon as it is rendered,
    so a provider that yields them lazily never has all of its families (nor all of
    their lines) alive at once. ``help_suffix`` is added to every family's HELP text."""
    text, om = Deflater(), Deflater()
    for t, o in exposition.each_family(families, help_suffix):
        text.write(t)
        om.write(o)
    return Part(text.done(), om.done())


_EOF_PART = Deflated.of(_OM_EOF)


@dataclass(frozen=True)
class Body:
    """One format of the exposition as its parts' deflated pieces, never joined: served
    as one gzip member that points at the pieces as they are (``gzip``), or inflated
    for a client that does not take gzip (``plain``, ``joined``)."""

    pieces: tuple[Deflated, ...]
    # The gzip member: header, the pieces' deflate data, the end block, the trailer.
    gzip: tuple[bytes, ...] = field(repr=False)
    size: int

    @classmethod
    def of(cls, pieces: Iterable[Deflated]) -> Body:
        kept = tuple(pieces)
        crc = size = 0
        for piece in kept:
            crc = crc32_combine(crc, piece.crc, piece.size)
            size += piece.size
        trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
        gz = (_GZIP_HEADER, *(p.data for p in kept), _DEFLATE_END, trailer)
        return cls(kept, gz, size)

    @property
    def gzip_size(self) -> int:
        return sum(len(b) for b in self.gzip)

    def plain(self) -> Iterator[bytes]:
        """The uncompressed body, a piece at a time."""
        for piece in self.pieces:
            yield piece.inflate()

    def joined(self) -> bytes:
        """The whole uncompressed body in one bytes object (tests, ``once``)."""
        return b"".join(self.plain())


@dataclass(frozen=True)
class Page:
    """An HTML page served as it is (the landing page) and its gzip copy, compressed
    once, when the page is rendered: a request only picks one of the two."""

    html: bytes = b""
    gzip: bytes = field(default=b"", repr=False)

    @classmethod
    def of(cls, html: bytes) -> Page:
        return cls(html, gzip_pieces([(html, deflate(html))]))


NO_PAGE = Page()


@dataclass(frozen=True)
class Snapshot:
    """One immutable rendering of every metric family, in both exposition formats, each
    kept as its parts' deflated copies (see :class:`Body`)."""

    text_body: Body
    openmetrics_body: Body = field(repr=False)
    # The instant (the daemon's clock) whose state it renders; 0.0 before any render.
    created_at: float
    # The landing page (``/``): the week's platform review as HTML, rendered with the
    # snapshot; empty before the first one (the server then serves a plain index).
    page: Page = field(default=NO_PAGE, repr=False)

    @classmethod
    def render(cls, families: Sequence[Metric], now: float = 0.0) -> Snapshot:
        return cls.assemble([render_part(families)], now)

    @classmethod
    def assemble(cls, parts: Sequence[Part], now: float = 0.0, page: Page = NO_PAGE) -> Snapshot:
        """Join parts rendered separately (one per provider) into one snapshot, which
        carries ``page`` as it is (its gzip copy is not made again). Nothing is copied:
        the snapshot points at the parts' deflated bytes."""
        return cls(
            text_body=Body.of(p.text_deflated for p in parts),
            openmetrics_body=Body.of([*(p.openmetrics_deflated for p in parts), _EOF_PART]),
            created_at=now,
            page=page,
        )

    @property
    def text(self) -> bytes:
        """The text format, inflated (a copy made on each call)."""
        return self.text_body.joined()

    @property
    def text_gzip(self) -> bytes:
        return b"".join(self.text_body.gzip)

    @property
    def openmetrics_text(self) -> bytes:
        """The OpenMetrics format, inflated (a copy made on each call)."""
        return self.openmetrics_body.joined()

    @property
    def openmetrics_gzip(self) -> bytes:
        return b"".join(self.openmetrics_body.gzip)

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


REASONS = ("changed", "cadence", "skipped")


@dataclass(frozen=True)
class _Kept:
    part: Part
    stamp: tuple[int, ...] | None  # its inputs' versions when it was rendered; None: retry
    at: float  # the clock's time of that render


def cadence_help(min_refresh: float) -> str:
    """What a time-driven provider's HELP texts add."""
    return (
        f" Recomputed after each poll that changed its data, and every {min_refresh:g}s"
        " (metrics.min_refresh) as time passes."
    )


class Parts:
    """Each provider's last rendered part, and which to render again.

    At a refresh a provider is recomputed when one of its inputs has a new version
    (reason ``changed``; always for a provider that declares no inputs), or when it
    is time-driven and its rendering is ``min_refresh`` old (``cadence``); otherwise
    its bytes are reused (``skipped``). The counts and each provider's last render
    time are families of their own, rendered last.
    """

    def __init__(self) -> None:
        self._kept: dict[str, _Kept] = {}
        # Providers whose last render found the state unreadable (logged once).
        self._unreadable: set[str] = set()
        self.renders: dict[str, dict[str, int]] = {}
        self.seconds: dict[str, float] = {}

    def rendered(self, name: str) -> Part | None:
        """The provider's part as last rendered (None before its first)."""
        kept = self._kept.get(name)
        return None if kept is None else kept.part

    def reason(self, spec: ProviderSpec, stamp: tuple[int, ...] | None, ctx: RenderContext) -> str:
        kept = self._kept.get(spec.name)
        if kept is None or stamp is None or kept.stamp != stamp:
            return "changed"
        # A clock set back (a test, a corrected host clock) also makes it due.
        if spec.time_driven and not 0 <= ctx.now - kept.at < ctx.min_refresh:
            return "cadence"
        return "skipped"

    def part(
        self, spec: ProviderSpec, ctx: RenderContext, versions: Mapping[str, int]
    ) -> Part | None:
        """The provider's part at this refresh: reused, or rendered anew. If it fails,
        its previous part (None if it never rendered), and it is tried again next time."""
        stamp = _stamp(spec, versions)
        reason = self.reason(spec, stamp, ctx)
        counts = self.renders.setdefault(spec.name, dict.fromkeys(REASONS, 0))
        counts[reason] += 1
        kept = self._kept.get(spec.name)
        if reason == "skipped":
            assert kept is not None
            return kept.part
        started = time.perf_counter()
        # Said of stored data's windows; a provider of no stored data says its own.
        suffix = cadence_help(ctx.min_refresh) if spec.time_driven and spec.reads else ""
        try:
            part = render_part(spec.collect(ctx), suffix)
        except Exception as exc:
            self._failed(spec.name, exc)
            if kept is None:
                return None
            self._kept[spec.name] = _Kept(kept.part, None, kept.at)
            return kept.part
        finally:
            self.seconds[spec.name] = time.perf_counter() - started
        if spec.name in self._unreadable:
            self._unreadable.discard(spec.name)
            log.info("metrics provider %s rendered again from the state", spec.name)
        self._kept[spec.name] = _Kept(part, stamp, ctx.now)
        return part

    def _failed(self, name: str, exc: Exception) -> None:
        """Log a provider's failed render. The state unreadable (the database down, a
        disk error) is the environment, not a bug: one line when it starts, none for
        each refresh while it lasts (an outage would log a traceback per provider per
        refresh), one when the provider renders again."""
        if not state_failure(exc):
            log.exception("metrics provider %s failed; serving its previous values", name)
            return
        if name not in self._unreadable:
            reason = " ".join(str(exc).split())[:300]
            log.warning(
                "metrics provider %s: state unreadable (%s); serving its previous values "
                "until it is readable again",
                name,
                reason,
            )
        self._unreadable.add(name)

    def stats(self, now: float, replica: str | None = None) -> Iterator[Metric]:
        """The render self-metrics, as of this refresh at ``now`` (the daemon's clock);
        labelled with ``replica`` when several replicas share the state."""
        seconds = GaugeMetricFamily(
            "platform_exporter_render_seconds",
            "Seconds the provider's last recomputation took: building its families and "
            "rendering both exposition formats and their gzip copies.",
            labels=["provider"],
        )
        renders = CounterMetricFamily(
            "platform_exporter_renders",
            "Refreshes by what they did with the provider: recomputed because an input "
            "changed, recomputed because its time windows moved on (cadence), or its "
            "rendering reused (skipped).",
            labels=["provider", "reason"],
        )
        for name, counts in self.renders.items():
            if name in self.seconds:
                seconds.add_metric([name], self.seconds[name])
            for reason in REASONS:
                renders.add_metric([name, reason], counts[reason])
        yield seconds
        yield renders
        # Each replica refreshes on its own: one whose refreshes stall serves stale KPIs
        # while its peers do not, so this is per replica (``time() - this``).
        refreshed = GaugeMetricFamily(
            "platform_exporter_last_refresh_timestamp_seconds",
            "When this replica last refreshed its snapshot (the KPIs it serves are of then).",
            labels=["replica"] if replica else None,
        )
        refreshed.add_metric([replica] if replica else [], now)
        yield refreshed


def _stamp(spec: ProviderSpec, versions: Mapping[str, int]) -> tuple[int, ...] | None:
    if spec.reads is None:
        return None
    return tuple(versions.get(name, 0) for name in (ANY, *sorted(spec.reads)))
