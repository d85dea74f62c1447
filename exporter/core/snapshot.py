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
    """One immutable rendering of every metric family, in both exposition formats."""

    text: bytes
    text_gzip: bytes
    openmetrics_text: bytes = field(repr=False)
    openmetrics_gzip: bytes = field(repr=False)
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
        carries ``page`` as it is (its gzip copy is not made again)."""
        text = [(p.text, p.text_deflate) for p in parts]
        om = [(p.openmetrics, p.openmetrics_deflate) for p in parts]
        om.append(_EOF_PART)
        return cls(
            text=b"".join(t for t, _ in text),
            text_gzip=gzip_pieces(text),
            openmetrics_text=b"".join(o for o, _ in om),
            openmetrics_gzip=gzip_pieces(om),
            created_at=now,
            page=page,
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
