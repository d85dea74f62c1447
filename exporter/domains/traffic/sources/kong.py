"""Kong: requests, status codes and latency from the Prometheus plugin; names from the Admin API.

The plugin's exposition (Status API or Admin API ``/metrics``) is parsed with
``prometheus_client``'s parser. Both generations of names are read:

* Kong 3.x: ``kong_http_requests_total{service,route,code,source,consumer}`` and the
  ``kong_request_latency_ms`` histogram (buckets 25 … 60000 ms);
* Kong 2.x: ``kong_http_status{service,route,code}``, ``kong_http_consumer_status{...,consumer}``
  and ``kong_latency{service,route,type="request"}`` (buckets 1 … 60000 ms).

The counters are cumulative since Kong started, so each poll stores the increase since
the previous poll (the previous values are a cursor committed with the counts). The
first poll only takes the baseline. A counter that went down means Kong restarted: then
every series counts from zero, as Prometheus' ``rate()`` assumes. Latencies are converted
from milliseconds to seconds and re-bucketed onto the exporter's bounds. Point the source
at one Kong node: several nodes behind one URL would look like constant restarts.

An upstream answer is data, not trusted: a series missing from one exposition (an
empty or partial answer) keeps its last reading in the cursor, so it never counts
from zero again; a sample that cannot be a cumulative count (NaN, infinite, negative,
beyond 2**53) is dropped alone and the poll reports ``malformed`` with their number,
after committing the rest. Admin API paging stops at a bound on pages and items.

At most ``max_series`` series are kept from an exposition: those of the cursor first,
then new ones while there is room; the others are left out (counted in
``platform_exporter_upstream_series_dropped_total``) until Kong restarts and every
series counts from zero anyway. So a series is never taken up late, with its whole
cumulative value counted as new. Only the lines of the families read are parsed, a
few thousand at a time, so memory follows the cap, not the exposition.

With ``admin_url``, ``GET /services``, ``/routes`` and ``/consumers`` (following ``next``)
map each Kong route to its Kong service, so a catalog service may list either name in
its ``routes``; ``/consumers`` gives the registered-consumer count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from exporter.core.errors import MalformedResponse
from exporter.core.httpclient import send
from exporter.core.periods import utc_minute
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.domains.catalog.store import load_catalog
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import LATENCY_BUCKETS, counter_delta, rebucket
from exporter.domains.traffic.records import ConsumerSeen, TrafficDelta
from exporter.domains.traffic.routes import RouteMap
from exporter.domains.traffic.settings import KongSourceConfig

NB = len(LATENCY_BUCKETS)
REQUEST_COUNTERS = ("kong_http_requests_total", "kong_http_status", "kong_http_status_total")
CONSUMER_COUNTERS = ("kong_http_consumer_status", "kong_http_consumer_status_total")
LATENCY_3X = "kong_request_latency_ms"
LATENCY_2X = "kong_latency"
# Bounds on one poll's Admin API paging: a cursor chain that never ends, or a listing
# far larger than any Kong's, fails the poll as malformed instead of running on.
MAX_PAGES = 1_000
MAX_ITEMS = 100_000
# A cumulative counter beyond 2**53 is no longer an exact count: not a real reading.
MAX_COUNTER = float(2**53)
# (stored identity, Kong service, route): one Kong latency series.
_Series = tuple[str, str, str]

SeriesKey = str  # JSON of the sample name and its sorted labels

# The families read: lines of any other family are skipped before parsing.
_READ = (*REQUEST_COUNTERS, *CONSUMER_COUNTERS, LATENCY_3X, LATENCY_2X)
# What every sample line of an exposition starts with: a metric name, then labels or a space.
_SAMPLE_LINE = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*[{ \t]")
# Sample lines handed to the parser at once.
PARSE_BATCH = 5_000


def _key(name: str, labels: dict[str, str]) -> SeriesKey:
    return json.dumps([name, sorted(labels.items())], separators=(",", ":"))


class SeriesCap:
    """Admits at most ``limit`` series: every one of ``known`` (the cursor's, at most
    ``limit``), then new ones while there is room; counts the new ones left out."""

    def __init__(self, limit: int, known: Collection[SeriesKey] = ()) -> None:
        self.limit = limit
        self.known = known
        self.room = max(0, limit - len(known))
        self.dropped = 0

    def admit(self, key: SeriesKey) -> bool:
        if key in self.known:
            return True
        if self.room > 0:
            self.room -= 1
            return True
        self.dropped += 1
        return False


def _lines(body: str | bytes) -> Iterator[str]:
    """The lines of ``body`` one at a time (ending in a newline), without a copy of the
    whole: a 200k-series exposition is tens of megabytes."""
    newline: Any = b"\n" if isinstance(body, bytes) else "\n"
    start = 0
    while start < len(body):
        end = body.find(newline, start)
        end = len(body) if end < 0 else end + 1
        piece = body[start:end]
        line = piece.decode("utf-8", "replace") if isinstance(piece, bytes) else piece
        yield line if line.endswith("\n") else line + "\n"
        start = end


def _sample_lines(body: str | bytes) -> Iterator[str]:
    """The sample lines of the families read; MalformedResponse for a line that is no
    sample line at all (an HTML error page, a truncated body)."""
    for line in _lines(body):
        if line.startswith("#") or not line.strip():
            continue
        if not _SAMPLE_LINE.match(line):
            raise MalformedResponse(f"Kong /metrics is not a Prometheus exposition: {line[:100]!r}")
        if line.startswith(_READ):
            yield line


def _batches(lines: Iterator[str]) -> Iterator[str]:
    while batch := list(islice(lines, PARSE_BATCH)):
        yield "".join(batch)


def parse_exposition(
    text: str | bytes, rejected: list[str] | None = None, cap: SeriesCap | None = None
) -> dict[SeriesKey, float]:
    """Every sample of the request counters and latency histograms, by series.

    A sample that cannot be a cumulative count (NaN, infinite, negative, beyond 2**53)
    is left out and its series named in ``rejected``; a series ``cap`` does not admit is
    left out and counted there. Raises MalformedResponse when the text is not an
    exposition.
    """
    out: dict[SeriesKey, float] = {}
    try:
        # Without their TYPE lines the samples parse alike (names and labels as written).
        families = (
            f
            for batch in _batches(_sample_lines(text))
            for f in text_string_to_metric_families(batch)
        )
        for family in families:
            for s in family.samples:
                name = s.name
                labels = dict(s.labels)
                if name in REQUEST_COUNTERS or name in CONSUMER_COUNTERS:
                    pass
                elif name.startswith((LATENCY_3X, LATENCY_2X)):
                    if name.startswith(LATENCY_2X + "_") and labels.get("type") != "request":
                        continue
                    if not name.endswith(("_bucket", "_sum", "_count")):
                        continue
                else:
                    continue
                value = float(s.value)
                if not (math.isfinite(value) and 0.0 <= value <= MAX_COUNTER) or (
                    name.endswith("_bucket") and not _is_bound(labels.get("le"))
                ):
                    if rejected is not None:
                        rejected.append(f"{name}={value!r}")
                    continue
                key = _key(name, labels)
                if key in out or cap is None or cap.admit(key):
                    out[key] = value
    except ValueError as exc:
        raise MalformedResponse(f"Kong /metrics is not a Prometheus exposition: {exc}") from None
    return out


def _is_bound(le: str | None) -> bool:
    """A histogram bound Kong writes: a number, padded ("00025.0"), "+Inf" or "Inf"."""
    try:
        return le is not None and not math.isnan(float(le))
    except ValueError:
        return False


def restarted(previous: dict[SeriesKey, float], current: dict[SeriesKey, float]) -> bool:
    """True when any cumulative series went down: Kong restarted since the last read."""
    return any(current[k] < v for k, v in previous.items() if k in current)


def _class(code: str) -> int | None:
    try:
        status = int(code)
    except ValueError:
        return None
    return status // 100 - 1 if 100 <= status <= 599 else None


class KongSource(Source):
    """Reads Kong's Prometheus plugin and Admin API; see the module docstring."""

    attributes_to_services = True

    kind = "kong"
    settings_model = KongSourceConfig
    produces = (TrafficDelta, ConsumerSeen)

    def __init__(self, config: ConfigBase, settings: KongSourceConfig) -> None:
        super().__init__(config, settings)
        self.kong = settings
        self.routes = RouteMap(config)
        # Whether the last poll left series out (its warning is logged once).
        self._dropping = False

    def _admin_headers(self) -> dict[str, str]:
        if self.kong.admin_token is None:
            return {}
        return {"Kong-Admin-Token": self.kong.admin_token.get_secret_value()}

    async def list_all(self, ctx: PollContext, entity: str) -> list[dict[str, Any]]:
        """Every object of an Admin API collection, following ``next`` page by page."""
        assert self.kong.admin_url is not None
        base = self.kong.admin_url
        prefix = urlsplit(base).path.rstrip("/")
        url: str | None = f"{base}/{entity}?size={self.kong.page_size}"
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        while url is not None:
            if url in seen:
                raise MalformedResponse(f"Kong Admin API pagination loops at {url}")
            if len(seen) >= MAX_PAGES or len(out) >= MAX_ITEMS:
                raise MalformedResponse(
                    f"Kong /{entity}: stopped after {len(seen)} pages and {len(out)} items "
                    f"(bounds {MAX_PAGES} pages, {MAX_ITEMS} items per poll)"
                )
            seen.add(url)
            response = await send(
                ctx.client,
                "GET",
                url,
                headers=self._admin_headers(),
                health=ctx.health,
                clock=ctx.now,
            )
            try:
                body = response.json()
                data = body["data"]
                nxt = body.get("next")
            except (ValueError, KeyError, TypeError):
                raise MalformedResponse(f"Kong /{entity} answer has no data list") from None
            if not isinstance(data, list):
                raise MalformedResponse(f"Kong /{entity} data is not a list")
            if nxt is not None and not isinstance(nxt, str):
                raise MalformedResponse(f"Kong /{entity} next is not a string")
            out.extend(d for d in data if isinstance(d, dict))
            if not nxt:
                url = None
            elif nxt.startswith(("http://", "https://")):
                url = nxt
            else:
                # `next` is a path from the Admin API's root, e.g. /services?offset=...
                path = nxt if not prefix or nxt.startswith(prefix + "/") else prefix + nxt
                parts = urlsplit(base)
                url = f"{parts.scheme}://{parts.netloc}{path}"
        return out

    async def poll(self, ctx: PollContext) -> None:
        # The merged catalog may have gained (or lost) Backstage services and routes.
        self.routes = RouteMap(self.config, load_catalog(self.config, ctx.store))
        route_service: dict[str, str] = {}
        cursors: dict[str, str] = {}
        if self.kong.admin_url is not None:
            services = await self.list_all(ctx, "services")
            routes = await self.list_all(ctx, "routes")
            consumers = await self.list_all(ctx, "consumers")
            route_service = self._route_services(services, routes)
            cursors[traffic_store.CONSUMERS_REGISTERED] = json.dumps(
                {"count": len(consumers), "at": ctx.now()}
            )
        response = await send(
            ctx.client,
            "GET",
            f"{self.kong.status_url}{self.kong.metrics_path}",
            health=ctx.health,
            clock=ctx.now,
        )
        rejected: list[str] = []
        raw_prev = ctx.cursor("series")
        previous: dict[SeriesKey, float] | None = json.loads(raw_prev) if raw_prev else None
        cap = SeriesCap(self.kong.max_series, previous or {})
        current = parse_exposition(response.content, rejected, cap)
        del response  # its body: the largest thing this poll holds
        records: list[Any] = []
        reset = False
        if previous is not None:
            reset = restarted(previous, current)
            if reset:
                ctx.log.warning("Kong counters went down: Kong restarted; counting from zero")
            now = ctx.now()
            records = list(self.deltas(previous, current, reset, route_service, now))
        # A series missing from this exposition (an empty or partial answer, a rejected
        # sample) keeps its last reading: when it is back, only its increase counts.
        # After a restart the old readings mean nothing and are dropped.
        kept = current if reset or previous is None else {**previous, **current}
        cursors["series"] = json.dumps(kept, separators=(",", ":"))
        await ctx.write(
            traffic_store.commit_counted,
            ctx.store,
            records,
            traffic_store.SERIES_DROPPED_TOTAL,
            {"source": ctx.source},
            cap.dropped,
            {(ctx.source, name): value for name, value in cursors.items()},
        )
        if cap.dropped:
            # Once when it starts; every poll after that only adds to the counter.
            ctx.log.log(
                logging.DEBUG if self._dropping else logging.WARNING,
                "Kong /metrics: %d series left out, max_series (%d) reached",
                cap.dropped,
                cap.limit,
            )
        self._dropping = bool(cap.dropped)
        await ctx.write(
            traffic_store.prune_if_due, ctx.store, ctx.now(), self.config.state.retention
        )
        if rejected:
            raise MalformedResponse(
                f"Kong /metrics: {len(rejected)} sample(s) rejected (not a finite count), "
                f"the rest committed; first: {rejected[0][:200]}"
            )

    @staticmethod
    def _route_services(
        services: list[dict[str, Any]], routes: list[dict[str, Any]]
    ) -> dict[str, str]:
        """Kong route name or id -> Kong service name; entities with wrong-typed ids are
        left out (they name nothing a label could use)."""
        names: dict[str, str] = {}
        for svc in services:
            ident, name = svc.get("id"), svc.get("name") or svc.get("host")
            if isinstance(ident, str) and isinstance(name, str):
                names[ident] = name
        out: dict[str, str] = {}
        for route in routes:
            ref = route.get("service")
            ident = ref.get("id") if isinstance(ref, dict) else None
            name = names.get(ident) if isinstance(ident, str) else None
            for key in (route.get("name"), route.get("id")):
                if isinstance(key, str) and key and name:
                    out[key] = name
        return out

    def _ident(self, labels: dict[str, str], route_service: dict[str, str]) -> str:
        """The stored identity of a series: its Kong route, then its Kong service."""
        route = labels.get("route") or ""
        kong_service = labels.get("service") or route_service.get(route) or ""
        return self.routes.name_key(route, kong_service)[0]

    def deltas(
        self,
        previous: dict[SeriesKey, float],
        current: dict[SeriesKey, float],
        reset: bool,
        route_service: dict[str, str],
        now: float,
    ) -> Iterable[TrafficDelta | ConsumerSeen]:
        codes, consumers, hist = self._increases(previous, current, reset, route_service)
        buckets, sums = _latency(hist)
        minute = utc_minute(now)
        batch = f"poll:{now:.3f}"
        for ident in sorted(set(codes) | set(buckets)):
            b = buckets.get(ident)
            yield TrafficDelta(
                source=self.kind,
                service=self.routes.resolve(ident),
                minute=minute,
                batch=batch,
                codes=tuple(codes[ident]) if ident in codes else (0, 0, 0, 0, 0),  # type: ignore[arg-type]
                latency_buckets=tuple(b) if b is not None else None,
                latency_sum=sums.get(ident, 0.0),
                latency_count=sum(b) if b is not None else 0,
                ident=ident,
            )
        for ident, consumer in sorted(consumers):
            digest = hashlib.sha256(consumer.encode()).hexdigest()[:16]
            yield ConsumerSeen(self.kind, self.routes.resolve(ident), digest, now, ident)

    def _increases(
        self,
        previous: dict[SeriesKey, float],
        current: dict[SeriesKey, float],
        reset: bool,
        route_service: dict[str, str],
    ) -> tuple[dict[str, list[int]], set[tuple[str, str]], dict[_Series, dict[str, float]]]:
        """What grew since the previous read: requests per stored identity and status
        class, (identity, consumer) pairs, and each latency series' increases by ``le``
        (plus ``sum`` and ``count``)."""
        codes: dict[str, list[int]] = defaultdict(lambda: [0] * 5)
        consumers: set[tuple[str, str]] = set()
        hist: dict[_Series, dict[str, float]] = defaultdict(dict)
        for key, value in current.items():
            name, pairs = json.loads(key)
            labels = dict(pairs)
            before = 0.0 if reset else previous.get(key, 0.0)
            increase = counter_delta(before, value)
            if increase <= 0:
                continue
            service = self._ident(labels, route_service)
            if name in REQUEST_COUNTERS:
                idx = _class(labels.get("code", ""))
                if idx is not None:
                    codes[service][idx] += round(increase)
                if labels.get("consumer"):
                    consumers.add((service, labels["consumer"]))
            elif name in CONSUMER_COUNTERS:
                if labels.get("consumer"):
                    consumers.add((service, labels["consumer"]))
            else:
                series = (service, labels.get("service", ""), labels.get("route", ""))
                if name.endswith("_bucket"):
                    hist[series][labels["le"]] = increase
                elif name.endswith("_sum"):
                    hist[series]["sum"] = increase
                elif name.endswith("_count"):
                    hist[series]["count"] = increase
        return codes, consumers, hist


