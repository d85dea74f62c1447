"""Parsing NGINX JSON access-log lines into per-minute traffic deltas.

The expected ``log_format`` (``escape=json``) carries at least::

    log_format kpi escape=json '{"msec":"$msec","host":"$host","request_uri":"$request_uri",'
        '"status":"$status","request_time":"$request_time",'
        '"upstream_response_time":"$upstream_response_time"}';

``time_iso8601`` (or ``time``) may replace ``msec``. The latency is ``request_time``
(seconds, what the client waited); without it, the sum of ``upstream_response_time``
(one value per upstream tried). A line that is not such an object is malformed: it
is counted and skipped. :class:`Aggregator` folds lines into counts per (gateway
identity, UTC minute) with a fixed memory footprint per minute, whatever the file size.
The identity is the host and the first path segments, ids made ``*`` (see
:meth:`~exporter.domains.traffic.routes.RouteMap.request_key`); past
:data:`MAX_IDENTS` distinct ones a source stores new ones under the service they
resolve to now (pinned), so a path full of ids cannot grow the store without bound.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import json.scanner
import math
from dataclasses import dataclass, field
from datetime import datetime

from exporter.domains.traffic.kpis import LATENCY_BUCKETS
from exporter.domains.traffic.records import ConsumerSeen, TrafficDelta
from exporter.domains.traffic.routes import RouteMap, pinned

NB = len(LATENCY_BUCKETS)
# The C scanner behind json.loads, without its per-call encoding checks.
_scan_once = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[no-untyped-call,arg-type]
# Per aggregate: 5 status classes, NB + 1 latency buckets, then the count.
_WIDTH = 5 + NB + 1 + 1
# Distinct request identities one source keeps correctable (per process).
MAX_IDENTS = 1_000


def _seconds(value: object) -> float | None:
    """A duration field: a number, ``"0.012"``, ``"0.010, 0.002"`` (summed) or ``"-"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        total = 0.0
        found = False
        for part in value.replace(":", ",").split(","):
            part = part.strip()
            if not part or part == "-":
                continue
            try:
                total += float(part)
            except ValueError:
                return None
            found = True
        return total if found else None
    return None


@dataclass
class Aggregator:
    """Folds parsed lines into counts per (identity, minute)."""

    routes: RouteMap
    consumer_field: str | None = None
    source: str = "nginx"
    malformed: int = 0
    lines: int = 0
    counts: dict[tuple[str, float], list[int]] = field(default_factory=dict)
    sums: dict[tuple[str, float], float] = field(default_factory=dict)
    consumers: dict[tuple[str, str], float] = field(default_factory=dict)
    _minutes: dict[str, float] = field(default_factory=dict)
    # identity -> the service it resolved to when read
    services: dict[str, str] = field(default_factory=dict)
    _idents: set[str] = field(default_factory=set)

    def add_line(self, line: bytes | str) -> None:
        """Fold one line (without its newline) in."""
        self.add_lines([line.decode("utf-8", "replace") if isinstance(line, bytes) else line])

    def add_lines(self, lines: list[str]) -> None:
        """Fold many lines in; the hot loop of the tailer, so names are bound locally."""
        scan = _scan_once
        counts = self.counts
        sums = self.sums
        request_key = self.routes.request_key
        services = self.services
        minute_of = self._minute
        bounds = LATENCY_BUCKETS
        bisect_left = bisect.bisect_left
        consumer_field = self.consumer_field
        for line in lines:
            if not line or line.isspace():
                self.lines += 1
                continue
            self.lines += 1
            try:
                entry, end = scan(line, 0)
                if end != len(line) and line[end:].strip():
                    raise ValueError("trailing data")
                status = int(entry["status"])
                if not 100 <= status <= 599:
                    raise ValueError("status out of range")
                raw = entry.get("request_time")
                try:
                    latency = float(raw)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    latency = _seconds(raw)  # type: ignore[assignment]
                    if latency is None:
                        latency = _seconds(entry.get("upstream_response_time"))  # type: ignore[assignment]
                    if latency is None:
                        raise ValueError("no latency") from None
                if not latency >= 0:  # also rejects NaN
                    raise ValueError("negative latency")
                minute = minute_of(entry)
                ident, service = request_key(
                    str(entry.get("host") or ""), str(entry.get("request_uri") or "/")
                )
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError, StopIteration):
                self.malformed += 1
                continue
            if ident not in services:
                ident = self._admit(ident, service)
            key = (ident, minute)
            row = counts.get(key)
            if row is None:
                row = counts[key] = [0] * _WIDTH
                sums[key] = 0.0
            row[status // 100 - 1] += 1
            row[5 + bisect_left(bounds, latency)] += 1
            row[-1] += 1
            sums[key] += latency
            if consumer_field is not None:
                consumer = entry.get(consumer_field)
                if consumer and consumer != "-":
                    ckey = (ident, str(consumer))
                    if self.consumers.get(ckey, 0.0) < minute:
                        self.consumers[ckey] = minute

    def _admit(self, ident: str, service: str) -> str:
        """A new identity, kept as it is while the source holds fewer than MAX_IDENTS."""
        if ident not in self._idents:
            if len(self._idents) >= MAX_IDENTS:
                ident = pinned(service)
            else:
                self._idents.add(ident)
        self.services[ident] = service
        return ident

    def _minute(self, entry: dict[str, object]) -> float:
        raw = entry.get("msec")
        if raw is not None:
            text = str(raw)
            if len(text) < 5 or text[-4] != ".":
                return float(math.floor(float(text) / 60.0) * 60.0)
            # $msec is "seconds.mmm": every millisecond of a second is in the same minute.
            cached = self._minutes.get(text[:-4])
            if cached is not None:
                return cached
            value = float(math.floor(float(text) / 60.0) * 60.0)
            if len(self._minutes) > 4096:
                self._minutes.clear()
            self._minutes[text[:-4]] = value
            return value
        raw = entry.get("time_iso8601", entry.get("time"))
        if not isinstance(raw, str):
            raise ValueError("no time field")
        cached = self._minutes.get(raw)
        if cached is None:
            ts = datetime.fromisoformat(raw).timestamp()
            cached = float(math.floor(ts / 60.0) * 60.0)
            if len(self._minutes) > 4096:
                self._minutes.clear()
            self._minutes[raw] = cached
        return cached

    def deltas(self, batch: str) -> list[TrafficDelta]:
        out = []
        for (ident, minute), row in sorted(self.counts.items()):
            out.append(
                TrafficDelta(
                    source=self.source,
                    service=self.services[ident],
                    ident=ident,
                    minute=minute,
                    batch=batch,
                    codes=(row[0], row[1], row[2], row[3], row[4]),
                    latency_buckets=tuple(row[5 : 5 + NB + 1]),
                    latency_sum=self.sums[(ident, minute)],
                    latency_count=row[-1],
                )
            )
        return out

    def consumers_seen(self) -> list[ConsumerSeen]:
        return [
            ConsumerSeen(
                self.source,
                self.services[ident],
                hashlib.sha256(consumer.encode()).hexdigest()[:16],
                at,
                ident,
            )
            for (ident, consumer), at in sorted(self.consumers.items())
        ]

    def reset(self) -> None:
        self.malformed = 0
        self.lines = 0
        self.counts.clear()
        self.sums.clear()
        self.consumers.clear()
        self.services.clear()
