"""Any Prometheus: requests, errors and latency per service from user-supplied PromQL.

For gateways and meshes Prometheus already scrapes (Envoy, Istio, Traefik,
ingress-nginx), the config gives instant queries over ``/api/v1/query`` that return
one series per service (the label ``service_label``), or one scalar for
``scalar_service``. ``$window`` becomes a range (``300s``), ``$quantile`` a quantile:

* ``requests`` and ``errors_5xx`` (and optionally ``errors_4xx``): how many requests in
  ``$window``, e.g. ``sum by (service) (increase(envoy_cluster_upstream_rq_total[$window]))``.
  Each poll evaluates them at the poll's time over the span since the previous evaluation
  (the cursor ``evaluated_at``), so consecutive spans neither overlap nor leave gaps; the
  first poll only sets the cursor. Requests that are neither 5xx nor 4xx count as 2xx.
* ``latency_seconds``: the ``$quantile`` latency in seconds over ``$window``, evaluated
  for each window of ``latency_windows`` and each of p50, p95, p99.

An error answer (``{"status":"error","errorType":...,"error":...}``) fails the poll with
Prometheus' message; ``errorType`` ``timeout`` (the query exceeded the source's
``timeout``, which is passed as the query's own ``timeout``) is reported as a timeout.
``warnings`` in an answer are logged and counted in
``platform_exporter_prometheus_query_warnings_total``. A ``NaN`` sample is no value.
An answer holds at most ``max_series`` series (Prometheus is asked for no more, with
``limit``; one that ignores it has the rest left out here), and the series left out are
counted in ``platform_exporter_upstream_series_dropped_total``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from typing import Any

from exporter.core.errors import MalformedResponse, SourceError
from exporter.core.httpclient import send
from exporter.core.periods import utc_minute
from exporter.core.redact import excerpt
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.domains.catalog.store import load_catalog
from exporter.domains.traffic import store as traffic_store
from exporter.domains.traffic.kpis import QUANTILES, WINDOWS
from exporter.domains.traffic.records import TrafficDelta, TrafficLatency
from exporter.domains.traffic.routes import NAMES, RouteMap, pinned
from exporter.domains.traffic.settings import PrometheusSourceConfig


class QueryError(SourceError):
    """Prometheus refused or failed a query."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def render(query: str, window: str, quantile: float | None = None) -> str:
    out = query.replace("$window", window)
    if quantile is not None:
        out = out.replace("$quantile", f"{quantile:g}")
    return out


def parse_result(
    payload: Any,
    service_label: str,
    max_series: int | None = None,
    dropped: list[int] | None = None,
) -> tuple[dict[str | None, float], list[str]]:
    """(label value or None for a scalar -> value, warnings) from an /api/v1/query answer;
    past ``max_series`` series the rest are left out, their number added to ``dropped``."""
    if not isinstance(payload, dict) or payload.get("status") != "success":
        raise MalformedResponse(f"unexpected Prometheus answer: {excerpt(str(payload))}")
    warnings = [str(w) for w in payload.get("warnings") or []]
    data = payload.get("data") or {}
    kind = data.get("resultType")
    result: Any = data.get("result")
    out: dict[str | None, float] = {}
    try:
        if kind == "vector":
            if max_series is not None and len(result) > max_series:
                if dropped is not None:
                    dropped.append(len(result) - max_series)
                result = result[:max_series]
            for sample in result:
                value = float(sample["value"][1])
                if math.isnan(value):
                    continue
                name = (sample.get("metric") or {}).get(service_label)
                key = str(name) if name else ""
                out[key] = out.get(key, 0.0) + value
        elif kind == "scalar":
            value = float(result[1])
            if not math.isnan(value):
                out[None] = value
        else:
            raise MalformedResponse(
                f"Prometheus returned a {kind} result; queries must return a vector or a scalar"
            )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"unexpected Prometheus result: {exc}") from None
    return out, warnings


