"""Azure Cost Management: daily cost grouped by a tag, per scope, through the Query API.

``POST {management_url}{scope}/providers/Microsoft.CostManagement/query?api-version=...``
with a ``Custom`` time period, ``granularity: Daily``, a ``Sum`` of ``Cost`` and
``grouping: [{type: TagKey, name: <tag_key>}]``; the answer is a table
(``properties.columns`` and ``properties.rows``, with ``UsageDate`` as a number
``YYYYMMDD``, the cost, ``TagKey``, ``TagValue`` and ``Currency``), paged by
``properties.nextLink``. Documented at
https://learn.microsoft.com/en-us/rest/api/cost-management/query/usage.

Tokens come from the Microsoft identity platform's OAuth 2.0 client-credentials
grant (``POST {login_url}/{tenant}/oauth2/v2.0/token`` with ``client_id``,
``client_secret``, ``scope={management_url}/.default``); one is reused until five
minutes before it expires, and a 401 refreshes it once. With ``auth:
workload_identity`` or ``managed_identity`` the token comes through azure-identity
instead (:mod:`.azure_identity`). A 429 is retried after
the longest of the ``x-ms-ratelimit-microsoft.costmanagement-{qpu,entity,tenant}-retry-after``
and ``Retry-After`` headers, if that is within ``max_retry_wait``; otherwise the
poll fails with ``rate_limited`` and the next one tries again. Days older than
``data_delay_days`` are settled and not queried again, as with Cost Explorer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from datetime import date, timedelta
from typing import Any

import httpx

from exporter.core.errors import AuthError, MalformedResponse, RateLimited
from exporter.core.httpclient import parse_retry_after, send
from exporter.core.periods import utc_date
from exporter.core.redact import excerpt
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.domains.cost import store as cost_store
from exporter.domains.cost.allocation import KEYED, CostKey, allocator_for, current_allocator
from exporter.domains.cost.lookback import poll_days, spans
from exporter.domains.cost.records import CostContribution, CostDay
from exporter.domains.cost.settings import AzureCostSourceConfig
from exporter.domains.cost.sources.azure_identity import IdentityTokens

RETRY_AFTER_HEADERS = (
    "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after",
    "Retry-After",
)
COST_COLUMNS = ("Cost", "PreTaxCost", "CostUSD", "PreTaxCostUSD", "totalCost")
TOKEN_MARGIN = 300.0
MAX_429_RETRIES = 3
MAX_PAGES = 1000
# A daily query spans at most 31 days.
MAX_QUERY_DAYS = 31


def retry_after(response: httpx.Response, now: float) -> float | None:
    """The longest wait any of Cost Management's throttling headers asks for, at ``now``."""
    waits = [parse_retry_after(response.headers.get(h), now) for h in RETRY_AFTER_HEADERS]
    known = [w for w in waits if w is not None]
    return max(known) if known else None


