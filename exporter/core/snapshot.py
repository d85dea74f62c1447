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

import gzip
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class _Families:
    """Adapts a fixed list of families to the registry interface generate_latest expects."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def _gzip(data: bytes) -> bytes:
    # Level 6 is zlib's default trade-off; mtime=0 keeps the bytes deterministic.
    return gzip.compress(data, compresslevel=6, mtime=0)


_OM_EOF = b"# EOF\n"


@dataclass(frozen=True)
class Part:
    """Some families rendered in both formats (OpenMetrics without its ``# EOF``).

    Both formats are a plain sequence of families, so parts rendered separately
    concatenate into the exposition a single render would give.
    """

    text: bytes
    openmetrics: bytes


def render_part(families: Iterable[Metric]) -> Part:
    """Render families one by one as they come, so a provider that yields them
    lazily never has all of its families alive at once."""
    text: list[bytes] = []
    om: list[bytes] = []
    for family in families:
        registry = _Families([family])
        text.append(generate_latest(registry))  # type: ignore[arg-type,no-untyped-call]
        om.append(generate_openmetrics(registry).removesuffix(_OM_EOF))  # type: ignore[arg-type,no-untyped-call]
    return Part(b"".join(text), b"".join(om))


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
        text = b"".join(p.text for p in parts)
        om = b"".join(p.openmetrics for p in parts) + _OM_EOF
        return cls(
            text=text,
            text_gzip=_gzip(text),
            openmetrics_text=om,
            openmetrics_gzip=_gzip(om),
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