class PrometheusSource(Source):
    """Runs the configured PromQL; see the module docstring."""

    attributes_to_services = True

    kind = "prometheus"
    settings_model = PrometheusSourceConfig
    produces = (TrafficDelta, TrafficLatency)

    def __init__(self, config: ConfigBase, settings: PrometheusSourceConfig) -> None:
        super().__init__(config, settings)
        self.prom = settings
        self.routes = RouteMap(config)
        # Series left out of this poll's answers (see max_series).
        self._dropped: list[int] = []

    def client_options(self) -> dict[str, Any]:
        headers = {}
        if self.prom.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.prom.bearer_token.get_secret_value()}"
        return {"headers": headers}

    def _ident(self, name: str | None) -> str:
        """The stored identity of a series: its service label's value (or the scalar's)."""
        if name is None:
            return pinned(self.prom.scalar_service) if self.prom.scalar_service else NAMES
        return self.routes.name_key(name)[0]

    async def query(
        self, ctx: PollContext, promql: str, at: float, warnings: list[str]
    ) -> dict[str, float]:
        """Stored identity -> value of one instant query at ``at``."""
        response = await send(
            ctx.client,
            "POST",
            f"{self.prom.url}/api/v1/query",
            ok=(200, 400, 422, 503),
            data={
                "query": promql,
                "time": f"{at:.3f}",
                "timeout": f"{self.prom.timeout:g}s",
                "limit": str(self.prom.max_series),
            },
            health=ctx.health,
            clock=ctx.now,
        )
        try:
            payload = response.json()
        except ValueError:
            raise MalformedResponse(
                f"Prometheus answered {response.status_code} with a non-JSON body"
            ) from None
        if response.status_code != 200 or payload.get("status") == "error":
            kind = payload.get("errorType", "")
            reason = (
                "timeout"
                if kind == "timeout"
                else ("http_5xx" if response.status_code >= 500 else "http_4xx")
            )
            raise QueryError(
                f"Prometheus rejected {promql!r}: {kind}: {payload.get('error', '')}", reason
            )
        values, found = parse_result(
            payload, self.prom.service_label, self.prom.max_series, self._dropped
        )
        for w in found:
            ctx.log.warning("Prometheus warned about %r: %s", promql, w)
        warnings.extend(found)
        out: dict[str, float] = defaultdict(float)
        for name, value in values.items():
            out[self._ident(name)] += value
        return dict(out)

    async def poll(self, ctx: PollContext) -> None:
        # The merged catalog may have gained (or lost) Backstage services and routes.
        self.routes = RouteMap(self.config, load_catalog(self.config, ctx.store))
        now = math.floor(ctx.now())
        self._dropped = []
        warnings: list[str] = []
        records: list[Any] = []
        raw = ctx.cursor("evaluated_at")
        last = float(raw) if raw else None
        if last is not None and now - last > self.prom.max_catch_up:
            ctx.log.warning(
                "last evaluated %.0fs ago; counting only the last %.0fs",
                now - last,
                self.prom.max_catch_up,
            )
            last = now - self.prom.max_catch_up
        q = self.prom.queries
        if last is not None:
            start = last
            while start < now:
                end = min(now, start + self.prom.max_step)
                span = f"{int(end - start)}s"
                requests = await self.query(ctx, render(q.requests, span), end, warnings)
                e5 = await self.query(ctx, render(q.errors_5xx, span), end, warnings)
                e4 = (
                    await self.query(ctx, render(q.errors_4xx, span), end, warnings)
                    if q.errors_4xx
                    else {}
                )
                for ident in sorted(set(requests) | set(e5) | set(e4)):
                    total = max(round(requests.get(ident, 0.0)), 0)
                    n5 = min(max(round(e5.get(ident, 0.0)), 0), total)
                    n4 = min(max(round(e4.get(ident, 0.0)), 0), total - n5)
                    if total:
                        records.append(
                            TrafficDelta(
                                source=self.kind,
                                service=self.routes.resolve(ident),
                                ident=ident,
                                minute=utc_minute(end - 1),
                                batch=f"{start:.0f}-{end:.0f}",
                                codes=(0, total - n4 - n5, 0, n4, n5),
                            )
                        )
                start = end
        if q.latency_seconds:
            for window in self.prom.latency_windows:
                span = f"{int(WINDOWS[window])}s"
                for quantile in QUANTILES:
                    values = await self.query(
                        ctx, render(q.latency_seconds, span, quantile), now, warnings
                    )
                    for ident, seconds in sorted(values.items()):
                        service = self.routes.resolve(ident)
                        records.append(
                            TrafficLatency(
                                self.kind, service, window, quantile, seconds, now, ident
                            )
                        )
        dropped = sum(self._dropped)
        await ctx.write(
            traffic_store.commit_counts,
            ctx.store,
            records,
            {
                traffic_store.WARNINGS_TOTAL: len(warnings),
                traffic_store.SERIES_DROPPED_TOTAL: dropped,
            },
            {"source": ctx.source},
            {(ctx.source, "evaluated_at"): json.dumps(now)},
        )
        if dropped:
            ctx.log.warning(
                "Prometheus answers held more than max_series (%d): %d series left out",
                self.prom.max_series,
                dropped,
            )
        await ctx.write(
            traffic_store.prune_if_due, ctx.store, ctx.now(), self.config.state.retention
        )