class AzureCostSource(Source):
    """Azure Cost Management Query API; see the module docstring."""

    attributes_to_services = True

    kind = "azure_cost"
    settings_model = AzureCostSourceConfig
    produces = (CostContribution,)

    def __init__(self, config: ConfigBase, settings: AzureCostSourceConfig) -> None:
        super().__init__(config, settings)
        self.az: AzureCostSourceConfig = settings
        self.allocator = allocator_for(config)
        self._token: str | None = None
        self._token_expires = 0.0
        # Workload or managed identity: tokens through azure-identity instead of a secret.
        self.identity = IdentityTokens(settings) if settings.auth != "client_secret" else None
        self.token_requests = 0
        query = [settings.cost_type, settings.tag_key, settings.api_version]
        self.query_id = hashlib.sha256(json.dumps(query).encode()).hexdigest()[:12]

    # --- auth --------------------------------------------------------------------

    async def token(self, ctx: PollContext, force: bool = False) -> str:
        if not force and self._token and ctx.now() < self._token_expires - TOKEN_MARGIN:
            return self._token
        if self.identity is not None:
            self.identity.on_answer = ctx.health.count_request
            scope = f"{self.az.management_url.rstrip('/')}/.default"
            token, valid_for = await asyncio.to_thread(self.identity.get, scope)
            self.token_requests += 1
            self._token, self._token_expires = token, ctx.now() + valid_for
            return token
        assert self.az.client_secret is not None  # the settings require it for this auth
        url = f"{self.az.login_url.rstrip('/')}/{self.az.tenant_id}/oauth2/v2.0/token"
        response = await send(
            ctx.client,
            "POST",
            url,
            ok=(200, 400, 401),
            data={
                "client_id": self.az.client_id,
                "client_secret": self.az.client_secret.get_secret_value(),
                "scope": f"{self.az.management_url.rstrip('/')}/.default",
                "grant_type": "client_credentials",
            },
            health=ctx.health,
            clock=ctx.now,
        )
        self.token_requests += 1
        body = _json(response)
        if response.status_code != 200 or "access_token" not in body:
            raise AuthError(
                f"token request for client {self.az.client_id} failed: "
                f"{body.get('error', response.status_code)}: "
                f"{excerpt(str(body.get('error_description', '')))}"
            )
        self._token = str(body["access_token"])
        self._token_expires = ctx.now() + float(body.get("expires_in", 3599))
        return self._token

    # --- query -------------------------------------------------------------------

    def body(self, start: date, end: date) -> dict[str, Any]:
        """The Query API request for the closed days [start, end)."""
        last = end - timedelta(days=1)
        return {
            "type": self.az.cost_type,
            "timeframe": "Custom",
            "timePeriod": {"from": f"{start}T00:00:00+00:00", "to": f"{last}T23:59:59+00:00"},
            "dataset": {
                "granularity": "Daily",
                "aggregation": {"totalCost": {"name": "Cost", "function": "Sum"}},
                "grouping": [{"type": "TagKey", "name": self.az.tag_key}],
            },
        }

    async def _post(self, ctx: PollContext, url: str, body: dict[str, Any]) -> httpx.Response:
        refreshed = False
        throttled = 0
        while True:
            token = await self.token(ctx)
            response = await send(
                ctx.client,
                "POST",
                url,
                ok=(200, 204, 401, 429),
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                health=ctx.health,
                clock=ctx.now,
            )
            if response.status_code == 401 and not refreshed:
                # Revoked or expired early: one fresh token, then give up.
                refreshed = True
                await self.token(ctx, force=True)
                continue
            if response.status_code == 401:
                raise AuthError(f"401 from {url.split('?')[0]}: {excerpt(response.text)}")
            if response.status_code == 429:
                wait = retry_after(response, ctx.now())
                if wait is None or wait > self.az.max_retry_wait or throttled >= MAX_429_RETRIES:
                    raise RateLimited(
                        f"429 from Cost Management (retry after {wait}s): {excerpt(response.text)}",
                        wait,
                    )
                throttled += 1
                ctx.log.warning("Cost Management throttled the query; retrying in %.0fs", wait)
                await asyncio.sleep(wait)
                continue
            return response

    async def query(self, ctx: PollContext, scope: str, start: date, end: date) -> list[list[Any]]:
        """Every row of one query across pages, as [day, tag value, cost, currency]."""
        url = (
            f"{self.az.management_url.rstrip('/')}{scope}/providers/Microsoft.CostManagement/"
            f"query?api-version={self.az.api_version}"
        )
        body = self.body(start, end)
        out: list[list[Any]] = []
        for _ in range(MAX_PAGES):
            response = await self._post(ctx, url, body)
            if response.status_code == 204:
                return out
            props = _json(response).get("properties")
            if not isinstance(props, dict):
                raise MalformedResponse(
                    f"query answer without properties: {excerpt(response.text)}"
                )
            out.extend(self._rows(props))
            next_link = props.get("nextLink")
            if not next_link:
                return out
            url = str(next_link)
        raise MalformedResponse(f"more than {MAX_PAGES} pages from Cost Management")

    def _rows(self, props: dict[str, Any]) -> list[list[Any]]:
        try:
            names = [str(c["name"]) for c in props["columns"]]
        except (KeyError, TypeError) as exc:
            raise MalformedResponse(f"query answer without columns: {props!r:.200}") from exc
        index = {n: i for i, n in enumerate(names)}
        cost_col = next((index[c] for c in COST_COLUMNS if c in index), None)
        if cost_col is None or "UsageDate" not in index:
            raise MalformedResponse(f"query answer lacks UsageDate or a cost column: {names}")
        i_day, i_val, i_cur = index["UsageDate"], index.get("TagValue"), index.get("Currency")
        out = []
        for row in props.get("rows") or []:
            try:
                day = _usage_date(row[i_day])
                cost = float(row[cost_col])
                value = "" if i_val is None or row[i_val] is None else str(row[i_val])
                currency = "USD" if i_cur is None else str(row[i_cur]).upper()
            except (IndexError, TypeError, ValueError) as exc:
                raise MalformedResponse(f"bad query row {row!r:.200}") from exc
            out.append([day, value, cost, currency])
        return out

    # --- polling -----------------------------------------------------------------

    async def poll(self, ctx: PollContext) -> None:
        # Rules can come from an external catalog too, which changes between polls.
        self.allocator = current_allocator(self.config, ctx.store)
        today = utc_date(ctx.now())
        settled_before = today - timedelta(days=self.az.data_delay_days)
        days = poll_days(today, self.az.lookback_days)
        known = cost_store.origins(ctx.store, self.name)
        for scope in self.az.scopes:
            need = [d for d in days if not _settled(known.get(f"{scope}/{d}"), self.query_id)]
            if not need:
                continue
            start = min(need)
            rows = []
            for a, b in spans(start, today, MAX_QUERY_DAYS):
                rows += await self.query(ctx, scope, a, b)
            by_day: dict[str, list[list[Any]]] = {}
            for day, value, cost, currency in rows:
                by_day.setdefault(day, []).append([value, cost, currency])
            account = _subscription(scope)
            # Cost Management has processed every day up to the newest it answered with cost.
            newest = max(by_day, default="")
            records = []
            for d in (start + timedelta(days=n) for n in range((today - start).days)):
                iso = d.isoformat()
                raw = by_day.get(iso, [])
                items = []
                for value, cost, currency in raw:
                    key = CostKey(((self.az.tag_key, value),) if value else (), account)
                    service, team = self.allocator.resolve(key)
                    items.append(
                        CostDay(
                            *(iso, service, team, "azure", "unknown", currency, cost, cost),
                            ident=key.text(),
                        )
                    )
                digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]
                records.append(
                    CostContribution(
                        source=self.name,
                        origin=f"{scope}/{iso}",
                        # Stored by attribution key: the allocation rules are not part of it.
                        signature=f"q={self.query_id}|{KEYED}|raw={digest}",
                        days=tuple(items),
                        final=d < settled_before,
                        rows_read=len(raw),
                        covered_days=(iso,) if iso <= newest else (),
                    )
                )
            await ctx.commit(records)


def _settled(known: tuple[str, bool] | None, query_id: str) -> bool:
    """Final and stored by attribution key (a day stored before keys is read again)."""
    if known is None:
        return False
    signature, final = known
    return final and f"q={query_id}|{KEYED}|" in signature


def _usage_date(value: Any) -> str:
    """UsageDate is a number YYYYMMDD (Daily granularity) or an ISO date-time string."""
    if isinstance(value, int | float):
        text = f"{int(value):08d}"
        return f"{text[:4]}-{text[4:6]}-{text[6:8]}"
    text = str(value)
    if re.fullmatch(r"\d{8}", text):
        return f"{text[:4]}-{text[4:6]}-{text[6:8]}"
    return date.fromisoformat(text[:10]).isoformat()


def _subscription(scope: str) -> str:
    match = re.match(r"^/subscriptions/([^/]+)", scope)
    return match.group(1) if match else ""


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError as exc:
        raise MalformedResponse(f"not JSON: {excerpt(response.text)}") from exc
    if not isinstance(data, dict):
        raise MalformedResponse(f"not a JSON object: {excerpt(response.text)}")
    return data
