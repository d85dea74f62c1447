"""AWS Cost Explorer: daily cost per tag value or linked account, per account.

One ``GetCostAndUsage`` query per account and poll (``Granularity=DAILY``, the
configured metric, at most two ``GroupBy`` keys), following ``NextPageToken``.
Cost Explorer charges USD 0.01 per request, so the source is frugal:

* each (account, day) answer is stored as one origin; a closed day older than
  ``data_delay_days`` is *final* and never asked for again, also after a
  restart (costs settle over 24 to 72 hours, so younger days are re-queried);
* every request that reaches AWS (retries included) is counted, persisted, in
  ``platform_exporter_paid_api_calls_total{source}`` and per UTC day;
* ``daily_call_cap`` is checked before each request: once reached, the poll
  stops, commits nothing partial and fails with ``rate_limited``;
* each day's cost is stored under its groups' keys (tag values, linked account), which
  are resolved to services when the KPIs are computed: a catalog change needs no
  request. The raw groups of each settled day are kept too, so days stored before
  keys were are rebuilt without a paid call.

Accounts are read through ``sts:AssumeRole`` with their ``role_arn`` (cached
until five minutes before the credentials expire), or with the default
credential chain. boto3 is imported lazily (the ``aws`` extra); its blocking
calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from datetime import date, timedelta
from typing import Any

from exporter.core.errors import (
    AuthError,
    MalformedResponse,
    RateLimited,
    SourceError,
    UpstreamStatusError,
    needs_extra,
)
from exporter.core.periods import utc_date
from exporter.core.settings import ConfigBase
from exporter.core.source import PollContext, Source
from exporter.domains.cost import store as cost_store
from exporter.domains.cost.allocation import KEYED, CostKey, allocator_for, current_allocator
from exporter.domains.cost.lookback import poll_days
from exporter.domains.cost.records import CostContribution, CostDay
from exporter.domains.cost.settings import AwsAccountConfig, AwsCostSourceConfig

# A few Cost Explorer SERVICE names and their FOCUS ServiceCategory.
SERVICE_CATEGORIES = {
    "Amazon Elastic Compute Cloud - Compute": "Compute",
    "EC2 - Other": "Compute",
    "AWS Lambda": "Compute",
    "Amazon Elastic Container Service": "Compute",
    "Amazon Elastic Kubernetes Service": "Compute",
    "Amazon Simple Storage Service": "Storage",
    "Amazon Elastic Block Store": "Storage",
    "Amazon Relational Database Service": "Databases",
    "Amazon DynamoDB": "Databases",
    "Amazon ElastiCache": "Databases",
    "Amazon CloudFront": "Networking",
    "Amazon Virtual Private Cloud": "Networking",
    "Elastic Load Balancing": "Networking",
    "AmazonCloudWatch": "Management and Governance",
    "Tax": "Other",
}
AUTH_CODES = {
    "AccessDeniedException",
    "AccessDenied",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
}
THROTTLE_CODES = {"LimitExceededException", "ThrottlingException", "Throttling", "TooManyRequests"}
CREDENTIAL_MARGIN = 300.0


class CapReached(RateLimited):
    """The configured daily cap of paid requests is spent."""


class AwsCostSource(Source):
    """Cost Explorer daily costs; see the module docstring."""

    attributes_to_services = True

    kind = "aws_cost"
    settings_model = AwsCostSourceConfig
    produces = (CostContribution,)
    tags = frozenset({"paid_api"})

    def __init__(self, config: ConfigBase, settings: AwsCostSourceConfig) -> None:
        super().__init__(config, settings)
        self.aws: AwsCostSourceConfig = settings
        self.allocator = allocator_for(config)
        self.accounts = list(settings.accounts) or [AwsAccountConfig(name="default")]
        self._clients: dict[str, tuple[Any, float]] = {}
        self._ctx: PollContext | None = None
        self._lock = threading.Lock()
        query = [settings.metric, [(g.type, g.key) for g in settings.group_by]]
        self.query_id = hashlib.sha256(json.dumps(query).encode()).hexdigest()[:12]

    # --- boto3 (in a worker thread) ------------------------------------------------

    def _boto_config(self) -> Any:
        with needs_extra("aws", "the aws_cost source"):
            from botocore.config import Config as BotoConfig

        return BotoConfig(
            connect_timeout=self.aws.timeout,
            read_timeout=self.aws.timeout,
            # Few retries: each one that reaches AWS is a paid request.
            retries={"max_attempts": 2, "mode": "standard"},
            user_agent_extra="platform-kpi-exporter",
        )

    def _ce_client(self, account: AwsAccountConfig, ctx: PollContext) -> Any:
        with self._lock:
            cached = self._clients.get(account.name)
            if cached is not None and cached[1] > ctx.now() + CREDENTIAL_MARGIN:
                return cached[0]
        with needs_extra("aws", "the aws_cost source"):
            import boto3

        session = boto3.session.Session()
        common: dict[str, Any] = {
            "region_name": self.aws.region,
            "config": self._boto_config(),
        }
        if self.aws.endpoint_url:
            common["endpoint_url"] = self.aws.endpoint_url
        expires = float("inf")
        if account.role_arn:
            sts = session.client("sts", **common)
            params: dict[str, Any] = {
                "RoleArn": account.role_arn,
                "RoleSessionName": "platform-kpi-exporter",
                "DurationSeconds": 3600,
            }
            if account.external_id is not None:
                params["ExternalId"] = account.external_id.get_secret_value()
            creds = sts.assume_role(**params)["Credentials"]
            expires = creds["Expiration"].timestamp()
            client = session.client(
                "ce",
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
                **common,
            )
        else:
            client = session.client("ce", **common)

        def counted(response_dict: dict[str, Any] | None = None, **_: Any) -> None:
            # Fired once per HTTP attempt: every answer from Cost Explorer, retries
            # included, is a paid request. No answer (a connection error): not paid.
            if response_dict is None:
                return
            live = self._ctx or ctx
            live.health.count_request(int(response_dict.get("status_code") or 0))
            with live.store.transaction() as tx:
                cost_store.count_paid_call(tx, self.name, utc_date(live.now()).isoformat())

        client.meta.events.register("response-received.cost-explorer.GetCostAndUsage", counted)
        with self._lock:
            self._clients[account.name] = (client, expires)
        return client

    def _fetch(
        self, ctx: PollContext, account: AwsAccountConfig, start: date, end: date
    ) -> list[dict[str, Any]]:
        """Every ResultsByTime entry of one query, across pages."""
        from botocore.exceptions import BotoCoreError, ClientError

        out: list[dict[str, Any]] = []
        token: str | None = None
        today = utc_date(ctx.now()).isoformat()
        while True:
            used = cost_store.paid_calls_on(ctx.store, self.name, today)
            ctx.health.set_rate_limit_remaining(
                "paid_calls_today", max(0, self.aws.daily_call_cap - used)
            )
            if used >= self.aws.daily_call_cap:
                raise CapReached(
                    f"daily cap of {self.aws.daily_call_cap} paid Cost Explorer requests reached "
                    f"({used} made on {today} UTC); account {account.name} not queried until "
                    "00:00 UTC",
                    None,
                )
            request: dict[str, Any] = {
                "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
                "Granularity": "DAILY",
                "Metrics": [self.aws.metric],
                "GroupBy": [{"Type": g.type, "Key": g.key} for g in self.aws.group_by],
            }
            if token:
                request["NextPageToken"] = token
            try:
                client = self._ce_client(account, ctx)
                page = client.get_cost_and_usage(**request)
            except ClientError as exc:
                raise _classify(exc, account.name) from exc
            except BotoCoreError as exc:
                raise _transport_error(exc, account.name) from exc
            out.extend(page.get("ResultsByTime") or [])
            token = page.get("NextPageToken") or None
            if not token:
                break
        used = cost_store.paid_calls_on(ctx.store, self.name, today)
        ctx.health.set_rate_limit_remaining(
            "paid_calls_today", max(0, self.aws.daily_call_cap - used)
        )
        return out

    # --- polling -------------------------------------------------------------------

    def _signature(self, raw: str) -> str:
        # `keyed`: stored by attribution key, so the allocation rules are not part of it.
        return f"q={self.query_id}|{KEYED}|raw={hashlib.sha256(raw.encode()).hexdigest()[:16]}"

    async def poll(self, ctx: PollContext) -> None:
        # Rules can come from an external catalog too, which changes between polls.
        self.allocator = current_allocator(self.config, ctx.store)
        self._ctx = ctx
        now = ctx.now()
        today = utc_date(now)
        settled_before = today - timedelta(days=self.aws.data_delay_days)
        days = poll_days(today, self.aws.lookback_days)
        known = cost_store.origins(ctx.store, self.name)
        for account in self.accounts:
            need: list[date] = []
            rebuilt: list[CostContribution] = []
            for day in days:
                origin = f"{account.name}/{day.isoformat()}"
                signature, final = known.get(origin, ("", False))
                if not final or f"q={self.query_id}|" not in signature:
                    need.append(day)
                elif f"|{KEYED}|" not in signature:
                    # Settled, paid for, stored before keys: rebuild from the stored groups.
                    raw = ctx.cursor(f"raw:{origin}")
                    if raw is None:
                        need.append(day)
                    else:
                        rebuilt.append(self._contribution(origin, day, json.loads(raw), True, True))
            if rebuilt:
                await ctx.commit(rebuilt)
            if not need:
                continue
            start = min(need)
            results = await asyncio.to_thread(self._fetch, ctx, account, start, today)
            groups = self._by_day(results, start, today)
            # Cost Explorer has processed every day up to the newest it answered with cost.
            newest = max((d for d, g in groups.items() if g), default="")
            records = []
            cursors = {}
            for day in (start + timedelta(days=n) for n in range((today - start).days)):
                origin = f"{account.name}/{day.isoformat()}"
                raw_groups = groups.get(day.isoformat(), [])
                final = day < settled_before
                arrived = day.isoformat() <= newest
                records.append(self._contribution(origin, day, raw_groups, final, arrived))
                if final:
                    cursors[f"raw:{origin}"] = json.dumps(raw_groups)
            await ctx.commit(records, cursors)
            ctx.log.info(
                "account %s: %s..%s read, %d day(s) now settled",
                account.name,
                start,
                today - timedelta(days=1),
                sum(1 for r in records if r.final),
            )

    def _by_day(
        self, results: list[dict[str, Any]], start: date, end: date
    ) -> dict[str, list[list[Any]]]:
        """Raw groups per day: [keys, amount, unit]."""
        out: dict[str, list[list[Any]]] = {}
        for entry in results:
            try:
                day = str(entry["TimePeriod"]["Start"])[:10]
                date.fromisoformat(day)
            except (KeyError, TypeError, ValueError) as exc:
                raise MalformedResponse(
                    f"ResultsByTime entry without a TimePeriod: {entry!r:.200}"
                ) from exc
            for group in entry.get("Groups") or []:
                try:
                    metric = group["Metrics"][self.aws.metric]
                    amount = float(metric["Amount"])
                    unit = str(metric.get("Unit") or "USD")
                    keys = [str(k) for k in group["Keys"]]
                except (KeyError, TypeError, ValueError) as exc:
                    raise MalformedResponse(f"bad group on {day}: {group!r:.200}") from exc
                out.setdefault(day, []).append([keys, amount, unit])
        return out

    def _contribution(
        self, origin: str, day: date, raw: list[list[Any]], final: bool, arrived: bool
    ) -> CostContribution:
        rows: list[CostDay] = []
        for keys, amount, unit in raw:
            tags: dict[str, str] = {}
            account = ""
            category = "unknown"
            for spec, key in zip(self.aws.group_by, keys, strict=False):
                if spec.type in ("TAG", "COST_CATEGORY"):
                    # Cost Explorer answers "key$value"; "key$" is an untagged line.
                    name, _, value = key.partition("$")
                    if value:
                        tags[name or spec.key] = value
                elif spec.key == "LINKED_ACCOUNT":
                    account = key
                elif spec.key == "SERVICE":
                    category = SERVICE_CATEGORIES.get(key, "Other")
            # Every group key is kept: Cost Explorer answers only the configured few.
            key = CostKey(tuple(sorted(tags.items())), account)
            service, team = self.allocator.resolve(key)
            rows.append(
                CostDay(
                    day.isoformat(),
                    service,
                    team,
                    "aws",
                    category,
                    unit.upper(),
                    amount,
                    amount,
                    ident=key.text(),
                )
            )
        return CostContribution(
            source=self.name,
            origin=origin,
            signature=self._signature(json.dumps(raw, sort_keys=True)),
            days=tuple(rows),
            final=final,
            rows_read=len(raw),
            covered_days=(day.isoformat(),) if arrived else (),
        )


def _classify(exc: Any, account: str) -> SourceError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = f"account {account}: Cost Explorer {code}: {error.get('Message', '')}"
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400)
    if code in AUTH_CODES:
        return AuthError(message)
    if code in THROTTLE_CODES:
        return RateLimited(message, None)
    return UpstreamStatusError(message, status)


def _transport_error(exc: Any, account: str) -> SourceError:
    name = type(exc).__name__
    err = UpstreamStatusError(f"account {account}: {name}: {exc}", 503)
    if "Timeout" in name:
        err.reason = "timeout"
    elif "Connect" in name or "Endpoint" in name:
        err.reason = "connect"
    elif "Credential" in name:
        err.reason = "auth"
    return err