def _latency(
    hist: dict[_Series, dict[str, float]],
) -> tuple[dict[str, list[int]], dict[str, float]]:
    """Latency increases per Kong series, converted to :data:`LATENCY_BUCKETS` and added
    up per stored identity: (non-cumulative bucket counts plus overflow, sum in seconds)."""
    buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (NB + 1))
    sums: dict[str, float] = defaultdict(float)
    for (service, _, _), h in hist.items():
        finite: list[tuple[float, float]] = []
        total = h.get("count", 0.0)
        for le, c in h.items():
            if le in ("sum", "count"):
                continue
            bound = float(le)  # Kong pads bounds ("00025.0") and may write "Inf"
            if math.isinf(bound):
                total = c
            else:
                finite.append((bound, c))
        finite.sort()
        if total <= 0:
            continue
        ms_bounds = [b for b, _ in finite]
        cumulative = rebucket([b / 1000.0 for b in ms_bounds], [c for _, c in finite], total)
        rounded = [round(c) for c in cumulative]
        prev_c = 0
        for i, c in enumerate(rounded):
            c = max(c, prev_c)
            buckets[service][i] += c - prev_c
            prev_c = c
        buckets[service][NB] += max(round(total) - prev_c, 0)
        sums[service] += h.get("sum", 0.0) / 1000.0
    return buckets, sums
