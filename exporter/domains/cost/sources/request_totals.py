"""Requests per service per closed UTC day, from a Prometheus query: the
denominator of cost per transaction where no gateway source stores them.

For each closed day not read yet (within ``lookback_days`` and, in any case,
every day of the previous calendar month, as the cost APIs are asked, so that
``last_month`` divides a whole month of requests; and once ``settle`` has passed
after its midnight), the source evaluates the configured
PromQL (``$window`` replaced by ``1d``) as an instant query over
``GET /api/v1/query`` at 00:00 UTC of the next day, so the value covers
exactly that UTC day. Each series' ``service_label`` names the service. A day
is read once; an empty result is a day without requests, not an error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from exporter.core.errors import MalformedResponse, UpstreamStatusError
from exporter.core.httpclient import send
from exporter.core.periods import utc_date
from exporter.core.redact import excerpt
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.domains.cost.lookback import poll_days
from exporter.domains.cost.records import RequestTotal
from exporter.domains.cost.settings import RequestTotalsSourceConfig

# Days read per poll at most, so a first start with a long lookback stays short; the
# newest days are read first, so the recent windows have data after the first poll.
MAX_DAYS_PER_POLL = 40


class RequestTotalsSource(Source):
    """Daily request totals per service through the Prometheus HTTP API."""

    kind = "request_totals"
    settings_model = RequestTotalsSourceConfig
    produces = (RequestTotal,)

    def __init__(self, config: ConfigBase, settings: RequestTotalsSourceConfig) -> None:
        super().__init__(config, settings)
        self.rt: RequestTotalsSourceConfig = settings

    def client_options(self) -> dict[str, Any]:
        return {"base_url": self.rt.url}

    def due_days(self, now: float, done: set[str]) -> list[str]:
        """Closed, settled days not read yet: the newest MAX_DAYS_PER_POLL, oldest first."""
        out = []
        for day in poll_days(utc_date(now), self.rt.lookback_days):
            end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            if end.timestamp() + self.rt.settle <= now and day.isoformat() not in done:
                out.append(day.isoformat())
        return out[-MAX_DAYS_PER_POLL:]

    async def poll(self, ctx: PollContext) -> None:
        now = ctx.now()
        raw = ctx.cursor("days")
        done = set(json.loads(raw)) if raw else set()
        oldest = poll_days(utc_date(now), self.rt.lookback_days)[0].isoformat()
        done = {d for d in done if d >= oldest}
        query = self.rt.query.replace("$window", "1d")
        for day in self.due_days(now, done):
            at = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
            response = await send(
                ctx.client,
                "GET",
                "/api/v1/query",
                ok=(200, 400, 422),
                params={"query": query, "time": f"{at.timestamp():.0f}"},
                health=ctx.health,
                clock=ctx.now,
            )
            body = _json(response.content)
            if body.get("status") != "success":
                raise UpstreamStatusError(
                    f"query for {day} failed: {body.get('errorType')}: {body.get('error')}",
                    response.status_code,
                )
            for warning in body.get("warnings") or []:
                ctx.log.warning("Prometheus warning for %s: %s", day, warning)
            totals = self._totals(body, day)
            done.add(day)
            await ctx.commit(totals, {"days": json.dumps(sorted(done))})

    def _totals(self, body: dict[str, Any], day: str) -> list[RequestTotal]:
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") not in ("vector", "scalar"):
            raise MalformedResponse(f"query for {day}: expected a vector result, got {data!r:.200}")
        if data["resultType"] == "scalar":
            raise MalformedResponse(
                f"query for {day}: a scalar has no {self.rt.service_label} label; aggregate by it"
            )
        sums: dict[str, float] = {}
        for item in data.get("result") or []:
            try:
                service = str(item["metric"].get(self.rt.service_label, ""))
                value = float(item["value"][1])
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise MalformedResponse(f"query for {day}: bad sample {item!r:.200}") from exc
            if service and value == value:
                sums[service] = sums.get(service, 0.0) + value
        return [RequestTotal(s, day, v, self.name) for s, v in sorted(sums.items())]


def _json(content: bytes) -> dict[str, Any]:
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise MalformedResponse(f"not JSON: {excerpt(repr(content))}") from exc
    if not isinstance(data, dict):
        raise MalformedResponse(f"not a JSON object: {excerpt(repr(content))}")
    return data
